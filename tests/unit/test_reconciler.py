"""The reconciler's paths, against a dict-backed API (`support.fake_kube`) and the same
indexes and event handlers the informers feed: create, no write when nothing changed (also
after a restart), an object owned by someone else, a Deployment replaced, optional objects
deleted, a Gateway going away, a config too large for its ConfigMap, and the work queue's
retries. Each runs in milliseconds; the integration suites keep what only an API server
shows (server-side apply, the garbage collector, watches)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import kopf
import pytest

from tests.support.fake_kube import Body, FakeKube
from wardgate.operator.handlers import (
    REPLACING_DELAY_SECONDS,
    Controller,
    _retry_delay,
    build_controller,
    resync,
    watched_resources,
)
from wardgate.operator.informer import Watched
from wardgate.operator.kube import KubeError
from wardgate.operator.manifests import CONFIG_MAP_LIMIT, Defaults, child_name
from wardgate.operator.reconciler import STATUS_CONCURRENCY, ReplacingError
from wardgate.operator.workqueue import MAX_BACKOFF_SECONDS, backoff_seconds

NAMESPACE = "shop"
NOW = "2026-01-01T00:00:00Z"
GATEWAY = ("Gateway", NAMESPACE, "api")
OWNED = (
    "apply ConfigMap",
    "apply ConfigMap",  # where the replicas record the config each serves
    "apply ServiceAccount",
    "apply Role",
    "apply RoleBinding",
    "apply Deployment",
    "apply Service",
)


def _gateway(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "wardgate.io/v1alpha1",
        "kind": "Gateway",
        "metadata": {"namespace": NAMESPACE, "name": "api"},
        "spec": spec,
    }


def _route(name: str, path: str) -> dict[str, Any]:
    return {
        "apiVersion": "wardgate.io/v1alpha1",
        "kind": "Route",
        "metadata": {
            "namespace": NAMESPACE,
            "name": name,
            "creationTimestamp": NOW,
        },
        "spec": {
            "gatewayRef": {"name": "api"},
            "paths": [{"method": "GET", "path": path, "response": {"name": name}}],
        },
    }


class World:
    """A FakeKube, and a controller whose indexes are fed the way the informers feed them."""

    def __init__(self, kube: FakeKube | None = None) -> None:
        self.kube = kube or FakeKube()
        self.controller: Controller = build_controller(
            self.kube, Defaults(image="wardgate:test"), workers=1
        )
        self.controller.reconciler.clock = lambda: NOW
        self.controller.reconciler.instance = "test"
        self.watched: dict[str, Watched[Any, Any]] = {
            w.kind: w for w in watched_resources(self.controller)
        }

    def add(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create the object in the API and deliver its watch event."""
        stored = self.kube.put(body)
        self.watched[stored["kind"]].apply("ADDED", stored)
        return stored

    def modify(self, kind: str, name: str, **spec: Any) -> None:
        current = self.kube.stored(kind, NAMESPACE, name)
        assert current is not None
        current["spec"] = {**current["spec"], **spec}
        current["metadata"]["generation"] += 1
        self.watched[kind].apply("MODIFIED", self.kube.put(current))

    def delete(self, kind: str, name: str) -> None:
        current = self.kube.objects.pop((kind, NAMESPACE, name))
        self.watched[kind].apply("DELETED", current)

    def restarted(self) -> World:
        """A new operator over the same API: it lists every object, statuses included."""
        world = World(self.kube)
        for body in list(self.kube.objects.values()):
            if body["kind"] in world.watched:
                world.watched[body["kind"]].apply("ADDED", body)
        return world

    async def reconcile(self, key: tuple[str, str, str] = GATEWAY) -> None:
        await self.controller.reconciler.reconcile(key)

    def condition(self, kind: str, name: str, type: str) -> dict[str, Any]:
        body = self.kube.stored(kind, NAMESPACE, name)
        assert body is not None
        conditions = (body.get("status") or {}).get("conditions") or []
        return next(c for c in conditions if c["type"] == type)


def _owner_of_someone_else(kind: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": kind,
        "metadata": {
            "namespace": NAMESPACE,
            "name": name,
            "ownerReferences": [{"uid": "someone-else", "controller": True, "name": "x"}],
        },
    }


