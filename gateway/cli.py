"""Subcommands of the gateway: `gateway`, `validate`, `schema`, `errors`.

Heavy imports (aiohttp, the app) happen inside the commands, so that `wardgate --help` and
the operator's commands stay light.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from wardgate.gateway.loading import LoadedConfig, SecretSource

LOG_LEVELS: Final = ("debug", "info", "warning", "error")
LOG_LEVEL_ENV: Final = "WARDGATE_LOG_LEVEL"
"""Set by the operator from the Gateway's `logLevel`."""


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add this part's subcommands."""
    gateway = subparsers.add_parser(
        "gateway",
        help="run the API gateway from a config file",
        description="Run the API gateway. Without --config it serves an embedded demo: the "
        "seed example with a built-in `orders` upstream and a demo secret.",
    )
    gateway.add_argument(
        "--config", type=Path, help="config file (JSON, or YAML by suffix; .gz: compressed)"
    )
    gateway.add_argument(
        "--watch-config",
        metavar="NAMESPACE/NAME",
        help="read the config from this ConfigMap (the operator's) and apply each change in "
        "place, between requests; secret values are read from the Secrets it lists",
    )
    gateway.add_argument(
        "--kubeconfig",
        type=Path,
        help="for --watch-config: kubeconfig (default: the pod's ServiceAccount, then "
        "~/.kube/config)",
    )
    _secrets_dir(gateway)
    gateway.add_argument("--host", default="127.0.0.1", help="traffic address (127.0.0.1)")
    gateway.add_argument("--port", type=int, default=8080, help="traffic port (8080)")
    gateway.add_argument(
        "--tls-port",
        type=int,
        default=None,
        help="TLS listener's port (8443 when the config has `tls`; given, the listener starts "
        "even before a config with `tls` arrives)",
    )
    gateway.add_argument("--admin-host", default="127.0.0.1", help="admin address (127.0.0.1)")
    gateway.add_argument(
        "--admin-port", type=int, default=9901, help="admin port (9901); -1 disables it"
    )
    gateway.add_argument(
        "--workers", type=int, default=1, help="processes sharing the port (SO_REUSEPORT)"
    )
    gateway.add_argument(
        "--reuse-port",
        action="store_true",
        help="bind the traffic port with SO_REUSEPORT, so that a new gateway process can "
        "start on the port before this one drains and stops (restart without refusals)",
    )
    gateway.add_argument(
        "--listen-fd",
        type=int,
        default=None,
        metavar="FD",
        help="serve on this inherited listening socket instead of binding --host/--port "
        "(socket handover: processes sharing one socket share its accept queue, so a "
        "successor takes over without a reset connection)",
    )
    _server_option(gateway)
    gateway.add_argument(
        "--log-level",
        type=str.lower,
        choices=LOG_LEVELS,
        default=None,
        help="level of the diagnostic log on stderr: debug adds JWKS fetches and closed "
        "connections; the request log (--access-log) is written at every level (default: "
        f"${LOG_LEVEL_ENV}, else info)",
    )
    gateway.add_argument(
        "--access-log",
        default="-",
        metavar="PATH",
        help="request log: `-` for stdout (default), a file to append to, or `off`",
    )
    gateway.set_defaults(func=cmd_gateway)

    validate = subparsers.add_parser(
        "validate",
        help="check a gateway config file",
        description="Validate a config and resolve its secret references. Prints one "
        "`dotted.path: reason` line per problem; exits 1 when invalid, 2 when unreadable.",
    )
    validate.add_argument("file", type=Path)
    _secrets_dir(validate)
    _server_option(validate)
    validate.set_defaults(func=cmd_validate)

    schema = subparsers.add_parser("schema", help="print the JSON Schema of the gateway config")
    schema.set_defaults(func=cmd_schema)

    errors = subparsers.add_parser("errors", help="list the gateway's error codes")
    errors.add_argument("--markdown", action="store_true", help="print docs/errors.md (generated)")
    errors.set_defaults(func=cmd_errors)


