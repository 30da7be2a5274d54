"""`wardgate demo`: the whole system on this machine in one command.

A local control plane (`wardgate.devcluster`), the Helm chart (CRDs, RBAC), the operator
running locally as the chart's ServiceAccount, the seed example applied, and `wardgate gateway`
started on localhost from the operator's rendered ConfigMap and the Secret keys its
Deployment projects, as the kubelet would. The gateway follows the config: apply a Route and
it restarts on the new config.
"""