async def test_a_new_gateway_creates_its_objects_and_reports_them() -> None:
    world = World()
    world.add(_gateway())
    world.add(_route("orders", "/orders"))

    await world.reconcile()

    applied = [w for w in world.kube.writes if w.startswith("apply ")]
    assert applied == list(OWNED)
    assert not world.kube.deleted  # neither a PodDisruptionBudget nor an HPA existed
    config_map = world.kube.stored("ConfigMap", NAMESPACE, child_name("api", "-config"))
    assert config_map is not None
    assert "status Gateway" in world.kube.writes
    assert "status Route" in world.kube.writes
    assert world.condition("Gateway", "api", "Accepted")["status"] == "True"
    # No Deployment is available yet: not Programmed, and the status says so.
    assert world.condition("Gateway", "api", "Programmed")["status"] == "False"
    assert world.condition("Route", "orders", "Accepted")["status"] == "True"
    assert {e["involvedObject"]["kind"] for e in world.kube.events} <= {"Gateway", "Route"}


async def test_nothing_changed_writes_nothing_even_after_a_restart() -> None:
    world = World()
    world.add(_gateway())
    world.add(_route("orders", "/orders"))
    await world.reconcile()
    before = len(world.kube.writes)

    await world.reconcile()
    assert world.kube.writes[before:] == []

    restarted = world.restarted()
    await restarted.reconcile()
    assert world.kube.writes[before:] == []


def _pod(name: str, ready: bool = True) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "namespace": NAMESPACE,
            "name": name,
            "uid": f"uid-{name}",
            "labels": {"wardgate.io/gateway": "api", "app.kubernetes.io/managed-by": "x"},
        },
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


async def test_ready_only_once_every_ready_replica_serves_the_config() -> None:
    world = World()
    world.add(_gateway())
    world.add(_route("orders", "/orders"))
    await world.reconcile()
    records_name = child_name("api", "-served")
    records = world.kube.stored("ConfigMap", NAMESPACE, records_name)
    assert records is not None
    assert records["metadata"]["labels"]["wardgate.io/report"] == "served-config"
    config_map = world.kube.stored("ConfigMap", NAMESPACE, child_name("api", "-config"))
    assert config_map is not None
    current = config_map["metadata"]["annotations"]["wardgate.io/config-hash"]
    world.add(_pod("api-a"))
    world.add(_pod("api-b", ready=False))  # not ready: counts neither way

    def record(served: dict[str, str]) -> None:
        body = world.kube.stored("ConfigMap", NAMESPACE, records_name)
        assert body is not None
        body["data"] = served
        world.watched["ConfigMap"].apply("MODIFIED", world.kube.put(body))

    record({"api-a": "old"})
    await world.reconcile()
    served = world.condition("Gateway", "api", "ConfigServed")
    assert (served["status"], served["reason"]) == ("False", "Progressing")
    assert served["message"] == f"0/1 ready replicas serve config {current} (others: 1 old)"
    assert world.condition("Gateway", "api", "Ready")["status"] == "False"

    # (Ready then waits for the Deployment's rollout too, which no controller runs here.)
    record({"api-a": current, "api-gone": "old"})
    await world.reconcile()
    served = world.condition("Gateway", "api", "ConfigServed")
    assert (served["status"], served["message"]) == (
        "True",
        f"1/1 ready replicas serve config {current}",
    )
    gateway = world.kube.stored("Gateway", NAMESPACE, "api")
    assert gateway is not None
    assert gateway["status"]["servingReplicas"] == 1
    # The record of a pod that no longer exists is removed.
    stored = world.kube.stored("ConfigMap", NAMESPACE, records_name)
    assert stored is not None
    assert stored["data"] == {"api-a": current}


async def test_a_changed_route_applies_only_what_differs() -> None:
    world = World()
    world.add(_gateway())
    world.add(_route("orders", "/orders"))
    await world.reconcile()
    before = len(world.kube.writes)

    path = {"method": "GET", "path": "/v2/orders", "response": {"name": "orders"}}
    world.modify("Route", "orders", paths=[path])
    await world.reconcile()

    applied = [w for w in world.kube.writes[before:] if w.startswith("apply ")]
    # Only the config: the gateways reload it in place, their Deployment is as it was.
    assert applied == ["apply ConfigMap"]
    assert world.condition("Route", "orders", "Accepted")["status"] == "True"


