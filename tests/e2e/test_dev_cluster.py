"""`wardgate dev-cluster up` as the README has users run it: up in the background, the
README's "Install on a cluster" and "Apply a Route" blocks verbatim against it, the
seed example answered through the gateway's Service by real pods, then `down` leaves
nothing of the node on the host."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import jwt
import pytest
import yaml

from tests.support.real_node import host_traces, readme_block
from wardgate.devcluster.cluster import existing_cluster, wait_until

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]


def _wardgate(*args: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wardgate", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _get(url: str, token: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except OSError:
        return 0


@pytest.mark.timeout(1200)
def test_readme_blocks_on_dev_cluster_up(tmp_path: Path) -> None:
    env = {**os.environ, "WARDGATE_DEV_CLUSTER_DIR": str(tmp_path / "state")}
    env.pop("KUBECONFIG", None)
    up = _wardgate("dev-cluster", "up", "--detach", env=env, timeout=900)
    assert up.returncode == 0, up.stdout + up.stderr
    slot: int | None = None
    try:
        # What users paste: `eval "$(wardgate dev-cluster env)"`, then the README's blocks.
        exports = _wardgate("dev-cluster", "env", env=env, timeout=60).stdout
        script = (
            exports
            + "\n"
            + "\n".join(
                readme_block(heading) for heading in ("Install on a cluster", "Apply a Route")
            )
        )
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        kubeconfig = tmp_path / "state" / "kubeconfig"
        cluster = existing_cluster(kubeconfig)
        cluster.kubectl(
            "wait", "--for=condition=Ready", "gateway/api", "-n", "shop", "--timeout=180s",
            timeout=200,
        )  # fmt: skip
        listing = cluster.kubectl("get", "wardgate", "-n", "shop").stdout
        assert "False" not in listing, listing
        service = json.loads(
            cluster.kubectl("get", "service", "wardgate-api", "-n", "shop", "-o", "json").stdout
        )
        url = f"http://{service['spec']['clusterIP']}:{service['spec']['ports'][0]['port']}"
        authorizer = yaml.safe_load((ROOT / "examples/seed/authorizer.yaml").read_text())["spec"]
        secret = yaml.safe_load((ROOT / "examples/seed/secret.yaml").read_text())["stringData"]
        now = int(time.time())
        token = jwt.encode(
            {"iss": authorizer["issuer"], "aud": authorizer["audience"], "exp": now + 600},
            secret["JWT_SECRET"],
            algorithm="HS256",
        )
        wait_until(lambda: _get(f"{url}/hello") == 200, what="/hello served", timeout=120)
        wait_until(
            lambda: _get(f"{url}/private/orders", token) == 200,
            what="orders through the gateway",
            timeout=120,
        )
        assert _get(f"{url}/private/orders") == 401
        slot = int(cluster.server.split("//")[1].split(".")[2])
        assert host_traces(slot)
    finally:
        down = _wardgate("dev-cluster", "down", env=env, timeout=120)
        assert down.returncode == 0, down.stderr
    assert slot is not None
    assert host_traces(slot) == []
