"""Render: (Gateway, Routes, Authorizers, secret metadata) → gateway config + statuses.

Pure and deterministic: no I/O, no clock, inputs sorted before use. Every problem of one
object is returned as that object's status; it never raises for bad input. Each Route is
rendered against its Gateway alone into a `RouteFragment`, then the fragments' claims are
decided in order and the config assembled; a `RenderCache` passed in lends a render the
fragments of the previous render of the same Gateway that nothing they depend on has
changed since (a memo of pure results: the result is the same without it).

Policy (see docs/operator.md):
- A Route with any problem is left out whole, with `Accepted=False` and the reason; the
  other Routes render. The older Route (creation time, then namespace/name) keeps a contested
  host + method + path; the same method and path on different hosts (an exact host, a
  wildcard, and "any host" are three different hosts) do not conflict.
- A Route's hostnames (`spec.hostnames`, a path's `hostnames`) are narrowed to those the
  Gateway serves, as Gateway API intersects a Route's hostnames with its listener's; a
  Route or path left with none is `Accepted=False, reason=NoMatchingHostname`.
- An Authorizer that is not ready (invalid, or a Secret or key it references is missing)
  takes out the Routes whose paths use it, each `Accepted=False, reason=AuthorizerNotReady`
  naming it; the other Routes render (the blast radius of one object, as for a bad Route).
- A problem of something every Route shares (the Gateway's spec, or the assembled config)
  blocks the rollout: `config` is None, the last good config keeps serving, and no Route
  says Ready for a config that is not served.
- `$secret.NAME` of an Authorizer whose `secretRef.name` is SECRET is rendered as
  `$secret.SECRET.NAME`: the file SECRET.NAME of the pod's secrets directory, projected from
  key NAME of Secret SECRET. Values never pass through here, only their digests.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from pydantic import ValidationError

from wardgate.gateway.config import (
    SECRET_REFERENCE_PREFIX,
    ConfigError,
    GatewayConfig,
    HttpProxyIntegration,
    PathEntry,
    authorizer_refusals,
    authorizer_warnings,
    format_validation_error,
    hmac_key_problem,
    parse_config,
    route_pattern_key,
    secret_name,
)
from wardgate.gateway.hosts import served_hostnames
from wardgate.operator.conditions import LINT_CONDITION, Cond, false, summarise, true
from wardgate.operator.models import (
    AUTHORIZER_SPEC_ADAPTER,
    GATEWAY_SPEC_ADAPTER,
    ROUTE_SPEC_ADAPTER,
    AnyAuthorizerSpec,
    GatewaySpec,
    JwtAuthorizerSpec,
    RouteSpec,
    SupabaseAuthorizerSpec,
)
from wardgate.operator.policy import decide_route, namespace_admitted

ObjectKey = tuple[str, str]
"""(namespace, name)"""
ClaimKey = tuple[str, str, str]
"""(hostname, method, path pattern key) one Route serves; hostname `""`: any host."""

MAX_MESSAGE_PROBLEMS: Final = 5


@dataclass(frozen=True, slots=True)
class Meta:
    """What render needs of an object's metadata."""

    namespace: str
    name: str
    generation: int = 1
    creation_timestamp: str = ""
    uid: str = ""
    deleting: bool = False
    """`metadata.deletionTimestamp` is set: the object is going away."""

    @property
    def key(self) -> ObjectKey:
        return (self.namespace, self.name)


@dataclass(frozen=True, slots=True)
class Resource:
    """A custom resource as watched: metadata and the raw spec (validated here)."""

    meta: Meta
    spec: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class SecretKeyInfo:
    """One key of a Secret: never the value, only what the checks and the hash need."""

    size: int
    """Bytes of the value, without a trailing line break (the gateway strips it)."""
    utf8: bool
    digest: str
    """SHA-256 of the value."""


@dataclass(frozen=True, slots=True)
class SecretInfo:
    """A Secret's keys."""

    keys: Mapping[str, SecretKeyInfo]
    type: str = "Opaque"
    certificate_problem: str | None = None
    """For a TLS Secret: what is wrong with `tls.crt` and `tls.key` (never the key), as
    `wardgate.gateway.tls.check_certificate` says when the Secret was read."""


@dataclass(frozen=True, slots=True)
class CaBundleInfo:
    """A ConfigMap key that may be named as a CA bundle: its PEM text when it holds usable CA
    certificates (public data, so it may be carried in the rendered config), else what is
    wrong with it."""

    pem: str | None = None
    problem: str | None = None


ConfigMapInfo = Mapping[str, CaBundleInfo]
"""A ConfigMap's keys (`data`), each as a possible CA bundle."""


@dataclass(frozen=True, slots=True)
class SecretItem:
    """One Secret key projected into the gateway's secrets directory."""

    secret: str
    key: str
    path: str


@dataclass(frozen=True, slots=True)
class ObjectStatus:
    """The status render wants for one object (conditions and printer fields)."""

    kind: str
    meta: Meta
    conditions: tuple[Cond, ...]
    fields: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return all(c.ok for c in self.conditions)


@dataclass(frozen=True, slots=True)
class AuthorizerResult:
    """An Authorizer rendered alone: its config entry, secret items and status."""

    status: ObjectStatus
    entry: dict[str, Any] | None
    """The gateway config's authorizer, references qualified; None when not ready."""
    items: tuple[SecretItem, ...] = ()
    digests: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class RenderResult:
    """The outcome for one Gateway key (built by keyword: most outcomes have no config)."""

    config: GatewayConfig | None = None
    """The config to roll out; None when the rollout is blocked (or there is no Gateway)."""
    document: dict[str, Any] | None = None
    config_json: str | None = None
    config_hash: str | None = None
    secret_items: tuple[SecretItem, ...] = ()
    gateway: ObjectStatus | None = None
    routes: tuple[ObjectStatus, ...] = ()
    authorizers: tuple[ObjectStatus, ...] = ()
    spec: GatewaySpec | None = None


