"""The `wardgate` command line: every command's arguments, and the entry point.

Parsing needs nothing but argparse, so `wardgate --help` and `wardgate COMMAND --help` stay
fast; `main` then imports the one module that runs the chosen command, from the table in
`wardgate.commands`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

from wardgate.commands import LOG_LEVEL_ENV, LOG_LEVELS, run_command

if TYPE_CHECKING:  # generic in the stubs only
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

DEFAULT_GATEWAY_IMAGE: Final = "ghcr.io/wardgate/wardgate:0.1.0"


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command; `args.command` names the one chosen."""
    parser = argparse.ArgumentParser(
        prog="wardgate",
        description="Wardgate: a Kubernetes operator that runs API gateways which enforce auth.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _gateway(subparsers)
    _validate(subparsers)
    subparsers.add_parser("schema", help="print the JSON Schema of the gateway config")
    errors = subparsers.add_parser("errors", help="list the gateway's error codes")
    errors.add_argument("--markdown", action="store_true", help="print docs/errors.md (generated)")
    _explain(subparsers)
    _operator(subparsers)
    _dev_cluster(subparsers)
    _demo(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(args)


def server_override(text: str) -> str:
    """A `--server` item: `NAME=URL`."""
    name, sep, _ = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=URL")
    return text


def _secrets_dir(parser: argparse.ArgumentParser, more: str = "") -> None:
    parser.add_argument(
        "--secrets-dir",
        type=Path,
        help="directory with one file per secret (a mounted Secret); then the environment" + more,
    )


def _server_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server",
        action="append",
        default=[],
        type=server_override,
        metavar="NAME=URL",
        help="define or override the upstream server NAME (repeatable), e.g. "
        "--server orders=http://127.0.0.1:9000",
    )


def _kubeconfig(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--kubeconfig", type=Path, help=help_text)


def _gateway(subparsers: Subparsers) -> None:
    gateway = subparsers.add_parser(
        "gateway",
        help="run the API gateway from a config file",
        description="Run the API gateway. Without --config it serves an embedded demo: the "
        "seed example with a built-in `orders` upstream and a demo secret. Exit status: 0 "
        "after a clean stop, 1 when the config is invalid (nothing served), 2 when it cannot "
        "be read or the arguments are unusable.",
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
        "--report-served",
        metavar="CONFIGMAP",
        help="for --watch-config: record the hash of the config served in this ConfigMap "
        "(same namespace), under the pod's name ($WARDGATE_POD_NAME, else the host name)",
    )
    _kubeconfig(
        gateway,
        "for --watch-config: kubeconfig (default: the pod's ServiceAccount, then ~/.kube/config)",
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


def _validate(subparsers: Subparsers) -> None:
    validate = subparsers.add_parser(
        "validate",
        help="check a gateway config file",
        description="Validate a config and resolve its secret references. Prints one "
        "`dotted.path: reason` line per problem; exits 1 when invalid, 2 when unreadable.",
    )
    validate.add_argument("file", type=Path)
    _secrets_dir(validate)
    _server_option(validate)


def _explain(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "explain",
        help="show, step by step, how the gateway would decide a request",
        description="Show the gateway's decision for one request: the normalised path, the "
        "route (or the closest ones), the authorizer and why, the token decoded (unverified), "
        "each check with expected and actual values, and the final status and error code. "
        "Exit status: 0 admitted, 1 refused, 2 unusable config or arguments.",
    )
    parser.add_argument("method", help="HTTP method, e.g. GET")
    parser.add_argument("path", help="request target, e.g. /private/orders?id=1")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", type=Path, help="gateway config file (JSON, or YAML)")
    where.add_argument(
        "--gateway",
        metavar="NAME",
        help="a Gateway in the cluster: read the config the operator rendered",
    )
    parser.add_argument(
        "-n", "--namespace", help="namespace of --gateway (the kubeconfig context's default)"
    )
    _kubeconfig(parser, "for --gateway: kubeconfig (default: $KUBECONFIG, then ~/.kube/config)")
    _secrets_dir(parser, " (with --gateway: then the referenced Secrets, when readable)")
    _server_option(parser)
    parser.add_argument("--token", help="bearer token: sends `Authorization: Bearer T`")
    parser.add_argument(
        "--host", help="the request's host: sends `Host: HOST` (which hostnames' routes apply)"
    )
    parser.add_argument(
        "--header",
        "-H",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="a request header (repeatable), e.g. -H 'Authorization: Bearer eyJ...'",
    )
    parser.add_argument(
        "--at",
        metavar="TIME",
        help="evaluate at this time: ISO 8601 (2026-01-31T12:00:00Z) or seconds since the epoch",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="the request came through the TLS listener (without SNI unless --sni)",
    )
    parser.add_argument(
        "--sni",
        metavar="NAME",
        help="the request came through the TLS listener, the handshake naming NAME: shows "
        "the certificate selected and the 421 check of the Host against it",
    )
    parser.add_argument("--output", "-o", choices=("text", "json"), default="text")


def _operator(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "operator",
        help="run the operator: Gateway, Route and Authorizer objects → running gateways",
        description="`wardgate operator`: run the operator (kopf) against the current cluster.",
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace",
        "-n",
        action="append",
        dest="namespaces",
        metavar="NS",
        help="watch this namespace (repeatable); every namespace when none is given",
    )
    scope.add_argument(
        "--all-namespaces",
        "-A",
        action="store_true",
        help="watch every namespace (the default when no --namespace is given)",
    )
    peering = parser.add_mutually_exclusive_group()
    peering.add_argument(
        "--standalone",
        action="store_true",
        help="no peering: this must be the only operator instance (the default)",
    )
    peering.add_argument(
        "--peering",
        metavar="NAME",
        help="coordinate with other instances through kopf peering object NAME (its CRDs "
        "must be installed)",
    )
    parser.add_argument(
        "--gateway-image", default=DEFAULT_GATEWAY_IMAGE, help="default image of gateway pods"
    )
    parser.add_argument(
        "--gateway-image-pull-policy",
        default="IfNotPresent",
        choices=["Always", "IfNotPresent", "Never"],
    )
    _kubeconfig(parser, "kubeconfig (default: in-cluster, then ~/.kube/config)")
    parser.add_argument(
        "--liveness",
        metavar="URL",
        help="serve kopf's liveness probe, e.g. http://0.0.0.0:8081/healthz",
    )
    parser.add_argument("--workers", type=int, default=2, help="concurrent reconciles")
    parser.add_argument(
        "--jwks-probe-seconds",
        type=float,
        default=60.0,
        metavar="S",
        help="probe each Authorizer's JWKS every S seconds for its status (60); 0: never",
    )
    parser.add_argument(
        "--resync-seconds",
        type=float,
        default=60.0,
        metavar="S",
        help="every S seconds, list the watched objects to find those deleted while a watch "
        "was cut off (60); 0: never",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")


DEV_CLUSTER_DESCRIPTION: Final = """\
`wardgate dev-cluster up|down|env`: a local cluster for trying Wardgate out.

`up` starts a control plane and a real node (containerd, kubelet, kube-proxy, CoreDNS in
namespaces of their own; with `--kwok` a fake node instead) with the image built from this
checkout, under its own name and the chart's default one, and supervises it in the
foreground until Ctrl-C (or, with `--detach`, in the background); `env` prints the shell
exports for the running one; `down` stops it. The running cluster is described by
`state.json` in the state directory (`$WARDGATE_DEV_CLUSTER_DIR`, default
`~/.cache/wardgate/dev-cluster`), next to a stable copy of its kubeconfig.
"""


def _dev_cluster(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "dev-cluster",
        help="run a local Kubernetes control plane",
        description=DEV_CLUSTER_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    up = actions.add_parser("up", help="start the cluster (foreground until Ctrl-C)")
    up.add_argument(
        "--detach", action="store_true", help="run in the background; print exports when ready"
    )
    up.add_argument(
        "--kwok",
        action="store_true",
        help="a fake node (kwok) instead of the real one: pods become Ready without running",
    )
    up.add_argument(
        "--image-archive",
        action="append",
        type=Path,
        default=[],
        metavar="TAR",
        help="an image archive to import into the node (repeatable; the image built from "
        "this checkout is imported anyway)",
    )
    actions.add_parser("down", help="stop the running cluster")
    actions.add_parser("env", help="print shell exports for the running cluster")


DEMO_ORDERS_PORT: Final = 8080


def _demo(subparsers: Subparsers) -> None:
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
    orders = subparsers.add_parser(
        "demo-orders",
        help="serve the seed example's orders upstream (the same JSON on every path)",
        description="The `orders` upstream of examples/seed: answers every request with the "
        "demo orders as JSON, until stopped.",
    )
    orders.add_argument("--host", default="127.0.0.1", help="address to listen on")
    orders.add_argument("--port", type=int, default=DEMO_ORDERS_PORT, help="port to listen on")


if __name__ == "__main__":
    sys.exit(main())