async def test_an_object_owned_by_someone_else_is_left_alone_and_reported() -> None:
    world = World()
    world.add(_gateway())
    theirs = world.kube.put(_owner_of_someone_else("ConfigMap", child_name("api", "-config")))

    await world.reconcile()

    assert not [w for w in world.kube.writes if w.startswith(("apply ", "delete "))]
    assert world.kube.stored("ConfigMap", NAMESPACE, child_name("api", "-config")) == theirs
    programmed = world.condition("Gateway", "api", "Programmed")
    assert (programmed["status"], programmed["reason"]) == ("False", "ObjectConflict")
    assert f"ConfigMap {NAMESPACE}/{child_name('api', '-config')}" in programmed["message"]
    assert "not owned by this Gateway" in programmed["message"]


async def test_a_deployment_whose_selector_changed_is_replaced_keeping_its_pods() -> None:
    world = World()
    world.add(_gateway())
    await world.reconcile()
    name = child_name("api")
    deployment = world.kube.stored("Deployment", NAMESPACE, name)
    assert deployment is not None
    deployment["spec"]["selector"] = {"matchLabels": {"instance": "api"}}  # an old selector
    world.kube.put(deployment)

    with pytest.raises(ReplacingError):
        await world.reconcile()
    assert world.kube.deleted == [(("Deployment", NAMESPACE, name), True)]  # orphaning

    # The work queue retries it after a short fixed delay, not the exponential backoff.
    deployment["metadata"]["deletionTimestamp"] = NOW  # still going
    world.kube.put(deployment)
    with pytest.raises(kopf.TemporaryError) as raised:
        await world.controller.process(GATEWAY)
    assert _retry_delay(raised.value) == REPLACING_DELAY_SECONDS
    assert len(world.kube.deleted) == 1  # not deleted twice

    world.kube.objects.pop(("Deployment", NAMESPACE, name))  # gone: created anew
    await world.controller.process(GATEWAY)
    created = world.kube.stored("Deployment", NAMESPACE, name)
    assert created is not None
    assert created["spec"]["selector"] != {"matchLabels": {"instance": "api"}}


async def test_optional_objects_no_longer_wanted_are_deleted_only_when_owned() -> None:
    world = World()
    world.add(_gateway(replicas=2))
    await world.reconcile()
    pdb = child_name("api")
    assert world.kube.stored("PodDisruptionBudget", NAMESPACE, pdb) is not None
    theirs = world.kube.put(_owner_of_someone_else("HorizontalPodAutoscaler", child_name("api")))

    world.modify("Gateway", "api", replicas=1)
    await world.reconcile()

    assert world.kube.deleted == [(("PodDisruptionBudget", NAMESPACE, pdb), False)]
    assert world.kube.stored("PodDisruptionBudget", NAMESPACE, pdb) is None
    assert world.kube.stored("HorizontalPodAutoscaler", NAMESPACE, child_name("api")) == theirs


async def test_a_deleted_or_deleting_gateway_gets_no_writes() -> None:
    world = World()
    world.add(_gateway())
    await world.reconcile()
    gateway = world.kube.stored("Gateway", NAMESPACE, "api")
    assert gateway is not None
    gateway["metadata"]["deletionTimestamp"] = NOW
    world.watched["Gateway"].apply("MODIFIED", world.kube.put(gateway))
    before = len(world.kube.writes)

    await world.reconcile()  # the garbage collector is at work: do not fight it
    assert world.kube.writes[before:] == []

    world.delete("Gateway", "api")
    await world.reconcile()
    assert world.kube.writes[before:] == []
    assert ("Gateway", NAMESPACE, "api") not in world.controller.reconciler.written


async def test_a_terminating_namespace_is_left_to_the_namespace_controller() -> None:
    world = World()
    world.add(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": NAMESPACE, "deletionTimestamp": NOW},
        }
    )
    world.add(_gateway())

    await world.reconcile()

    assert world.kube.writes == []


