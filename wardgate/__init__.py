"""Wardgate: a Kubernetes operator that runs API gateways which enforce auth."""

__version__ = "0.1.0"