_LOCATION: Final = re.compile(r"^([A-Za-z0-9_.$()-]+): (.*)$", re.DOTALL)


def _problems(exc: ValidationError, data: object, prefix: str, tag: str | None = None) -> str:
    """`prefix.dotted.path: reason` lines joined; a union's tag is not shown as a field."""
    lines = []
    for line in format_validation_error(exc, data):
        match = _LOCATION.match(line)
        location, reason = (match.group(1), match.group(2)) if match else ("", line)
        if location == "(document)" or (tag and location == tag):
            location = ""
        elif tag and location.startswith(f"{tag}."):
            location = location[len(tag) + 1 :]
        lines.append(f"{prefix}.{location}: {reason}" if location else f"{prefix}: {reason}")
    if len(lines) > MAX_MESSAGE_PROBLEMS:
        lines = [*lines[:MAX_MESSAGE_PROBLEMS], f"... and {len(lines) - MAX_MESSAGE_PROBLEMS} more"]
    return "; ".join(lines)


def _issuer(spec: AnyAuthorizerSpec) -> str | None:
    if isinstance(spec, JwtAuthorizerSpec):
        return ", ".join(spec.issuer) if spec.issuer else None
    return ", ".join(spec.issuer)


def _references(spec: AnyAuthorizerSpec) -> list[tuple[str, str]]:
    """(field, reference) of the authorizer's secret references."""
    if isinstance(spec, JwtAuthorizerSpec) and spec.secret is not None:
        return [("secret", spec.secret)]
    if isinstance(spec, SupabaseAuthorizerSpec) and spec.jwt_secret is not None:
        return [("jwtSecret", spec.jwt_secret)]
    return []


def render_authorizer(
    authorizer: Resource, secrets: Mapping[ObjectKey, SecretInfo]
) -> AuthorizerResult:
    """Validate one Authorizer and resolve its secret references against secret metadata."""
    meta = authorizer.meta
    try:
        spec = AUTHORIZER_SPEC_ADAPTER.validate_python(dict(authorizer.spec))
    except ValidationError as exc:
        tag = authorizer.spec.get("type")
        message = _problems(
            exc, dict(authorizer.spec), "spec", tag if isinstance(tag, str) else None
        )
        accepted = false("Accepted", "Invalid", message)
        refs = Cond("ResolvedRefs", "Unknown", "Invalid", "the spec is invalid")
        conditions = summarise([accepted, refs])
        return AuthorizerResult(ObjectStatus("Authorizer", meta, conditions), None)
    refusals = authorizer_refusals(spec, "spec")
    if refusals:
        # The gateway would refuse the whole config for it: the Authorizer stays out.
        accepted = false("Accepted", "Invalid", "; ".join(refusals))
        refs = Cond("ResolvedRefs", "Unknown", "Invalid", "the spec is invalid")
        conditions = summarise([accepted, refs])
        return AuthorizerResult(ObjectStatus("Authorizer", meta, conditions), None)
    issuer = _issuer(spec)
    fields: dict[str, Any] = {"issuer": issuer} if issuer else {}
    accepted = true("Accepted", "Accepted", f"type {spec.type}")
    entry = spec.gateway_fields()
    items: list[SecretItem] = []
    digests: list[str] = []
    refs = true("ResolvedRefs", "ResolvedRefs", "no secret references")
    for field_name, reference in _references(spec):
        name = secret_name(reference)
        assert spec.secret_ref is not None  # the spec's validator requires it
        secret = spec.secret_ref.name
        info = secrets.get((meta.namespace, secret))
        where = f"spec.{field_name} ({reference})"
        if info is None:
            refs = false("ResolvedRefs", "SecretNotFound", f"{where}: no Secret {secret!r}")
        elif name not in info.keys:
            # Key names only: never a value.
            present = ", ".join(sorted(info.keys)) if info.keys else "none"
            refs = false(
                "ResolvedRefs",
                "KeyNotFound",
                f"{where}: Secret {secret!r} has no key {name!r} (its keys: {present})",
            )
        else:
            key = info.keys[name]
            # The gateway refuses the same secrets (`HmacKeys.prepare`), with the same table.
            problem = (
                "is empty"
                if key.size == 0
                else "is not UTF-8 text"
                if not key.utf8
                else hmac_key_problem(spec.accepted_algorithms(), key.size)
            )
            if problem is not None:
                refs = false(
                    "ResolvedRefs",
                    "InvalidKey",
                    f"{where}: key {name!r} of Secret {secret!r} {problem}",
                )
            else:
                path = f"{secret}.{name}"
                entry[field_name] = f"{SECRET_REFERENCE_PREFIX}{path}"
                items.append(SecretItem(secret, name, path))
                digests.append(f"{path}={key.digest}")
                refs = true(
                    "ResolvedRefs", "ResolvedRefs", f"{where}: key {name!r} of Secret {secret!r}"
                )
        if not refs.ok:
            break
    own = [accepted, refs]
    lints = authorizer_warnings(spec, "spec")
    if lints:
        # True: the Authorizer works, so it stays Ready; the Event of its appearance is a
        # Warning (see `status.build_event`).
        own.append(true(LINT_CONDITION, "Lint", "; ".join(lints)))
    conditions = summarise(own)
    status = ObjectStatus("Authorizer", meta, conditions, fields)
    if not refs.ok:
        return AuthorizerResult(status, None)
    return AuthorizerResult(status, entry, tuple(items), tuple(digests))


def _route_order(route: Resource) -> tuple[str, str, str]:
    return (route.meta.creation_timestamp, route.meta.namespace, route.meta.name)


def _route_status(
    route: Resource, accepted: Cond, fields: Mapping[str, Any], refs: Cond | None = None
) -> ObjectStatus:
    own = [accepted] if refs is None else [accepted, refs]
    return ObjectStatus("Route", route.meta, summarise(own), fields)


