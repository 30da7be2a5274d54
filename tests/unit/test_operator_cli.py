"""`wardgate operator`'s command line."""

from __future__ import annotations

import pytest

from wardgate.cli import build_parser


def test_operator_command_line() -> None:
    args = build_parser().parse_args(
        ["operator", "-n", "a", "-n", "b", "--gateway-image", "img:1", "--peering", "p"]
    )
    assert args.namespaces == ["a", "b"]
    assert args.gateway_image == "img:1"
    assert args.peering == "p"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["operator", "-n", "a", "--all-namespaces"])
