"""`wardgate demo-orders`: the seed example's `orders` upstream, until SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse
import signal

from wardgate.demo.upstream import OrdersUpstream


def run(args: argparse.Namespace) -> int:
    """Serve the demo orders until SIGTERM or Ctrl-C."""
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
