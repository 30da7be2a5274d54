"""What a real node may leave on the host, and the README's shell blocks, for the tests
that run the local cluster's real node."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from wardgate.devcluster import node

ROOT = Path(__file__).resolve().parents[2]


def readme_block(heading: str) -> str:
    """The first ```sh block under a `## heading` of the README."""
    text = (ROOT / "README.md").read_text()
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match, f"no sh block under '## {heading}' in README.md"
    return match.group(1)


def host_traces(slot: int) -> list[str]:
    """What a node's slot could leave on the host: cgroups, its veth, routes, rules."""
    addresses = node.NodeAddresses(slot)
    traces = [str(p) for p in Path("/sys/fs/cgroup").glob(f"*/{addresses.cgroup}")]
    if addresses.run_dir.exists():
        traces.append(str(addresses.run_dir))
    if Path(f"/sys/class/net/{addresses.host_link}").exists():
        traces.append(f"link {addresses.host_link}")
    routes = subprocess.run(["ip", "route"], capture_output=True, text=True, check=True).stdout
    traces.extend(line for line in routes.splitlines() if addresses.host_link in line)
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    traces.extend(
        line for line in rules.splitlines() if "KUBE-" in line or addresses.pod_cidr in line
    )
    return traces
