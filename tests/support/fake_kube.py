"""A dict-backed `Kube` (`wardgate.operator.reconciler.Kube`) for the reconciler's unit tests:
objects by (kind, namespace, name), every call recorded, chosen writes refused the way the
API server refuses them. What only a real API server shows (server-side apply's merging,
admission, the garbage collector) stays in the integration suites."""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from typing import Any

from wardgate.operator.kube import KubeError, object_path

Body = dict[str, Any]
ObjectId = tuple[str, str, str]
"""(kind, namespace, name)"""


@dataclass
class FakeKube:
    """The API server as a dict."""

    objects: dict[ObjectId, Body] = field(default_factory=dict)
    writes: list[str] = field(default_factory=list)
    """Each write, as `apply Deployment`, `delete PodDisruptionBudget`, `status Route`,
    `create Event` (as `KubeApi.writes` counts them)."""
    deleted: list[tuple[ObjectId, bool]] = field(default_factory=list)
    """Each deletion and whether it orphaned what the object owns."""
    events: list[Body] = field(default_factory=list)
    refuse: dict[str, KubeError] = field(default_factory=dict)
    """A write's name (as in `writes`) → the error it fails with."""
    _uids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def put(self, body: Body) -> Body:
        """Store an object as the API would hold it (uid, resourceVersion, generation)."""
        stored = copy.deepcopy(body)
        metadata = stored.setdefault("metadata", {})
        metadata.setdefault("namespace", "")
        metadata.setdefault("uid", f"uid-{next(self._uids)}")
        metadata.setdefault("generation", 1)
        metadata["resourceVersion"] = str(next(self._uids))
        self.objects[(stored["kind"], metadata["namespace"], metadata["name"])] = stored
        return copy.deepcopy(stored)

    def stored(self, kind: str, namespace: str, name: str) -> Body | None:
        found = self.objects.get((kind, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    def _write(self, what: str) -> None:
        self.writes.append(what)
        if what in self.refuse:
            raise self.refuse[what]

    async def get(self, kind: str, namespace: str, name: str) -> Body | None:
        return self.stored(kind, namespace, name)

    async def list_metadata(self, kind: str, namespace: str) -> list[Body]:
        return [
            copy.deepcopy(body["metadata"])
            for (k, ns, _name), body in self.objects.items()
            if k == kind and (ns == namespace or not namespace)
        ]

    async def apply(self, manifest: Body) -> Body:
        self._write(f"apply {manifest['kind']}")
        metadata = manifest["metadata"]
        current = self.objects.get((manifest["kind"], metadata["namespace"], metadata["name"]))
        applied = copy.deepcopy(manifest)
        if current is not None:
            applied["metadata"]["uid"] = current["metadata"]["uid"]
            if "status" in current:
                applied["status"] = current["status"]
        return self.put(applied)

    async def delete(self, kind: str, namespace: str, name: str, *, orphan: bool = False) -> None:
        self._write(f"delete {kind}")
        self.deleted.append(((kind, namespace, name), orphan))
        self.objects.pop((kind, namespace, name), None)

    async def patch_status(self, kind: str, namespace: str, name: str, status: Body) -> Body:
        self._write(f"status {kind}")
        current = self.objects.get((kind, namespace, name))
        if current is None:
            path = object_path(kind, namespace, name) + "/status"
            raise KubeError("PATCH", path, 404, f'{kind.lower()}s "{name}" not found')
        current["status"] = copy.deepcopy(status)
        return copy.deepcopy(current)

    async def merge_patch(self, kind: str, namespace: str, name: str, body: Body) -> Body:
        self._write(f"patch {kind}")
        current = self.objects.get((kind, namespace, name))
        if current is None:
            path = object_path(kind, namespace, name)
            raise KubeError("PATCH", path, 404, f'{kind.lower()}s "{name}" not found')
        for field_name, value in body.items():  # one level deep, as the reconciler patches
            merged = {**(current.get(field_name) or {}), **value}
            current[field_name] = {k: v for k, v in merged.items() if v is not None}
        return copy.deepcopy(current)

    async def create_event(self, namespace: str, event: Body) -> None:
        self._write("create Event")
        self.events.append(copy.deepcopy(event))