def render(
    gateway_key: ObjectKey,
    gateway: Resource | None,
    routes: Sequence[Resource],
    authorizers: Sequence[Resource],
    secrets: Mapping[ObjectKey, SecretInfo],
    namespace_labels: Mapping[str, Mapping[str, str]],
    services: Collection[ObjectKey] | None = None,
    config_maps: Mapping[ObjectKey, ConfigMapInfo] | None = None,
    cache: RenderCache | None = None,
    steps: RenderSteps | None = None,
) -> RenderResult:
    """Render the config of one Gateway and the status of every object involved.

    `services`: the Services that exist (namespace, name), to report a Route whose backend
    is missing; None: not checked. `config_maps`: the ConfigMaps that servers may name as
    CA bundles. `cache`: what earlier renders of this Gateway may lend this one (the result
    is the same with or without it). `steps`: told where the time goes (benchmarks)."""
    steps = steps or NO_STEPS
    gw_namespace, gw_name = gateway_key
    ordered = sorted(routes, key=_route_order)
    by_name = {a.meta.name: a for a in authorizers if a.meta.namespace == gw_namespace}
    authorizer_results = {
        name: render_authorizer(by_name[name], secrets) for name in sorted(by_name)
    }
    authorizer_statuses = tuple(r.status for r in authorizer_results.values())

    if gateway is None:
        statuses = tuple(
            _route_status(
                r,
                false("Accepted", "GatewayNotFound", f"no Gateway {gw_namespace}/{gw_name}"),
                {},
            )
            for r in ordered
        )
        return RenderResult(routes=statuses, authorizers=authorizer_statuses)

    try:
        spec = GATEWAY_SPEC_ADAPTER.validate_python(dict(gateway.spec))
    except ValidationError as exc:
        message = _problems(exc, dict(gateway.spec), "spec")
        accepted = false("Accepted", "Invalid", message)
        gw_status = ObjectStatus("Gateway", gateway.meta, (accepted,), {})
        statuses = tuple(
            _route_status(
                r,
                false("Accepted", "GatewayInvalid", f"Gateway {gw_namespace}/{gw_name} is invalid"),
                {},
            )
            for r in ordered
        )
        return RenderResult(gateway=gw_status, routes=statuses, authorizers=authorizer_statuses)

    default_name = spec.default_authorizer
    default_ok = default_name is not None and default_name in by_name
    not_ready = {
        name: _not_ready(result.status)
        for name, result in authorizer_results.items()
        if result.entry is None
    }
    default_ready = default_ok and default_name not in not_ready
    steps.step("gateway")
    context = RouteContext(
        gateway.meta.key,
        gateway.spec,
        spec,
        frozenset(by_name),
        default_ok,
        not_ready,
        _services_named(spec, gw_namespace, services),
    )
    fragments = route_fragments(ordered, context, namespace_labels, cache, steps)
    steps.step("routes")
    claimed: dict[ClaimKey, tuple[Resource, str]] = {}
    admitted: list[tuple[ObjectKey, RouteFragment]] = []
    used_authorizers: set[str] = {default_name} if default_ready and default_name else set()
    route_statuses: list[ObjectStatus] = []
    taken = claimed.keys()
    for route, fragment in zip(ordered, fragments, strict=True):
        if (
            fragment.paths is not None
            and fragment.duplicate is None
            and taken.isdisjoint(fragment.claim_keys)
        ):
            # Accepted: nothing it claims is taken (the common case, without a call).
            claimed.update(fragment.claims)
            status = fragment.status
        else:
            status = _claim(route, fragment, claimed, spec.hostnames)
        route_statuses.append(status)
        if status is fragment.status and fragment.paths is not None:
            admitted.append((route.meta.key, fragment))
            if fragment.authorizers:
                used_authorizers.update(fragment.authorizers)
    accepted_routes = len(admitted)
    accepted_paths = [path for _key, f in admitted for path in f.paths or ()]
    steps.step("conflicts")

    refs = (
        false(
            "ResolvedRefs",
            "AuthorizerNotFound",
            f"spec.defaultAuthorizer: no Authorizer {default_name!r} in namespace {gw_namespace}",
        )
        if default_name is not None and not default_ok
        else true("ResolvedRefs", "ResolvedRefs")
    )
    fields: dict[str, Any] = {"routes": accepted_routes}
    blocked = [name for name in sorted(used_authorizers) if authorizer_results[name].entry is None]
    if blocked:
        reasons = [
            f"{name}: {authorizer_results[name].status.conditions[-1].reason}" for name in blocked
        ]
        accepted = false(
            "Accepted",
            "AuthorizerNotReady",
            f"Authorizers in use are not ready ({'; '.join(reasons)}); the last good config "
            "keeps serving",
        )
        gw_status = ObjectStatus("Gateway", gateway.meta, (accepted, refs), fields)
        return RenderResult(
            gateway=gw_status,
            routes=tuple(route_statuses),
            authorizers=authorizer_statuses,
            spec=spec,
        )

    tls_document, tls_items, tls_digests, tls_problems = _render_tls(spec, gw_namespace, secrets)
    ca_items, ca_digests, ca_pems, ca_problems = _render_ca_bundles(
        spec, gw_namespace, secrets, config_maps or {}
    )
    tls_items += ca_items
    tls_digests += ca_digests
    tls_problems += ca_problems
    if tls_problems:
        problems = "; ".join(tls_problems[:MAX_MESSAGE_PROBLEMS])
        accepted = false(
            "Accepted",
            "InvalidCertificate",
            f"{problems}; the last good config and its certificates keep serving",
        )
        gw_status = ObjectStatus("Gateway", gateway.meta, (accepted, refs), fields)
        # Accepted on their own, but not in any served config: none of them is Ready.
        unserved = tuple(
            _route_status(
                next(r for r in ordered if r.meta == status.meta),
                false(
                    "Accepted",
                    "GatewayConfigInvalid",
                    f"the TLS certificates of Gateway {gw_namespace}/{gw_name} are invalid "
                    f"({problems}); this Route is not served until they are fixed",
                ),
                status.fields,
            )
            if status.ready
            else status
            for status in route_statuses
        )
        return RenderResult(
            gateway=gw_status, routes=unserved, authorizers=authorizer_statuses, spec=spec
        )

    document: dict[str, Any] = {}
    if default_ready:
        document["defaultAuthorizer"] = default_name
    document["authorizers"] = {
        name: authorizer_results[name].entry for name in sorted(used_authorizers)
    }
    document["servers"] = {
        name: _server_document(gw_namespace, server, ca_pems.get(name))
        for name, server in sorted(spec.servers.items())
    }
    if spec.hostnames:
        document["hostnames"] = list(spec.hostnames)
    document["paths"] = [d for _key, f in admitted for d in f.documents]
    if spec.cors is not None:
        document["cors"] = spec.cors.model_dump(mode="json", by_alias=True, exclude_unset=True)
    if spec.limits is not None:
        document["limits"] = spec.limits.model_dump(mode="json", by_alias=True, exclude_unset=True)
    if tls_document is not None:
        document["tls"] = tls_document
    document["debug"] = spec.debug
    if spec.drain_seconds is not None:
        document["drainSeconds"] = spec.drain_seconds
    steps.step("assembly")
    try:
        config = _checked_config(document, accepted_paths, admitted, cache)
    except ConfigError as exc:
        problems = "; ".join(exc.problems[:MAX_MESSAGE_PROBLEMS])
        accepted = false(
            "Accepted", "InvalidConfig", problems + "; the last good config keeps serving"
        )
        gw_status = ObjectStatus("Gateway", gateway.meta, (accepted, refs), fields)
        # Accepted on their own, but not in any served config: none of them is Ready.
        unserved = tuple(
            _route_status(
                next(r for r in ordered if r.meta == status.meta),
                false(
                    "Accepted",
                    "GatewayConfigInvalid",
                    f"the config of Gateway {gw_namespace}/{gw_name} is invalid ({problems}); "
                    "this Route is not served until it is fixed",
                ),
                status.fields,
            )
            if status.ready
            else status
            for status in route_statuses
        )
        return RenderResult(
            gateway=gw_status, routes=unserved, authorizers=authorizer_statuses, spec=spec
        )
    items = tuple(
        sorted(
            {
                *(item for name in used_authorizers for item in authorizer_results[name].items),
                *tls_items,
            },
            key=lambda i: i.path,
        )
    )
    digests = sorted(
        [d for name in used_authorizers for d in authorizer_results[name].digests] + tls_digests
    )
    steps.step("config check")
    config_json = config_text(document, [line for _key, f in admitted for line in f.lines])
    steps.step("json")
    config_hash = hashlib.sha256("\n".join([config_json, *digests]).encode("utf-8")).hexdigest()[
        :16
    ]
    steps.step("hash")
    fields = {**fields, "configHash": config_hash}
    accepted = true(
        "Accepted", "Accepted", f"{len(accepted_paths)} paths from {accepted_routes} Routes"
    )
    own = [accepted, refs]
    unserved_hosts = config.unserved_hostnames()
    if unserved_hosts:
        # True: the Gateway works and stays Ready; its Event is a Warning.
        own.append(
            true(
                LINT_CONDITION,
                "Lint",
                "; ".join(
                    f"spec.hostnames.{index}: no accepted Route serves {hostname}, every "
                    "request for it is 404 `no_route`"
                    for index, hostname in unserved_hosts
                ),
            )
        )
    gw_status = ObjectStatus("Gateway", gateway.meta, tuple(own), fields)
    return RenderResult(
        config=config,
        document=document,
        config_json=config_json,
        config_hash=config_hash,
        secret_items=items,
        gateway=gw_status,
        routes=tuple(route_statuses),
        authorizers=authorizer_statuses,
        spec=spec,
    )


