"""The operator's handlers: thin. The informers (`wardgate.operator.informer`) list and watch
the objects into indexes; every event only enqueues the keys of the Gateways and Authorizers
it affects; the work queue runs the reconciler. kopf runs the process (login, start-up,
clean-up, the liveness endpoint) but watches nothing: its per-object workers made a
start-up with 10,000 Routes take minutes (see the informer module).

Why no create/update/resume handlers: kopf persists their progress and the last handled
spec on the object (annotations or status), so it would write to users' objects on every
change and on every restart. Here the operator writes nothing but statuses, and nothing at
all when nothing changed. Nothing is reconciled before every resource has been listed, so
the first reconcile sees the whole state.

An informer that lists again (after `410 Gone`) reports what is missing from the new
listing as deleted. The resync (`resync`, every `Options.resync_seconds`) also lists what is
indexed (metadata only) and marks what no longer exists as gone, which `IndexState` then
ignores: a second net for an object deleted while a watch was cut off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, NamedTuple, Protocol, TypeVar

import aiohttp
import kopf

from wardgate.gateway.kubesource import load_client_configuration
from wardgate.operator.informer import Index, Informers, Watched
from wardgate.operator.inputs import config_map_from_body, resource_from_body, secret_from_body
from wardgate.operator.kube import CLUSTER_SCOPED, Body, KubeApi, KubeError
from wardgate.operator.manifests import (
    GATEWAY_LABEL,
    MANAGED_BY,
    REPORT_LABEL,
    REPORT_SERVED,
    Defaults,
)
from wardgate.operator.probes import JwksProber, jwks_uri
from wardgate.operator.reconciler import Kube, Observed, Reconciler, ReplacingError, WorkKey
from wardgate.operator.render import ConfigMapInfo, ObjectKey, SecretInfo
from wardgate.operator.status import Replicas
from wardgate.operator.workqueue import WorkQueue

log = logging.getLogger(__name__)

registry = kopf.OperatorRegistry()

# Secrets that never hold authorizer keys and may be large: not even hashed.
IGNORED_SECRET_TYPES: Final = frozenset(
    {
        "helm.sh/release.v1",
        "kubernetes.io/service-account-token",
        "bootstrap.kubernetes.io/token",
        "kubernetes.io/dockerconfigjson",
    }
)
REPLACING_DELAY_SECONDS: Final = 0.5
IDLE_POLL_SECONDS: Final = 0.2


@dataclass
class Options:
    """What `wardgate operator` was started with."""

    kubeconfig: Path | None = None
    defaults: Defaults = field(default_factory=Defaults)
    workers: int = 2
    probe_seconds: float | None = None
    """Interval of the Authorizers' JWKS probes (`wardgate.operator.probes`); None: off."""
    resync_seconds: float | None = 60.0
    """Interval of the resync that finds indexed objects deleted unseen; None: off."""
    namespaces: list[str] | None = None
    """The namespaces watched; None: every namespace."""


def _observed(body: Mapping[str, Any]) -> Observed:
    status = body.get("status")
    return Observed(resource_from_body(body), dict(status) if isinstance(status, Mapping) else {})


def _gateway_key_of(body: Mapping[str, Any], namespace: str) -> ObjectKey | None:
    ref = (body.get("spec") or {}).get("gatewayRef") or {}
    name = ref.get("name")
    if not isinstance(name, str):
        return None
    return (str(ref.get("namespace") or namespace), name)


# --- Indexes (kept current by the informers) --------------------------------------------------


class IndexedSecret(NamedTuple):
    """A Secret in the index of its namespace: never its values."""

    uid: str
    name: str
    info: SecretInfo


class IndexedConfigMap(NamedTuple):
    """A ConfigMap in the index of its namespace: its keys, with the text only of those
    holding CA certificates (what a server's `caBundleRef` may name)."""

    uid: str
    name: str
    info: ConfigMapInfo


class IndexedService(NamedTuple):
    """A Service in the index of its namespace: only that it exists matters."""

    uid: str
    name: str


