"""The cluster an operator benchmark runs against."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from wardgate.devcluster.cluster import KubeCluster, LocalCluster, existing_cluster


@contextlib.contextmanager
def bench_cluster() -> Iterator[KubeCluster]:
    """The cluster WARDGATE_KUBECONFIG names, or a local control plane started (and stopped)
    here."""
    configured = os.environ.get("WARDGATE_KUBECONFIG")
    if configured:
        yield existing_cluster(Path(configured))
        return
    local = LocalCluster(log=lambda message: print(message, file=sys.stderr))
    local.start()
    try:
        yield local
    finally:
        local.stop()
