"""`wardgate demo [--once]`: the whole system on this machine (see `wardgate.demo`)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

DEFAULT_PORT = 8080


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add `wardgate demo`."""
    parser = subparsers.add_parser(
        "demo",
        help="run the operator, a gateway and the seed example on a local cluster",
        description="Start a local cluster with a real node, install the Helm chart (the "
        "operator runs as a pod from the image built here), apply the seed example (its "
        "gateway and orders run as pods) and send requests through the gateway's Service; "
        "print them and their answers, then stay up until Ctrl-C. Needs the Kubernetes "
        "binaries (`make k8s`) and a source checkout (the image is built from it).",
    )
    parser.add_argument(
        "--once",
        action="store_true",
        help="check the answers (and that the gateway pods serve a new Route), then stop: "
        "exit 0 when all are as expected, 1 otherwise",
    )
    parser.set_defaults(func=run)
    orders = subparsers.add_parser(
        "demo-orders",
        help="serve the seed example's orders upstream (the same JSON on every path)",
        description="The `orders` upstream of examples/seed: answers every request with the "
        "demo orders as JSON, until stopped.",
    )
    orders.add_argument("--host", default="127.0.0.1", help="address to listen on")
    orders.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to listen on")
    orders.set_defaults(func=serve_orders)


def serve_orders(args: argparse.Namespace) -> int:
    """Serve the demo orders until SIGTERM or Ctrl-C."""
    import signal

    from wardgate.demo.upstream import OrdersUpstream

    upstream = OrdersUpstream(host=args.host, port=args.port).start()
    print(f"orders upstream on {upstream.url}", flush=True)
    stopped = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopped
        stopped = True

    signal.signal(signal.SIGTERM, stop)
    try:
        while not stopped:
            signal.pause()
    except KeyboardInterrupt:
        pass
    upstream.stop()
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the demo; 0 when it ran (or, with --once, when every answer was as expected)."""
    from wardgate.demo.stack import Demo, DemoError
    from wardgate.devcluster.binaries import BinariesMissingError
    from wardgate.devcluster.cluster import ClusterError, KubectlError
    from wardgate.devcluster.node import NodeError

    demo = Demo()
    try:
        demo.start()
        token = demo.token()
        answers = demo.answers(token)
        demo.say(f"TOKEN={token}")
        demo.show(answers)
        if args.once:
            followed = demo.check_following()
            demo.show(followed)
            failed = [a.title for a in [*answers, *followed] if not a.ok]
            if failed:
                print(f"\nwardgate demo: unexpected answers: {', '.join(failed)}", file=sys.stderr)
                return 1
            demo.say("\nall answers as expected")
            return 0
        demo.show_next_steps()
        demo.wait_forever()
        return 1
    except BinariesMissingError as e:
        print(f"wardgate demo: {e}\nbuild them with `make k8s`", file=sys.stderr)
        return 1
    except (DemoError, ClusterError, NodeError, KubectlError) as e:
        print(f"\nwardgate demo: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        demo.say("\nstopping: the cluster, its node and its pods")
        return 0
    finally:
        demo.close()
