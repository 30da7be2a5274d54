"""The custom resources' specs and statuses (group `wardgate.io`, version `v1alpha1`).

The path and authorizer fields are the gateway config's own models, imported from
`wardgate.gateway.config`: a Route's `paths` and an Authorizer's spec are written exactly as
in a config file. The CRD schemas in `deploy/crds/` are generated from these models
(`python -m wardgate.operator.crds`). Pure: no Kubernetes client here.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from pydantic import Field, JsonValue, TypeAdapter, model_validator

from wardgate.gateway.config import (
    Auth0Authorizer,
    CorsPolicy,
    Hostnames,
    HttpUrl,
    JwtAuthorizer,
    Limits,
    Model,
    PathEntry,
    RoutePattern,
    ScopeToken,
    SomeHostnames,
    SupabaseAuthorizer,
)
from wardgate.gateway.hosts import hostname_covers
from wardgate.gateway.matching import patterns_overlap

GROUP: Final = "wardgate.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"

DNS_SUBDOMAIN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS_LABEL: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# A Secret's name becomes the first part of a `$secret.NAME` in the rendered config, whose
# names start with a letter or `_`: a Secret referenced by an Authorizer starts with a letter.
SECRET_OBJECT_NAME: Final = r"^[a-z]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"

ObjectName = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)]
Quantity = Annotated[int | str, Field(union_mode="left_to_right")]


# --- Authorizer ---------------------------------------------------------------------------


class SecretRef(Model):
    """The Secret, in the Authorizer's namespace, whose keys `$secret.NAME` references name."""

    name: str = Field(min_length=1, max_length=253, pattern=SECRET_OBJECT_NAME)
    """Name of the Secret. `$secret.NAME` is the value of its key NAME."""


class _WithSecretRef(Model):
    secret_ref: SecretRef | None = None
    """The Secret whose keys the `$secret.NAME` references of this authorizer name."""

    def gateway_fields(self) -> dict[str, Any]:
        """The spec as the gateway config writes it (without `secretRef`)."""
        return self.model_dump(by_alias=True, exclude_unset=True, exclude={"secret_ref"})


class JwtAuthorizerSpec(JwtAuthorizer, _WithSecretRef):
    """A `jwt` authorizer: HS* with a secret, or asymmetric keys from a JWKS."""

    @model_validator(mode="after")
    def _check_secret_ref(self) -> JwtAuthorizerSpec:
        if self.secret is not None and self.secret_ref is None:
            raise ValueError("`secret` is a `$secret.NAME` reference: set `secretRef`")
        return self


class Auth0AuthorizerSpec(Auth0Authorizer, _WithSecretRef):
    """An `auth0` authorizer."""


class SupabaseAuthorizerSpec(SupabaseAuthorizer, _WithSecretRef):
    """A `supabase` authorizer."""

    @model_validator(mode="after")
    def _check_secret_ref(self) -> SupabaseAuthorizerSpec:
        if self.jwt_secret is not None and self.secret_ref is None:
            raise ValueError("`jwtSecret` is a `$secret.NAME` reference: set `secretRef`")
        return self


AuthorizerSpec = Annotated[
    JwtAuthorizerSpec | Auth0AuthorizerSpec | SupabaseAuthorizerSpec,
    Field(discriminator="type"),
]
AnyAuthorizerSpec = JwtAuthorizerSpec | Auth0AuthorizerSpec | SupabaseAuthorizerSpec
AUTHORIZER_SPEC_ADAPTER: Final[TypeAdapter[AnyAuthorizerSpec]] = TypeAdapter(AuthorizerSpec)


# --- Route ---------------------------------------------------------------------------------


class GatewayRef(Model):
    """The Gateway a Route attaches to."""

    name: ObjectName
    """Name of the Gateway."""
    namespace: Annotated[str, Field(max_length=63, pattern=DNS_LABEL)] | None = None
    """Namespace of the Gateway; the Route's own namespace when absent."""


class RouteSpec(Model):
    """Paths served by one Gateway, written exactly as the gateway config's `paths`."""

    gateway_ref: GatewayRef
    """The Gateway these paths attach to."""
    hostnames: SomeHostnames | None = None
    """The hosts these paths serve (exact, or `*.example.com`), narrowed to those the Gateway
    serves (`api.example.com` of a Gateway serving `*.example.com`, or `a.example.com` of a
    Route naming `*.example.com` and a Gateway serving `a.example.com`); a Route none of whose
    hostnames the Gateway serves is not accepted (`NoMatchingHostname`). Every host of the
    Gateway when absent. A path's own `hostnames` narrow these further."""
    paths: list[PathEntry] = Field(min_length=1)
    """Method + path entries, as in the gateway config. `auth.authorizer` names an Authorizer
    in the Gateway's namespace."""

    @model_validator(mode="after")
    def _check_path_hostnames(self) -> RouteSpec:
        if not self.hostnames:
            return self
        for index, path in enumerate(self.paths):
            for position, hostname in enumerate(path.hostnames or ()):
                if not any(hostname_covers(outer, hostname) for outer in self.hostnames):
                    raise ValueError(
                        f"paths.{index}.hostnames.{position}: {hostname} is not among the "
                        f"Route's hostnames ({', '.join(self.hostnames)})"
                    )
        return self