TLS_SECRET_TYPE: Final = "kubernetes.io/tls"
TLS_KEYS: Final = ("tls.crt", "tls.key")


def _render_tls(
    spec: GatewaySpec, namespace: str, secrets: Mapping[ObjectKey, SecretInfo]
) -> tuple[dict[str, Any] | None, list[SecretItem], list[str], list[str]]:
    """The config's `tls` section, the Secret keys it needs and their digests, and what is
    wrong with the certificates (`InvalidCertificate`; never the key)."""
    tls = spec.tls
    if tls is None:
        return None, [], [], []
    certificates: list[dict[str, Any]] = []
    items: list[SecretItem] = []
    digests: list[str] = []
    problems: list[str] = []
    for index, ref in enumerate(tls.certificate_refs):
        where = f"spec.tls.certificateRefs.{index}"
        info = secrets.get((namespace, ref.name))
        if info is None:
            problems.append(f"{where}: no Secret {ref.name!r} in namespace {namespace}")
            continue
        if info.type != TLS_SECRET_TYPE:
            problems.append(
                f"{where}: Secret {ref.name!r} is of type {info.type}, not {TLS_SECRET_TYPE}"
            )
            continue
        if info.certificate_problem is not None or any(k not in info.keys for k in TLS_KEYS):
            problem = info.certificate_problem or "no tls.crt or tls.key"
            problems.append(f"{where}: Secret {ref.name!r}: {problem}")
            continue
        for key in TLS_KEYS:
            items.append(SecretItem(ref.name, key, f"{ref.name}.{key}"))
            digests.append(info.keys[key].digest)
        entry: dict[str, Any] = {
            "name": ref.name,
            "certificate": f"{SECRET_REFERENCE_PREFIX}{ref.name}.tls.crt",
            "key": f"{SECRET_REFERENCE_PREFIX}{ref.name}.tls.key",
        }
        if ref.hostnames:
            entry["hostnames"] = list(ref.hostnames)
        certificates.append(entry)
    document: dict[str, Any] = {"certificates": certificates, "minVersion": tls.min_version}
    if tls.redirect_http:
        document["redirectHttp"] = True
    if tls.port != 443:
        document["httpsPort"] = tls.port
    return document, items, digests, problems


