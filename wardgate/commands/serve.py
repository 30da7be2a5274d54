"""`wardgate gateway`, once its arguments are checked: load the config from its source (a
file, the embedded demo, a watched ConfigMap) and serve it until SIGTERM.

Imported by `wardgate.commands.gateway` only after it has chosen prometheus-client's value
store (see there).
"""

from __future__ import annotations

import argparse
import os
import socket
from functools import partial
from pathlib import Path
from typing import Final

from wardgate.gateway import server
from wardgate.gateway.delivery import POD_NAME_VARIABLE
from wardgate.gateway.embedded import usage_banner
from wardgate.gateway.kubesource import (
    ConfigMapSource,
    ConfigObject,
    ConfigWatch,
    ServedReport,
    SourceError,
    load_client_configuration,
    wait_for_snapshot,
)
from wardgate.gateway.loading import LoadedConfig, SecretSource, ValidatedPaths
from wardgate.gateway.sources import (
    LoadError,
    apply_server_overrides,
    load_document,
    load_embedded_demo,
    load_file,
)

WATCH_START_SECONDS: Final = 60.0


def serve(args: argparse.Namespace, log_level: str) -> int:
    """Load the config and serve it; the exit status."""
    server.configure_logging(log_level)
    banner = None
    demo_socket = None
    watch = None
    try:
        if args.watch_config is not None:
            loaded, watch = _watched(
                args.watch_config, args.kubeconfig, args.server, args.report_served
            )
        elif args.config is None:
            demo = load_embedded_demo(args.secrets_dir, args.server)
            loaded, demo_socket = demo.loaded, demo.upstream_socket
            banner = partial(usage_banner, secret=demo.secret)
        else:
            loaded = load_file(args.config, args.secrets_dir, args.server)
    except LoadError as exc:
        exc.report()
        return exc.exit_code
    options = server.ServeOptions(
        host=args.host,
        port=args.port,
        admin_host=args.admin_host,
        admin_port=None if args.admin_port < 0 else args.admin_port,
        workers=args.workers,
        access_log=args.access_log,
        banner=banner,
        demo_socket=demo_socket,
        reuse_port=args.reuse_port,
        listen_fd=args.listen_fd,
        log_level=log_level,
        watch=watch,
        tls_port=args.tls_port,
    )
    return server.run(loaded, options)


def _watched(
    target: str, kubeconfig: Path | None, overrides: list[str], report_to: str | None = None
) -> tuple[LoadedConfig, ConfigWatch]:
    """The first config of a watched ConfigMap, and the watch to follow it with (raises
    `LoadError`)."""
    try:
        source = ConfigMapSource(ConfigObject.parse(target), load_client_configuration(kubeconfig))
        snapshot = wait_for_snapshot(source, WATCH_START_SECONDS)
    except (ValueError, SourceError) as exc:  # a bad argument, no usable kubeconfig or cluster
        raise LoadError.unreadable_source(exc) from None
    paths = ValidatedPaths()  # the first version's entries, reused by the next
    loaded = load_document(
        snapshot.document,
        SecretSource(directory=None, environ=snapshot.secrets),
        origin=snapshot.origin,
        overrides=overrides,
        config_hash=snapshot.config_hash or None,
        paths=paths,
    )
    prepare = partial(apply_server_overrides, overrides=overrides)
    report = None
    if report_to is not None:
        report = ServedReport(report_to, os.environ.get(POD_NAME_VARIABLE) or socket.gethostname())
    return loaded, ConfigWatch(source, snapshot.resource_version, prepare, report, paths)
