"""Reconcile one Gateway or one Authorizer: read the watched state, render, apply, report.

The service layer between the kopf handlers (which only enqueue keys) and the kube layer
(the only one calling the API). Writes happen only when something differs: owned objects
are compared through their applied-hash annotation, statuses field by field.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Protocol, TypeVar, cast

from wardgate.gateway.memory import collection_paused
from wardgate.operator.conditions import DERIVED, Cond, eventful
from wardgate.operator.kube import Body, KubeError
from wardgate.operator.manifests import (
    APPLIED_HASH,
    CONFIG_HASH,
    CONFIG_MAP_LIMIT,
    Defaults,
    GatewayObjects,
    build_gateway_objects,
    child_name,
    config_map_size,
    served_report_name,
)
from wardgate.operator.models import API_VERSION
from wardgate.operator.probes import JwksProber, jwks_uri, with_probe
from wardgate.operator.render import (
    ConfigMapInfo,
    Meta,
    ObjectKey,
    RenderCache,
    Resource,
    SecretInfo,
    render,
    render_authorizer,
)
from wardgate.operator.status import (
    Replicas,
    build_event,
    build_status,
    config_too_large,
    gateway_status,
    routes_not_delivered,
    same_status,
)

log = logging.getLogger(__name__)

STATUS_CONCURRENCY: Final = 16
"""Status patches in flight at once (the API client's thread pool has as many threads)."""

T = TypeVar("T")

WorkKey = tuple[str, str, str]
"""(kind, namespace, name): kind is `Gateway` or `Authorizer`."""


@dataclass(frozen=True, slots=True)
class Observed:
    """A watched custom resource: its render input and its current status."""

    resource: Resource
    status: Mapping[str, Any] = field(default_factory=dict)

    @property
    def uid(self) -> str:
        return self.resource.meta.uid


class Kube(Protocol):
    """The API calls of the reconciler and the resync (`KubeApi`, or a dict-backed fake in
    unit tests). Bodies are plain JSON dicts; a failed call raises `KubeError`."""

    async def get(self, kind: str, namespace: str, name: str) -> Body | None:
        """The object, or None when it does not exist."""
        ...

    async def list_metadata(self, kind: str, namespace: str) -> list[Body]: ...
    async def apply(self, manifest: Body) -> Body: ...
    async def delete(
        self, kind: str, namespace: str, name: str, *, orphan: bool = False
    ) -> None: ...
    async def patch_status(self, kind: str, namespace: str, name: str, status: Body) -> Body: ...
    async def merge_patch(self, kind: str, namespace: str, name: str, body: Body) -> Body: ...
    async def create_event(self, namespace: str, event: Body) -> None: ...


class State(Protocol):
    """The watched objects (the informers' indexes, or a dict in unit tests)."""

    def gateway(self, key: ObjectKey) -> Observed | None: ...
    def gateway_keys(self) -> Iterable[ObjectKey]: ...
    def routes_for(self, gateway: ObjectKey) -> list[Observed]: ...
    def authorizers_in(self, namespace: str) -> list[Observed]: ...
    def secrets_in(self, namespace: str) -> Mapping[ObjectKey, SecretInfo]: ...
    def config_maps_in(self, namespace: str) -> Mapping[ObjectKey, ConfigMapInfo]: ...
    def namespace_labels(self) -> Mapping[str, Mapping[str, str]]: ...
    def services_in(self, namespace: str) -> Collection[ObjectKey]: ...
    def terminating(self, namespace: str) -> bool: ...
    def replicas_of(self, gateway: ObjectKey) -> Replicas: ...


def now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ObjectConflictError(Exception):
    """An object the operator would write exists and belongs to someone else."""


class ReplacingError(Exception):
    """An owned object is being replaced (deleted to be created anew): reconcile again
    once it is gone."""


@dataclass
class Reconciler:
    """Reconciles keys against the cluster."""

    kube: Kube
    state: State
    defaults: Defaults
    clock: Callable[[], str] = now_text
    instance: str = field(default_factory=socket.gethostname)
    # The status last written per object: the watch may not have delivered it yet.
    written: dict[tuple[str, str, str], Body] = field(default_factory=dict)
    unchanged: dict[tuple[str, str, str], _Unchanged] = field(default_factory=dict)
    """Per object, the status it has and the render outcome found to change nothing in it:
    the same outcome (the same objects, as a cached Route fragment gives) against the same
    status is not compared again."""
    render_caches: dict[ObjectKey, RenderCache] = field(default_factory=dict)
    """Per Gateway, what its next render may reuse (`render.RenderCache`)."""
    probes: JwksProber | None = None
    """Identity-provider health for the Authorizers' status, when probing is on."""
    renders: int = 0
    """Gateways rendered so far (what the coalescing window saves)."""
    config_map_limit: int = CONFIG_MAP_LIMIT
    """The largest config ConfigMap sent (compressed bytes)."""

    async def reconcile(self, key: WorkKey) -> None:
        kind, namespace, name = key
        if self.state.terminating(namespace):
            # Everything in it is being deleted, and the API refuses new objects there:
            # re-creating what the namespace controller removes, or reporting on objects
            # about to vanish, would only fight it.
            self.forget(kind, namespace, name)
            return
        if kind == "Gateway":
            await self.reconcile_gateway((namespace, name))
        elif kind == "Authorizer":
            await self.reconcile_authorizer((namespace, name))

    async def reconcile_authorizer(self, key: ObjectKey) -> None:
        namespace, name = key
        observed = next(
            (a for a in self.state.authorizers_in(namespace) if a.resource.meta.name == name), None
        )
        if observed is None:
            self.forget("Authorizer", namespace, name)
            return
        result = render_authorizer(observed.resource, self.state.secrets_in(namespace))
        conditions, fields = result.status.conditions, result.status.fields
        if self.probes is not None:
            uri = jwks_uri(observed.resource.spec)
            conditions, fields = with_probe(conditions, fields, self.probes.result(key, uri), uri)
        await self.write_status("Authorizer", observed, conditions, fields)

    async def reconcile_gateway(self, key: ObjectKey) -> None:
        namespace, name = key
        gateway = self.state.gateway(key)
        routes = self.state.routes_for(key)
        authorizers = self.state.authorizers_in(namespace)
        self.renders += 1
        if gateway is None:
            self.render_caches.pop(key, None)
        cache = self.render_caches.setdefault(key, RenderCache()) if gateway else None
        with collection_paused():
            result = render(
                key,
                gateway.resource if gateway else None,
                [r.resource for r in routes],
                [a.resource for a in authorizers],
                self.state.secrets_in(namespace),
                self.state.namespace_labels(),
                self.state.services_in(namespace),
                self.state.config_maps_in(namespace),
                cache=cache,
            )
        route_statuses = result.routes
        if gateway is not None and gateway.resource.meta.deleting:
            # The garbage collector is removing what it owns; re-applying would fight it.
            self.forget("Gateway", namespace, name)
        elif gateway is not None and result.gateway is not None:
            meta = gateway.resource.meta
            deployment: Body | None = None
            config_map: Body | None = None
            conflict: str | None = None
            blocked: Cond | None = None
            if result.config is not None and result.spec is not None:
                objects = build_gateway_objects(meta, result.spec, result, self.defaults)
                size = config_map_size(objects.apply[0])
                max_size = self.config_map_limit
                if size > max_size:
                    # Never sent: the API server would refuse it (422) on every retry.
                    blocked = config_too_large(size, max_size, len(result.config.paths))
                    route_statuses = routes_not_delivered(result.routes, key, size, max_size)
                else:
                    try:
                        applied = await self.apply_objects(meta, objects)
                    except ObjectConflictError as exc:
                        conflict = str(exc)
                    else:
                        deployment = applied.get("Deployment")
                        config_map = applied.get("ConfigMap")
            if deployment is None:
                deployment, config_map = await asyncio.gather(
                    self._owned(meta, "Deployment", child_name(name)),
                    self._owned(meta, "ConfigMap", child_name(name, "-config")),
                )
            running = _annotation(config_map, CONFIG_HASH) if config_map is not None else None
            replicas = self.state.replicas_of(key)
            conditions, fields = gateway_status(
                result.gateway, deployment, result.config_hash, running, conflict, blocked, replicas
            )
            await self.write_status("Gateway", gateway, conditions, fields)
            await self._forget_pods_gone(meta, replicas)
        else:
            self.forget("Gateway", namespace, name)
        by_key = {r.resource.meta.key: r for r in routes}
        await self.write_statuses(
            "Route", [(by_key[s.meta.key], s.conditions, s.fields) for s in route_statuses]
        )

    async def _forget_pods_gone(self, meta: Meta, replicas: Replicas) -> None:
        """Remove the served-config records of pods that no longer exist. (A replica records
        only once it serves, seconds after its pod was created and watched here, so a record
        is never older than its pod in the index.)"""
        stale = replicas.stale()
        if not stale:
            return
        try:
            await self.kube.merge_patch(
                "ConfigMap",
                meta.namespace,
                served_report_name(meta.name),
                {"data": dict.fromkeys(stale)},
            )
        except KubeError as exc:
            if exc.status != 404:
                raise

    async def _owned(self, meta: Meta, kind: str, name: str) -> Body | None:
        """The object, when it exists and this Gateway controls it."""
        found = await self.kube.get(kind, meta.namespace, name)
        return found if found is not None and _controlled_by(found, meta.uid) else None

    async def apply_objects(self, meta: Meta, objects: GatewayObjects) -> dict[str, Body]:
        """Apply what differs; return the applied objects (kind → the first object of that
        kind, as the cluster has it)."""
        applied: dict[str, Body] = {}
        # Read concurrently (one reconcile reads up to ten objects).
        wanted_names = [(m["kind"], m["metadata"]["name"]) for m in objects.apply]
        found = await asyncio.gather(
            *(
                self.kube.get(kind, meta.namespace, name)
                for kind, name in (*wanted_names, *objects.absent)
            )
        )
        # Written in four waves, the objects of each at once: the config (alone: a write
        # the API refuses, into a namespace being deleted say, is the only one tried), what
        # else the pods need (the records ConfigMap, the ServiceAccount and its Role), the
        # Deployment, then what refers to it (Service, PodDisruptionBudget, autoscaler).
        # One after another, a new Gateway's seven objects were seven round trips.
        waves: tuple[list[tuple[Body, Body | None]], ...] = ([], [], [], [])
        conflict: ObjectConflictError | None = None
        for index, (manifest, current) in enumerate(zip(objects.apply, found, strict=False)):
            kind = manifest["kind"]
            if current is not None and not _controlled_by(current, meta.uid):
                name = manifest["metadata"]["name"]
                conflict = ObjectConflictError(
                    f"{kind} {meta.namespace}/{name} exists and is not owned by this Gateway"
                )
                break  # what comes before it is applied still
            if kind == "Deployment":
                waves[2].append((manifest, current))
            else:
                waves[0 if index == 0 else 3 if waves[2] else 1].append((manifest, current))
        for written in waves:
            results = await _all(self._apply_one(meta, m, c) for m, c in written)
            for (manifest, _current), result in zip(written, results, strict=True):
                # The first of a kind: the config's ConfigMap comes before the replicas' one.
                applied.setdefault(manifest["kind"], result)
        if conflict is not None:
            raise conflict
        for (kind, name), current in zip(objects.absent, found[len(objects.apply) :], strict=True):
            if current is not None and _controlled_by(current, meta.uid):
                log.info("deleting %s %s/%s", kind, meta.namespace, name)
                await self.kube.delete(kind, meta.namespace, name)
        return applied

    async def _apply_one(self, meta: Meta, manifest: Body, current: Body | None) -> Body:
        """Apply the manifest unless the cluster's object has its applied hash; the object
        as the cluster has it."""
        kind = manifest["kind"]
        if current is not None and kind == "Deployment":
            await self._replace_if_immutable_changed(current, manifest)
        wanted = manifest["metadata"]["annotations"][APPLIED_HASH]
        if current is None or _annotation(current, APPLIED_HASH) != wanted:
            log.info("applying %s %s/%s", kind, meta.namespace, manifest["metadata"]["name"])
            return await self.kube.apply(manifest)
        return current

    async def _replace_if_immutable_changed(self, current: Body, manifest: Body) -> None:
        """A Deployment's selector cannot change (it did once, from `instance` to
        `wardgate.io/gateway`): delete it, orphaning its ReplicaSets, and let the next
        reconcile create the new one. The new selector matches the old pods, so the new
        Deployment adopts their ReplicaSet and rolls it over with no pod missing."""
        metadata = current.get("metadata") or {}
        if metadata.get("deletionTimestamp"):
            raise ReplacingError(f"Deployment {metadata.get('name')} is being deleted")
        selector = (current.get("spec") or {}).get("selector")
        if selector == manifest["spec"]["selector"]:
            return
        namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
        log.info("replacing Deployment %s/%s: its selector changed", namespace, name)
        await self.kube.delete("Deployment", namespace, name, orphan=True)
        raise ReplacingError(f"Deployment {namespace}/{name} is being replaced")

    async def write_status(
        self,
        kind: str,
        observed: Observed,
        conditions: tuple[Cond, ...],
        fields: Mapping[str, Any],
    ) -> None:
        """Patch the status when it differs; an Event for each condition transition."""
        change = self._status_change(kind, observed, conditions, fields)
        if change is not None:
            await self._patch_status(kind, observed.resource.meta, *change)

    async def write_statuses(
        self,
        kind: str,
        wanted: Iterable[tuple[Observed, tuple[Cond, ...], Mapping[str, Any]]],
    ) -> None:
        """`write_status` for many objects: those whose status differs are patched by
        `STATUS_CONCURRENCY` tasks at once (one after another, 10,000 Route status patches
        took about 45 s); the others cost a comparison, or nothing when their render outcome
        and status are those found unchanged before."""
        changes = [
            (observed.resource.meta, change)
            for observed, conditions, fields in wanted
            if (change := self._status_change(kind, observed, conditions, fields)) is not None
        ]
        pending = iter(changes)

        async def patch_pending() -> None:
            for meta, change in pending:
                await self._patch_status(kind, meta, *change)

        await _all(patch_pending() for _ in range(min(STATUS_CONCURRENCY, len(changes))))

    def _status_change(
        self,
        kind: str,
        observed: Observed,
        conditions: tuple[Cond, ...],
        fields: Mapping[str, Any],
    ) -> tuple[Mapping[str, Any], Body, tuple[Cond, ...]] | None:
        """(the status now, the status wanted, its conditions), or None when they are the
        same."""
        meta = observed.resource.meta
        cache_key = (kind, meta.namespace, meta.name)
        previous = self.written.get(cache_key) or observed.status
        outcome = _Unchanged(previous, meta, conditions, fields)
        if outcome.same(self.unchanged.get(cache_key)):
            return None
        desired = build_status(kind, meta, previous, conditions, fields, self.clock())
        if same_status(previous, desired):
            self.unchanged[cache_key] = outcome
            return None
        return previous, desired, conditions

    async def _patch_status(
        self,
        kind: str,
        meta: Meta,
        previous: Mapping[str, Any],
        desired: Body,
        conditions: tuple[Cond, ...],
    ) -> None:
        cache_key = (kind, meta.namespace, meta.name)
        try:
            await self.kube.patch_status(kind, meta.namespace, meta.name, desired)
        except KubeError as exc:
            if exc.status == 404:
                return  # deleted meanwhile
            raise
        self.written[cache_key] = desired
        now = self.clock()
        for condition in eventful(previous.get("conditions") or [], conditions):
            if condition.type in DERIVED:
                continue  # the same as the one it is derived from
            event = build_event(kind, API_VERSION, meta, condition, now, self.instance)
            try:
                await self.kube.create_event(meta.namespace, event)
            except KubeError as exc:  # Events are best effort
                log.warning("cannot post an Event for %s %s/%s: %s", kind, *meta.key, exc)

    def forget(self, kind: str, namespace: str, name: str) -> None:
        self.written.pop((kind, namespace, name), None)
        self.unchanged.pop((kind, namespace, name), None)


@dataclass(frozen=True, slots=True)
class _Unchanged:
    """A status and a render outcome that would not change it."""

    status: Mapping[str, Any]
    meta: Meta
    conditions: tuple[Cond, ...]
    fields: Mapping[str, Any]

    def same(self, other: _Unchanged | None) -> bool:
        """The same objects (a cached fragment's); equal ones are compared in full."""
        return (
            other is not None
            and other.status is self.status
            and other.conditions is self.conditions
            and other.fields is self.fields
            and other.meta == self.meta
        )


async def _all(calls: Iterable[Awaitable[T]]) -> list[T]:
    """Run the calls at once and wait for every one (none left running); the first
    failure, in call order, is raised."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return cast(list[T], results)


def _annotation(body: Mapping[str, Any], name: str) -> str | None:
    value = ((body.get("metadata") or {}).get("annotations") or {}).get(name)
    return str(value) if value is not None else None


def _controlled_by(body: Mapping[str, Any], uid: str) -> bool:
    references = (body.get("metadata") or {}).get("ownerReferences") or []
    return any(r.get("uid") == uid and r.get("controller") for r in references)
