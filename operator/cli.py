"""`wardgate operator`: run the operator (kopf) against the current cluster."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

DEFAULT_GATEWAY_IMAGE = "ghcr.io/wardgate/wardgate:0.1.0"


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add `wardgate operator`."""
    parser = subparsers.add_parser(
        "operator",
        help="run the operator: Gateway, Route and Authorizer objects → running gateways",
        description=__doc__,
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
    parser.add_argument(
        "--kubeconfig", type=Path, help="kubeconfig (default: in-cluster, then ~/.kube/config)"
    )
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
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run until interrupted."""
    import kopf  # heavy imports only for this command

    from wardgate.operator.handlers import Options, Runtime, registry
    from wardgate.operator.manifests import Defaults

    for namespace in args.namespaces or ():
        if any(c in namespace for c in "*?["):
            print(f"--namespace {namespace}: name each namespace (no patterns)", file=sys.stderr)
            return 2
    kopf.configure(verbose=args.verbose)
    options = Options(
        kubeconfig=args.kubeconfig,
        defaults=Defaults(
            image=args.gateway_image, image_pull_policy=args.gateway_image_pull_policy
        ),
        workers=args.workers,
        probe_seconds=args.jwks_probe_seconds or None,
        resync_seconds=args.resync_seconds or None,
        namespaces=list(args.namespaces) if args.namespaces else None,
    )
    kopf.run(
        registry=registry,
        clusterwide=not args.namespaces,
        namespaces=args.namespaces or (),
        standalone=args.peering is None,
        peering_name=args.peering,
        liveness_endpoint=args.liveness,
        memo=Runtime(options),
    )
    return 0
