"""The running dev cluster's state: what `wardgate dev-cluster up` records in its state
directory (`$WARDGATE_DEV_CLUSTER_DIR`, default `~/.cache/wardgate/dev-cluster`) for `env`
and `down` to find it."""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class State:
    """What `up` records about the cluster it supervises."""

    pid: int
    kubeconfig: str
    server: str
    bin_dir: str
    directory: str


def state_dir() -> Path:
    """The directory holding the running cluster's state and kubeconfig."""
    configured = os.environ.get("WARDGATE_DEV_CLUSTER_DIR")
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "wardgate" / "dev-cluster"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_state() -> State | None:
    """The running cluster's state, or None (a stale file from a dead `up` is removed)."""
    path = state_dir() / "state.json"
    try:
        state = State(**json.loads(path.read_text()))
    except (FileNotFoundError, ValueError, TypeError):
        return None
    if not pid_alive(state.pid):
        path.unlink(missing_ok=True)
        return None
    return state


def render_exports(state: State) -> str:
    """Shell lines that point kubectl and helm at the cluster."""
    return (
        f"export KUBECONFIG={shlex.quote(state.kubeconfig)}\n"
        f'export PATH={shlex.quote(state.bin_dir)}:"$PATH"'
    )
