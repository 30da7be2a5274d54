"""Fixtures for tests against a real Kubernetes API (loaded by `tests/conftest.py`).

One cluster serves the whole pytest session (run the integration tests serially, in
one process):

- ``cluster`` (session): a ``wardgate.devcluster.cluster.KubeCluster``. By default a
  ``LocalCluster`` is started from the binaries that ``make k8s`` builds (etcd,
  kube-apiserver with RBAC, kube-controller-manager, kube-scheduler, and kwok faking one
  Ready node, so Pods get Running/Ready and Deployments Available; no container runs).
  With ``WARDGATE_KUBECONFIG=/path/to/kubeconfig`` the tests use that cluster instead
  (kind, a real cluster), whose user must be allowed to create namespaces, CRDs and RBAC.
  Attributes:

  - ``kubeconfig``: ``Path`` of a kubeconfig whose current context is a cluster admin.
  - ``server``: the API server URL.
  - ``bin_dir``: ``Path`` of the directory holding ``kubectl`` and ``helm``.
  - ``env``: ``dict`` for ``subprocess`` (``os.environ`` plus ``KUBECONFIG`` and
    ``bin_dir`` first on ``PATH``), so child processes (the operator, helm) use the cluster.
  - ``kubectl(*args, input=None, check=True, timeout=120) -> CompletedProcess[str]``:
    runs kubectl against the cluster; raises ``KubectlError`` (stdout and stderr in its
    message) on a non-zero exit unless ``check=False``.

  A ``LocalCluster`` also has ``directory`` (PKI, kubeconfigs, etcd data),
  ``logs_dir()`` with one ``<component>.log`` each, ``describe_logs()``, ``pids()``,
  ``rss_bytes()`` and ``times`` (startup milestones). Its directory is removed at the
  end of the session unless ``WARDGATE_KEEP_CLUSTER=1``; the terminal summary says where
  it is.

- ``namespace`` (function): the name of a fresh namespace for the test, whose
  ``default`` service account already exists (so Pods are admitted at once). It is
  deleted afterwards without waiting for its finalisation.

Await conditions (``kubectl wait``, ``kubectl rollout status`` or
``wardgate.devcluster.cluster.wait_until``); never sleep to synchronise.
"""

from __future__ import annotations

import os
import re
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.images import BuiltImage, build_image
from wardgate.devcluster.cluster import KubeCluster, LocalCluster, existing_cluster

# Session-wide facts about the local cluster, printed in the terminal summary.
_REPORT: list[str] = []


@pytest.fixture(scope="session")
def cluster() -> Iterator[KubeCluster]:
    """The cluster of this test session (see the module docstring)."""
    configured = os.environ.get("WARDGATE_KUBECONFIG")
    if configured:
        yield existing_cluster(Path(configured))
        return
    keep = os.environ.get("WARDGATE_KEEP_CLUSTER") == "1"
    local = LocalCluster(keep_dir=keep, log=lambda message: print(message, file=sys.stderr))
    local.start()
    _REPORT.append(
        f"local cluster logs: {local.logs_dir()} "
        + ("(kept)" if keep else "(removed at the end; WARDGATE_KEEP_CLUSTER=1 keeps them)")
    )
    try:
        t = local.times
        _REPORT.append(
            f"local cluster ready: API {t.api_ready:.1f} s, node Ready {t.node_ready:.1f} s, "
            f"controllers {t.controllers_ready:.1f} s"
        )
        _REPORT.append(f"local cluster memory at start: {_describe_rss(local)}")
        yield local
        _REPORT.append(f"local cluster memory at end: {_describe_rss(local)}")
    finally:
        local.stop()


@pytest.fixture(scope="session")
def wardgate_image() -> BuiltImage:
    """The project's image and the pause image, built by hack/build-image.sh unless up
    to date (`make test` builds them before pytest starts)."""
    image = build_image()
    size = image.podman("image", "inspect", "--format", "{{.Size}}", image.ref)
    if size.returncode == 0:
        _REPORT.append(f"image {image.ref}: {int(size.stdout) / 2**20:.0f} MiB")
    return image


@pytest.fixture(scope="session")
def node_cluster(wardgate_image: BuiltImage) -> Iterator[LocalCluster]:
    """A local cluster with a real node (containerd, kubelet, kube-proxy, CoreDNS) whose
    containerd holds the image built here under its own name and the chart's default one,
    so the chart and the operator's gateways run it as they are. Its Services' ClusterIPs
    are routed from this machine."""
    keep = os.environ.get("WARDGATE_KEEP_CLUSTER") == "1"
    local = LocalCluster(
        real_node=True,
        image_archives=(wardgate_image.archive,),
        keep_dir=keep,
        log=lambda message: print(message, file=sys.stderr),
    )
    local.start()
    try:
        t = local.times
        _REPORT.append(
            f"real-node cluster ready: API {t.api_ready:.1f} s, node Ready {t.node_ready:.1f} s, "
            f"controllers {t.controllers_ready:.1f} s (logs: {local.logs_dir()})"
        )
        _REPORT.append(f"real-node cluster memory at start: {_describe_rss(local)}")
        yield local
        _REPORT.append(f"real-node cluster memory at end: {_describe_rss(local)}")
    finally:
        local.stop()


def report(line: str) -> None:
    """Add a line to the figures printed at the end of the session."""
    _REPORT.append(line)


def _describe_rss(local: LocalCluster) -> str:
    sizes = local.rss_bytes()
    parts = ", ".join(f"{name} {size / 2**20:.0f}" for name, size in sizes.items())
    return f"{sum(sizes.values()) / 2**20:.0f} MiB RSS ({parts})"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in _REPORT:
        terminalreporter.write_line(line)


@pytest.fixture
def namespace(cluster: KubeCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"t-{slug}-{secrets.token_hex(3)}"
    cluster.kubectl("create", "namespace", name)
    # The service-account admission plugin rejects Pods until `default` exists.
    cluster.kubectl("wait", "--for=create", "serviceaccount/default", "-n", name, "--timeout=60s")
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")