def _render_ca_bundles(
    spec: GatewaySpec,
    namespace: str,
    secrets: Mapping[ObjectKey, SecretInfo],
    config_maps: Mapping[ObjectKey, ConfigMapInfo],
) -> tuple[list[SecretItem], list[str], dict[str, str], list[str]]:
    """The Secret keys of the servers' `caBundleRef`s, their digests, the PEM bundles taken
    from ConfigMaps (by server name), and what is missing or wrong."""
    items: list[SecretItem] = []
    digests: list[str] = []
    pems: dict[str, str] = {}
    problems: list[str] = []
    for name, server in sorted(spec.servers.items()):
        ref = server.ca_bundle_ref
        if ref is None:
            continue
        where = f"spec.servers.{name}.caBundleRef"
        if ref.kind == "ConfigMap":
            config_map = config_maps.get((namespace, ref.name))
            bundle = config_map.get(ref.key) if config_map is not None else None
            if config_map is None:
                problems.append(f"{where}: no ConfigMap {ref.name!r} in namespace {namespace}")
            elif bundle is None:
                problems.append(f"{where}: ConfigMap {ref.name!r} has no key {ref.key!r}")
            elif bundle.pem is None:
                problems.append(
                    f"{where}: ConfigMap {ref.name!r} key {ref.key!r}: {bundle.problem}"
                )
            else:
                pems[name] = bundle.pem
            continue
        info = secrets.get((namespace, ref.name))
        key = info.keys.get(ref.key) if info is not None else None
        if info is None:
            problems.append(f"{where}: no Secret {ref.name!r} in namespace {namespace}")
        elif key is None or key.size == 0:
            problems.append(f"{where}: Secret {ref.name!r} has no key {ref.key!r} (or it is empty)")
        else:
            items.append(SecretItem(ref.name, ref.key, f"{ref.name}.{ref.key}"))
            digests.append(key.digest)
    return items, digests, pems, problems


def _not_ready(status: ObjectStatus) -> str:
    """Why an Authorizer is not ready: its first failing condition's reason and message."""
    failing = next((c for c in status.conditions if not c.ok), None)
    if failing is None:  # pragma: no cover - an Authorizer without an entry has one
        return "not ready"
    return f"{failing.reason}: {failing.message}"


def _server_document(namespace: str, server: Any, ca_pem: str | None) -> dict[str, Any]:
    if server.service is not None:
        service = server.service
        url = f"{service.scheme}://{service.name}.{namespace}.svc:{service.port}"
    else:
        url = server.url
    document: dict[str, Any] = {"url": url}
    if server.connect_timeout is not None:
        document["connectTimeout"] = server.connect_timeout
    if server.read_timeout is not None:
        document["readTimeout"] = server.read_timeout
    if ca_pem is not None:
        # A CA bundle is public: carried in the config itself, and a change re-renders it.
        document["caBundlePem"] = ca_pem
    elif server.ca_bundle_ref is not None:
        ref = server.ca_bundle_ref
        document["caBundle"] = f"{SECRET_REFERENCE_PREFIX}{ref.name}.{ref.key}"
    return document


ROUTE_SPEC_CACHE_SIZE: Final = 32_768


def parse_route_spec(spec: Mapping[str, Any]) -> RouteSpec | str:
    """A Route's spec validated, or the problems as one message. Cached by content: a
    Gateway with 10,000 Routes is rendered again for each change of one of them, and
    validating every spec each time was three quarters of the render."""
    return _parse_route_spec(json.dumps(spec, sort_keys=True, separators=(",", ":")))


def forget_route_specs() -> None:
    """Forget the Route specs validated so far (for benchmarks of a first render)."""
    _parse_route_spec.cache_clear()


@functools.lru_cache(maxsize=ROUTE_SPEC_CACHE_SIZE)
def _parse_route_spec(text: str) -> RouteSpec | str:
    data = json.loads(text)
    try:
        parsed: RouteSpec = ROUTE_SPEC_ADAPTER.validate_python(data)
    except ValidationError as exc:
        return _problems(exc, data, "spec")
    return parsed


@dataclass(frozen=True, slots=True)
class RouteContext:
    """What a Route's rendering reads of its Gateway and the Gateway's namespace, besides
    the other Routes' claims."""

    gateway: ObjectKey
    raw: Mapping[str, Any]
    """The Gateway's spec as written."""
    spec: GatewaySpec = field(compare=False)
    """The same, validated (compared through `raw`)."""
    authorizers: frozenset[str]
    """The Authorizers of the Gateway's namespace, by name."""
    default_ok: bool
    """The Gateway's default authorizer exists."""
    not_ready: Mapping[str, str]
    """Why each Authorizer that is not ready is not."""
    services: frozenset[ObjectKey] | None
    """The Services named by the Gateway's servers that exist; None: not checked."""


def _services_named(
    spec: GatewaySpec, namespace: str, services: Collection[ObjectKey] | None
) -> frozenset[ObjectKey] | None:
    """The Services that exist among those the Gateway's servers name (only they can change
    a Route's `ResolvedRefs`)."""
    if services is None:
        return None
    named = {(namespace, s.service.name) for s in spec.servers.values() if s.service is not None}
    return frozenset(key for key in named if key in services)


