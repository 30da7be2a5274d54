"""A real Kubernetes node for the local cluster, isolated in namespaces it creates.

The node's processes (containerd with runc and the CNI bridge, kubelet, kube-proxy in
iptables mode, CoreDNS) and the API server and etcd run in a network and mount namespace
held by one `unshare` process. The host only gets one end of a veth pair, with routes to
the node's pod and Service ranges through it; firewall rules, sysctls and mounts all live
inside the namespaces and vanish with them. Every process of the node (and every
container) is in the cgroup `wardgate-node-<slot>`, so that `cleanup_slot` (also run by
the watchdog when the owner is killed) finds and ends them all.

Several clusters run side by side: each takes a free slot (a file lock held as long as
the cluster, or its watchdog, lives) and derives its interface names, addresses and
cgroup from it. All addresses are in 10.248.0.0/14, inside the namespaces and on the
host end of the veth; nothing is routed off the machine.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import IO, Any

from wardgate.devcluster import watchdog

NODE_NAME = "wardgate-node"
SLOTS = 64
# Fixed, not under $TMPDIR: every cluster on the machine must see the same locks.
SLOT_DIR = Path("/run/wardgate-node-slots")
CNI_BIN_DIR = Path("/usr/lib/cni")
# What the node needs from Debian (hack/install-system-deps.sh installs them).
HOST_COMMANDS = ("containerd", "runc", "ctr", "iptables", "conntrack", "unshare", "nsenter", "ip")
# Kernel settings kubelet insists on (it writes them when they differ). They are global,
# so the node's mount namespace gets files with kubelet's values mounted over them and
# the host's stay untouched.
KUBELET_KERNEL_VALUES = {
    "vm/overcommit_memory": "1",
    "kernel/panic": "10",
    "kernel/panic_on_oops": "1",
}


def image_cache() -> Path:
    """Where hack/build-image.sh leaves image archives: `$WARDGATE_IMAGE_CACHE` or
    `~/.cache/wardgate/image`."""
    configured = os.environ.get("WARDGATE_IMAGE_CACHE")
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "wardgate" / "image"


def pause_version() -> str:
    text = resources.files("wardgate.devcluster").joinpath("versions.json").read_text()
    version: str = json.loads(text)["pause"]
    return version


def pause_image() -> str:
    """The sandbox image's reference, as hack/build-image.sh tags it."""
    return f"localhost/wardgate-pause:{pause_version()}"


def pause_archive() -> Path:
    return image_cache() / f"pause-{pause_version()}.tar"


class NodeError(RuntimeError):
    """The node could not be set up."""


def local_image_archives() -> tuple[Path, ...]:
    """The project's image archive from a source checkout, built by hack/build-image.sh
    unless up to date (the pause image with it); none outside a checkout."""
    script = Path(__file__).resolve().parents[2] / "hack" / "build-image.sh"
    if not script.is_file():
        return ()
    result = subprocess.run(
        ["bash", str(script)], capture_output=True, text=True, timeout=3600, check=False
    )
    if result.returncode != 0:
        raise NodeError(f"hack/build-image.sh failed:\n{result.stderr[-4000:]}")
    values = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    return (Path(values["image_archive"]),)


@dataclass(frozen=True)
class NodeAddresses:
    """The names and addresses a slot owns."""

    slot: int

    @property
    def host_link(self) -> str:
        return f"wgh{self.slot}"

    @property
    def node_link(self) -> str:
        return f"wgn{self.slot}"

    @property
    def host_ip(self) -> str:
        """The host's end of the veth pair."""
        return f"10.250.{self.slot}.1"

    @property
    def node_ip(self) -> str:
        """The node's address: kubelet, the API server, etcd and CoreDNS listen on it."""
        return f"10.250.{self.slot}.2"

    @property
    def pod_cidr(self) -> str:
        return f"10.251.{self.slot}.0/24"

    @property
    def service_cidr(self) -> str:
        return f"10.249.{self.slot}.0/24"

    @property
    def service_ip(self) -> str:
        """The `kubernetes` Service: the first address of the Service range."""
        return f"10.249.{self.slot}.1"

    @property
    def dns_ip(self) -> str:
        return f"10.249.{self.slot}.10"

    @property
    def cgroup(self) -> str:
        return watchdog.node_cgroup(self.slot)

    @property
    def run_dir(self) -> Path:
        """Short paths for the node's sockets and kubelet's directory (a Unix socket path
        has at most 107 bytes; the cluster's directory may be deep under $TMPDIR)."""
        return watchdog.node_run_dir(self.slot)


def missing_host_commands() -> list[str]:
    """The host commands the node needs that are not installed."""
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    return [
        name
        for name in HOST_COMMANDS
        if not any(os.access(Path(d) / name, os.X_OK) for d in path.split(":") if d)
    ]


