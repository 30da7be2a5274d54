"""`wardgate explain` shows the host decision of a request, and `wardgate validate` reports
hostname problems: through the commands' entry point, on a config file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from wardgate.cli import main

CONFIG: dict[str, Any] = {
    "hostnames": ["api.example.com", "*.example.com", "idle.test"],
    "paths": [
        {"method": "GET", "path": "/orders", "hostnames": ["api.example.com"], "response": "api"},
        {"method": "GET", "path": "/orders", "hostnames": ["*.example.com"], "response": "any"},
        {"method": "GET", "path": "/help", "hostnames": ["*.example.com"], "response": "help"},
    ],
}


def _write(tmp_path: Path, document: dict[str, Any]) -> Path:
    path = tmp_path / "gateway.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def _explain(
    capsys: pytest.CaptureFixture[str], config: Path, *args: str
) -> tuple[int, dict[str, Any]]:
    status = main(["explain", "--config", str(config), "-o", "json", *args])
    return status, json.loads(capsys.readouterr().out)


def _host_line(capsys: pytest.CaptureFixture[str], config: Path, *args: str) -> str:
    main(["explain", "--config", str(config), *args])
    return next(line for line in capsys.readouterr().out.splitlines() if line.startswith("host"))


def test_explain_names_the_hostname_that_decided(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _write(tmp_path, CONFIG)
    # The exact host's routes first: its /orders answers.
    status, report = _explain(capsys, config, "--host", "API.Example.com:8443", "GET", "/orders")
    assert status == 0
    assert report["host"] == {
        "tried": ["api.example.com", "*.example.com"],
        "decided": "api.example.com",
    }
    # No /help on the exact host: the wildcard's decides.
    status, report = _explain(capsys, config, "--host", "api.example.com", "GET", "/help")
    assert (status, report["host"]["decided"]) == (0, "*.example.com")
    assert _host_line(capsys, config, "--host", "api.example.com", "GET", "/help") == (
        "host      api.example.com: routes of api.example.com, then *.example.com; "
        "decided by *.example.com"
    )
    # A host the gateway serves but no path names; a host it does not serve; no host at all.
    status, report = _explain(capsys, config, "--host", "idle.test", "GET", "/orders")
    assert (status, report["result"]["code"], report["host"]["tried"]) == (1, "no_route", [])
    status, report = _explain(capsys, config, "-H", "Host: other.org", "GET", "/orders")
    assert (status, report["result"]["code"]) == (1, "unknown_host")
    assert "FAIL the request has no Host" in _host_line(capsys, config, "GET", "/orders")
    assert (
        main(["explain", "--config", str(config), "--host", "a", "-H", "Host: b", "GET", "/"]) == 2
    )
    assert "--host and a Host --header" in capsys.readouterr().err


def test_a_gateway_without_hostnames_shows_no_host_decision(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _write(tmp_path, {"paths": [{"method": "GET", "path": "/x", "response": 1}]})
    status, report = _explain(capsys, config, "--host", "anything.test", "GET", "/x")
    assert status == 0
    assert report["host"] == {"tried": None, "decided": None}


def test_validate_reports_hostname_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _write(tmp_path, CONFIG)
    assert main(["validate", str(config)]) == 0
    captured = capsys.readouterr()
    assert "valid (3 paths)" in captured.out
    assert "warning: hostnames.2: no path serves idle.test" in captured.err

    for hostnames, paths, problem in [
        (["API.example.com"], [], "hostnames.0: 'API.example.com' is not a hostname"),
        (["a.example.com:443"], [], "hostnames.0: 'a.example.com:443' is not a hostname"),
        (["*.com"], [], "hostnames.0: '*.com': a wildcard needs at least two labels"),
        (["a.test", "a.test"], [], "hostnames: a.test is listed twice"),
        (
            ["*.example.com"],
            [{"method": "GET", "path": "/x", "hostnames": ["example.com"], "response": 1}],
            "paths.0.hostnames.0: example.com is not among the gateway's hostnames",
        ),
        (
            [],
            [
                {"method": "GET", "path": "/x", "hostnames": ["a.test"], "response": 1},
                {"method": "GET", "path": "/x", "hostnames": ["a.test"], "response": 2},
            ],
            "paths.1: GET /x on a.test duplicates paths.0",
        ),
    ]:
        bad = _write(tmp_path, {"hostnames": hostnames, "paths": paths})
        assert main(["validate", str(bad)]) == 1, problem
        assert problem in capsys.readouterr().err, problem