class IndexedNamespace(NamedTuple):
    """A Namespace in the index by name."""

    uid: str
    labels: Mapping[str, str]
    terminating: bool


class IndexedPod(NamedTuple):
    """A gateway pod under its Gateway's key: whether it is ready (and not terminating)."""

    uid: str
    name: str
    ready: bool


class IndexedRecords(NamedTuple):
    """The replicas' served-config records of a Gateway: pod name → config hash."""

    uid: str
    served: Mapping[str, str]


def _identity(body: Mapping[str, Any]) -> ObjectKey:
    metadata = body.get("metadata") or {}
    return str(metadata.get("namespace") or ""), str(metadata.get("name") or "")


def gateway_index(body: Body) -> dict[ObjectKey, Observed]:
    """A Gateway under its own key."""
    return {_identity(body): _observed(body)}


def route_index(body: Body) -> dict[ObjectKey, Observed]:
    """A Route under the key of the Gateway it names."""
    namespace, _name = _identity(body)
    key = _gateway_key_of(body, namespace)
    return {key: _observed(body)} if key else {}


def authorizer_index(body: Body) -> dict[str, Observed]:
    """An Authorizer under its namespace."""
    return {_identity(body)[0]: _observed(body)}


def secret_index(body: Body) -> dict[str, IndexedSecret]:
    """A Secret under its namespace (its keys' sizes and digests)."""
    if body.get("type") in IGNORED_SECRET_TYPES:
        return {}
    namespace, name = _identity(body)
    # Only sizes and digests are kept: the values go no further than this function.
    return {namespace: IndexedSecret(uid=_uid(body), name=name, info=secret_from_body(body))}


def config_map_index(body: Body) -> dict[str, IndexedConfigMap]:
    """A ConfigMap under its namespace, as CA bundles (not the operator's own)."""
    labels = (body.get("metadata") or {}).get("labels") or {}
    if labels.get("app.kubernetes.io/managed-by") == MANAGED_BY:
        return {}
    namespace, name = _identity(body)
    return {namespace: IndexedConfigMap(_uid(body), name, config_map_from_body(body))}


def service_index(body: Body) -> dict[str, IndexedService]:
    """A Service under its namespace."""
    namespace, name = _identity(body)
    return {namespace: IndexedService(uid=_uid(body), name=name)}


def namespace_index(body: Body) -> dict[str, IndexedNamespace]:
    """A Namespace under its name, with its labels and whether it is being deleted."""
    _namespace, name = _identity(body)
    labels = (body.get("metadata") or {}).get("labels") or {}
    return {
        name: IndexedNamespace(
            uid=_uid(body), labels=dict(labels), terminating=namespace_terminating(body)
        )
    }


def deployment_index(body: Body) -> dict[ObjectKey, Observed]:
    """Nothing: only a Deployment's events matter (a rollout's progress)."""
    return {}


def _gateway_of(body: Mapping[str, Any]) -> ObjectKey | None:
    """The Gateway an owned object belongs to (its label)."""
    namespace, _name = _identity(body)
    gateway = ((body.get("metadata") or {}).get("labels") or {}).get(GATEWAY_LABEL)
    return (namespace, str(gateway)) if gateway else None


def pod_index(body: Body) -> dict[ObjectKey, IndexedPod]:
    """A gateway pod under its Gateway's key."""
    gateway = _gateway_of(body)
    if gateway is None:
        return {}
    conditions = (body.get("status") or {}).get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    deleting = bool((body.get("metadata") or {}).get("deletionTimestamp"))
    return {gateway: IndexedPod(_uid(body), _identity(body)[1], ready and not deleting)}


def records_index(body: Body) -> dict[ObjectKey, IndexedRecords]:
    """A Gateway's served-config records under its key (no other ConfigMap: its config's
    holds no records)."""
    labels = (body.get("metadata") or {}).get("labels") or {}
    gateway = _gateway_of(body)
    if gateway is None or labels.get(REPORT_LABEL) != REPORT_SERVED:
        return {}
    data = body.get("data") or {}
    return {gateway: IndexedRecords(_uid(body), {str(k): str(v) for k, v in data.items()})}