# --- Gateway -------------------------------------------------------------------------------


class ServiceBackend(Model):
    """A Service in the Gateway's namespace."""

    name: Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL)]
    """Name of the Service."""
    port: int = Field(ge=1, le=65535)
    """Port number of the Service."""
    scheme: Literal["http", "https"] = "http"
    """Scheme used to reach the Service."""


class CaBundleRef(Model):
    """A key of a Secret or ConfigMap in the Gateway's namespace holding PEM CA
    certificates."""

    kind: Literal["Secret", "ConfigMap"] = "Secret"
    """`Secret` (the default) or `ConfigMap` (as trust-manager and `kube-root-ca.crt`
    publish bundles); a ConfigMap's bundle is public and carried in the rendered config."""
    name: str = Field(min_length=1, max_length=253, pattern=SECRET_OBJECT_NAME)
    """Name of the Secret or ConfigMap."""
    key: str = Field(default="ca.crt", min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")
    """The key holding the bundle (`ca.crt`, as cert-manager and `kube-root-ca.crt` write
    it)."""


class GatewayServer(Model):
    """An upstream: a Service of the Gateway's namespace, or an external URL."""

    service: ServiceBackend | None = None
    """A Service in the Gateway's namespace (rendered as `http://NAME.NAMESPACE.svc:PORT`)."""
    url: HttpUrl | None = None
    """An absolute http(s) URL."""
    # Same bounds as the gateway's `Server`, which validates the rendered value again.
    connect_timeout: float | None = Field(default=None, gt=0, le=300)
    """Seconds to connect (default 5)."""
    read_timeout: float | None = Field(default=None, gt=0, le=3600)
    """Seconds to wait for the upstream's response (default 30)."""
    allowed_routes: AllowedRoutes = Field(default_factory=lambda: AllowedRoutes())
    """Which namespaces' Routes may send requests to this server: `Same` (the default: the
    Gateway's namespace only), `All`, or `Selector`. Another namespace needs this consent."""
    ca_bundle_ref: CaBundleRef | None = None
    """For an https upstream: the CA certificates its certificate must chain to, instead of
    the system's trust store (an internal CA); its name is verified either way."""

    @model_validator(mode="after")
    def _check_target(self) -> GatewayServer:
        if (self.service is None) == (self.url is None):
            raise ValueError("give exactly one of `service` or `url`")
        return self


class LabelSelectorRequirement(Model):
    """One requirement of a label selector."""

    key: str = Field(min_length=1)
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] = Field(default_factory=list)


class LabelSelector(Model):
    """A Kubernetes label selector."""

    match_labels: dict[str, str] = Field(default_factory=dict)
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list)


class RouteNamespaces(Model):
    """Which namespaces' Routes may attach."""

    from_: Literal["Same", "All", "Selector"] = Field(default="Same", alias="from")
    """`Same` (the Gateway's namespace), `All`, or `Selector` (namespaces matching `selector`)."""
    selector: LabelSelector | None = None
    """Namespace label selector, for `from: Selector`."""

    @model_validator(mode="after")
    def _check_selector(self) -> RouteNamespaces:
        if (self.from_ == "Selector") != (self.selector is not None):
            raise ValueError("`selector` is required with `from: Selector`, and only then")
        return self


class AllowedRoutes(Model):
    """Which Routes may attach to a Gateway."""

    namespaces: RouteNamespaces = Field(default_factory=RouteNamespaces)


NamespaceName = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL)]


class PathDelegation(Model):
    """Path patterns whose Routes only one namespace may write."""

    namespace: NamespaceName
    """The namespace the paths are delegated to."""
    paths: list[RoutePattern] = Field(min_length=1)
    """Route patterns (`/teams/a/*`); a Route of the namespace may only serve paths that one
    of them matches whole."""


