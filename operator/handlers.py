"""kopf handlers: thin. Watches feed kopf's in-memory indexes; every event only enqueues the
keys of the Gateways and Authorizers it affects; the work queue runs the reconciler.

Why event handlers and not kopf's create/update/resume handlers: those persist their progress
and the last handled spec on the object (annotations or status), so kopf itself would write
to users' objects on every change and on every restart. Here the operator writes nothing
but statuses, and nothing at all when nothing changed. kopf's indexes are filled from the
initial listing before any event handler runs, so the first reconcile sees the whole state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp
import kopf

from wardgate.operator.inputs import resource_from_body, secret_from_body
from wardgate.operator.kube import KubeApi, KubeError, load_configuration
from wardgate.operator.manifests import GATEWAY_LABEL, MANAGED_BY, Defaults
from wardgate.operator.models import GROUP, VERSION
from wardgate.operator.probes import JwksProber, jwks_uri
from wardgate.operator.reconciler import Observed, Reconciler, ReplacingError, WorkKey
from wardgate.operator.render import ObjectKey, SecretInfo
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
RETRY_DELAY_SECONDS: Final = 2.0
REPLACING_DELAY_SECONDS: Final = 0.5


@dataclass
class Options:
    """What `wardgate operator` was started with."""

    kubeconfig: Path | None = None
    defaults: Defaults = field(default_factory=Defaults)
    workers: int = 2
    probe_seconds: float | None = None
    """Interval of the Authorizers' JWKS probes (`wardgate.operator.probes`); None: off."""


def _observed(body: Mapping[str, Any]) -> Observed:
    status = body.get("status")
    return Observed(resource_from_body(body), dict(status) if isinstance(status, Mapping) else {})


def _gateway_key_of(body: Mapping[str, Any], namespace: str) -> ObjectKey | None:
    ref = (body.get("spec") or {}).get("gatewayRef") or {}
    name = ref.get("name")
    if not isinstance(name, str):
        return None
    return (str(ref.get("namespace") or namespace), name)


# --- Indexes (kopf keeps them current from the watches) -------------------------------------


