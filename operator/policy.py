"""The Gateway's multi-team policy: which paths a Route may serve, through which servers, and
with which auth. Pure: `decide_route` returns its verdicts as data for `render` to use.

Routes of the Gateway's own namespace are the platform team's and trusted: the policy only
adds the Gateway's required scopes and claims to their authenticated paths. A Route of
another namespace (a tenant) must, for every path:

- lie within a path pattern the Gateway delegates to its namespace (`spec.delegations`),
  when the Gateway delegates any: decided with the matcher's own semantics
  (`pattern_covers`), so a tenant pattern is admitted only if every normalised path it can
  match is matched by the delegated pattern (`{param}` or `*` reaching past the prefix, a
  different case, a missing trailing slash are all outside);
- proxy only to a server that consents to its namespace
  (`spec.servers.NAME.allowedRoutes`, `Same` when absent);
- require auth, unless a rule of `spec.authPolicy.unauthenticated` admits its namespace and
  the path (a Supabase route accepting the `anon` API key role counts as public: that key
  is published in every front end);
- use an Authorizer the Gateway lets other namespaces use (`spec.authPolicy.authorizers`,
  only `defaultAuthorizer` when absent);
- keep the scopes and claims the Gateway requires (`spec.authPolicy.requiredScopes`,
  `requiredClaims`), which are added to the path's own; setting a required claim to another
  value is refused.

Every path is decided (not only up to the first refusal) so that the status names the
rule of each; the Route is refused as a whole by its first refused path.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from pydantic import JsonValue

from wardgate.gateway.config import HttpProxyIntegration, PathEntry, RouteAuth
from wardgate.gateway.matching import RouteEntry, RouteError, Router, pattern_covers
from wardgate.operator.models import GatewaySpec, LabelSelector, RouteNamespaces

# A Supabase API key role anyone holds: the anon key ships in every browser bundle.
PUBLIC_API_KEY_ROLE: Final = "anon"
# A status stays small however many paths a Route has (it is written on every change).
MAX_STATUS_PATHS: Final = 100
OWN_NAMESPACE_RULE: Final = "namespace: the Gateway's own (trusted: paths, servers, authorizers)"


@dataclass(frozen=True, slots=True)
class PathVerdict:
    """How the policy decided one path entry of a Route."""

    index: int
    path: str
    methods: tuple[str, ...]
    rules: tuple[str, ...]
    """The rules that admitted the path; for a refused one, the rule that refused it."""
    refusal: tuple[str, str] | None = None
    """(reason, message) when refused."""

    @property
    def admitted(self) -> bool:
        return self.refusal is None

    def status(self) -> dict[str, Any]:
        """The path's entry of the Route's `status.policy`."""
        return {
            "path": self.path,
            "methods": list(self.methods),
            "result": "Admitted" if self.admitted else "Refused",
            "rules": list(self.rules),
        }


@dataclass(frozen=True, slots=True)
class RouteVerdict:
    """The policy's decision on a Route: its paths as rendered, and why."""

    paths: tuple[PathEntry, ...]
    """The path entries to serve, with the Gateway's required scopes and claims added."""
    verdicts: tuple[PathVerdict, ...]
    shown: bool
    """Whether the policy had anything to say (a tenant's Route, or a path it changed):
    then the Route's status lists `verdicts`."""

    @property
    def refusal(self) -> tuple[str, str] | None:
        """(reason, message) of the first refused path, with a count of the others."""
        refused = [v for v in self.verdicts if v.refusal is not None]
        if not refused:
            return None
        reason, message = refused[0].refusal or ("", "")
        if len(refused) > 1:
            message += f" (and {len(refused) - 1} more refused paths, see status.policy)"
        return reason, message

    def status(self) -> list[dict[str, Any]]:
        """The Route's `status.policy`, in path order; past `MAX_STATUS_PATHS` paths, the
        refused ones first."""
        ordered = list(self.verdicts)
        if len(ordered) > MAX_STATUS_PATHS:
            ordered.sort(key=lambda v: (v.admitted, v.index))
        return [v.status() for v in ordered[:MAX_STATUS_PATHS]]