class Slot:
    """An exclusive slot, held by a lock on a file until `release` (or process exit)."""

    def __init__(self, number: int, lock: IO[bytes]) -> None:
        self.number = number
        self.lock = lock
        self.addresses = NodeAddresses(number)

    @classmethod
    def take(cls) -> Slot:
        """Take the first free slot, after cleaning up what a dead owner left in it."""
        SLOT_DIR.mkdir(parents=True, exist_ok=True)
        for number in range(SLOTS):
            lock = (SLOT_DIR / f"slot-{number}.lock").open("wb")
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                continue
            # Free, but a cluster whose owner and watchdog were both killed may have
            # left processes, cgroups or its veth pair behind.
            watchdog.cleanup_slot(number)
            return cls(number, lock)
        raise NodeError(f"all {SLOTS} node slots are taken (locks in {SLOT_DIR})")

    def release(self) -> None:
        self.lock.close()


def _run(*argv: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if result.returncode != 0:
        raise NodeError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")


def _cgroup_hierarchies() -> list[Path]:
    return [p for p in Path("/sys/fs/cgroup").iterdir() if p.is_dir() and not p.is_symlink()]


def create_cgroups(addresses: NodeAddresses) -> Path:
    """Create the node's cgroup in every hierarchy; return the `pids` one's process list
    (of its `node` child) that node processes join."""
    for hierarchy in _cgroup_hierarchies():
        root = hierarchy / addresses.cgroup
        root.mkdir(exist_ok=True)
        if (hierarchy / "cpuset.cpus").exists():
            # A new cpuset cgroup starts empty and accepts no process until given CPUs.
            for name in ("cpuset.cpus", "cpuset.mems"):
                (root / name).write_text((hierarchy / name).read_text())
    pids = Path("/sys/fs/cgroup/pids")
    if not pids.is_dir():
        pids = Path("/sys/fs/cgroup")
    node_group = pids / addresses.cgroup / "node"
    node_group.mkdir(exist_ok=True)
    return node_group / "cgroup.procs"


def start_namespaces(addresses: NodeAddresses, procs: Path, log: Path) -> subprocess.Popen[bytes]:
    """Start the process that holds the node's network and mount namespaces."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                "sh",
                "-c",
                f"echo $$ > {procs} && exec unshare --net --mount --propagation private "
                "sleep infinity",
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def enter(holder: int, procs: Path, argv: list[str]) -> list[str]:
    """The command line that runs `argv` in the node's cgroup and namespaces."""
    return [
        "sh",
        "-c",
        f'echo $$ > {procs} && exec nsenter --target {holder} --net --mount -- "$@"',
        "node",
        *argv,
    ]


def set_up_network(addresses: NodeAddresses, holder: int, directory: Path) -> None:
    """The veth pair, the node's addresses, routes and settings, and its private mounts."""
    a = addresses

    def inside(*argv: str) -> None:
        _run("nsenter", f"--target={holder}", "--net", "--mount", "--", *argv)

    _run("ip", "link", "add", a.host_link, "type", "veth", "peer", "name", a.node_link,
         "netns", str(holder))  # fmt: skip
    _run("ip", "addr", "add", f"{a.host_ip}/24", "dev", a.host_link)
    _run("ip", "link", "set", a.host_link, "up")
    inside("ip", "link", "set", "lo", "up")
    inside("ip", "addr", "add", f"{a.node_ip}/24", "dev", a.node_link)
    inside("ip", "link", "set", a.node_link, "up")
    for cidr in (a.pod_cidr, a.service_cidr):
        _run("ip", "route", "add", cidr, "via", a.node_ip, "dev", a.host_link)
    # Per network namespace since Linux 5.3: the node routes between its pods, the host
    # and its Services; bridged pod traffic passes kube-proxy's rules.
    inside("sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
    inside("sysctl", "-q", "-w", "net.bridge.bridge-nf-call-iptables=1")
    # Private in the mount namespace: shim sockets, CNI's cache, pod logs.
    for target in ("/run/containerd", "/var/lib/cni", "/var/log/pods"):
        Path(target).mkdir(parents=True, exist_ok=True)
        inside("mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", target)
    values = directory / "kernel-values"
    values.mkdir(exist_ok=True)
    for name, value in KUBELET_KERNEL_VALUES.items():
        file = values / name.replace("/", ".")
        file.write_text(f"{value}\n")
        inside("mount", "--bind", str(file), f"/proc/sys/{name}")


def write_configs(
    addresses: NodeAddresses,
    directory: Path,
    *,
    ca: Path,
    kubelet_kubeconfig: Path,
    pause_image: str,
) -> dict[str, Path]:
    """containerd's, CNI's, kubelet's, kube-proxy's and CoreDNS's configuration files."""
    a = addresses
    directory.mkdir(parents=True, exist_ok=True)
    cni_dir = directory / "cni"
    cni_dir.mkdir(exist_ok=True)
    containerd = directory / "containerd.toml"
    a.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    socket = a.run_dir / "containerd.sock"
    containerd.write_text(
        f"""version = 2
root = "{directory / "containerd"}"
state = "{directory / "containerd-state"}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "{socket}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause_image}"
  enable_selinux = false
  # kubelet asks for -998 for sandboxes; lowering a score needs CAP_SYS_RESOURCE, which
  # not every host grants root. Scores then stay at least this process's own.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{cni_dir}"
"""
    )
    (cni_dir / "10-wardgate.conflist").write_text(
        f"""{{
  "cniVersion": "1.0.0",
  "name": "wardgate",
  "plugins": [
    {{
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {{
        "type": "host-local",
        "ranges": [[{{"subnet": "{a.pod_cidr}"}}]],
        "routes": [{{"dst": "0.0.0.0/0"}}],
        "dataDir": "{directory / "ipam"}"
      }}
    }},
    {{"type": "portmap", "capabilities": {{"portMappings": true}}}}
  ]
}}
"""
    )
    resolv = directory / "resolv.conf"
    # Pods with dnsPolicy Default get this: no resolver, so no name leaves the node.
    resolv.write_text("options ndots:1\n")
    kubelet = directory / "kubelet.yaml"
    kubelet.write_text(
        f"""apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine's cgroups are v1 (with a hybrid cgroup2 mount); kubelet refuses that unless told.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /{a.cgroup}
containerRuntimeEndpoint: unix://{socket}
address: {a.node_ip}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: {ca}}}
authorization: {{mode: Webhook}}
clusterDomain: cluster.local
clusterDNS: [{a.dns_ip}]
resolvConf: {resolv}
failSwapOn: false
# Secret and ConfigMap volumes follow their objects on each pod sync.
syncFrequency: 5s
fileCheckFrequency: 5s
evictionHard: {{memory.available: 50Mi, nodefs.available: 1%, imagefs.available: 1%,
  nodefs.inodesFree: 1%}}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
kubeAPIQPS: 50
kubeAPIBurst: 100
"""
    )
    proxy = directory / "kube-proxy.yaml"
    proxy.write_text(
        f"""apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {{kubeconfig: {directory / "kube-proxy.kubeconfig"}}}
hostnameOverride: {NODE_NAME}
mode: iptables
clusterCIDR: {a.pod_cidr}
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# Zero leaves the kernel's conntrack settings alone: some are global, not per namespace.
conntrack: {{maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}}
iptables: {{syncPeriod: 30s, minSyncPeriod: 0s}}
"""
    )
    corefile = directory / "Corefile"
    # Cluster names only: no `forward`, so no query leaves the node.
    corefile.write_text(
        f"""cluster.local:53 in-addr.arpa:53 ip6.arpa:53 {{
    bind {a.node_ip}
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {directory / "coredns.kubeconfig"}
        pods insecure
        ttl 5
    }}
    cache 5
}}
"""
    )
    return {
        "containerd": containerd,
        "socket": socket,
        "kubelet": kubelet,
        "kube-proxy": proxy,
        "corefile": corefile,
        "kubelet-kubeconfig": kubelet_kubeconfig,
        "kubelet-root": a.run_dir / "kubelet",
    }


def import_images(holder: int, socket: Path, archives: list[Path]) -> None:
    """Import image archives into the node's containerd (namespace k8s.io)."""
    for archive in archives:
        _run(
            "nsenter", f"--target={holder}", "--net", "--mount", "--",
            "ctr", f"--address={socket}", "--namespace=k8s.io", "images", "import",
            str(archive),
        )  # fmt: skip


def dns_objects(addresses: NodeAddresses) -> list[tuple[str, str, dict[str, Any]]]:
    """The `kube-dns` Service and its endpoints (CoreDNS runs on the node's address), as
    (kind, collection path, object)."""
    ports = [
        {"name": "dns", "port": 53, "protocol": "UDP"},
        {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
    ]
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "kube-dns", "namespace": "kube-system"},
        "spec": {"clusterIP": addresses.dns_ip, "ports": [{**p, "targetPort": 53} for p in ports]},
    }
    endpoints = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "kube-dns-node",
            "namespace": "kube-system",
            "labels": {
                "kubernetes.io/service-name": "kube-dns",
                "endpointslice.kubernetes.io/managed-by": "dev-cluster.wardgate.io",
            },
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [addresses.node_ip], "conditions": {"ready": True}}],
        "ports": ports,
    }
    return [
        ("Service", "/api/v1/namespaces/kube-system/services", service),
        (
            "EndpointSlice",
            "/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices",
            endpoints,
        ),
    ]