def _secrets_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--secrets-dir",
        type=Path,
        help="directory with one file per secret (a mounted Secret); then the environment",
    )


def _server_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server",
        action="append",
        default=[],
        metavar="NAME=URL",
        help="define or override the upstream server NAME (repeatable), e.g. "
        "--server orders=http://127.0.0.1:9000",
    )


def apply_server_overrides(document: object, overrides: list[str]) -> object:
    """The document with `servers.NAME` set to each `NAME=URL` (timeouts kept)."""
    if not overrides:
        return document
    if not isinstance(document, dict):
        return document
    servers = document.get("servers")
    servers = dict(servers) if isinstance(servers, dict) else {}
    for item in overrides:
        name, sep, url = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--server {item!r}: expected NAME=URL")
        existing = servers.get(name)
        servers[name] = {**existing, "url": url} if isinstance(existing, dict) else url
    return {**document, "servers": servers}


def _load(
    path: Path, secrets_dir: Path | None, overrides: list[str]
) -> tuple[LoadedConfig | None, int]:
    """Load a config file; print problems and give the exit code on failure."""
    from wardgate.gateway.config import ConfigError
    from wardgate.gateway.loading import SecretSource, load_config, read_document

    try:
        path.read_bytes()
    except OSError as exc:
        print(f"{path}: cannot read: {exc.strerror}", file=sys.stderr)
        return None, 2
    try:
        document = apply_server_overrides(read_document(path), overrides)
        loaded = load_config(document, SecretSource(directory=secrets_dir), origin=str(path))
        check_runtime(loaded)
    except ConfigError as exc:
        _print_problems(path, exc.problems)
        return None, 1
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return None, 1
    return loaded, 0


def _print_problems(path: Path | str, problems: list[str]) -> None:
    print(f"{path}: invalid config ({len(problems)} problem(s)):", file=sys.stderr)
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)


def check_runtime(loaded: LoadedConfig) -> None:
    """What only shows when building the gateway (route patterns, keys): raises ConfigError."""
    from wardgate.gateway.app import build_app

    # Builds the authorizers and the route table; opens no connection and starts nothing.
    build_app(loaded)


def _demo(
    secrets_dir: Path | None, overrides: list[str]
) -> tuple[LoadedConfig | None, Any, str | None, int]:
    """The embedded demo config, its upstream socket (unless `orders` is overridden), and
    its banner."""
    from wardgate.gateway import demo
    from wardgate.gateway.config import ConfigError
    from wardgate.gateway.loading import SecretSource, load_config

    sock = None
    orders_url = None
    if not any(item.partition("=")[0] == demo.DEMO_SERVER for item in overrides):
        sock = demo.bind_loopback()
        orders_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    environ = dict(os.environ)
    environ.setdefault(demo.DEMO_SECRET_NAME, demo.DEMO_SECRET)
    source: SecretSource = SecretSource(directory=secrets_dir, environ=environ)
    try:
        document = apply_server_overrides(demo.demo_document(orders_url), overrides)
        loaded = load_config(document, source, origin="<embedded demo config>")
        check_runtime(loaded)
    except (ConfigError, ValueError) as exc:
        problems = exc.problems if isinstance(exc, ConfigError) else [str(exc)]
        _print_problems("<embedded demo config>", problems)
        return None, None, None, 1
    return loaded, sock, loaded.secret("$secret." + demo.DEMO_SECRET_NAME), 0


