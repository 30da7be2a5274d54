"""`wardgate schema`: the JSON Schema of the gateway config."""

from __future__ import annotations

import argparse
import json

from wardgate.gateway.config import config_json_schema


def run(args: argparse.Namespace) -> int:
    print(json.dumps(config_json_schema(), indent=2))
    return 0
