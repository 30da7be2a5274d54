"""Cleans up after a cluster whose owning Python process died without stopping it.

Run as a script (standard library only, nothing imported from the package), with the
cluster's directory as its argument so that `ps` shows what it guards, and with the
owner holding the write end of a pipe that is this process's standard input. The owner
writes one command a line:

    group <pgid>    a component's process group, to terminate if the owner dies
    forget <pgid>   a group the owner stopped itself (a restarted component)
    remove <path>   a directory to delete if the owner dies
    node <slot>     a real node's slot to clean up if the owner dies (see `cleanup_slot`)
    done            the owner cleaned up itself; exit without doing anything

End of input without `done` means the owner is gone (killed, crashed): terminate every
group, wait for them, and remove the directories. A normal stop, a failed test and
Ctrl-C are handled by the owner; this covers SIGKILL and interpreter crashes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

GRACE_SECONDS = 10.0


def group_alive(pgid: int) -> bool:
    """Whether any process of the group still runs. Zombies do not count: the groups'
    processes are orphans once the owner died, and their new parent may reap them late."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # Fields after the parenthesised command name: state, ppid, pgrp, ...
        fields = stat.rpartition(")")[2].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def terminate_groups(groups: list[int]) -> None:
    """Stop the groups in reverse start order, each with SIGTERM and then SIGKILL after
    the grace period (the API server shuts down quickly only while etcd still runs)."""
    for pgid in reversed(groups):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + GRACE_SECONDS
        while group_alive(pgid) and time.monotonic() < deadline:
            # Not synchronisation with anything we could wait on: the groups are not
            # our children, so polling their existence is the only way to see them go.
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)


def node_cgroup(slot: int) -> str:
    """The cgroup (in every hierarchy) of a real node's processes and containers."""
    return f"wardgate-node-{slot}"


def node_run_dir(slot: int) -> Path:
    """A real node's sockets and kubelet's directory, on short paths."""
    return Path(f"/run/wardgate-node-{slot}")


def _cgroup_pids(root: Path) -> set[int]:
    pids: set[int] = set()
    for procs in root.rglob("cgroup.procs"):
        with contextlib.suppress(OSError, ValueError):
            pids.update(int(line) for line in procs.read_text().split())
    return pids


def cleanup_slot(slot: int) -> None:
    """End every process of a real node's slot (containerd's shims and the containers
    leave their process groups, not their cgroup), remove its cgroups, its veth pair and
    its directory in /run.

    Its namespaces, and with them its firewall rules, routes, sysctls and mounts, go
    with the last of its processes."""
    name = node_cgroup(slot)
    hierarchies = [p for p in Path("/sys/fs/cgroup").iterdir() if (p / name).is_dir()]
    if (Path("/sys/fs/cgroup") / name / "cgroup.procs").exists():
        hierarchies.append(Path("/sys/fs/cgroup"))
    deadline = time.monotonic() + GRACE_SECONDS
    while time.monotonic() < deadline:
        pids = set().union(*(_cgroup_pids(h / name) for h in hierarchies if (h / name).is_dir()))
        pids.discard(os.getpid())
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        # Killed processes leave their cgroup only once they are reaped by their parent.
        time.sleep(0.05)
    for hierarchy in hierarchies:
        for directory in sorted((hierarchy / name).rglob("*/"), key=lambda p: -len(p.parts)):
            with contextlib.suppress(OSError):
                directory.rmdir()
        with contextlib.suppress(OSError):
            (hierarchy / name).rmdir()
    link = f"wgh{slot}"
    if Path(f"/sys/class/net/{link}").exists():
        subprocess.run(["ip", "link", "del", link], capture_output=True, check=False, timeout=30)
    shutil.rmtree(node_run_dir(slot), ignore_errors=True)


def main() -> int:
    # Ctrl-C in the owner's terminal reaches this process too when it shares the
    # foreground process group; only end of input may start the cleanup.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    groups: list[int] = []
    directories: list[str] = []
    slots: list[int] = []
    for line in sys.stdin:
        command, _, argument = line.strip().partition(" ")
        if command == "group":
            groups.append(int(argument))
        elif command == "forget":
            with contextlib.suppress(ValueError):
                groups.remove(int(argument))
        elif command == "remove":
            directories.append(argument)
        elif command == "node":
            slots.append(int(argument))
        elif command == "done":
            return 0
    terminate_groups(groups)
    for slot in slots:
        cleanup_slot(slot)
    for directory in directories:
        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
