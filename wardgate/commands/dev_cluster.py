"""`wardgate dev-cluster up|down|env`: a local cluster for trying Wardgate out (see the
command's description in `wardgate.cli`)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from typing import Final

from wardgate.devcluster import node
from wardgate.devcluster.binaries import BinariesMissingError
from wardgate.devcluster.cluster import ClusterError, LocalCluster
from wardgate.devcluster.state import State, pid_alive, read_state, render_exports, state_dir

DOWN_TIMEOUT_SECONDS: Final = 120.0
DETACH_TIMEOUT_SECONDS: Final = 600.0


def run(args: argparse.Namespace) -> int:
    actions = {"up": _up, "down": _down, "env": _env}
    return actions[args.action](args)


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
    while pid_alive(state.pid):
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