async def test_a_config_too_large_for_its_config_map_is_never_sent() -> None:
    world = World()
    world.controller.reconciler.config_map_limit = 100  # bytes, compressed
    world.add(_gateway())
    world.add(_route("orders", "/orders"))

    await world.reconcile()

    assert not [w for w in world.kube.writes if w.startswith("apply ")]
    programmed = world.condition("Gateway", "api", "Programmed")
    assert (programmed["status"], programmed["reason"]) == ("False", "ConfigTooLarge")
    assert "over the ConfigMap limit of 100 bytes" in programmed["message"]
    accepted = world.condition("Route", "orders", "Accepted")
    assert (accepted["status"], accepted["reason"]) == ("False", "GatewayConfigTooLarge")

    world.controller.reconciler.config_map_limit = CONFIG_MAP_LIMIT  # fits again
    await world.reconcile()
    assert [w for w in world.kube.writes if w.startswith("apply ")] == list(OWNED)
    assert world.condition("Route", "orders", "Accepted")["status"] == "True"


async def test_a_refused_call_is_retried_with_exponential_backoff() -> None:
    world = World()
    world.add(_gateway())
    refused = KubeError("PATCH", "/api/v1/namespaces/shop/configmaps/x", 500, "etcd is down")
    world.kube.refuse["apply ConfigMap"] = refused

    with pytest.raises(kopf.TemporaryError) as raised:
        await world.controller.process(GATEWAY)

    assert raised.value.__cause__ is refused
    assert _retry_delay(raised.value) is None  # the work queue's backoff
    assert [backoff_seconds(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert backoff_seconds(100) == MAX_BACKOFF_SECONDS

    del world.kube.refuse["apply ConfigMap"]
    await world.controller.process(GATEWAY)
    assert world.condition("Gateway", "api", "Accepted")["status"] == "True"


async def test_a_write_into_a_deleted_namespace_is_not_retried() -> None:
    world = World()
    world.add(_gateway())
    world.kube.refuse["apply ConfigMap"] = KubeError(
        "PATCH", "/api/v1/namespaces/shop/configmaps/x", 404, 'namespaces "shop" not found'
    )

    await world.controller.process(GATEWAY)  # no exception: nothing to retry

    assert world.kube.writes == ["apply ConfigMap"]


async def test_a_status_for_an_object_deleted_meanwhile_and_a_refused_event_are_ignored() -> None:
    world = World()
    world.add(_gateway())
    world.add(_route("orders", "/orders"))
    world.kube.objects.pop(("Route", NAMESPACE, "orders"))  # deleted, its event not yet seen
    world.kube.refuse["create Event"] = KubeError("POST", "/events", 403, "forbidden")

    await world.reconcile()

    assert "status Route" in world.kube.writes
    assert world.condition("Gateway", "api", "Accepted")["status"] == "True"


async def test_route_events_enqueue_the_gateways_they_left_and_joined() -> None:
    world = World()
    world.add(_gateway())
    world.add(_route("orders", "/orders"))
    queued: list[tuple[str, str, str]] = []
    world.controller.queue.add = queued.append  # type: ignore[method-assign]

    world.modify("Route", "orders", gatewayRef={"name": "other"})
    assert sorted(queued) == [("Gateway", NAMESPACE, "api"), ("Gateway", NAMESPACE, "other")]

    queued.clear()
    route = world.kube.stored("Route", NAMESPACE, "orders")
    assert route is not None
    route["status"] = {"conditions": []}  # a status-only update: same generation
    world.watched["Route"].apply("MODIFIED", world.kube.put(route))
    assert queued == []


async def test_an_authorizer_reports_its_status() -> None:
    world = World()
    world.add(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"namespace": NAMESPACE, "name": "keys"},
            "stringData": {"KEY": "k" * 40},
        }
    )
    world.add(
        {
            "apiVersion": "wardgate.io/v1alpha1",
            "kind": "Authorizer",
            "metadata": {"namespace": NAMESPACE, "name": "jwt"},
            "spec": {"type": "jwt", "secret": "$secret.KEY", "secretRef": {"name": "keys"}},
        }
    )

    await world.reconcile(("Authorizer", NAMESPACE, "jwt"))

    assert world.kube.writes[0] == "status Authorizer"
    assert world.condition("Authorizer", "jwt", "Ready")["status"] == "True"
    secret = world.kube.stored("Secret", NAMESPACE, "keys")
    assert secret is not None
    # The index holds sizes and digests, never the value.
    indexed = world.controller.state.secrets[NAMESPACE]
    assert "k" * 40 not in repr(indexed)


