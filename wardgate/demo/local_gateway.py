"""`wardgate gateway` on localhost standing in for the gateway pod: the operator's rendered
ConfigMap and the Secret keys its Deployment projects, written to files as the kubelet
would mount them, and the process restarted when the Deployment's config hash changes."""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wardgate.devcluster.cluster import KubeCluster
from wardgate.operator.manifests import CONFIG_HASH, child_name, config_map_text

READY_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 30.0


class GatewayStartError(RuntimeError):
    """The local gateway refused its config or did not become ready."""


@dataclass(frozen=True)
class GatewaySnapshot:
    """What the gateway pod of one config hash would see: its config and secret files."""

    config_hash: str
    config: str
    config_file: str
    secret_files: Mapping[str, bytes]


def free_port() -> int:
    """A free loopback port (bound and released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _get(cluster: KubeCluster, namespace: str, resource: str) -> dict[str, Any] | None:
    result = cluster.kubectl("get", resource, "-n", namespace, "-o", "json", check=False)
    if result.returncode != 0:
        if "NotFound" in result.stderr:
            return None
        raise RuntimeError(result.stderr.strip())
    body: dict[str, Any] = json.loads(result.stdout)
    return body


def _annotation(body: Mapping[str, Any], key: str) -> str | None:
    value = ((body.get("metadata") or {}).get("annotations") or {}).get(key)
    return value if isinstance(value, str) else None


def read_snapshot(cluster: KubeCluster, namespace: str, gateway: str) -> GatewaySnapshot | None:
    """The config and secret files of the Gateway's current Deployment, or None while the
    operator has not written a consistent set yet (Deployment and ConfigMap hashes differ)."""
    deployment = _get(cluster, namespace, f"deployment/{child_name(gateway)}")
    if deployment is None:
        return None
    template = deployment["spec"]["template"]
    config_hash = _annotation(template, CONFIG_HASH)
    pod = template["spec"]
    args: list[str] = pod["containers"][0].get("args", [])
    # Written uncompressed: the snapshot holds the config's text.
    config_file = Path(args[args.index("--config") + 1]).name.removesuffix(".gz")
    config_map_name = None
    secret_files: dict[str, bytes] = {}
    for volume in pod.get("volumes", []):
        if "configMap" in volume:
            config_map_name = volume["configMap"]["name"]
        for source in (volume.get("projected") or {}).get("sources", []):
            ref = source.get("secret")
            if ref is None:
                continue
            secret = _get(cluster, namespace, f"secret/{ref['name']}")
            if secret is None:
                return None
            data = secret.get("data") or {}
            for item in ref.get("items", []):
                if item["key"] not in data:
                    return None
                secret_files[item["path"]] = base64.b64decode(data[item["key"]])
    if config_hash is None or config_map_name is None:
        return None
    config_map = _get(cluster, namespace, f"configmap/{config_map_name}")
    if config_map is None or _annotation(config_map, CONFIG_HASH) != config_hash:
        return None
    config = config_map_text(config_map)
    if config is None:
        return None
    return GatewaySnapshot(
        config_hash=config_hash,
        config=config,
        config_file=config_file,
        secret_files=secret_files,
    )


class LocalGateway:
    """One `wardgate gateway` process at a time on a fixed port, restarted per snapshot.

    The demo holds the listening socket and hands it to each gateway process
    (`--listen-fd`): the old and the new process share one accept queue, so stopping the
    old one resets no connection that waits to be accepted."""

    def __init__(
        self, workdir: Path, port: int, servers: Mapping[str, str], log_path: Path
    ) -> None:
        self.workdir = workdir
        self.port = port
        self.admin_port = 0
        self.servers = dict(servers)
        self.log_path = log_path
        self.snapshot: GatewaySnapshot | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._listener: socket.socket | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _materialise(self, snapshot: GatewaySnapshot) -> tuple[Path, Path]:
        directory = self.workdir / snapshot.config_hash
        if directory.exists():
            shutil.rmtree(directory)
        secrets_dir = directory / "secrets"
        secrets_dir.mkdir(parents=True, mode=0o700)
        config = directory / snapshot.config_file
        config.write_text(snapshot.config)
        for name, value in snapshot.secret_files.items():
            path = secrets_dir / name
            path.write_bytes(value)
            path.chmod(0o400)
        return config, secrets_dir

    def _command(self, *args: str) -> list[str]:
        overrides = [f"--server={name}={url}" for name, url in sorted(self.servers.items())]
        return [sys.executable, "-m", "wardgate", *args, *overrides]

    def start(self, snapshot: GatewaySnapshot) -> None:
        """Validate the snapshot, start a gateway on it beside the running one (both serve
        the demo's listening socket), then stop the old one: no request is refused
        meanwhile."""
        config, secrets_dir = self._materialise(snapshot)
        check = subprocess.run(
            self._command("validate", str(config), f"--secrets-dir={secrets_dir}"),
            capture_output=True,
            text=True,
            check=False,
        )
        if check.returncode != 0:
            raise GatewayStartError(f"config {snapshot.config_hash} refused:\n{check.stderr}")
        admin_port = free_port()
        if self._listener is None:
            self._listener = socket.create_server(("127.0.0.1", self.port), backlog=1024)
        listen_fd = self._listener.fileno()
        with self.log_path.open("ab") as log:
            log.write(f"--- config {snapshot.config_hash}\n".encode())
            log.flush()
            process = subprocess.Popen(
                self._command(
                    "gateway",
                    f"--config={config}",
                    f"--secrets-dir={secrets_dir}",
                    f"--listen-fd={listen_fd}",
                    f"--admin-port={admin_port}",
                ),
                pass_fds=(listen_fd,),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own session: Ctrl-C reaches the demo, which stops it in order.
                start_new_session=True,
            )
        try:
            self._wait_ready(process, admin_port)
        except GatewayStartError:
            _stop(process)
            raise
        old, self._process = self._process, process
        self.admin_port = admin_port
        self.snapshot = snapshot
        if old is not None:
            _stop(old)

    def _wait_ready(self, process: subprocess.Popen[bytes], admin_port: int) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        url = f"http://127.0.0.1:{admin_port}/readyz"
        while True:
            if process.poll() is not None:
                raise GatewayStartError(f"the gateway exited; its log: {self.log_path}")
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as answer:
                if answer.status == 200:
                    return
            if time.monotonic() > deadline:
                raise GatewayStartError(f"the gateway was not ready; its log: {self.log_path}")
            # Polling the admin port is how the kubelet's readiness probe works too.
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the running gateway."""
        process, self._process = self._process, None
        if process is not None:
            _stop(process)
        if self._listener is not None:
            self._listener.close()
            self._listener = None


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM: the gateway drains its requests, then exits."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