def _uid(body: Mapping[str, Any]) -> str:
    return str((body.get("metadata") or {}).get("uid") or "")


def namespace_terminating(body: Mapping[str, Any]) -> bool:
    """Whether the namespace is being deleted (the API then refuses new objects in it)."""
    deleted = (body.get("metadata") or {}).get("deletionTimestamp")
    return bool(deleted) or (body.get("status") or {}).get("phase") == "Terminating"


class _FromObject(Protocol):
    """An index value: it knows the uid of the object it came from."""

    @property
    def uid(self) -> str: ...


K = TypeVar("K", bound=Hashable)
V = TypeVar("V", bound=_FromObject)


@dataclass(frozen=True, slots=True)
class Indexed:
    """One object in one of the indexes."""

    kind: str
    namespace: str
    name: str
    uid: str


@dataclass
class IndexState:
    """The reconciler's view of the watched objects, read from the informers' indexes,
    without the objects the resync found gone."""

    gateways: Index[ObjectKey, Observed]
    routes: Index[ObjectKey, Observed]
    """Under the key of the Gateway each names."""
    authorizers: Index[str, Observed]
    secrets: Index[str, IndexedSecret]
    namespaces: Index[str, IndexedNamespace]
    services: Index[str, IndexedService]
    config_maps: Index[str, IndexedConfigMap] = field(default_factory=Index)
    """ConfigMaps as CA bundles, under their namespace."""
    pods: Index[ObjectKey, IndexedPod] = field(default_factory=Index)
    """A Gateway's pods, under its key."""
    records: Index[ObjectKey, IndexedRecords] = field(default_factory=Index)
    """The config each of a Gateway's replicas records serving, under its key."""
    gone: set[str] = field(default_factory=set)
    """uids of objects deleted unseen (uids are never reused)."""

    def _values(self, index: Index[K, V], key: K) -> list[V]:
        if key not in index:
            return []
        return [v for v in index[key] if v.uid not in self.gone]

    def _keys(self, index: Index[K, V]) -> list[K]:
        return [key for key in list(index.keys()) if self._values(index, key)]

    def gateway(self, key: ObjectKey) -> Observed | None:
        found = self._values(self.gateways, key)
        return found[0] if found else None

    def gateway_keys(self) -> Iterable[ObjectKey]:
        return self._keys(self.gateways)

    def gateways_in(self, namespace: str) -> list[ObjectKey]:
        return [k for k in self._keys(self.gateways) if k[0] == namespace]

    def routes_for(self, gateway: ObjectKey) -> list[Observed]:
        return self._values(self.routes, gateway)

    def authorizer_namespaces(self) -> list[str]:
        return self._keys(self.authorizers)

    def authorizers_in(self, namespace: str) -> list[Observed]:
        return self._values(self.authorizers, namespace)

    def secrets_in(self, namespace: str) -> Mapping[ObjectKey, SecretInfo]:
        return {(namespace, s.name): s.info for s in self._values(self.secrets, namespace)}

    def config_maps_in(self, namespace: str) -> Mapping[ObjectKey, ConfigMapInfo]:
        return {(namespace, c.name): c.info for c in self._values(self.config_maps, namespace)}

    def namespace_labels(self) -> Mapping[str, Mapping[str, str]]:
        return {
            name: found.labels
            for name in self._keys(self.namespaces)
            if (found := self._namespace(name)) is not None
        }

    def services_in(self, namespace: str) -> Collection[ObjectKey]:
        return {(namespace, s.name) for s in self._values(self.services, namespace)}

    def terminating(self, namespace: str) -> bool:
        found = self._namespace(namespace)
        return found is not None and found.terminating

    def replicas_of(self, gateway: ObjectKey) -> Replicas:
        pods = self._values(self.pods, gateway)
        served: dict[str, str] = {}
        for found in self._values(self.records, gateway):
            served.update(found.served)
        return Replicas(
            frozenset(pod.name for pod in pods),
            frozenset(pod.name for pod in pods if pod.ready),
            served,
        )

    def _namespace(self, name: str) -> IndexedNamespace | None:
        found = self._values(self.namespaces, name)
        return found[0] if found else None

    def indexed(self) -> list[Indexed]:
        """Every object in the indexes (not those already gone)."""
        found: list[Indexed] = []
        resources: tuple[tuple[str, Index[Any, Observed]], ...] = (
            ("Gateway", self.gateways),
            ("Route", self.routes),
            ("Authorizer", self.authorizers),
        )
        for kind, index in resources:
            for key in self._keys(index):
                for observed in self._values(index, key):
                    meta = observed.resource.meta
                    found.append(Indexed(kind, meta.namespace, meta.name, meta.uid))
        for namespace in self._keys(self.secrets):
            for secret in self._values(self.secrets, namespace):
                found.append(Indexed("Secret", namespace, secret.name, secret.uid))
        for namespace in self._keys(self.services):
            for service in self._values(self.services, namespace):
                found.append(Indexed("Service", namespace, service.name, service.uid))
        for name in self._keys(self.namespaces):
            for indexed in self._values(self.namespaces, name):
                found.append(Indexed("Namespace", "", name, indexed.uid))
        return found