@dataclass(frozen=True, slots=True)
class RouteFragment:
    """One Route rendered against its Gateway alone: every check but the claims of the other
    Routes, its config lines ready. Render reuses it while neither the Route nor its
    `RouteContext` changes."""

    status: ObjectStatus
    """Its status when it is accepted; its final status when `paths` is None (refused on
    its own)."""
    paths: tuple[PathEntry, ...] | None = None
    claims: tuple[tuple[ClaimKey, tuple[Resource, str]], ...] = ()
    """What it would serve, in order, up to a duplicate of its own, as entries of the
    claims of all Routes: (claim, (this Route, the path's field))."""
    claim_keys: frozenset[ClaimKey] = frozenset()
    claim_paths: tuple[str, ...] = ()
    """The path of each claim, as written (for a message)."""
    duplicate: ObjectStatus | None = None
    """Its status when two of its own paths claim the same (after checking `claims`)."""
    fields: Mapping[str, Any] = field(default_factory=dict)
    refs: Cond | None = None
    authorizers: frozenset[str] = frozenset()
    """The Authorizers its paths use."""
    documents: tuple[dict[str, Any], ...] = ()
    """Its paths as config documents."""
    lines: tuple[str, ...] = ()
    """Those documents as the config's JSON lines."""


class RenderSteps(Protocol):
    """Told where the time goes: render calls `step(name)` after each part of its work."""

    def step(self, name: str) -> None: ...


class _NoSteps:
    def step(self, name: str) -> None:
        pass


NO_STEPS: Final[RenderSteps] = _NoSteps()


@dataclass(frozen=True, slots=True)
class _CachedRoute:
    meta: Meta
    spec: Mapping[str, Any]
    labels: Mapping[str, str]
    fragment: RouteFragment


@dataclass
class RenderCache:
    """What `render` may reuse between the renders of one Gateway: each Route's fragment,
    while the Route (metadata and spec), its namespace's labels and the Gateway's
    `RouteContext` are unchanged, and which fragments the gateway's own config check has
    passed under the current Gateway-wide config. A memo of pure results: a render with it
    returns what a render without it returns. Inputs are read, never changed in place (the
    informers build new objects for each event)."""

    context: RouteContext | None = None
    routes: dict[ObjectKey, _CachedRoute] = field(default_factory=dict)
    checked_base: str | None = None
    """The Gateway-wide part of the config (all but the paths) the fragments in `checked`
    were checked with."""
    checked: dict[ObjectKey, RouteFragment] = field(default_factory=dict)
    reused: int = 0
    """Fragments taken from the cache in the last render."""
    rendered: int = 0
    """Fragments rendered anew in the last render."""


def route_fragments(
    routes: Sequence[Resource],
    context: RouteContext,
    namespace_labels: Mapping[str, Mapping[str, str]],
    cache: RenderCache | None = None,
    steps: RenderSteps = NO_STEPS,
) -> list[RouteFragment]:
    """Each Route's fragment: from the cache when nothing it depends on has changed."""
    previous: Mapping[ObjectKey, _CachedRoute] = {}
    if cache is not None and cache.context == context:
        previous = cache.routes
    fresh: dict[ObjectKey, _CachedRoute] = {}
    fragments: list[RouteFragment] = []
    reused = 0
    no_labels: Mapping[str, str] = {}
    for route in routes:
        meta = route.meta
        labels = namespace_labels.get(meta.namespace, no_labels)
        cached = previous.get(meta.key)
        if (
            cached is not None
            # The same objects (an index keeps them between events) are compared first.
            and (cached.meta is meta or cached.meta == meta)
            and (cached.spec is route.spec or cached.spec == route.spec)
            and (cached.labels is labels or cached.labels == labels)
        ):
            reused += 1
            fragment = cached.fragment
        else:
            fragment = _route_fragment(route, context, namespace_labels, steps)
            if cache is not None:
                cached = _CachedRoute(meta, route.spec, labels, fragment)
        if cached is not None:
            fresh[meta.key] = cached
        fragments.append(fragment)
    if cache is not None:
        cache.context = context
        cache.routes = fresh
        cache.reused = reused
        cache.rendered = len(routes) - reused
    return fragments