def cmd_gateway(args: argparse.Namespace) -> int:
    """`wardgate gateway`: validate, then serve until SIGTERM."""
    log_level = args.log_level or os.environ.get(LOG_LEVEL_ENV, "").strip().lower() or "info"
    if log_level not in LOG_LEVELS:
        print(
            f"{LOG_LEVEL_ENV}={os.environ.get(LOG_LEVEL_ENV)!r}: expected one of "
            f"{', '.join(LOG_LEVELS)}",
            file=sys.stderr,
        )
        return 2
    if args.listen_fd is not None and args.workers > 1:
        print("--listen-fd serves one process: drop --workers", file=sys.stderr)
        return 2
    if args.workers < 1:
        print("--workers must be at least 1", file=sys.stderr)
        return 2
    if args.watch_config is not None and args.config is not None:
        print("--watch-config reads the config from the ConfigMap: drop --config",
              file=sys.stderr)  # fmt: skip
        return 2
    if args.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Before prometheus-client is first imported: it picks its value store then.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="wardgate-metrics-")
    from wardgate.gateway.server import ServeOptions, configure_logging, run

    configure_logging(log_level)
    banner = None
    demo_socket = None
    watch = None
    if args.watch_config is not None:
        loaded, watch, code = _watched(args.watch_config, args.kubeconfig, args.server)
    elif args.config is None:
        loaded, demo_socket, secret, code = _demo(args.secrets_dir, args.server)
        if loaded is not None:
            from functools import partial

            from wardgate.gateway.demo import DEMO_SECRET, usage_banner

            banner = partial(usage_banner, secret=secret or DEMO_SECRET)
    else:
        loaded, code = _load(args.config, args.secrets_dir, args.server)
    if loaded is None:
        return code
    options = ServeOptions(
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
    return run(loaded, options)


WATCH_START_SECONDS: Final = 60.0


def _watched(
    target: str, kubeconfig: Path | None, overrides: list[str]
) -> tuple[LoadedConfig | None, Any, int]:
    """The first config of a watched ConfigMap, and the watch to follow it with."""
    from functools import partial

    from wardgate.gateway.config import ConfigError
    from wardgate.gateway.kubesource import (
        ConfigMapSource,
        ConfigObject,
        ConfigWatch,
        SourceError,
        load_client_configuration,
        wait_for_snapshot,
    )
    from wardgate.gateway.loading import SecretSource, load_config

    try:
        where = ConfigObject.parse(target)
        source = ConfigMapSource(where, load_client_configuration(kubeconfig))
    except ValueError as exc:  # a bad argument, or an unusable kubeconfig
        print(str(exc), file=sys.stderr)
        return None, None, 2
    prepare = partial(apply_server_overrides, overrides=overrides)
    try:
        snapshot = wait_for_snapshot(source, WATCH_START_SECONDS)
        loaded = load_config(
            prepare(snapshot.document),
            SecretSource(directory=None, environ=snapshot.secrets),
            origin=snapshot.origin,
            config_hash=snapshot.config_hash or None,
        )
        check_runtime(loaded)
    except SourceError as exc:
        print(str(exc), file=sys.stderr)
        return None, None, 2
    except ConfigError as exc:
        _print_problems(target, exc.problems)
        return None, None, 1
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return None, None, 1
    return loaded, ConfigWatch(source, snapshot.resource_version, prepare), 0


def cmd_validate(args: argparse.Namespace) -> int:
    """`wardgate validate FILE`: 0 valid, 1 invalid (problems printed), 2 unreadable."""
    loaded, code = _load(args.file, args.secrets_dir, args.server)
    if loaded is None:
        return code
    from wardgate.gateway.authorizers import Authorizers

    def no_session() -> Any:
        raise RuntimeError("validate opens no connection")

    for warning in Authorizers.build(loaded, no_session).warnings():
        print(f"warning: {warning}", file=sys.stderr)
    for warning in loaded.config.hostname_warnings():
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{args.file}: valid ({len(loaded.config.paths)} paths)")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    """`wardgate schema`: the JSON Schema of the config."""
    from wardgate.gateway.config import config_json_schema

    print(json.dumps(config_json_schema(), indent=2))
    return 0


def cmd_errors(args: argparse.Namespace) -> int:
    """`wardgate errors [--markdown]`: the error catalogue."""
    from wardgate.gateway.errordocs import render_errors_markdown
    from wardgate.gateway.errors import CATALOGUE

    if args.markdown:
        sys.stdout.write(render_errors_markdown())
        return 0
    for entry in CATALOGUE:
        print(f"{entry.status}  {entry.code:<22} {entry.message}")
    return 0