@dataclass
class Controller:
    """What the informers' events and the work queue share: they enqueue keys, it reconciles
    them."""

    kube: Kube
    state: IndexState
    reconciler: Reconciler
    queue: WorkQueue[WorkKey]
    route_gateways: dict[ObjectKey, ObjectKey] = field(default_factory=dict)
    generations: dict[tuple[str, str, str], object] = field(default_factory=dict)
    """(kind, namespace, name) → the last `metadata.generation` seen of a Route or an
    Authorizer."""

    def spec_changed(self, kind: str, type: str, body: Body) -> bool:
        """Whether an event can change what is rendered: not a status-only update (the
        operator's own status writes come back as events; a render for each of 10,000
        Route statuses re-rendered their Gateway over and over)."""
        namespace, name = _identity(body)
        key = (kind, namespace, name)
        if type == "DELETED":
            self.generations.pop(key, None)
            return True
        generation = (body.get("metadata") or {}).get("generation")
        previous = self.generations.get(key)
        self.generations[key] = generation
        return type != "MODIFIED" or generation is None or generation != previous

    def enqueue_gateways_in(self, namespace: str) -> None:
        for namespace_, name in self.state.gateways_in(namespace):
            self.queue.add(("Gateway", namespace_, name))

    def enqueue_everything(self) -> None:
        """Every Gateway and Authorizer, to be reconciled again."""
        for namespace, name in self.state.gateway_keys():
            self.queue.add(("Gateway", namespace, name))
        for namespace in self.state.authorizer_namespaces():
            for observed in self.state.authorizers_in(namespace):
                self.queue.add(("Authorizer", namespace, observed.resource.meta.name))

    def authorizers_using(self, namespace: str, secret: str) -> list[str]:
        names = []
        for observed in self.state.authorizers_in(namespace):
            ref = observed.resource.spec.get("secretRef") or {}
            if isinstance(ref, Mapping) and ref.get("name") == secret:
                names.append(observed.resource.meta.name)
        return names

    async def process(self, key: WorkKey) -> None:
        """Reconcile one key for the work queue: an API failure is retried with backoff, a
        replacement after a short delay, a write into a deleted namespace not at all."""
        try:
            await self.reconciler.reconcile(key)
        except KubeError as exc:
            if exc.namespace_gone:
                # Its watch events are on their way; retrying would only repeat the 404.
                log.info("%s %s/%s: its namespace is gone", *key)
                return
            # No fixed delay: the work queue backs off exponentially (1 s, 2 s, ... 60 s), so
            # a call the API server keeps refusing is not sent again every 2 s.
            raise kopf.TemporaryError(f"API call failed: {exc}") from exc
        except ReplacingError as exc:
            raise kopf.TemporaryError(str(exc), delay=REPLACING_DELAY_SECONDS) from exc

    # --- Events: enqueue what they affect ---------------------------------------------------

    def on_gateway(self, type: str, body: Body) -> None:
        namespace, name = _identity(body)
        self.queue.add(("Gateway", namespace, name))

    def on_route(self, type: str, body: Body) -> None:
        if not self.spec_changed("Route", type, body):
            return
        key = _identity(body)
        namespace, name = key
        previous = self.route_gateways.pop(key, None)
        current = _gateway_key_of(body, namespace)
        if type == "DELETED":
            current = None
            self.reconciler.forget("Route", namespace, name)
        elif current is not None:
            self.route_gateways[key] = current
        for gateway in {g for g in (previous, current) if g is not None}:
            self.queue.add(("Gateway", *gateway))

    def on_authorizer(self, type: str, body: Body) -> None:
        if not self.spec_changed("Authorizer", type, body):
            return  # its status (the prober reconciles it when the provider's health changes)
        namespace, name = _identity(body)
        if type == "DELETED":
            self.reconciler.forget("Authorizer", namespace, name)
        else:
            self.queue.add(("Authorizer", namespace, name))
        self.enqueue_gateways_in(namespace)

    def gateways_using(self, namespace: str, name: str, kind: str = "Secret") -> list[ObjectKey]:
        """The Gateways whose TLS listener takes a certificate from this Secret, or one of
        whose servers takes its CA bundle from this Secret or ConfigMap."""
        keys = []
        for key in self.state.gateways_in(namespace):
            observed = self.state.gateway(key)
            tls = observed.resource.spec.get("tls") if observed is not None else None
            refs = tls.get("certificateRefs") if isinstance(tls, Mapping) else None
            servers = observed.resource.spec.get("servers") if observed is not None else None
            bundles = [
                server.get("caBundleRef")
                for server in (servers.values() if isinstance(servers, Mapping) else ())
                if isinstance(server, Mapping)
            ]
            named = [
                *(refs if isinstance(refs, list) and kind == "Secret" else ()),
                *(
                    ref
                    for ref in bundles
                    if isinstance(ref, Mapping) and (ref.get("kind") or "Secret") == kind
                ),
            ]
            if any(isinstance(ref, Mapping) and ref.get("name") == name for ref in named):
                keys.append(key)
        return keys

    def on_secret(self, type: str, body: Body) -> None:
        namespace, name = _identity(body)
        users = self.authorizers_using(namespace, name)
        for authorizer in users:
            self.queue.add(("Authorizer", namespace, authorizer))
        if users:
            self.enqueue_gateways_in(namespace)
            return
        for gateway in self.gateways_using(namespace, name):
            self.queue.add(("Gateway", *gateway))

    def on_config_map(self, type: str, body: Body) -> None:
        namespace, name = _identity(body)
        for gateway in self.gateways_using(namespace, name, kind="ConfigMap"):
            self.queue.add(("Gateway", *gateway))

    def on_owned(self, type: str, body: Body) -> None:
        """A change of an object a Gateway owns (its Deployment, a pod, the replicas'
        records): reconcile the Gateway, whose status reports it."""
        gateway = _gateway_of(body)
        if gateway is not None:
            self.queue.add(("Gateway", *gateway))

    def on_service(self, type: str, body: Body) -> None:
        # Only whether a Service exists matters (a Route's ResolvedRefs), not its changes.
        if type != "MODIFIED":
            self.enqueue_gateways_in(_identity(body)[0])

    def on_namespace(self, type: str, body: Body) -> None:
        for namespace, name in self.state.gateway_keys():
            self.queue.add(("Gateway", namespace, name))


