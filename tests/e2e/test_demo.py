"""The README's run command, non-interactively: `wardgate demo --once` brings the whole system
up from nothing (a local cluster with a real node, the chart with the operator's pod, the
seed example's gateway and orders pods), gets the expected answers through the gateway's
Service, sees a new Route served, and leaves no process or file behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.host import processes_mentioning


@pytest.mark.timeout(1200)
def test_demo_once(tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    # Every temporary directory of the demo (its own, the cluster's) goes under `scratch`.
    env = {**os.environ, "TMPDIR": str(scratch)}
    env.pop("KUBECONFIG", None)
    result = subprocess.run(
        [sys.executable, "-m", "wardgate", "demo", "--once"],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )
    output = result.stdout
    assert result.returncode == 0, f"{output}\n{result.stderr}"
    assert 'HTTP/1.1 200 OK\n{"status": "ok"}' in output
    assert 'HTTP/1.1 401 Unauthorized\n{"error": {"code": "missing_token"' in output
    assert '"orders": [' in output
    assert "new Route applied: served by the gateway pods" in output
    assert 'HTTP/1.1 200 OK\n{"hello": "world"}' in output
    assert re.search(r"/health meanwhile: [1-9][0-9]* requests, 0 not 200", output)
    assert "all answers as expected" in output

    assert list(scratch.iterdir()) == []
    assert processes_mentioning(str(scratch)) == []
