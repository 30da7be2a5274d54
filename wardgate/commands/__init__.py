"""The commands of `wardgate`: a table from a command's name to the module that runs it.

As pip's `commands/__init__.py`: only the chosen command's module is imported, so `wardgate
gateway` never loads kopf, and the operator never loads the traffic server. Each module has
`run(args) -> int` (the exit status) and imports what it needs at its top. The arguments of
every command are in `wardgate.cli`, which needs nothing but argparse.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Final, Protocol, cast

COMMANDS: Final[dict[str, str]] = {
    "gateway": "wardgate.commands.gateway",
    "validate": "wardgate.commands.validate",
    "schema": "wardgate.commands.schema",
    "errors": "wardgate.commands.errors",
    "explain": "wardgate.commands.explain",
    "operator": "wardgate.commands.operator",
    "dev-cluster": "wardgate.commands.dev_cluster",
    "demo": "wardgate.commands.demo",
    "demo-orders": "wardgate.commands.demo_orders",
}

LOG_LEVELS: Final = ("debug", "info", "warning", "error")
"""Of `wardgate gateway --log-level`."""
LOG_LEVEL_ENV: Final = "WARDGATE_LOG_LEVEL"
"""Set by the operator from the Gateway's `logLevel`."""


class Command(Protocol):
    """What a command's module provides."""

    def run(self, args: argparse.Namespace) -> int: ...


def load_command(name: str) -> Command:
    """The module that runs command `name` (imported now)."""
    return cast(Command, importlib.import_module(COMMANDS[name]))


def run_command(args: argparse.Namespace) -> int:
    """Run the command `args.command` names; its exit status."""
    return load_command(args.command).run(args)