@dataclass
class Probes:
    """The JWKS prober's task and client session."""

    task: asyncio.Task[None]
    session: aiohttp.ClientSession

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.session.close()


def probe_targets(state: IndexState) -> dict[ObjectKey, str]:
    """Every watched Authorizer with a JWKS URL."""
    targets: dict[ObjectKey, str] = {}
    for namespace in state.authorizer_namespaces():
        for observed in state.authorizers_in(namespace):
            uri = jwks_uri(observed.resource.spec)
            if uri is not None:
                targets[observed.resource.meta.key] = uri
    return targets


def start_probes(
    reconciler: Reconciler, state: IndexState, queue: WorkQueue[WorkKey], interval: float
) -> Probes:
    """Probe the Authorizers' JWKS every `interval` seconds; a changed result reconciles
    the Authorizer, whose status then shows it."""
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=16), cookie_jar=aiohttp.DummyCookieJar()
    )

    def changed(key: ObjectKey) -> None:
        queue.add(("Authorizer", *key))

    prober = JwksProber(interval, changed, lambda: session)
    reconciler.probes = prober
    task = asyncio.create_task(prober.run(lambda: probe_targets(state)), name="jwks-probes")
    return Probes(task, session)


async def resync(controller: Controller) -> list[Indexed]:
    """List what the indexes hold (metadata only; reads, never writes), mark what no longer
    exists as gone and reconcile again everything it could have affected."""
    indexed = controller.state.indexed()
    listed: set[str] = set()
    checked: set[tuple[str, str]] = set()
    for kind, namespace in sorted({(o.kind, o.namespace) for o in indexed}):
        try:
            items = await controller.kube.list_metadata(kind, namespace)
        except KubeError as exc:
            log.warning("resync: cannot list %s in %r: %s", kind, namespace, exc)
            continue
        checked.add((kind, namespace))
        listed.update(str(item.get("uid") or "") for item in items)
    # Listed after `indexed` was taken: an object missing from its listing was deleted
    # before it (one created since is not in `indexed`).
    gone = [o for o in indexed if (o.kind, o.namespace) in checked and o.uid not in listed]
    if gone:
        log.info("resync: %d object(s) deleted unseen: %s", len(gone), _describe(gone))
        controller.state.gone.update(o.uid for o in gone)
        for o in gone:
            controller.reconciler.forget(o.kind, o.namespace, o.name)
            if o.kind == "Route":
                controller.route_gateways.pop((o.namespace, o.name), None)
        # Rare (deletions during a cut-off watch): reconcile everything rather than work out
        # what each gone object touched; reconciles with nothing to change write nothing.
        controller.enqueue_everything()
    return gone


