"""`wardgate errors [--markdown]`: the gateway's error catalogue."""

from __future__ import annotations

import argparse
import sys

from wardgate.gateway.errordocs import render_errors_markdown
from wardgate.gateway.errors import CATALOGUE


def run(args: argparse.Namespace) -> int:
    if args.markdown:
        sys.stdout.write(render_errors_markdown())
        return 0
    for entry in CATALOGUE:
        print(f"{entry.status}  {entry.code:<22} {entry.message}")
    return 0
