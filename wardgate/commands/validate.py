"""`wardgate validate FILE`: 0 valid, 1 invalid (problems printed), 2 unreadable."""

from __future__ import annotations

import argparse
import sys

from wardgate.gateway.config import authorizer_warnings
from wardgate.gateway.sources import LoadError, load_file


def run(args: argparse.Namespace) -> int:
    try:
        loaded = load_file(args.file, args.secrets_dir, args.server)
    except LoadError as exc:
        exc.report()
        return exc.exit_code
    for name, spec in loaded.config.named_authorizers().items():
        where = "authorizer" if name == "default" else f"authorizers.{name}"
        for warning in authorizer_warnings(spec, where):
            print(f"warning: {warning}", file=sys.stderr)
    for warning in loaded.config.hostname_warnings():
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{args.file}: valid ({len(loaded.config.paths)} paths)")
    return 0