@kopf.index(GROUP, VERSION, "gateways", registry=registry)
def gateway_index(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {(namespace, name): _observed(body)}


@kopf.index(GROUP, VERSION, "routes", registry=registry)
def route_index(namespace: str | None, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    key = _gateway_key_of(body, namespace or "")
    return {key: _observed(body)} if key else {}


@kopf.index(GROUP, VERSION, "authorizers", registry=registry)
def authorizer_index(namespace: str | None, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {namespace: _observed(body)}


@kopf.index("", "v1", "secrets", registry=registry)
def secret_index(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    if body.get("type") in IGNORED_SECRET_TYPES:
        return {}
    # Only sizes and digests are kept: the values go no further than this function.
    return {namespace: (name, secret_from_body(body))}


@kopf.index("", "v1", "services", registry=registry)
def service_index(namespace: str | None, name: str, **_: Any) -> dict[Any, Any]:
    return {namespace: name}


@kopf.index("", "v1", "namespaces", registry=registry)
def namespace_index(
    name: str, labels: Mapping[str, str], body: kopf.Body, **_: Any
) -> dict[Any, Any]:
    return {name: (dict(labels), namespace_terminating(body))}


def namespace_terminating(body: Mapping[str, Any]) -> bool:
    """Whether the namespace is being deleted (the API then refuses new objects in it)."""
    deleted = (body.get("metadata") or {}).get("deletionTimestamp")
    return bool(deleted) or (body.get("status") or {}).get("phase") == "Terminating"


def _values(index: kopf.Index[Any, Any], key: Any) -> list[Any]:
    return list(index[key]) if key in index else []


@dataclass
class IndexState:
    """The reconciler's view of the watched objects, read from kopf's indexes."""

    gateways: kopf.Index[Any, Any]
    routes: kopf.Index[Any, Any]
    authorizers: kopf.Index[Any, Any]
    secrets: kopf.Index[Any, Any]
    namespaces: kopf.Index[Any, Any]
    services: kopf.Index[Any, Any]

    def gateway(self, key: ObjectKey) -> Observed | None:
        found = _values(self.gateways, key)
        return found[0] if found else None

    def gateway_keys(self) -> Iterable[ObjectKey]:
        return list(self.gateways.keys())

    def gateways_in(self, namespace: str) -> list[ObjectKey]:
        return [k for k in self.gateways if k[0] == namespace]

    def routes_for(self, gateway: ObjectKey) -> list[Observed]:
        return _values(self.routes, gateway)

    def authorizers_in(self, namespace: str) -> list[Observed]:
        return _values(self.authorizers, namespace)

    def secrets_in(self, namespace: str) -> Mapping[ObjectKey, SecretInfo]:
        return {(namespace, name): info for name, info in _values(self.secrets, namespace)}

    def namespace_labels(self) -> Mapping[str, Mapping[str, str]]:
        return {name: self._namespace(name)[0] for name in self.namespaces}

    def services_in(self, namespace: str) -> Collection[ObjectKey]:
        return {(namespace, name) for name in _values(self.services, namespace)}

    def terminating(self, namespace: str) -> bool:
        return self._namespace(namespace)[1]

    def _namespace(self, name: str) -> tuple[Mapping[str, str], bool]:
        found = _values(self.namespaces, name)
        return found[0] if found else ({}, False)


@dataclass
class Controller:
    """What the handlers share (kept in kopf's memo)."""

    kube: KubeApi
    state: IndexState
    reconciler: Reconciler
    queue: WorkQueue[WorkKey]
    route_gateways: dict[ObjectKey, ObjectKey] = field(default_factory=dict)

    def enqueue_gateways_in(self, namespace: str) -> None:
        for namespace_, name in self.state.gateways_in(namespace):
            self.queue.add(("Gateway", namespace_, name))

    def authorizers_using(self, namespace: str, secret: str) -> list[str]:
        names = []
        for observed in self.state.authorizers_in(namespace):
            ref = observed.resource.spec.get("secretRef") or {}
            if isinstance(ref, Mapping) and ref.get("name") == secret:
                names.append(observed.resource.meta.name)
        return names


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
    for namespace in list(state.authorizers.keys()):
        for observed in _values(state.authorizers, namespace):
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


async def _process(memo: kopf.Memo, key: WorkKey) -> None:
    controller: Controller = memo["controller"]
    try:
        await controller.reconciler.reconcile(key)
    except KubeError as exc:
        raise kopf.TemporaryError(f"API call failed: {exc}", delay=RETRY_DELAY_SECONDS) from exc
    except ReplacingError as exc:
        raise kopf.TemporaryError(str(exc), delay=REPLACING_DELAY_SECONDS) from exc


def _retry_delay(exc: Exception) -> float | None:
    if isinstance(exc, kopf.TemporaryError):
        return exc.delay
    return None


# --- Operator lifecycle ------------------------------------------------------------------------


@kopf.on.login(registry=registry)
def login(memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo:
    options: Options = memo["options"]
    configuration = load_configuration(options.kubeconfig)
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


@kopf.on.startup(registry=registry)
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
    options: Options = memo["options"]
    settings.posting.enabled = False  # our Events are posted by the reconciler
    settings.scanning.disabled = True
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 60
    kube = KubeApi.from_configuration(load_configuration(options.kubeconfig))
    # kopf passes each index under its function's name.
    state = IndexState(
        kwargs["gateway_index"],
        kwargs["route_index"],
        kwargs["authorizer_index"],
        kwargs["secret_index"],
        kwargs["namespace_index"],
        kwargs["service_index"],
    )
    reconciler = Reconciler(kube, state, options.defaults)

    async def process(key: WorkKey) -> None:
        await _process(memo, key)

    queue: WorkQueue[WorkKey] = WorkQueue(process, _retry_delay, workers=options.workers)
    memo["controller"] = Controller(kube, state, reconciler, queue)
    queue.start()
    if options.probe_seconds:
        memo["probes"] = start_probes(reconciler, state, queue, options.probe_seconds)


@kopf.on.cleanup(registry=registry)
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    probes: Probes | None = memo.get("probes")
    if probes is not None:
        await probes.stop()
    controller: Controller | None = memo.get("controller")
    if controller is not None:
        await controller.queue.stop()
        controller.kube.close()


# --- Events: enqueue what they affect -----------------------------------------------------------


@kopf.on.event(GROUP, VERSION, "gateways", registry=registry)
def gateway_event(namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> None:
    memo["controller"].queue.add(("Gateway", namespace or "", name))


@kopf.on.event(GROUP, VERSION, "routes", registry=registry)
def route_event(
    type: str, namespace: str | None, name: str, body: kopf.Body, memo: kopf.Memo, **_: Any
) -> None:
    controller: Controller = memo["controller"]
    namespace = namespace or ""
    key = (namespace, name)
    previous = controller.route_gateways.pop(key, None)
    current = _gateway_key_of(body, namespace)
    if type == "DELETED":
        controller.reconciler.forget("Route", namespace, name)
    elif current is not None:
        controller.route_gateways[key] = current
    for gateway in {previous, current} - {None}:
        assert gateway is not None
        controller.queue.add(("Gateway", *gateway))


@kopf.on.event(GROUP, VERSION, "authorizers", registry=registry)
def authorizer_event(
    type: str, namespace: str | None, name: str, memo: kopf.Memo, **_: Any
) -> None:
    controller: Controller = memo["controller"]
    namespace = namespace or ""
    if type == "DELETED":
        controller.reconciler.forget("Authorizer", namespace, name)
    else:
        controller.queue.add(("Authorizer", namespace, name))
    controller.enqueue_gateways_in(namespace)


@kopf.on.event("", "v1", "secrets", registry=registry)
def secret_event(namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> None:
    controller: Controller = memo["controller"]
    namespace = namespace or ""
    users = controller.authorizers_using(namespace, name)
    for authorizer in users:
        controller.queue.add(("Authorizer", namespace, authorizer))
    if users:
        controller.enqueue_gateways_in(namespace)


@kopf.on.event(
    "apps",
    "v1",
    "deployments",
    labels={"app.kubernetes.io/managed-by": MANAGED_BY},
    registry=registry,
)
def deployment_event(
    namespace: str | None, labels: Mapping[str, str], memo: kopf.Memo, **_: Any
) -> None:
    gateway = labels.get(GATEWAY_LABEL)
    if gateway:
        memo["controller"].queue.add(("Gateway", namespace or "", gateway))


@kopf.on.event("", "v1", "services", registry=registry)
def service_event(type: str | None, namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
    # Only whether a Service exists matters (a Route's ResolvedRefs), not its changes.
    if type != "MODIFIED":
        memo["controller"].enqueue_gateways_in(namespace or "")


@kopf.on.event("", "v1", "namespaces", registry=registry)
def namespace_event(memo: kopf.Memo, **_: Any) -> None:
    controller: Controller = memo["controller"]
    for namespace, name in controller.state.gateway_keys():
        controller.queue.add(("Gateway", namespace, name))