class UnauthenticatedRule(Model):
    """Who may publish paths without auth on a shared Gateway."""

    namespaces: list[NamespaceName] = Field(default_factory=list)
    """The namespaces admitted; every namespace when empty."""
    paths: list[RoutePattern] = Field(default_factory=list)
    """Route patterns the public paths must lie within; every path when empty."""

    @model_validator(mode="after")
    def _check_scope(self) -> UnauthenticatedRule:
        if not self.namespaces and not self.paths:
            raise ValueError("give `namespaces`, `paths` or both")
        return self


class AuthPolicy(Model):
    """Auth rules of the Gateway that Routes of other namespaces cannot weaken."""

    unauthenticated: list[UnauthenticatedRule] = Field(default_factory=list)
    """Routes of other namespaces must require auth on every path, except where one of
    these rules admits the namespace and the path. (Routes of the Gateway's own namespace
    may always publish public paths.)"""
    authorizers: list[Annotated[str, Field(min_length=1)]] | None = None
    """The Authorizers Routes of other namespaces may use; only `defaultAuthorizer` when
    absent."""
    required_scopes: list[ScopeToken] = Field(default_factory=list)
    """Scopes every authenticated path requires, added to the path's own."""
    required_claims: dict[str, JsonValue] = Field(default_factory=dict)
    """Claims every authenticated path requires, added to the path's own; a path that sets
    one of these claims to another value is refused."""


class GatewayServiceSpec(Model):
    """The Service in front of the gateway pods."""

    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    port: int = Field(default=80, ge=1, le=65535)
    """Port of the Service (the pods listen on 8080)."""
    annotations: dict[str, str] = Field(default_factory=dict)


class Autoscaling(Model):
    """A HorizontalPodAutoscaler for the gateway Deployment (it then owns the replica count)."""

    min_replicas: int = Field(default=1, ge=1, le=1000)
    max_replicas: int = Field(ge=1, le=1000)
    target_cpu_utilization_percentage: int = Field(
        default=80, ge=1, le=100, alias="targetCPUUtilizationPercentage"
    )

    @model_validator(mode="after")
    def _check_bounds(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError("`minReplicas` must not exceed `maxReplicas`")
        return self


class ResourceRequirements(Model):
    """CPU and memory of the gateway container."""

    requests: dict[str, Quantity] = Field(default_factory=dict)
    limits: dict[str, Quantity] = Field(default_factory=dict)


class PodOverrides(Model):
    """Scheduling and metadata of the gateway pods."""

    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, JsonValue]] = Field(default_factory=list)
    """Kubernetes tolerations, as in a pod spec."""
    affinity: dict[str, JsonValue] | None = None
    """Kubernetes affinity, as in a pod spec."""
    annotations: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    priority_class_name: str | None = None


class CertificateRef(Model):
    """A Kubernetes TLS Secret in the Gateway's namespace (type `kubernetes.io/tls`, keys
    `tls.crt` and `tls.key`, as cert-manager writes it)."""

    name: str = Field(min_length=1, max_length=253, pattern=SECRET_OBJECT_NAME)
    """Name of the Secret."""
    hostnames: SomeHostnames | None = None
    """The server names (SNI) it is selected for; the DNS names of its certificate when
    absent."""


class GatewayTls(Model):
    """The gateway's TLS listener (port 8443 in the pods)."""

    certificate_refs: list[CertificateRef] = Field(min_length=1, max_length=100)
    """Selected by the ClientHello's server name: exact names, then `*.` wildcards; the
    first is the default (also for clients that send no server name)."""
    min_version: Literal["1.2", "1.3"] = "1.2"
    """The oldest TLS version accepted; TLS 1.3 is negotiated whenever the client has it."""
    redirect_http: bool = False
    """The plain-HTTP port answers every request with `308` to the same URL over HTTPS."""
    port: int = Field(default=443, ge=1, le=65535)
    """The Service's HTTPS port (the port redirects name; not written when 443)."""

    @model_validator(mode="after")
    def _check_unique(self) -> GatewayTls:
        seen: dict[str, int] = {}
        for index, ref in enumerate(self.certificate_refs):
            if ref.name in seen:
                raise ValueError(
                    f"certificateRefs.{index}: Secret {ref.name!r} is listed already "
                    f"(certificateRefs.{seen[ref.name]})"
                )
            seen[ref.name] = index
        return self


