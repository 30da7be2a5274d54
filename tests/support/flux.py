"""Flux's source-controller and kustomize-controller against the test cluster, as local
processes with the cluster's kubeconfig (the binaries and CRDs that
`hack/gitops-binaries.sh` builds from Go modules, pinned in
wardgate/devcluster/versions.json).

Local processes rather than pods: the local cluster's node is kwok, which runs no
containers. As processes, the controllers are the released code talking to the API server
as they do in a cluster (watches, server-side apply, kstatus health checks), with two
differences: they use the cluster admin's kubeconfig where a default Flux install binds its
ServiceAccount to cluster-admin, and the kustomize-controller downloads artifacts from the
source-controller on loopback instead of through its Service.
"""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from tests.support.gitops_tools import cache_root, find_binary
from wardgate.demo.local_gateway import free_port
from wardgate.devcluster.cluster import KubeCluster, wait_until

CONTROLLERS: Final = ("source-controller", "kustomize-controller")
SOURCE_API: Final = "source.toolkit.fluxcd.io/v1"
KUSTOMIZE_API: Final = "kustomize.toolkit.fluxcd.io/v1"
REQUESTED_AT: Final = "reconcile.fluxcd.io/requestedAt"


def install_crds(cluster: KubeCluster) -> None:
    """Apply both controllers' CRDs (from their modules' config/crd/bases)."""
    directories = [cache_root() / "crds" / component for component in CONTROLLERS]
    for component, directory in zip(CONTROLLERS, directories, strict=True):
        find_binary(component)
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(directory))
    crds = [
        # Files are named GROUP_PLURAL.yaml.
        "{1}.{0}".format(*path.stem.split("_", 1))
        for directory in directories
        for path in sorted(directory.glob("*.yaml"))
    ]

    def established() -> bool:
        # Not `kubectl wait --for=condition=Established`: it fails instead of waiting while
        # a new CRD has no conditions yet.
        listed = json.loads(cluster.kubectl("get", "crd", *crds, "-o", "json").stdout)
        return all(
            any(
                c["type"] == "Established" and c["status"] == "True"
                for c in (crd.get("status") or {}).get("conditions") or []
            )
            for crd in listed["items"]
        )

    wait_until(established, what="the Flux CRDs", timeout=60, interval=0.2)


@dataclass
class _Process:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    health: str


@dataclass
class FluxControllers:
    """The two controllers, running; `stop()` ends them."""

    cluster: KubeCluster
    directory: Path
    processes: list[_Process] = field(default_factory=list)

    def start(self) -> FluxControllers:
        install_crds(self.cluster)
        storage = self.directory / "artifacts"
        storage.mkdir(parents=True, exist_ok=True)
        storage_addr = f"127.0.0.1:{free_port()}"
        self._spawn(
            "source-controller",
            f"--storage-path={storage}",
            f"--storage-addr={storage_addr}",
            # The URL the kustomize-controller downloads artifacts from.
            f"--storage-adv-addr={storage_addr}",
        )
        self._spawn("kustomize-controller", "--no-remote-bases=true")
        for process in self.processes:
            self._wait_healthy(process)
        return self

    def _spawn(self, name: str, *args: str) -> None:
        log = self.directory / f"{name}.log"
        health = f"127.0.0.1:{free_port()}"
        argv = [
            str(find_binary(name)),
            f"--metrics-addr=127.0.0.1:{free_port()}",
            f"--health-addr={health}",
            "--events-addr=",
            "--watch-all-namespaces=true",
            "--log-level=debug",
            "--log-encoding=json",
            *args,
        ]
        with log.open("wb") as out:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                # KUBECONFIG (in the cluster's environment) names the API server.
                env={**self.cluster.env, "RUNTIME_NAMESPACE": "flux-system"},
                start_new_session=True,
            )
        self.processes.append(_Process(name, process, log, health))

    def _wait_healthy(self, process: _Process) -> None:
        def ready() -> bool:
            if process.process.poll() is not None:
                raise RuntimeError(f"{process.name} exited:\n{self.tail(process.name)}")
            try:
                with urllib.request.urlopen(f"http://{process.health}/readyz", timeout=1) as r:
                    return bool(r.status == 200)
            except (OSError, urllib.error.URLError):
                return False

        wait_until(ready, what=f"{process.name} ready", timeout=60, interval=0.2)

    def tail(self, name: str, lines: int = 40) -> str:
        """The end of one controller's log."""
        path = self.directory / f"{name}.log"
        if not path.is_file():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        for process in self.processes:
            if process.process.poll() is None:
                process.process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.process.wait(30)
            except subprocess.TimeoutExpired:
                process.process.kill()
                process.process.wait()
        self.processes.clear()


@contextmanager
def flux_controllers(cluster: KubeCluster, directory: Path) -> Iterator[FluxControllers]:
    """source-controller and kustomize-controller running until the block ends."""
    controllers = FluxControllers(cluster, directory)
    try:
        yield controllers.start()
    finally:
        controllers.stop()


def request_reconcile(cluster: KubeCluster, kind: str, namespace: str, name: str) -> str:
    """Ask a Flux object to reconcile now, as `flux reconcile` does; return the token its
    status echoes in `lastHandledReconcileAt` once done."""
    token = datetime.now(UTC).isoformat()
    cluster.kubectl(
        "annotate", "--overwrite", f"{kind}/{name}", "-n", namespace, f"{REQUESTED_AT}={token}"
    )
    return token


def condition(body: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for found in ((body or {}).get("status") or {}).get("conditions") or []:
        if found.get("type") == type_:
            return dict(found)
    return {}
