"""`wardgate explain --gateway` without `-n` reads the namespace kubectl would use, from the
kubeconfig it reads the cluster from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wardgate.operator.rendered import RenderedGateway, default_namespace


def _kubeconfig(path: Path, namespace: str | None) -> Path:
    context: dict[str, str] = {"cluster": "c", "user": "u"}
    if namespace is not None:
        context["namespace"] = namespace
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "ctx", "context": context}],
                "current-context": "ctx",
            }
        )
    )
    return path


@pytest.fixture(autouse=True)
def _outside_a_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)


def test_the_current_contexts_namespace(tmp_path: Path) -> None:
    assert default_namespace(_kubeconfig(tmp_path / "k", "team-a")) == "team-a"


def test_default_without_one(tmp_path: Path) -> None:
    assert default_namespace(_kubeconfig(tmp_path / "k", None)) == "default"
    broken = tmp_path / "broken"
    broken.write_text("not: [a kubeconfig")
    assert default_namespace(broken) == "default"


def test_a_given_namespace_wins_and_names_the_config_map(tmp_path: Path) -> None:
    kubeconfig = _kubeconfig(tmp_path / "k", "team-a")
    implied = RenderedGateway.connect("api", None, kubeconfig)
    assert (implied.namespace, implied.origin) == ("team-a", "configmap/wardgate-api-config")
    given = RenderedGateway.connect("api", "shop", kubeconfig)
    assert (given.namespace, given.origin) == ("shop", "configmap/wardgate-api-config -n shop")
