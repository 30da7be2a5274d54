"""`wardgate dev-cluster up|down|env`: a local cluster for trying Wardgate out.

`up` starts a control plane and a real node (containerd, kubelet, kube-proxy, CoreDNS in
namespaces of their own; with `--kwok` a fake node instead) with the image built from this
checkout, under its own name and the chart's default one, and supervises it in the
foreground until Ctrl-C (or, with `--detach`, in the background); `env` prints the shell
exports for the running one; `down` stops it. The running cluster is described by
`state.json` in the state directory (`$WARDGATE_DEV_CLUSTER_DIR`, default
`~/.cache/wardgate/dev-cluster`), next to a stable copy of its kubeconfig.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

DOWN_TIMEOUT_SECONDS = 120.0
DETACH_TIMEOUT_SECONDS = 600.0


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


def _pid_alive(pid: int) -> bool:
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
    if not _pid_alive(state.pid):
        path.unlink(missing_ok=True)
        return None
    return state


def render_exports(state: State) -> str:
    """Shell lines that point kubectl and helm at the cluster."""
    return (
        f"export KUBECONFIG={shlex.quote(state.kubeconfig)}\n"
        f'export PATH={shlex.quote(state.bin_dir)}:"$PATH"'
    )


def _up(args: argparse.Namespace) -> int:
    running = read_state()
    if running is not None:
        print(f"a dev cluster is already running (pid {running.pid}):", file=sys.stderr)
        print(render_exports(running))
        return 1
    if args.detach:
        forwarded = ["--kwok"] if args.kwok else []
        for archive in args.image_archive:
            forwarded += ["--image-archive", str(archive)]
        return _up_detached(forwarded)

    from wardgate.devcluster import node
    from wardgate.devcluster.binaries import BinariesMissingError
    from wardgate.devcluster.cluster import ClusterError, LocalCluster

    directory = state_dir()
    directory.mkdir(parents=True, exist_ok=True)
    state_path = directory / "state.json"
    kubeconfig = directory / "kubeconfig"
    try:
        if args.kwok:
            cluster = LocalCluster(log=lambda message: print(message, file=sys.stderr, flush=True))
        else:
            print("building the image unless up to date (hack/build-image.sh)", file=sys.stderr)
            cluster = LocalCluster(
                real_node=True,
                image_archives=(*node.local_image_archives(), *args.image_archive),
                log=lambda message: print(message, file=sys.stderr, flush=True),
            )
        cluster.start()
    except (BinariesMissingError, ClusterError, node.NodeError) as e:
        print(f"dev-cluster: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130  # start() has stopped whatever it had started
    try:
        kubeconfig.write_bytes(cluster.kubeconfig.read_bytes())
        kubeconfig.chmod(0o600)
        state = State(
            pid=os.getpid(),
            kubeconfig=str(kubeconfig),
            server=cluster.server,
            bin_dir=str(cluster.bin_dir),
            directory=str(cluster.directory),
        )
        tmp = state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(state)))
        tmp.replace(state_path)
        print(render_exports(state), flush=True)
        print(
            f"# API server {cluster.server}; logs in {cluster.logs_dir()}; "
            "Ctrl-C or `wardgate dev-cluster down` stops it",
            flush=True,
        )
        name = cluster.wait_for_exit()
        print(f"dev-cluster: {name} exited\n{cluster.describe_logs()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        state_path.unlink(missing_ok=True)
        kubeconfig.unlink(missing_ok=True)
        cluster.stop()


def _up_detached(forwarded: list[str]) -> int:
    directory = state_dir()
    directory.mkdir(parents=True, exist_ok=True)
    log_path = directory / "up.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "wardgate", "dev-cluster", "up", *forwarded],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + DETACH_TIMEOUT_SECONDS
    while True:
        state = read_state()
        if state is not None and state.pid == process.pid:
            print(render_exports(state))
            print(f"# supervisor pid {process.pid}, output in {log_path}", file=sys.stderr)
            return 0
        if process.poll() is not None or time.monotonic() > deadline:
            if process.returncode is None:
                process.terminate()
                process.wait()
            print(f"dev-cluster: up failed:\n{log_path.read_text()}", file=sys.stderr)
            return 1
        # Polling for the state file that the detached supervisor writes when ready.
        time.sleep(0.2)


def _down(args: argparse.Namespace) -> int:
    state = read_state()
    if state is None:
        print("no dev cluster is running", file=sys.stderr)
        return 0
    os.kill(state.pid, signal.SIGTERM)
    deadline = time.monotonic() + DOWN_TIMEOUT_SECONDS
    while _pid_alive(state.pid):
        if time.monotonic() > deadline:
            print(f"dev-cluster: pid {state.pid} did not stop", file=sys.stderr)
            return 1
        # The supervisor is not our child: polling is the only way to see it exit.
        time.sleep(0.1)
    print(f"stopped the dev cluster (pid {state.pid})", file=sys.stderr)
    return 0


def _env(args: argparse.Namespace) -> int:
    state = read_state()
    if state is None:
        print(
            "no dev cluster is running; start one with `wardgate dev-cluster up`", file=sys.stderr
        )
        return 1
    print(render_exports(state))
    return 0


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add `dev-cluster up|down|env`."""
    parser = subparsers.add_parser(
        "dev-cluster",
        help="run a local Kubernetes control plane",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    up = actions.add_parser("up", help="start the cluster (foreground until Ctrl-C)")
    up.add_argument(
        "--detach", action="store_true", help="run in the background; print exports when ready"
    )
    up.add_argument(
        "--kwok",
        action="store_true",
        help="a fake node (kwok) instead of the real one: pods become Ready without running",
    )
    up.add_argument(
        "--image-archive",
        action="append",
        type=Path,
        default=[],
        metavar="TAR",
        help="an image archive to import into the node (repeatable; the image built from "
        "this checkout is imported anyway)",
    )
    up.set_defaults(func=_up)
    actions.add_parser("down", help="stop the running cluster").set_defaults(func=_down)
    actions.add_parser("env", help="print shell exports for the running cluster").set_defaults(
        func=_env
    )
