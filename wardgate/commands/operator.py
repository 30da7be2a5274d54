"""`wardgate operator`: run the operator (kopf) against the current cluster, until
interrupted."""

from __future__ import annotations

import argparse
import sys
from typing import Final

import kopf

from wardgate.operator.handlers import Options, Runtime, registry
from wardgate.operator.manifests import Defaults

EXIT_UNUSABLE: Final = 2
"""A bad argument, as argparse exits for one."""


def run(args: argparse.Namespace) -> int:
    for namespace in args.namespaces or ():
        if any(c in namespace for c in "*?["):
            print(f"--namespace {namespace}: name each namespace (no patterns)", file=sys.stderr)
            return EXIT_UNUSABLE
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
