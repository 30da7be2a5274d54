"""The `wardgate` command: one entry point whose subcommands live with the part they drive."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Each module exposes `register(subparsers)`; it adds its subcommands with
# `set_defaults(func=...)` and keeps heavy imports inside the functions, so that
# `wardgate gateway` never imports kopf or the Kubernetes client.
COMMAND_MODULES = (
    "wardgate.gateway.cli",
    "wardgate.gateway.explain",
    "wardgate.operator.cli",
    "wardgate.devcluster.cli",
    "wardgate.demo.cli",
)


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every subsystem's subcommands."""
    parser = argparse.ArgumentParser(prog="wardgate", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
