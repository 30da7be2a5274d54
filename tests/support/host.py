"""What the host shows of the processes the tests start and leave behind."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path


def processes_mentioning(text: str) -> list[str]:
    """`PID: command line` of every other process whose command line holds `text`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{entry.name}: {cmdline}")
    return found


@contextlib.contextmanager
def killed_owner(script: str) -> Iterator[list[str]]:
    """A Python process running `script`, which starts a local cluster, prints one line about
    it and waits; yields that line's words, then kills the process (SIGKILL: it cannot clean
    up, its watchdog must)."""
    owner = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert owner.stdin is not None
    assert owner.stdout is not None
    try:
        line = owner.stdout.readline().split()
        assert line, "the owner failed to start its cluster"
        yield line
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        owner.stdin.close()
        owner.stdout.close()