def selector_matches(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """Whether a Kubernetes label selector selects an object with these labels."""
    if any(labels.get(k) != v for k, v in selector.match_labels.items()):
        return False
    for requirement in selector.match_expressions:
        present = requirement.key in labels
        value = labels.get(requirement.key)
        if requirement.operator == "In" and value not in requirement.values:
            return False
        if requirement.operator == "NotIn" and present and value in requirement.values:
            return False
        if requirement.operator == "Exists" and not present:
            return False
        if requirement.operator == "DoesNotExist" and present:
            return False
    return True


def namespace_admitted(
    namespaces: RouteNamespaces, namespace: str, gateway_namespace: str, labels: Mapping[str, str]
) -> bool:
    """`from: Same | All | Selector` applied to a Route's namespace (the Gateway's own is
    always admitted)."""
    if namespace == gateway_namespace or namespaces.from_ == "All":
        return True
    return (
        namespaces.from_ == "Selector"
        and namespaces.selector is not None
        and selector_matches(namespaces.selector, labels)
    )


def _rule_of(namespaces: RouteNamespaces) -> str:
    if namespaces.from_ == "Selector" and namespaces.selector is not None:
        selector = namespaces.selector.model_dump(by_alias=True, exclude_defaults=True)
        return f"from: Selector, selector: {json.dumps(selector, sort_keys=True)}"
    return f"from: {namespaces.from_}"


def decide_route(
    namespace: str,
    paths: Sequence[PathEntry],
    gateway: tuple[str, str],
    spec: GatewaySpec,
    namespace_labels: Mapping[str, Mapping[str, str]],
) -> RouteVerdict:
    """Decide every path of a Route of `namespace` attached to `gateway` (namespace, name).

    Expects what render checked before: the Route's namespace is admitted by
    `allowedRoutes`, and its authorizers and servers exist."""
    tenant = namespace != gateway[0]
    labels = namespace_labels.get(namespace, {})
    rendered: list[PathEntry] = []
    verdicts: list[PathVerdict] = []
    changed = False
    for index, path in enumerate(paths):
        decision = _PathDecision(index, path, namespace, gateway, spec, labels, tenant)
        verdict, entry = decision.decide()
        verdicts.append(verdict)
        if entry is not path:
            changed = True
        rendered.append(entry)
    return RouteVerdict(tuple(rendered), tuple(verdicts), tenant or changed)


class _Refused(Exception):
    def __init__(self, reason: str, message: str, rule: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.rule = rule


class _PathDecision:
    """One path through the checks, collecting the rules that admit it."""

    def __init__(
        self,
        index: int,
        path: PathEntry,
        namespace: str,
        gateway: tuple[str, str],
        spec: GatewaySpec,
        labels: Mapping[str, str],
        tenant: bool,
    ) -> None:
        self.index = index
        self.path = path
        self.namespace = namespace
        self.gateway = f"{gateway[0]}/{gateway[1]}"
        self.gateway_namespace = gateway[0]
        self.spec = spec
        self.labels = labels
        self.tenant = tenant
        self.where = f"spec.paths.{index}"
        self.rules: list[str] = [] if tenant else [OWN_NAMESPACE_RULE]

    def decide(self) -> tuple[PathVerdict, PathEntry]:
        entry = self.path
        try:
            if self.tenant:
                self._check_delegation()
            self._check_server()
            public = self._is_public()
            if self.tenant:
                if public:
                    self._check_unauthenticated()
                else:
                    self._check_authorizer()
            if not public:
                entry = self._with_required()
        except _Refused as refused:
            verdict = PathVerdict(
                self.index,
                self.path.path,
                self.path.methods(),
                (refused.rule,),
                (refused.reason, refused.message),
            )
            return verdict, self.path
        verdict = PathVerdict(self.index, self.path.path, self.path.methods(), tuple(self.rules))
        return verdict, entry

    def _check_delegation(self) -> None:
        delegations = self.spec.delegations
        if not delegations:
            self.rules.append("path: spec.delegations is empty: any path (one trusted team)")
            return
        own: list[str] = []
        for i, delegation in enumerate(delegations):
            if delegation.namespace != self.namespace:
                continue
            for j, pattern in enumerate(delegation.paths):
                own.append(pattern)
                if pattern_covers(pattern, self.path.path):
                    self.rules.append(
                        f"path: spec.delegations.{i}.paths.{j} delegates {pattern} to namespace "
                        f"{self.namespace}"
                    )
                    return
        delegated = (
            f"within the paths Gateway {self.gateway} delegates to namespace {self.namespace}: "
            f"{', '.join(own)}"
            if own
            else f"delegated: Gateway {self.gateway} delegates no path to namespace "
            f"{self.namespace}"
        )
        raise _Refused(
            "PathNotDelegated",
            f"{self.where}.path: {self.path.path} is not {delegated} (spec.delegations)",
            "path: spec.delegations",
        )

    def _check_server(self) -> None:
        integration = self.path.integration
        if not isinstance(integration, HttpProxyIntegration):
            return
        name = integration.server
        server = self.spec.servers[name]  # render checked that it exists
        namespaces = server.allowed_routes.namespaces
        field = f"spec.servers.{name}.allowedRoutes.namespaces"
        if not namespace_admitted(namespaces, self.namespace, self.gateway_namespace, self.labels):
            raise _Refused(
                "NotAllowed",
                f"{self.where}.integration.server: server {name!r} of Gateway {self.gateway} "
                f"does not accept Routes from namespace {self.namespace} "
                f"({field}: {_rule_of(namespaces)})",
                f"server {name}: {field}",
            )
        if self.tenant:
            self.rules.append(f"server {name}: {field} ({_rule_of(namespaces)})")

    def _is_public(self) -> bool:
        auth = self.path.auth
        return auth is None or PUBLIC_API_KEY_ROLE in auth.allowed_api_key_roles

    def _check_unauthenticated(self) -> None:
        for i, rule in enumerate(self.spec.auth_policy.unauthenticated):
            if rule.namespaces and self.namespace not in rule.namespaces:
                continue
            if rule.paths and not any(pattern_covers(p, self.path.path) for p in rule.paths):
                continue
            self.rules.append(f"auth: public, admitted by spec.authPolicy.unauthenticated.{i}")
            return
        what = (
            "accepts the `anon` API key role, which makes it public"
            if self.path.auth is not None
            else "has no auth"
        )
        field = f"{self.where}.auth" + (".allowedApiKeyRoles" if self.path.auth else "")
        raise _Refused(
            "AuthRequired",
            f"{field}: the path {what}; Gateway {self.gateway} requires auth on the paths of "
            f"Routes from other namespaces, and no rule of spec.authPolicy.unauthenticated "
            f"admits namespace {self.namespace} at {self.path.path}",
            "auth: spec.authPolicy.unauthenticated",
        )

    def _check_authorizer(self) -> None:
        auth = self.path.auth
        assert auth is not None  # `_is_public` was False
        default = self.spec.default_authorizer
        name = auth.authorizer or default
        listed = self.spec.auth_policy.authorizers
        if listed is not None:
            allowed, field, note = list(listed), "spec.authPolicy.authorizers", ""
        else:
            allowed = [default] if default else []
            field, note = "spec.defaultAuthorizer", "; spec.authPolicy.authorizers is not set"
        if name not in allowed:
            shown = ", ".join(allowed) if allowed else "none"
            raise _Refused(
                "AuthorizerNotAllowed",
                f"{self.where}.auth.authorizer: Authorizer {name!r} is not one that Routes "
                f"from other namespaces may use on Gateway {self.gateway}: {shown} "
                f"({field}{note})",
                f"authorizer: {field}",
            )
        self.rules.append(f"authorizer {name}: {field}")

    def _with_required(self) -> PathEntry:
        """The path with the Gateway's required scopes and claims added."""
        policy = self.spec.auth_policy
        auth = self.path.auth
        assert auth is not None
        if not policy.required_scopes and not policy.required_claims:
            return self.path
        scopes = list(auth.scopes)
        added_scopes = [s for s in policy.required_scopes if s not in scopes]
        claims: dict[str, JsonValue] = dict(auth.claims)
        added_claims: list[str] = []
        for claim, value in policy.required_claims.items():
            if claim not in claims:
                claims[claim] = value
                added_claims.append(claim)
                continue
            merged = _merge_claim(value, claims[claim])
            if merged is None:
                raise _Refused(
                    "RequiredClaimConflict",
                    f"{self.where}.auth.claims.{claim}: {claims[claim]!r} contradicts the "
                    f"{value!r} Gateway {self.gateway} requires of every path "
                    "(spec.authPolicy.requiredClaims): a Route may add to the required "
                    "claims, never change them",
                    f"claims: spec.authPolicy.requiredClaims.{claim}",
                )
            if merged != claims[claim]:
                added_claims.append(claim)
            claims[claim] = merged
        if added_scopes:
            self.rules.append(
                f"scopes {', '.join(added_scopes)}: added by spec.authPolicy.requiredScopes"
            )
        if added_claims:
            self.rules.append(
                f"claims {', '.join(added_claims)}: added by spec.authPolicy.requiredClaims"
            )
        if not added_scopes and not added_claims:
            return self.path
        document = auth.model_dump(by_alias=True, exclude_unset=True)
        document["scopes"] = [*scopes, *added_scopes]
        document["claims"] = claims
        return self.path.model_copy(update={"auth": RouteAuth.model_validate(document)})


def _merge_claim(required: JsonValue, own: JsonValue) -> JsonValue | None:
    """A claim the Gateway requires combined with the path's own value; None when they
    contradict. List values mean "contains each", so lists combine; other values must
    be equal."""
    if isinstance(required, list) and isinstance(own, list):
        return [*required, *(v for v in own if v not in required)]
    return own if own == required else None


def explain_route_paths(
    routes: Sequence[Mapping[str, Any]], gateway: tuple[str, str], path: str
) -> list[str]:
    """For `wardgate explain --gateway`: every path of the Routes attached to `gateway` whose
    pattern matches a normalised request path, with what the operator decided and the rules
    it names (read from the Routes' status, as `kubectl get routes -o json` gives them)."""
    lines: list[str] = []
    for body in sorted(routes, key=_route_key):
        namespace, name = _route_key(body)
        spec = body.get("spec") or {}
        reference = spec.get("gatewayRef") or {}
        if (reference.get("namespace") or namespace, reference.get("name")) != gateway:
            continue
        status = body.get("status") or {}
        accepted = next(
            (c for c in status.get("conditions") or [] if c.get("type") == "Accepted"), None
        )
        decisions = status.get("policy") or []
        for index, entry in enumerate(spec.get("paths") or []):
            pattern = entry.get("path") if isinstance(entry, Mapping) else None
            if not isinstance(pattern, str) or not _pattern_matches(pattern, path):
                continue
            method = entry.get("method")
            shown = [str(m) for m in method] if isinstance(method, list) else [str(method)]
            methods = ", ".join(shown)
            decision: Mapping[str, Any] = next(
                (
                    d
                    for d in decisions
                    if d.get("path") == pattern and set(d.get("methods") or []) == set(shown)
                ),
                {},
            )
            rules = [str(r) for r in decision.get("rules") or []]
            if accepted is None:
                verdict = "not decided yet (the Route has no Accepted condition)"
            elif accepted.get("status") == "True":
                unlisted = (
                    f"its rules are not listed (status.policy holds {MAX_STATUS_PATHS} paths "
                    "at most)"
                )
                default = OWN_NAMESPACE_RULE if not decisions else unlisted
                verdict = "admitted: " + "; ".join(rules or [default])
            else:
                own = f"; this path: {'; '.join(rules)}" if decision.get("result") else ""
                verdict = (
                    f"refused, the whole Route ({accepted.get('reason')}): "
                    f"{accepted.get('message')}{own}"
                )
            lines.append(
                f"Route {namespace}/{name} spec.paths.{index} {pattern} [{methods}]: {verdict}"
            )
    return lines


def _route_key(body: Mapping[str, Any]) -> tuple[str, str]:
    meta = body.get("metadata") or {}
    return str(meta.get("namespace", "")), str(meta.get("name", ""))


def _pattern_matches(pattern: str, path: str) -> bool:
    try:
        router = Router.build([RouteEntry(pattern, None, 0)])
    except RouteError:
        return False
    return bool(router.routes_for_path(path))
