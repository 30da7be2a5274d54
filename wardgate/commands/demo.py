"""`wardgate demo [--once]`: the whole system on this machine (see `wardgate.demo`)."""

from __future__ import annotations

import argparse
import sys

from wardgate.demo.stack import Demo, DemoError
from wardgate.devcluster.binaries import BinariesMissingError
from wardgate.devcluster.cluster import ClusterError, KubectlError
from wardgate.devcluster.node import NodeError


def run(args: argparse.Namespace) -> int:
    """Run the demo; 0 when it ran (or, with --once, when every answer was as expected)."""
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
