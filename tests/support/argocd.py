"""Run the Argo CD health check (deploy/argocd/health.lua) the way Argo CD does: the object
as the global `obj`, the script's returned table read for `status` and `message`.

Argo CD embeds gopher-lua, a Lua 5.1: the script runs on lupa's Lua 5.1 runtime.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import lupa.lua51 as lua51

ROOT: Final = Path(__file__).resolve().parents[2]
HEALTH_LUA: Final = ROOT / "deploy" / "argocd" / "health.lua"
STATUS_FIXTURES: Final = ROOT / "tests" / "fixtures" / "status"
KINDS: Final = ("Gateway", "Route", "Authorizer")
HEALTH_STATES: Final = ("Healthy", "Progressing", "Degraded")


@dataclass(frozen=True)
class Health:
    status: str
    message: str


def assess(obj: dict[str, Any], script: str | None = None) -> Health:
    """The health Argo CD would give `obj`."""
    runtime = lua51.LuaRuntime(unpack_returned_tuples=True)
    runtime.globals()["obj"] = runtime.table_from(obj, recursive=True)
    result = runtime.execute(script if script is not None else HEALTH_LUA.read_text())
    status = result["status"]
    message = result["message"]
    assert isinstance(status, str), f"health.lua returned status {status!r}"
    return Health(status=status, message=message if isinstance(message, str) else "")