def _route_fragment(
    route: Resource,
    context: RouteContext,
    namespace_labels: Mapping[str, Mapping[str, str]],
    steps: RenderSteps,
) -> RouteFragment:
    """One Route's fragment (its final status when it is refused on its own)."""
    gateway_namespace, gateway_name = context.gateway
    spec = context.spec
    route_spec = parse_route_spec(route.spec)
    steps.step("validation")
    if isinstance(route_spec, str):
        return RouteFragment(_route_status(route, false("Accepted", "Invalid", route_spec), {}))
    paths = route_spec.paths
    shown = sorted({_authorizer_of(p, spec) or "default" for p in paths if p.auth is not None})
    fields: dict[str, Any] = {"paths": len(paths), "auth": ", ".join(shown) or "none"}
    refs = _backend_refs(paths, gateway_namespace, spec, context.services)

    def reject(reason: str, message: str) -> RouteFragment:
        accepted = false("Accepted", reason, message)
        steps.step("policy")
        return RouteFragment(_route_status(route, accepted, fields, refs), fields=fields, refs=refs)

    namespaces = spec.allowed_routes.namespaces
    if route.meta.namespace != gateway_namespace:
        labels = namespace_labels.get(route.meta.namespace, {})
        if not namespace_admitted(namespaces, route.meta.namespace, gateway_namespace, labels):
            return reject(
                "NotAllowed",
                f"Gateway {gateway_namespace}/{gateway_name} does not accept Routes from "
                f"namespace {route.meta.namespace} (spec.allowedRoutes.namespaces.from: "
                f"{namespaces.from_})",
            )
    for index, path in enumerate(paths):
        where = f"spec.paths.{index}"
        if path.auth is not None:
            name = path.auth.authorizer
            if name is None and not context.default_ok:
                missing = (
                    f"its defaultAuthorizer {spec.default_authorizer!r} does not exist"
                    if spec.default_authorizer
                    else "it has no defaultAuthorizer"
                )
                return reject(
                    "AuthorizerNotFound",
                    f"{where}.auth: the path uses the Gateway's default authorizer, but {missing}",
                )
            if name is not None and name not in context.authorizers:
                return reject(
                    "AuthorizerNotFound",
                    f"{where}.auth.authorizer: no Authorizer {name!r} in namespace "
                    f"{gateway_namespace}",
                )

        integration = path.integration
        if isinstance(integration, HttpProxyIntegration) and integration.server not in spec.servers:
            return reject(
                "ServerNotFound",
                f"{where}.integration.server: Gateway {gateway_namespace}/{gateway_name} has no "
                f"server {integration.server!r}",
            )
    # The Gateway's multi-team policy (operator/policy.py), decided here only.
    verdict = decide_route(route.meta.namespace, paths, context.gateway, spec, namespace_labels)
    if verdict.shown:
        fields["policy"] = verdict.status()
    if verdict.refusal is not None:
        return reject(*verdict.refusal)
    paths = list(verdict.paths)
    not_ready = context.not_ready
    for index, path in enumerate(paths):
        used = _authorizer_of(path, spec) if path.auth is not None else None
        if used is not None and used in not_ready:
            return reject(
                "AuthorizerNotReady",
                f"spec.paths.{index}.auth: Authorizer {used!r} is not ready ({not_ready[used]}); "
                "the Route is left out of the config until it is",
            )
    hosted = _hosted_paths(route_spec.hostnames, paths, spec.hostnames, context.gateway)
    if isinstance(hosted, str):
        return reject("NoMatchingHostname", hosted)
    paths = hosted.paths
    claims: dict[ClaimKey, tuple[Resource, str]] = {}
    claim_paths: list[str] = []
    duplicate: ObjectStatus | None = None
    for index, path in enumerate(paths):
        where = f"spec.paths.{index}"
        pattern = route_pattern_key(path.path)
        for host in path.hostnames or (ANY_HOST,):
            for method in path.methods():
                key = (host, method, pattern)
                if duplicate is not None:
                    break
                if key not in claims:
                    claims[key] = (route, where)
                    claim_paths.append(path.path)
                    continue
                on_host = _on_host(host, spec.hostnames)
                message = f"{where}: {method} {path.path}{on_host} duplicates {claims[key][1]}"
                duplicate = _route_status(
                    route, false("Accepted", "Invalid", message), fields, refs
                )
    attached = f"{len(paths)} paths attached"
    if route_spec.hostnames:
        attached += f" on {', '.join(hosted.hostnames)}"
    if hosted.ignored:
        attached += f" ({'; '.join(hosted.ignored)})"
    accepted = true("Accepted", "Accepted", attached)
    names = {_authorizer_of(p, spec) or "" for p in paths if p.auth is not None} - {""}
    steps.step("policy")
    documents = tuple(_path_document(p) for p in paths)
    lines = tuple(json.dumps(d, sort_keys=True) for d in documents)
    steps.step("json")
    return RouteFragment(
        _route_status(route, accepted, fields, refs),
        tuple(paths),
        tuple(claims.items()),
        frozenset(claims),
        tuple(claim_paths),
        duplicate,
        fields,
        refs,
        frozenset(names),
        documents,
        lines,
    )


def _claim(
    route: Resource,
    fragment: RouteFragment,
    claimed: dict[ClaimKey, tuple[Resource, str]],
    hostnames: Sequence[str],
) -> ObjectStatus:
    """The Route's status among the Routes before it (the older keeps what both claim);
    its claims recorded in `claimed` when it is accepted."""
    if fragment.paths is None:
        return fragment.status
    if not claimed.keys().isdisjoint(fragment.claim_keys):  # (the common case in C)
        key, path = next(
            (key, path)
            for (key, _entry), path in zip(fragment.claims, fragment.claim_paths, strict=True)
            if key in claimed
        )
        host, method, _pattern = key
        other, other_where = claimed[key]
        message = (
            f"{method} {path}{_on_host(host, hostnames)} is already served by Route "
            f"{other.meta.namespace}/{other.meta.name} ({other_where}), "
            f"{_precedence(other, route)}"
        )
        return _route_status(
            route, false("Accepted", "Conflict", message), fragment.fields, fragment.refs
        )
    if fragment.duplicate is not None:
        return fragment.duplicate
    claimed.update(fragment.claims)
    return fragment.status


CHECK_ALONE_SHARE: Final = 4
"""The fragments new to the config check are checked one by one when they are fewer than a
quarter of those accepted; else the whole config is checked at once (cheaper per path)."""


def _checked_config(
    document: Mapping[str, Any],
    paths: list[PathEntry],
    accepted: Sequence[tuple[ObjectKey, RouteFragment]],
    cache: RenderCache | None,
) -> GatewayConfig:
    """The config, as the gateway's own check (`parse_config`) takes it, or its
    `ConfigError`.

    That check reads each path against the Gateway-wide part of the config (hostnames,
    authorizers, servers), and all paths together only for duplicates, which the Routes'
    claims already exclude. So with a cache, a fragment it passed under the same
    Gateway-wide part needs no second check: after a change of one Route, the Gateway-wide
    part and that Route's paths are checked, not 20,000 paths. Anything refused is checked
    again as a whole, for the same problems in the same words."""
    base = {key: value for key, value in document.items() if key != "paths"}
    if cache is not None:
        base_text = config_text(base)
        if cache.checked_base != base_text:
            cache.checked_base = base_text
            cache.checked = {}
        unchecked = [(key, f) for key, f in accepted if cache.checked.get(key) is not f]
        if len(unchecked) * CHECK_ALONE_SHARE < len(accepted):
            try:
                wide = parse_config({**base, "paths": []})
                for _key, fragment in unchecked:
                    parse_config({**base, "paths": list(fragment.paths or ())})
            except ConfigError:
                pass  # checked as a whole below
            else:
                cache.checked = dict(accepted)
                return wide.model_copy(update={"paths": paths})
    # The paths are validated already: hand over the models, not their documents.
    config = parse_config({**document, "paths": paths})
    if cache is not None:
        cache.checked = dict(accepted)
    return config