class GatewaySpec(Model):
    """A gateway: its pods, its upstream servers, and which Routes may attach."""

    replicas: int = Field(default=1, ge=1, le=1000)
    """Number of gateway pods (ignored when `autoscaling` is set)."""
    image: str | None = Field(default=None, min_length=1)
    """Gateway image; the operator's default when absent."""
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    resources: ResourceRequirements | None = None
    service: GatewayServiceSpec = Field(default_factory=GatewayServiceSpec)
    default_authorizer: str | None = Field(default=None, min_length=1)
    """Name of the Authorizer (in this namespace) used by paths with `auth: true`."""
    hostnames: Hostnames = Field(default_factory=list)
    """The hosts the gateway serves: exact (`api.example.com`) or wildcards (`*.example.com`,
    any name below `example.com` but not `example.com` itself); any host when empty. A
    request for another host is 404 `unknown_host`; a Route may narrow to some of them."""
    servers: dict[str, GatewayServer] = Field(default_factory=dict)
    """Upstream servers by name, as Route integrations name them."""
    allowed_routes: AllowedRoutes = Field(default_factory=AllowedRoutes)
    delegations: list[PathDelegation] = Field(default_factory=list)
    """Path patterns delegated to namespaces: when set, a Route of another namespace may
    only serve paths within its namespace's patterns. Patterns of different namespaces
    must not overlap. None: any Route may claim any path (one trusted team)."""
    auth_policy: AuthPolicy = Field(default_factory=AuthPolicy)
    """Auth required of Routes from other namespaces, and of every authenticated path."""
    autoscaling: Autoscaling | None = None
    pod: PodOverrides = Field(default_factory=PodOverrides)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    debug: bool = False
    """Add expected-versus-actual details to denial bodies."""
    cors: CorsPolicy | None = None
    """The gateway-wide CORS policy (paths may override it)."""
    tls: GatewayTls | None = None
    """A TLS listener with certificates from TLS Secrets (Service port `tls.port`)."""
    limits: Limits | None = None
    """Request limits (token, body and header sizes)."""
    drain_seconds: float | None = Field(default=None, ge=0, le=600)
    """On shutdown, how long in-flight requests may take (default 20)."""
    workers: int | None = Field(default=None, ge=1, le=64)
    """Gateway processes per pod, sharing the traffic port (each uses one core at most).
    Default: the container's CPU limit, else its CPU request, rounded down (at least 1);
    1 when neither is set."""

    @model_validator(mode="after")
    def _check_delegations(self) -> GatewaySpec:
        seen: list[tuple[int, int, str, str]] = []
        for i, delegation in enumerate(self.delegations):
            for j, pattern in enumerate(delegation.paths):
                for other_i, other_j, namespace, other in seen:
                    if namespace != delegation.namespace and patterns_overlap(pattern, other):
                        raise ValueError(
                            f"delegations.{i}.paths.{j}: {pattern} (namespace "
                            f"{delegation.namespace}) overlaps delegations.{other_i}.paths."
                            f"{other_j}: {other} (namespace {namespace}); a path belongs to "
                            "one namespace"
                        )
                seen.append((i, j, delegation.namespace, pattern))
        return self


# --- Status --------------------------------------------------------------------------------


class Condition(Model):
    """A kstatus condition."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    last_transition_time: str
    observed_generation: int | None = None


class GatewayStatus(Model):
    """Observed state of a Gateway."""

    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    routes: int | None = None
    """Paths entries attached (from accepted Routes)."""
    config_hash: str | None = None
    """Hash of the config (and secret values) the Deployment was last given."""
    replicas: int | None = None
    available_replicas: int | None = None
    serving_replicas: int | None = None
    """Ready replicas that serve `configHash` (as each records after its in-place swap)."""


class PathPolicy(Model):
    """How the Gateway's policy decided one path of a Route."""

    path: str
    methods: list[str]
    result: Literal["Admitted", "Refused"]
    rules: list[str] = Field(default_factory=list)
    """The rules that admitted the path, or the one that refused it, by field."""


class RouteStatus(Model):
    """Observed state of a Route."""

    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    paths: int | None = None
    auth: str | None = None
    """Authorizers the paths use (`none` when all are public)."""
    policy: list[PathPolicy] | None = None
    """Per path, the Gateway's rules that admitted or refused it (Routes of other
    namespaces, and paths the Gateway's required scopes or claims changed)."""


class JwksStatus(Model):
    """The identity provider's key set, as the operator's last probe found it."""

    uri: str
    reachable: bool
    last_success: str | None = None
    """When a probe last got a usable key set."""
    key_ids: list[str] = Field(default_factory=list)
    """Key IDs the key set serves (the last known ones while unreachable)."""
    error: str | None = None


class AuthorizerStatus(Model):
    """Observed state of an Authorizer."""

    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    issuer: str | None = None
    """The issuer(s) tokens must carry."""
    jwks: JwksStatus | None = None
    """Health of the JWKS, when the authorizer has one and the operator probes it."""


GATEWAY_SPEC_ADAPTER: Final = TypeAdapter(GatewaySpec)
ROUTE_SPEC_ADAPTER: Final = TypeAdapter(RouteSpec)
