"""`wardgate gateway` on localhost standing in for the gateway pod: it runs exactly as the pod
does, following the operator's ConfigMap through the API as the Gateway's ServiceAccount
(`--watch-config`), and applies each new config in place."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

READY_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 30.0


class GatewayStartError(RuntimeError):
    """The local gateway refused its config or did not become ready."""


def free_port() -> int:
    """A free loopback port (bound and released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LocalGateway:
    """One `wardgate gateway --watch-config` process on a fixed port."""

    def __init__(
        self,
        port: int,
        servers: Mapping[str, str],
        log_path: Path,
        kubeconfig: Path,
        config_map: str,
    ) -> None:
        self.port = port
        self.admin_port = 0
        self.servers = dict(servers)
        self.log_path = log_path
        self.kubeconfig = kubeconfig
        self.config_map = config_map
        """`NAMESPACE/NAME` of the ConfigMap to follow."""
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the gateway and wait until it serves."""
        overrides = [f"--server={name}={url}" for name, url in sorted(self.servers.items())]
        self.admin_port = free_port()
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [
                    sys.executable, "-m", "wardgate", "gateway",
                    f"--watch-config={self.config_map}",
                    f"--kubeconfig={self.kubeconfig}",
                    f"--port={self.port}",
                    f"--admin-port={self.admin_port}",
                    *overrides,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own session: Ctrl-C reaches the demo, which stops it in order.
                start_new_session=True,
            )  # fmt: skip
        try:
            self._wait_ready(self._process)
        except GatewayStartError:
            self.stop()
            raise

    def served_hash(self) -> str | None:
        """The hash of the config the gateway serves now (its admin `/config/hash`)."""
        url = f"http://127.0.0.1:{self.admin_port}/config/hash"
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                value = json.loads(answer.read()).get("hash")
        except (OSError, ValueError):
            return None
        return value if isinstance(value, str) else None

    def _wait_ready(self, process: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        url = f"http://127.0.0.1:{self.admin_port}/readyz"
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
        """SIGTERM: the gateway drains its requests, then exits."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
