"""docs/multi-team.md's worked example, rendered: what the page says happens does."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from wardgate.operator.inputs import resource_from_body
from wardgate.operator.render import ObjectStatus, RenderResult, render

DOC = Path(__file__).resolve().parents[2] / "docs" / "multi-team.md"


def _documents() -> list[dict[str, Any]]:
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)
    return [d for block in blocks for d in yaml.safe_load_all(block) if d]


def _render(documents: list[dict[str, Any]]) -> RenderResult:
    objects = [d for d in documents if "kind" in d]
    for d in objects:
        d["metadata"].setdefault("creationTimestamp", "2026-01-01T00:00:00Z")
    by_kind = {
        kind: [resource_from_body(d) for d in objects if d["kind"] == kind]
        for kind in ("Gateway", "Route", "Authorizer")
    }
    labels = {
        d["metadata"]["name"]: d["metadata"]["labels"] for d in objects if d["kind"] == "Namespace"
    }
    [gateway] = by_kind["Gateway"]
    return render(gateway.meta.key, gateway, by_kind["Route"], by_kind["Authorizer"], {}, labels)


def _route(result: RenderResult, namespace: str, name: str) -> ObjectStatus:
    return next(s for s in result.routes if s.meta.key == (namespace, name))


def _accepted(status: ObjectStatus) -> tuple[str, str]:
    condition = next(c for c in status.conditions if c.type == "Accepted")
    return condition.reason, condition.message


def test_the_worked_example_admits_the_three_teams_and_refuses_the_shortcut() -> None:
    documents = _documents()
    shown_status = next(d["status"] for d in documents if "status" in d)
    result = _render(documents)
    for key in (("platform", "admin"), ("shop", "catalog"), ("payments", "ledger")):
        assert _accepted(_route(result, *key))[0] == "Accepted", key
    catalog = _route(result, "shop", "catalog")
    assert catalog.fields["policy"] == [
        {"path": p["path"], "methods": p["methods"], "result": p["result"], "rules": p["rules"]}
        for p in shown_status["policy"]
    ]
    assert result.document is not None
    carts = next(p for p in result.document["paths"] if p["path"] == "/shop/carts/*")
    assert carts["auth"]["scopes"] == ["cart:write", "api"]
    assert (
        next(p for p in result.document["paths"] if p["path"] == "/shop/catalog/*").get("auth")
        is None
    )

    shortcut = _route(result, "payments", "shortcut")
    reason, message = _accepted(shortcut)
    assert reason == "NotAllowed"
    text = DOC.read_text(encoding="utf-8")
    shown = text[text.index("jsonpath=") :].split("\n", 1)[1].split("```", 1)[0]
    assert " ".join(shown.split()) == message
    refused = [(p["path"], p["result"], p["rules"][0]) for p in shortcut.fields["policy"]]
    assert refused == [
        (
            "/payments/products/*",
            "Refused",
            "server catalog: spec.servers.catalog.allowedRoutes.namespaces",
        ),
        ("/payments/open", "Refused", "auth: spec.authPolicy.unauthenticated"),
        ("/payments/ops", "Refused", "authorizer: spec.authPolicy.authorizers"),
        ("/*", "Refused", "path: spec.delegations"),
    ]
    # The config the gateways run has none of the shortcut's paths.
    assert not {"/payments/products/*", "/payments/open", "/payments/ops", "/*"} & {
        p["path"] for p in result.document["paths"]
    }