async def test_the_resync_forgets_what_was_deleted_unseen() -> None:
    world = World()
    world.add(_gateway())
    world.add(_route("orders", "/orders"))
    world.kube.objects.pop(("Route", NAMESPACE, "orders"))  # its DELETED event was lost
    queued: list[tuple[str, str, str]] = []
    world.controller.queue.add = queued.append  # type: ignore[method-assign]

    gone = await resync(world.controller)

    assert [(o.kind, o.name) for o in gone] == [("Route", "orders")]
    assert world.controller.state.routes_for((NAMESPACE, "api")) == []
    assert GATEWAY in queued


class SlowStatusKube(FakeKube):
    """Status patches that wait for a turn of the event loop, counting those in flight."""

    in_flight: int = 0
    most_in_flight: int = 0

    async def patch_status(self, kind: str, namespace: str, name: str, status: Body) -> Body:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0)  # a turn of the loop, as an API call in a thread takes
            return await super().patch_status(kind, namespace, name, status)
        finally:
            self.in_flight -= 1


async def test_route_statuses_are_patched_concurrently_within_the_bound() -> None:
    kube = SlowStatusKube()
    world = World(kube)
    world.add(_gateway())
    count = 3 * STATUS_CONCURRENCY + 5
    for index in range(count):
        world.add(_route(f"route-{index:03d}", f"/r/{index}"))

    await world.reconcile()

    assert kube.writes.count("status Route") == count
    assert kube.most_in_flight == STATUS_CONCURRENCY
    for index in range(count):
        assert world.condition("Route", f"route-{index:03d}", "Accepted")["status"] == "True"


async def test_unchanged_statuses_are_not_patched_and_one_changed_route_is() -> None:
    kube = SlowStatusKube()
    world = World(kube)
    world.add(_gateway())
    for index in range(40):
        world.add(_route(f"route-{index:03d}", f"/r/{index}"))
    await world.reconcile()
    before = len(kube.writes)

    # Twice: the second time the render outcomes and statuses are those found unchanged.
    await world.reconcile()
    await world.reconcile()
    assert kube.writes[before:] == []

    # One Route now conflicts with an older one: only its status is patched (and its
    # Event posted, a transition into a failure).
    world.modify("Route", "route-039", paths=[{"method": "GET", "path": "/r/0", "response": 1}])
    await world.reconcile()
    routes = [w for w in kube.writes[before:] if w.endswith(" Route")]
    assert routes == ["status Route"]
    assert world.condition("Route", "route-039", "Accepted")["reason"] == "Conflict"
    assert [e["involvedObject"]["name"] for e in kube.events[-1:]] == ["route-039"]


@dataclass
class ConcurrentApplyKube(FakeKube):
    """Applies that wait for a turn of the event loop, recording which were in flight
    together."""

    in_flight: set[str] = field(default_factory=set)
    waves: list[list[str]] = field(default_factory=list)

    async def apply(self, manifest: Body) -> Body:
        name = f"{manifest['kind']} {manifest['metadata']['name']}"
        if not self.in_flight:
            self.waves.append([])
        self.in_flight.add(name)
        self.waves[-1].append(name)
        try:
            await asyncio.sleep(0)
            return await super().apply(manifest)
        finally:
            self.in_flight.discard(name)


async def test_a_new_gateway_is_written_in_four_waves() -> None:
    kube = ConcurrentApplyKube()
    world = World(kube)
    world.add(_gateway(replicas=2))

    await world.reconcile()

    name = child_name("api")
    assert kube.waves == [
        [f"ConfigMap {child_name('api', '-config')}"],
        [
            f"ConfigMap {child_name('api', '-served')}",
            f"ServiceAccount {name}",
            f"Role {name}",
            f"RoleBinding {name}",
        ],
        [f"Deployment {name}"],
        [f"Service {name}", f"PodDisruptionBudget {name}"],
    ]