ANY_HOST: Final = ""


def _on_host(host: str, gateway_hostnames: Sequence[str]) -> str:
    """Where a claim lies, for a message: nothing when no hostname is involved at all."""
    if host:
        return f" on {host}"
    return " on every host of the Gateway (no hostnames)" if gateway_hostnames else ""


def _precedence(winner: Resource, loser: Resource) -> str:
    """Why the earlier Route keeps what both claim (creation time, then namespace/name)."""
    created = winner.meta.creation_timestamp
    if created != loser.meta.creation_timestamp:
        return f"which is older (created {created}; this Route {loser.meta.creation_timestamp})"
    return f"created at the same time ({created}) and first by namespace/name"


@dataclass(frozen=True, slots=True)
class _Hosted:
    """A Route's paths with the hostnames they serve on the Gateway."""

    paths: list[PathEntry]
    hostnames: list[str]
    """The Route's `spec.hostnames` as served (empty without them)."""
    ignored: list[str]
    """Notes on the hostnames the Gateway does not serve, left out."""


def _hosted_paths(
    route_hostnames: Sequence[str] | None,
    paths: Sequence[PathEntry],
    served: Sequence[str],
    gateway: ObjectKey,
) -> _Hosted | str:
    """The paths narrowed to the hostnames the Gateway serves (each path's `hostnames` set
    when the Route or the path names any), or why none is left."""
    gateway_name = f"Gateway {gateway[0]}/{gateway[1]}"
    its = f"its hostnames: {', '.join(served)}"
    route_level: list[str] | None = None
    ignored: list[str] = []
    if route_hostnames:
        route_level = served_hostnames(route_hostnames, served)
        if not route_level:
            return (
                f"spec.hostnames: {gateway_name} serves none of "
                f"{', '.join(route_hostnames)} ({its})"
            )
        ignored = [
            f"spec.hostnames.{i}: {h} is not served by {gateway_name}, left out"
            for i, h in enumerate(route_hostnames)
            if not served_hostnames([h], served)
        ]
    hosted: list[PathEntry] = []
    for index, path in enumerate(paths):
        hostnames = route_level
        if path.hostnames:
            within = route_level if route_level is not None else served
            hostnames = served_hostnames(path.hostnames, within)
            if not hostnames:
                return (
                    f"spec.paths.{index}.hostnames: {gateway_name} serves none of "
                    f"{', '.join(path.hostnames)} ({its})"
                )
            ignored += [
                f"spec.paths.{index}.hostnames.{i}: {h} is not served by {gateway_name}, left out"
                for i, h in enumerate(path.hostnames)
                if not served_hostnames([h], within)
            ]
        if hostnames is not None and hostnames != path.hostnames:
            path = path.model_copy(update={"hostnames": hostnames})
        hosted.append(path)
    return _Hosted(hosted, route_level or [], ignored)


def _backend_refs(
    paths: Sequence[PathEntry],
    namespace: str,
    spec: GatewaySpec,
    services: Collection[ObjectKey] | None,
) -> Cond | None:
    """`ResolvedRefs` of a Route: whether the Services behind its `http_proxy` servers exist.
    A missing one does not keep the Route out (as in the Gateway API, where Envoy Gateway
    answers such requests with 500): its requests get 502 until the Service appears."""
    if services is None:
        return None
    missing = {}
    for index, path in enumerate(paths):
        integration = path.integration
        if not isinstance(integration, HttpProxyIntegration):
            continue
        server = spec.servers.get(integration.server)
        if server is None or server.service is None or integration.server in missing:
            continue
        if (namespace, server.service.name) not in services:
            missing[integration.server] = (
                f"spec.paths.{index}.integration.server: server {integration.server!r} is "
                f"Service {namespace}/{server.service.name}, which does not exist"
            )
    if missing:
        return false(
            "ResolvedRefs",
            "BackendNotFound",
            "; ".join(missing.values()) + "; its requests get 502 until it does",
        )
    return true("ResolvedRefs", "ResolvedRefs")


def _authorizer_of(path: PathEntry, spec: GatewaySpec) -> str | None:
    if path.auth is None:
        return None
    return path.auth.authorizer or spec.default_authorizer


def config_text(document: Mapping[str, Any], path_lines: Sequence[str] | None = None) -> str:
    """The config as JSON text: keys sorted, one line per path and per named entry (readable
    in `kubectl get configmap -o yaml`, and fast: each line uses the C encoder).
    `path_lines`: the paths' lines, already dumped (`RouteFragment.lines`)."""

    def dump(value: Any) -> str:
        return json.dumps(value, sort_keys=True)

    parts = []
    for key in sorted(document):
        value = document[key]
        if key == "paths" and path_lines:
            parts.append(f"  {dump(key)}: [\n    " + ",\n    ".join(path_lines) + "\n  ]")
        elif isinstance(value, list) and value:
            inner = ",\n".join(f"    {dump(v)}" for v in value)
            parts.append(f"  {dump(key)}: [\n{inner}\n  ]")
        elif isinstance(value, dict) and value:
            inner = ",\n".join(f"    {dump(k)}: {dump(value[k])}" for k in sorted(value))
            parts.append(f"  {dump(key)}: {{\n{inner}\n  }}")
        else:
            parts.append(f"  {dump(key)}: {dump(value)}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def _path_document(path: PathEntry) -> dict[str, Any]:
    document: dict[str, Any] = path.model_dump(mode="json", by_alias=True, exclude_unset=True)
    return document
