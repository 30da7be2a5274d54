"""The real node's isolation: several clusters side by side, each in namespaces of its own,
and nothing left on the host when one goes, even when its owner is killed (the watchdog
ends the node's containers, cgroups and veth pair; the namespaces, with their firewall
rules, sysctls and mounts, go with their last process)."""

from __future__ import annotations

import fcntl
import subprocess
from pathlib import Path

import pytest

from tests.support.host import killed_owner, processes_mentioning
from tests.support.real_node import host_traces
from wardgate.devcluster import node
from wardgate.devcluster.cluster import LocalCluster, wait_until

pytestmark = pytest.mark.cluster

# Global kernel settings kubelet and kube-proxy would change if they could reach them.
HOST_SYSCTLS = (
    "vm/overcommit_memory",
    "kernel/panic",
    "kernel/panic_on_oops",
    "net/ipv4/ip_forward",
)


def _sysctls() -> dict[str, str]:
    return {name: Path(f"/proc/sys/{name}").read_text().strip() for name in HOST_SYSCTLS}


def _slot_free(slot: int) -> bool:
    with (node.SLOT_DIR / f"slot-{slot}.lock").open("wb") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


def test_a_killed_owner_of_a_real_node_leaves_nothing_on_the_host(
    node_cluster: LocalCluster,
) -> None:
    """A second real-node cluster beside the session's, with a running pod; its owner is
    killed; the watchdog leaves the host as it was."""
    sysctls = _sysctls()
    script = (
        "import sys\n"
        "from wardgate.devcluster import node\n"
        "from wardgate.devcluster.cluster import LocalCluster\n"
        "c = LocalCluster(real_node=True)\n"
        "c.start()\n"
        "c.kubectl('run', 'sleeper', f'--image={node.pause_image()}', '--restart=Never')\n"
        "c.kubectl('wait', '--for=condition=Ready', 'pod/sleeper', '--timeout=120s')\n"
        "print(c.directory, c.addresses.slot, flush=True)\n"
        "sys.stdin.read()\n"
    )
    with killed_owner(script) as line:
        directory, slot = line[0], int(line[1])
        # Side by side with the session's cluster, on addresses of its own.
        assert slot != node_cluster.addresses.slot
        assert host_traces(slot)  # its cgroups, veth pair and routes
        assert processes_mentioning(directory)
    wait_until(
        lambda: not processes_mentioning(directory) and not Path(directory).exists(),
        what="the watchdog to clean up",
        timeout=60,
    )
    wait_until(lambda: _slot_free(slot), what="the slot to be released", timeout=30)
    assert host_traces(slot) == []
    assert _sysctls() == sysctls
    mounts = Path("/proc/self/mountinfo").read_text()
    assert directory not in mounts
    # The session's cluster is untouched.
    node_cluster.kubectl("get", "--raw", "/readyz")


def test_the_nodes_settings_stay_in_its_namespaces(node_cluster: LocalCluster) -> None:
    """kube-proxy's rules are in the node's network namespace, none on the host."""
    host_rules = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True)
    assert "KUBE-SERVICES" not in host_rules.stdout
    holder = node_cluster.node_holder_pid
    node_rules = subprocess.run(
        ["nsenter", f"--target={holder}", "--net", "iptables-save"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "KUBE-SERVICES" in node_rules.stdout
