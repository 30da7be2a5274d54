"""A local Kubernetes control plane made of real processes, and the handle tests use for
any cluster (local or pointed at by a kubeconfig).

`LocalCluster` runs etcd, kube-apiserver (RBAC on), kube-controller-manager,
kube-scheduler and kwok, which plays the kubelet for one fake node: scheduled Pods
become Running and Ready without containers, so Deployments become Available. No
container runs and Pod IPs are not reachable; everything else is Kubernetes itself.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from types import FrameType
from typing import IO, Any, Protocol

import yaml

from wardgate.devcluster import binaries, node, pki, watchdog

NODE_ANNOTATION = "kwok.x-k8s.io/node"
SERVICE_CIDR = "10.96.0.0/12"
SERVICE_IP = "10.96.0.1"  # the `kubernetes` Service: first address of SERVICE_CIDR
POD_CIDR = "10.244.0.1/16"
ADMIN_USER = "wardgate-admin"
STOP_GRACE_SECONDS = 10.0
LOG_TAIL_LINES = 40

# Client identities: the scheduler and controller manager use the users that RBAC's
# bootstrap policy grants their permissions to; kwok rewrites any Node and Pod status.
_CLIENTS: dict[str, tuple[str, ...]] = {
    ADMIN_USER: ("system:masters",),
    "system:kube-controller-manager": (),
    "system:kube-scheduler": (),
    "kwok-controller": ("system:masters",),
}


# The real node's clients: kubelet as a node (the Node authorizer), kube-proxy with the
# bootstrap policy's binding, CoreDNS and the API server's client to kubelets (kubelet
# asks the API server whether a client may; masters may).
_NODE_CLIENTS: dict[str, tuple[str, ...]] = {
    f"system:node:{node.NODE_NAME}": ("system:nodes",),
    "system:kube-proxy": (),
    "wardgate:coredns": ("system:masters",),
    "wardgate:apiserver-kubelet-client": ("system:masters",),
}
REAL_NODE_STARTUP_TIMEOUT = 180.0


class ClusterError(RuntimeError):
    """The cluster could not be started or reached."""


class KubectlError(subprocess.CalledProcessError):
    """kubectl exited non-zero; the message carries its output."""

    def __str__(self) -> str:
        return (
            f"{' '.join(map(str, self.cmd))} exited {self.returncode}\n"
            f"stdout: {self.stdout}\nstderr: {self.stderr}"
        )


def _environ_with(extra: Mapping[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env


class KubeCluster(Protocol):
    """The interface of both `Cluster` and `LocalCluster`, for code that takes either."""

    @property
    def kubeconfig(self) -> Path: ...

    @property
    def server(self) -> str: ...

    @property
    def bin_dir(self) -> Path: ...

    @property
    def env(self) -> dict[str, str]: ...

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]: ...


@dataclass
class Cluster:
    """What tests and tools need to talk to a cluster.

    `kubeconfig` is a file with an admin user as its current context, `server` the API
    server URL, `bin_dir` the directory with kubectl and helm, and `env` the process
    environment with `KUBECONFIG` set and `bin_dir` first on `PATH` (and kubectl's
    discovery cache in `kube_cache_dir` when given).
    """

    kubeconfig: Path
    server: str
    bin_dir: Path
    kube_cache_dir: Path | None = None

    @property
    def env(self) -> dict[str, str]:
        """The environment for a subprocess that should use this cluster."""
        path = os.environ.get("PATH", "")
        extra = {
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": f"{self.bin_dir}{os.pathsep}{path}" if path else str(self.bin_dir),
        }
        if self.kube_cache_dir is not None:
            extra["KUBECACHEDIR"] = str(self.kube_cache_dir)
        return _environ_with(extra)

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run `kubectl ARGS` against this cluster; raises `KubectlError` on failure
        unless `check` is false."""
        cmd = [str(self.bin_dir / "kubectl"), *args]
        result = subprocess.run(
            cmd,
            input=input,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise KubectlError(result.returncode, cmd, result.stdout, result.stderr)
        return result


def existing_cluster(kubeconfig: Path, bin_dir: Path | None = None) -> Cluster:
    """A handle on a cluster that runs elsewhere (kind, a real one), from its kubeconfig.

    kubectl and helm come from the built binaries when they exist, else from `PATH`.
    """
    if not kubeconfig.is_file():
        raise ClusterError(f"kubeconfig {kubeconfig} does not exist")
    if bin_dir is None:
        try:
            bin_dir = binaries.find_bin_dir()
        except binaries.BinariesMissingError:
            found = shutil.which("kubectl")
            if found is None:
                raise ClusterError(
                    "no kubectl: build the binaries with `make k8s` or put kubectl on PATH"
                ) from None
            bin_dir = Path(found).resolve().parent
    probe = Cluster(kubeconfig=kubeconfig, server="", bin_dir=bin_dir)
    server = probe.kubectl(
        "config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}"
    ).stdout.strip()
    if not server:
        raise ClusterError(f"kubeconfig {kubeconfig} names no server in its current context")
    return Cluster(kubeconfig=kubeconfig, server=server, bin_dir=bin_dir)


def wait_until(
    condition: Callable[[], bool], *, what: str, timeout: float = 60.0, interval: float = 0.1
) -> None:
    """Poll `condition` until it holds; raise `TimeoutError` naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def _write_kubeconfig(path: Path, server: str, ca: Path, user: str, pair: pki.CertPair) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "wardgate-dev",
                "cluster": {"server": server, "certificate-authority-data": _b64(ca)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": _b64(pair.cert),
                    "client-key-data": _b64(pair.key),
                },
            }
        ],
        "contexts": [
            {"name": "wardgate-dev", "context": {"cluster": "wardgate-dev", "user": user}}
        ],
        "current-context": "wardgate-dev",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class _Api:
    """Just enough of a client for startup checks: JSON over HTTPS with the admin cert."""

    def __init__(self, server: str, ca: Path, client: pki.CertPair) -> None:
        self.server = server
        self.context = ssl.create_default_context(cafile=str(ca))
        self.context.load_cert_chain(str(client.cert), str(client.key))

    def request(
        self, method: str, path: str, body: Mapping[str, Any] | None = None
    ) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, context=self.context, timeout=5) as resp:
                raw = resp.read()
                status: int = resp.status
        except urllib.error.HTTPError as e:
            raw = e.read()
            status = e.code
            e.close()
        except (OSError, http.client.HTTPException):
            # Not listening yet, or closing the connection while it starts.
            return 0, None
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode(errors="replace")


@dataclass
class _Component:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    argv: list[str]
    stopped: bool = False


@dataclass
class StartupTimes:
    """Seconds from the start call to each readiness milestone."""

    api_ready: float = 0.0
    node_ready: float = 0.0
    controllers_ready: float = 0.0


# Every LocalCluster that is running, stopped at interpreter exit at the latest.
_RUNNING: set[LocalCluster] = set()
_RUNNING_LOCK = threading.Lock()


def _stop_all() -> None:
    with _RUNNING_LOCK:
        clusters = list(_RUNNING)
    for cluster in clusters:
        cluster.stop()


atexit.register(_stop_all)


def _terminate_on(signum: int, frame: FrameType | None) -> None:
    # Turn SIGTERM/SIGHUP into an orderly exit so that finally blocks, fixture
    # finalizers and atexit run and stop the cluster.
    raise SystemExit(128 + signum)


def _install_signal_handlers() -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) is signal.SIG_DFL:
            signal.signal(signum, _terminate_on)


class LocalCluster:
    """A control plane of local processes in its own directory.

    `start()` builds the PKI and configs, starts the components, and returns once the
    API server is ready, the fake node is Ready and the controllers work. `stop()`
    terminates every process group and removes the directory it created (unless
    `keep_dir`). Usable as a context manager.
    """

    def __init__(
        self,
        directory: Path | None = None,
        *,
        bin_dir: Path | None = None,
        node_names: tuple[str, ...] = ("kwok-node-0",),
        real_node: bool = False,
        image_archives: tuple[Path, ...] = (),
        keep_dir: bool = False,
        startup_timeout: float | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        # Resolved now so that missing binaries fail before anything is started.
        self.bin_dir: Path = bin_dir or binaries.find_bin_dir()
        self._directory = directory
        self.real_node = real_node
        self.node_names = (node.NODE_NAME,) if real_node else node_names
        if real_node:
            missing = node.missing_host_commands()
            if missing:
                raise ClusterError(
                    f"the real node needs {', '.join(missing)}: install them with "
                    "`make deps` (hack/install-system-deps.sh)"
                )
            pause = node.pause_archive()
            if not pause.is_file():
                raise ClusterError(
                    f"no pause image at {pause}: build it with `make image` (hack/build-image.sh)"
                )
            image_archives = (pause, *image_archives)
        self.image_archives = image_archives
        self.keep_dir = keep_dir
        if startup_timeout is None:
            startup_timeout = REAL_NODE_STARTUP_TIMEOUT if real_node else 90.0
        self.startup_timeout = startup_timeout
        self.log = log
        self.times = StartupTimes()
        self._components: list[_Component] = []
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._created_dir = False
        self._cluster: Cluster | None = None
        self._api: _Api | None = None
        self._etcd_url: str | None = None
        self._slot: node.Slot | None = None
        self._node_holder: int | None = None
        self._node_procs: Path | None = None

    @property
    def directory(self) -> Path:
        """The cluster's directory: PKI, kubeconfigs, etcd data and logs."""
        if self._directory is None:
            raise ClusterError("cluster is not started")
        return self._directory

    # -- the Cluster interface -------------------------------------------------------

    @property
    def handle(self) -> Cluster:
        """The plain handle on this cluster (kubeconfig, server, bin_dir, env, kubectl)."""
        if self._cluster is None:
            raise ClusterError("cluster is not started")
        return self._cluster

    @property
    def kubeconfig(self) -> Path:
        return self.handle.kubeconfig

    @property
    def server(self) -> str:
        return self.handle.server

    @property
    def env(self) -> dict[str, str]:
        return self.handle.env

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run `kubectl ARGS` against this cluster (see `Cluster.kubectl`)."""
        return self.handle.kubectl(*args, input=input, check=check, timeout=timeout)

    # -- lifecycle -------------------------------------------------------------------

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _say(self, message: str) -> None:
        if self.log is not None:
            self.log(message)

    def logs_dir(self) -> Path:
        """Where each component's log is, `<directory>/logs/<component>.log`."""
        return self.directory / "logs"

    def pids(self) -> list[int]:
        """Process ids of every component and the watchdog (not their descendants)."""
        pids = [c.process.pid for c in self._components]
        if self._watchdog is not None:
            pids.append(self._watchdog.pid)
        return pids

    def rss_bytes(self) -> dict[str, int]:
        """Resident memory of each running component, from /proc."""
        sizes: dict[str, int] = {}
        page = os.sysconf("SC_PAGE_SIZE")
        for c in self._components:
            try:
                fields = Path(f"/proc/{c.process.pid}/statm").read_text().split()
            except FileNotFoundError:
                continue
            sizes[c.name] = int(fields[1]) * page
        return sizes

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time (user and system) each running component has used, from /proc."""
        seconds: dict[str, float] = {}
        ticks = os.sysconf("SC_CLK_TCK")
        for c in self._components:
            try:
                stat = Path(f"/proc/{c.process.pid}/stat").read_text()
            except FileNotFoundError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            seconds[c.name] = (int(fields[11]) + int(fields[12])) / ticks
        return seconds

    def start(self) -> None:
        """Start every component and wait until the cluster is usable."""
        if self._components:
            raise ClusterError("cluster already started")
        started = time.monotonic()
        if self._directory is None:
            self._directory = Path(tempfile.mkdtemp(prefix="wardgate-cluster-"))
            self._created_dir = True
        else:
            self._directory.mkdir(parents=True, exist_ok=True)
        directory = self._directory
        with _RUNNING_LOCK:
            _RUNNING.add(self)
        _install_signal_handlers()
        try:
            if self.real_node:
                self._slot = node.Slot.take()
            self._start_watchdog()
            if self._slot is not None:
                self._tell_watchdog(f"node {self._slot.number}")
                self._start_real(self.bin_dir, directory, started)
            else:
                self._start(self.bin_dir, directory, started)
        except BaseException:
            self.stop()
            raise

    def _start_watchdog(self) -> None:
        script = resources.files("wardgate.devcluster").joinpath("watchdog.py")
        self._watchdog = subprocess.Popen(
            # The directory is only there to make the process recognisable in `ps`.
            [sys.executable, "-I", str(script), str(self.directory)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            # The watchdog holds the node's slot too, until it has cleaned up after it.
            pass_fds=(self._slot.lock.fileno(),) if self._slot is not None else (),
        )
        if self._created_dir and not self.keep_dir:
            self._tell_watchdog(f"remove {self.directory}")

    def _tell_watchdog(self, line: str) -> None:
        if self._watchdog is None or self._watchdog.stdin is None:
            return
        with contextlib.suppress(BrokenPipeError):
            self._watchdog.stdin.write(f"{line}\n".encode())
            self._watchdog.stdin.flush()

    def _spawn(self, name: str, argv: list[str]) -> _Component:
        log = self.logs_dir() / f"{name}.log"
        component = _Component(name, self._popen(argv, log), log, argv)
        self._components.append(component)
        return component

    def _popen(self, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        with log.open("ab") as out:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                env=env,
                start_new_session=True,
            )
        self._tell_watchdog(f"group {process.pid}")
        return process

    @property
    def addresses(self) -> node.NodeAddresses:
        """The real node's names and address ranges (only with `real_node`)."""
        if self._slot is None:
            raise ClusterError("cluster has no real node running")
        return self._slot.addresses

    @property
    def node_holder_pid(self) -> int:
        """The process holding the real node's namespaces (for `nsenter --target`)."""
        if self._node_holder is None:
            raise ClusterError("cluster has no real node running")
        return self._node_holder

    @property
    def etcd_url(self) -> str:
        """The client URL of the cluster's etcd (its store, behind the API server)."""
        if self._etcd_url is None:
            raise ClusterError("cluster is not started")
        return self._etcd_url

    def _component(self, name: str) -> int:
        for index, c in enumerate(self._components):
            if c.name == name:
                return index
        raise ClusterError(f"no component {name!r}; there are {[c.name for c in self._components]}")

    def stop_component(self, name: str, *, grace: float = STOP_GRACE_SECONDS) -> None:
        """Stop one component (SIGTERM, SIGKILL after `grace` seconds) and leave it stopped
        until `start_component`; the others keep running.

        kube-apiserver stops listening within milliseconds of SIGTERM but, while other
        components stay connected, its process lingers until killed: a short `grace` makes
        its restart quick.
        """
        c = self._components[self._component(name)]
        if not c.stopped:
            _terminate_group(c.process, grace)
            self._tell_watchdog(f"forget {c.process.pid}")
            c.stopped = True

    def start_component(self, name: str) -> None:
        """Start a component stopped by `stop_component` again, with the same flags, and
        return once the API server is ready and every node Ready."""
        index = self._component(name)
        c = self._components[index]
        if c.stopped:
            self._components[index] = replace(c, process=self._popen(c.argv, c.log), stopped=False)
        self._wait_ready()

    def restart_component(self, name: str, *, grace: float = STOP_GRACE_SECONDS) -> None:
        """Stop one component and start it again with the same flags (a restarted
        kube-apiserver serves on the same port); return once the cluster is usable again."""
        self.stop_component(name, grace=grace)
        self.start_component(name)

    def _wait_ready(self) -> None:
        api = self._api
        if api is None:
            raise ClusterError("cluster is not started")
        self._wait("the API server to be ready", lambda: api.request("GET", "/readyz")[0] == 200)
        nodes = [f"/api/v1/nodes/{name}" for name in self.node_names]
        self._wait(
            "the nodes to be Ready",
            lambda: all(_node_ready(api.request("GET", path)[1]) for path in nodes),
        )

    def _start(self, bin_dir: Path, directory: Path, started: float) -> None:
        self.logs_dir().mkdir(parents=True, exist_ok=True)
        etcd_port, peer_port, api_port = _free_port(), _free_port(), _free_port()
        server = f"https://127.0.0.1:{api_port}"
        certs = pki.build_pki(directory / "pki", service_ip=SERVICE_IP, clients=_CLIENTS)
        kubeconfig = directory / "kubeconfig"
        _write_kubeconfig(kubeconfig, server, certs.ca.cert, ADMIN_USER, certs.clients[ADMIN_USER])
        component_configs: dict[str, Path] = {}
        for user in _CLIENTS:
            if user == ADMIN_USER:
                continue
            path = directory / f"{user.rpartition(':')[2]}.kubeconfig"
            _write_kubeconfig(path, server, certs.ca.cert, user, certs.clients[user])
            component_configs[user] = path
        # A discovery cache of its own: local clusters reuse ports, and a cache in
        # ~/.kube keyed by host and port would describe a previous cluster's APIs.
        self._cluster = Cluster(
            kubeconfig=kubeconfig,
            server=server,
            bin_dir=bin_dir,
            kube_cache_dir=directory / "kube-cache",
        )

        etcd_url = f"http://127.0.0.1:{etcd_port}"
        self._etcd_url = etcd_url
        peer_url = f"http://127.0.0.1:{peer_port}"
        self._say(f"starting etcd on {etcd_url} and kube-apiserver on {server}")
        self._spawn(
            "etcd",
            [
                str(bin_dir / "etcd"),
                "--name=default",
                f"--data-dir={directory / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                # A throwaway store: durability buys nothing and fsync costs seconds.
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        # kube-apiserver retries etcd until it answers, so both start at once.
        self._spawn(
            "kube-apiserver",
            [
                str(bin_dir / "kube-apiserver"),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                # The `kubernetes` Service may not point at a loopback address, and
                # nothing runs inside this cluster to reach it anyway.
                "--endpoint-reconciler-type=none",
                f"--secure-port={api_port}",
                f"--cert-dir={directory / 'pki'}",
                f"--tls-cert-file={certs.apiserver.cert}",
                f"--tls-private-key-file={certs.apiserver.key}",
                f"--client-ca-file={certs.ca.cert}",
                "--authorization-mode=Node,RBAC",
                f"--service-account-issuer={server}",
                f"--service-account-key-file={certs.service_account_pub}",
                f"--service-account-signing-key-file={certs.service_account_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--allow-privileged=true",
                "--profiling=false",
                "--v=1",
            ],
        )
        api = _Api(server, certs.ca.cert, certs.clients[ADMIN_USER])
        self._api = api
        self._wait("the API server to be ready", lambda: api.request("GET", "/readyz")[0] == 200)
        self.times.api_ready = time.monotonic() - started
        self._say(f"API server ready after {self.times.api_ready:.1f} s")

        self._spawn(
            "kube-controller-manager",
            [
                str(bin_dir / "kube-controller-manager"),
                f"--kubeconfig={component_configs['system:kube-controller-manager']}",
                "--controllers=*",
                # The node-lifecycle controller lifts the not-ready taint that admission
                # puts on a new Node; checking often makes that quick. A long grace period
                # keeps a busy machine that delays kwok's lease renewals from tainting
                # the node and evicting the Pods of a running test.
                "--node-monitor-period=1s",
                "--node-monitor-grace-period=2m",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={certs.service_account_key}",
                f"--root-ca-file={certs.ca.cert}",
                f"--cluster-signing-cert-file={certs.ca.cert}",
                f"--cluster-signing-key-file={certs.ca.key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--leader-elect=false",
                "--secure-port=0",
                "--profiling=false",
                "--v=1",
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                str(bin_dir / "kube-scheduler"),
                f"--kubeconfig={component_configs['system:kube-scheduler']}",
                "--leader-elect=false",
                "--secure-port=0",
                "--profiling=false",
                "--v=1",
            ],
        )
        kwok_config = directory / "kwok.yaml"
        kwok_config.write_text(
            resources.files("wardgate.devcluster").joinpath("kwok-stages.yaml").read_text()
        )
        self._spawn(
            "kwok",
            [
                str(bin_dir / "kwok"),
                f"--kubeconfig={component_configs['kwok-controller']}",
                f"--config={kwok_config}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={NODE_ANNOTATION}=fake",
                f"--cidr={POD_CIDR}",
                "--node-lease-duration-seconds=40",
            ],
        )
        for name in self.node_names:
            status, body = api.request("POST", "/api/v1/nodes", _node(name))
            if status != 201:
                raise ClusterError(f"creating node {name} failed: {status} {body}")

        self._wait_until_usable(api, started, "the fake node to be Ready (kwok)")

    def _start_real(self, bin_dir: Path, directory: Path, started: float) -> None:
        """A control plane and a real node, all in the node's namespaces but the
        controller manager and the scheduler (see `wardgate.devcluster.node`)."""
        assert self._slot is not None
        a = self._slot.addresses
        self.logs_dir().mkdir(parents=True, exist_ok=True)
        node_dir = directory / "node"
        node_dir.mkdir(parents=True, exist_ok=True)
        procs = node.create_cgroups(a)
        holder = node.start_namespaces(a, procs, self.logs_dir() / "namespaces.log")
        self._components.append(
            _Component("namespaces", holder, self.logs_dir() / "namespaces.log", [])
        )
        self._tell_watchdog(f"group {holder.pid}")
        own_net = os.readlink("/proc/self/ns/net")

        def holder_inside() -> bool:
            try:
                return os.readlink(f"/proc/{holder.pid}/ns/net") != own_net
            except OSError:
                return False

        self._wait("the node's namespaces", holder_inside)
        self._node_holder = holder.pid
        self._node_procs = procs
        node.set_up_network(a, holder.pid, node_dir)

        etcd_port, peer_port, api_port = 2379, 2380, 6443
        server = f"https://{a.node_ip}:{api_port}"
        clients = {**_CLIENTS, **_NODE_CLIENTS}
        clients.pop("kwok-controller")
        certs = pki.build_pki(
            directory / "pki", service_ip=a.service_ip, clients=clients, server_ips=(a.node_ip,)
        )
        kubeconfig = directory / "kubeconfig"
        _write_kubeconfig(kubeconfig, server, certs.ca.cert, ADMIN_USER, certs.clients[ADMIN_USER])
        configs: dict[str, Path] = {}
        for user in clients:
            if user == ADMIN_USER:
                continue
            path = directory / f"{user.rpartition(':')[2]}.kubeconfig"
            _write_kubeconfig(path, server, certs.ca.cert, user, certs.clients[user])
            configs[user] = path
        (node_dir / "kube-proxy.kubeconfig").write_bytes(configs["system:kube-proxy"].read_bytes())
        (node_dir / "coredns.kubeconfig").write_bytes(configs["wardgate:coredns"].read_bytes())
        self._cluster = Cluster(
            kubeconfig=kubeconfig,
            server=server,
            bin_dir=bin_dir,
            kube_cache_dir=directory / "kube-cache",
        )

        def inside(argv: list[str]) -> list[str]:
            return node.enter(holder.pid, procs, argv)

        etcd_url = f"http://{a.node_ip}:{etcd_port}"
        self._etcd_url = etcd_url
        peer_url = f"http://127.0.0.1:{peer_port}"
        self._say(f"starting etcd and kube-apiserver on {server} (node slot {a.slot})")
        self._spawn(
            "etcd",
            inside(
                [
                    str(bin_dir / "etcd"),
                    "--name=default",
                    f"--data-dir={directory / 'etcd'}",
                    f"--listen-client-urls={etcd_url}",
                    f"--advertise-client-urls={etcd_url}",
                    f"--listen-peer-urls={peer_url}",
                    f"--initial-advertise-peer-urls={peer_url}",
                    f"--initial-cluster=default={peer_url}",
                    "--unsafe-no-fsync",
                    "--log-level=warn",
                ]
            ),
        )
        kubelet_client = certs.clients["wardgate:apiserver-kubelet-client"]
        self._spawn(
            "kube-apiserver",
            inside(
                [
                    str(bin_dir / "kube-apiserver"),
                    f"--etcd-servers={etcd_url}",
                    f"--bind-address={a.node_ip}",
                    # Pods reach it through the `kubernetes` Service, whose endpoint
                    # this is.
                    f"--advertise-address={a.node_ip}",
                    f"--secure-port={api_port}",
                    f"--cert-dir={directory / 'pki'}",
                    f"--tls-cert-file={certs.apiserver.cert}",
                    f"--tls-private-key-file={certs.apiserver.key}",
                    f"--client-ca-file={certs.ca.cert}",
                    f"--kubelet-client-certificate={kubelet_client.cert}",
                    f"--kubelet-client-key={kubelet_client.key}",
                    "--kubelet-preferred-address-types=InternalIP",
                    "--authorization-mode=Node,RBAC",
                    f"--service-account-issuer={server}",
                    f"--service-account-key-file={certs.service_account_pub}",
                    f"--service-account-signing-key-file={certs.service_account_key}",
                    f"--service-cluster-ip-range={a.service_cidr}",
                    "--allow-privileged=true",
                    "--profiling=false",
                    "--v=1",
                ]
            ),
        )
        configs_node = node.write_configs(
            a,
            node_dir,
            ca=certs.ca.cert,
            kubelet_kubeconfig=configs[f"system:node:{node.NODE_NAME}"],
            pause_image=node.pause_image(),
        )
        self._spawn(
            "containerd",
            inside(["containerd", f"--config={configs_node['containerd']}", "--log-level=warn"]),
        )
        api = _Api(server, certs.ca.cert, certs.clients[ADMIN_USER])
        self._api = api
        self._wait("the API server to be ready", lambda: api.request("GET", "/readyz")[0] == 200)
        self.times.api_ready = time.monotonic() - started
        self._say(f"API server ready after {self.times.api_ready:.1f} s")
        self._spawn(
            "kube-controller-manager",
            [
                str(bin_dir / "kube-controller-manager"),
                f"--kubeconfig={configs['system:kube-controller-manager']}",
                "--controllers=*",
                "--node-monitor-period=1s",
                "--node-monitor-grace-period=2m",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={certs.service_account_key}",
                f"--root-ca-file={certs.ca.cert}",
                f"--cluster-signing-cert-file={certs.ca.cert}",
                f"--cluster-signing-key-file={certs.ca.key}",
                f"--service-cluster-ip-range={a.service_cidr}",
                "--leader-elect=false",
                "--secure-port=0",
                "--profiling=false",
                "--v=1",
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                str(bin_dir / "kube-scheduler"),
                f"--kubeconfig={configs['system:kube-scheduler']}",
                "--leader-elect=false",
                "--secure-port=0",
                "--profiling=false",
                "--v=1",
            ],
        )
        socket = configs_node["socket"]
        self._wait("containerd to listen", socket.exists)
        node.import_images(holder.pid, socket, list(self.image_archives))
        self._spawn(
            "kubelet",
            inside(
                [
                    str(bin_dir / "kubelet"),
                    f"--config={configs_node['kubelet']}",
                    f"--kubeconfig={configs_node['kubelet-kubeconfig']}",
                    f"--root-dir={configs_node['kubelet-root']}",
                    f"--hostname-override={node.NODE_NAME}",
                    f"--node-ip={a.node_ip}",
                    "--v=1",
                ]
            ),
        )
        self._spawn(
            "kube-proxy",
            inside(
                [
                    str(bin_dir / "kube-proxy"),
                    f"--config={configs_node['kube-proxy']}",
                    "--v=1",
                ]
            ),
        )
        self._spawn(
            "coredns",
            inside([str(bin_dir / "coredns"), "-conf", str(configs_node["corefile"])]),
        )
        for kind, collection, obj in node.dns_objects(a):
            status, body = api.request("POST", collection, obj)
            if status not in (201, 409):
                raise ClusterError(f"creating the cluster DNS's {kind} failed: {status} {body}")
        self._wait_until_usable(api, started, "the node to be Ready (kubelet)")

    def _wait_until_usable(self, api: _Api, started: float, node_ready: str) -> None:
        """Wait for the nodes to be Ready, then for the controller manager: it runs when
        the node-lifecycle controller has lifted the not-ready taint (so Pods can be
        scheduled) and the service-account controller has created `default` in `default`
        (so Pods are admitted there)."""
        nodes = [f"/api/v1/nodes/{name}" for name in self.node_names]
        self._wait(
            node_ready, lambda: all(_node_ready(api.request("GET", path)[1]) for path in nodes)
        )
        self.times.node_ready = time.monotonic() - started
        self._say(f"node Ready after {self.times.node_ready:.1f} s")
        self._wait(
            "the controller manager to make the node schedulable",
            lambda: all(_node_schedulable(api.request("GET", path)[1]) for path in nodes),
        )
        self._wait(
            "the controller manager to create the default service account",
            lambda: (
                api.request("GET", "/api/v1/namespaces/default/serviceaccounts/default")[0] == 200
            ),
        )
        self.times.controllers_ready = time.monotonic() - started
        self._say(f"cluster ready after {self.times.controllers_ready:.1f} s")

    def _wait(self, what: str, condition: Callable[[], bool]) -> None:
        """Poll `condition` until true; fail with the logs if a component exits or time
        runs out."""
        deadline = time.monotonic() + self.startup_timeout
        while True:
            for c in self._components:
                if not c.stopped and c.process.poll() is not None:
                    raise ClusterError(
                        f"{c.name} exited with {c.process.returncode} while waiting for "
                        f"{what}\n{self.describe_logs()}"
                    )
            if condition():
                return
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"timed out after {self.startup_timeout:.0f} s waiting for {what}\n"
                    f"{self.describe_logs()}"
                )
            # Polling interval between two checks of the awaited condition.
            time.sleep(0.1)

    def describe_logs(self) -> str:
        """The last lines of each component's log, for failure messages."""
        parts = []
        for c in self._components:
            parts.append(f"----- {c.name} ({c.log}) -----\n{_tail(c.log)}")
        return "\n".join(parts)

    def wait_for_exit(self) -> str:
        """Block until some component exits and return its name (for a supervisor)."""
        by_pid = {c.process.pid: c.name for c in self._components}
        if not by_pid:
            raise ClusterError("cluster is not started")
        while True:
            # WNOWAIT leaves the child for its Popen to reap with its exit status.
            result = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT)
            if result is None:
                continue
            if result.si_pid in by_pid:
                return by_pid[result.si_pid]
            # Some other child of this process: reap it so that it is not reported again.
            os.waitpid(result.si_pid, 0)

    def stop(self) -> None:
        """Terminate every component's process group and remove the directory. Idempotent."""
        # In reverse start order, one at a time: the clients first, then kube-apiserver
        # while etcd still answers (without it the API server's graceful shutdown hangs
        # until killed), then etcd. A component leaves the list only once it is gone, so
        # a stop interrupted by a second Ctrl-C is finished by the next call (atexit).
        while self._components:
            c = self._components[-1]
            if not c.stopped:
                _terminate_group(c.process)
            self._components.pop()
        if self._slot is not None:
            # containerd's shims and the containers are in no component's group.
            watchdog.cleanup_slot(self._slot.number)
            self._slot.release()
            self._slot = None
            self._node_holder = None
        if self._created_dir and not self.keep_dir and self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
        if self._watchdog is not None:
            self._tell_watchdog("done")
            stdin: IO[bytes] | None = self._watchdog.stdin
            if stdin is not None:
                with contextlib.suppress(BrokenPipeError):
                    stdin.close()
            self._watchdog.wait()
            self._watchdog = None
        self._cluster = None
        self._api = None
        self._etcd_url = None
        with _RUNNING_LOCK:
            _RUNNING.discard(self)


def _terminate_group(process: subprocess.Popen[bytes], grace: float = STOP_GRACE_SECONDS) -> None:
    """SIGTERM to the process's group, SIGKILL after `grace` seconds; wait for it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace)
    # Also catches anything the component left in its group.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _node_ready(node: Any) -> bool:
    # Before kubelet registers the node, the answer is a Status whose `status` is a string.
    if not isinstance(node, dict) or node.get("kind") != "Node":
        return False
    conditions = node.get("status", {}).get("conditions", [])
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _node_schedulable(node: Any) -> bool:
    if not isinstance(node, dict) or node.get("kind") != "Node":
        return False
    taints = node.get("spec", {}).get("taints", [])
    return not node.get("spec", {}).get("unschedulable") and not any(
        t.get("effect") in ("NoSchedule", "NoExecute") for t in taints
    )


def _node(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
            },
        },
        "status": {
            # Room for the scale bench's 200 Gateways' pods and more (a kubelet's default,
            # 110, left 90 of them Pending).
            "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "1000"},
            "capacity": {"cpu": "32", "memory": "256Gi", "pods": "1000"},
        },
    }
