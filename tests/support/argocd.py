"""Run the Argo CD health check (deploy/argocd/health.lua) in Argo CD's own interpreter,
gopher-lua, loaded as Argo CD loads a health script configured in argocd-cm: the object as
the global `obj`, only the libraries Argo CD opens (package, base, table and a reduced os;
no string or math library), and the returned table read for `status` and `message`.

The interpreter runs in `argocd-health` (tools/argocd-health, built from Go modules by
hack/gitops-binaries.sh), which reads a JSON array of objects and answers one health per
object.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from tests.support.gitops_tools import find_binary

ROOT: Final = Path(__file__).resolve().parents[2]
HEALTH_LUA: Final = ROOT / "deploy" / "argocd" / "health.lua"
STATUS_FIXTURES: Final = ROOT / "tests" / "fixtures" / "status"
KINDS: Final = ("Gateway", "Route", "Authorizer")
HEALTH_STATES: Final = ("Healthy", "Progressing", "Degraded")


@dataclass(frozen=True)
class Health:
    status: str
    message: str


class HealthScriptError(RuntimeError):
    """The script raised an error or returned no table, as Argo CD would report it."""


def assess_all(objects: Sequence[dict[str, Any]], script: Path = HEALTH_LUA) -> list[Health]:
    """The health Argo CD would give each object."""
    result = subprocess.run(
        [str(find_binary("argocd-health")), str(script)],
        input=json.dumps(list(objects)),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if result.returncode != 0:
        raise RuntimeError(f"argocd-health failed: {result.stderr.strip()}")
    answers: list[dict[str, str]] = json.loads(result.stdout)
    healths = []
    for obj, answer in zip(objects, answers, strict=True):
        if "error" in answer:
            name = (obj.get("metadata") or {}).get("name")
            raise HealthScriptError(f"{obj.get('kind')} {name}: {answer['error']}")
        healths.append(Health(status=answer["status"], message=answer.get("message", "")))
    return healths


def assess(obj: dict[str, Any], script: Path = HEALTH_LUA) -> Health:
    """The health Argo CD would give `obj`."""
    return assess_all([obj], script)[0]