def _describe(objects: Iterable[Indexed]) -> str:
    return ", ".join(f"{o.kind} {o.namespace}/{o.name}".replace(" /", " ") for o in objects)


async def run_resync(controller: Controller, interval: float) -> None:
    """`resync` every `interval` seconds, until cancelled."""
    while True:
        await asyncio.sleep(interval)
        try:
            await resync(controller)
        except Exception:  # the next round tries again
            log.exception("resync failed")


def _retry_delay(exc: Exception) -> float | None:
    """A replacement's short fixed delay; None (exponential backoff) for everything else."""
    if isinstance(exc, kopf.TemporaryError) and isinstance(exc.__cause__, ReplacingError):
        return exc.delay
    return None


# --- Operator lifecycle ------------------------------------------------------------------------


@dataclass
class Runtime:
    """What the operator's process shares, passed to kopf as its `memo`: the options it was
    started with, then what start-up builds (None before it, and after a failed start)."""

    options: Options
    kube: KubeApi | None = None
    controller: Controller | None = None
    informers: Informers | None = None
    started: asyncio.Task[None] | None = None
    """Waits for the first listing, then starts the queue, the probes and the resync."""
    probes: Probes | None = None
    resync: asyncio.Task[None] | None = None


@kopf.on.login(registry=registry)
def login(memo: Runtime, **_: Any) -> kopf.ConnectionInfo:
    configuration = load_client_configuration(memo.options.kubeconfig)
    header: str = configuration.get_api_key_with_prefix("BearerToken") or ""
    scheme, _sep, token = header.partition(" ")
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        scheme=scheme if token else None,
        token=token or (scheme or None),
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
    )


def build_controller(kube: Kube, defaults: Defaults, workers: int) -> Controller:
    """The indexes, the state read from them, the reconciler and the work queue, wired."""
    state = IndexState(
        gateways=Index(),
        routes=Index(),
        authorizers=Index(),
        secrets=Index(),
        namespaces=Index(),
        services=Index(),
    )
    reconciler = Reconciler(kube, state, defaults)
    queue: WorkQueue[WorkKey] = WorkQueue(
        lambda key: controller.process(key), _retry_delay, workers=workers
    )
    controller = Controller(kube, state, reconciler, queue)
    return controller


