"""`wardgate gateway`: validate the config, then serve until SIGTERM.

Exit status (`wardgate.gateway.sources`): 0 after a clean stop, 1 when the config is invalid
(nothing is served), 2 when it cannot be read or the arguments cannot be used.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
from typing import Final

from wardgate.commands import LOG_LEVEL_ENV, LOG_LEVELS

EXIT_UNUSABLE: Final = 2
"""Arguments that cannot be used (`wardgate.gateway.sources.EXIT_UNUSABLE`)."""
MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"


def run(args: argparse.Namespace) -> int:
    log_level = args.log_level or os.environ.get(LOG_LEVEL_ENV, "").strip().lower() or "info"
    if log_level not in LOG_LEVELS:
        print(
            f"{LOG_LEVEL_ENV}={os.environ.get(LOG_LEVEL_ENV)!r}: expected one of "
            f"{', '.join(LOG_LEVELS)}",
            file=sys.stderr,
        )
        return EXIT_UNUSABLE
    if args.listen_fd is not None and args.workers > 1:
        print("--listen-fd serves one process: drop --workers", file=sys.stderr)
        return EXIT_UNUSABLE
    if args.workers < 1:
        print("--workers must be at least 1", file=sys.stderr)
        return EXIT_UNUSABLE
    if args.watch_config is not None and args.config is not None:
        print("--watch-config reads the config from the ConfigMap: drop --config",
              file=sys.stderr)  # fmt: skip
        return EXIT_UNUSABLE
    if args.report_served is not None and args.watch_config is None:
        print("--report-served records what --watch-config serves: add --watch-config",
              file=sys.stderr)  # fmt: skip
        return EXIT_UNUSABLE
    if args.workers > 1 and not os.environ.get(MULTIPROC_ENV):
        os.environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix="wardgate-metrics-")
    # The gateway's modules only now: prometheus-client picks its value store when it is
    # first imported, and with --workers every process must pick the files set above.
    serving = importlib.import_module("wardgate.commands.serve")
    exit_status: int = serving.serve(args, log_level)
    return exit_status