def watched_resources(controller: Controller) -> list[Watched[Any, Any]]:
    """Each resource the informers follow: its index (one of the state's) and its events."""
    state = controller.state
    return [
        Watched("Gateway", gateway_index, controller.on_gateway, store=state.gateways),
        Watched("Route", route_index, controller.on_route, store=state.routes),
        Watched("Authorizer", authorizer_index, controller.on_authorizer, store=state.authorizers),
        Watched("Secret", secret_index, controller.on_secret, store=state.secrets),
        Watched("Namespace", namespace_index, controller.on_namespace, store=state.namespaces),
        Watched("Service", service_index, controller.on_service, store=state.services),
        # Every ConfigMap, as a server's `caBundleRef` may name any (trust-manager's, the
        # `kube-root-ca.crt` of each namespace: neither carries a label of ours), but the
        # index keeps only the text of keys holding CA certificates: other data is dropped.
        Watched("ConfigMap", config_map_index, controller.on_config_map, store=state.config_maps),
        Watched(
            "Deployment",
            deployment_index,
            controller.on_owned,
            label_selector=f"app.kubernetes.io/managed-by={MANAGED_BY}",
        ),
        # The replicas and the config each serves: a Gateway is Ready once they all serve
        # its current config.
        Watched(
            "Pod",
            pod_index,
            controller.on_owned,
            label_selector=f"app.kubernetes.io/managed-by={MANAGED_BY}",
            store=state.pods,
        ),
        Watched(
            "ConfigMap",
            records_index,
            controller.on_owned,
            label_selector=f"{REPORT_LABEL}={REPORT_SERVED}",
            store=state.records,
        ),
    ]


@kopf.on.startup(registry=registry)
async def startup(settings: kopf.OperatorSettings, memo: Runtime, **_: Any) -> None:
    options = memo.options
    settings.posting.enabled = False  # our Events are posted by the reconciler
    settings.scanning.disabled = True
    configuration = load_client_configuration(options.kubeconfig)
    kube = KubeApi.from_configuration(configuration)
    controller = build_controller(kube, options.defaults, options.workers)
    informers = Informers(
        configuration, watched_resources(controller), options.namespaces, CLUSTER_SCOPED
    )
    memo.kube = kube
    memo.controller = controller
    memo.informers = informers
    informers.start()
    memo.started = asyncio.create_task(
        _start_when_synced(memo, controller, informers), name="wardgate-start"
    )


async def _start_when_synced(memo: Runtime, controller: Controller, informers: Informers) -> None:
    """Reconcile once every resource has been listed: never from a partial state."""
    options = memo.options
    loop = asyncio.get_running_loop()
    started = loop.time()
    await informers.synced()
    log.info("listed %d objects in %.1f s; reconciling", informers.listed(), loop.time() - started)
    controller.queue.start()
    if options.probe_seconds:
        memo.probes = start_probes(
            controller.reconciler, controller.state, controller.queue, options.probe_seconds
        )
    if options.resync_seconds:
        memo.resync = asyncio.create_task(
            run_resync(controller, options.resync_seconds), name="wardgate-resync"
        )
    # The queue has no idle event: this runs once, at start-up.
    while not controller.queue.idle:  # noqa: ASYNC110
        await asyncio.sleep(IDLE_POLL_SECONDS)
    log.info(
        "everything listed reconciled %.1f s after start-up (%d keys)",
        loop.time() - started,
        controller.queue.processed,
    )


@kopf.on.cleanup(registry=registry)
async def cleanup(memo: Runtime, **_: Any) -> None:
    for task in (memo.started, memo.resync):
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if memo.probes is not None:
        await memo.probes.stop()
    if memo.informers is not None:
        await memo.informers.stop()
    if memo.controller is not None:
        await memo.controller.queue.stop()
    if memo.kube is not None:
        memo.kube.close()
