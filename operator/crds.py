"""Generate the CustomResourceDefinitions from the pydantic models.

`python -m wardgate.operator.crds [--check]` writes (or checks) `deploy/crds/*.yaml` and the
Helm chart's copy, `deploy/helm/wardgate/crds/*.yaml`, so the two cannot drift.

The models are the one source of truth. pydantic's JSON Schema is turned into a Kubernetes
structural schema: references inlined, `null` alternatives dropped, `type`-tagged unions
merged into one object whose per-type fields and requirements become CEL rules, defaults
moved into descriptions (the API server must not write them into users' objects).
Validators written in Python have no JSON Schema; each one is translated here, once, into a
pattern or a CEL rule, and a validator without a translation stops the generator, so a new
check in the models cannot silently miss the CRDs.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml
from pydantic import TypeAdapter
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from wardgate.gateway import config as gateway_config
from wardgate.gateway import hosts
from wardgate.operator import models

Schema = dict[str, Any]

PRESERVE: Final = "x-kubernetes-preserve-unknown-fields"
VALIDATIONS: Final = "x-kubernetes-validations"
# Checks written as OpenAPI `anyOf`/`oneOf`/`not` of `required` (for fields CEL cannot see);
# collected under this key while converting, emitted as `allOf`.
JUNCTORS: Final = "x-wardgate-junctors"
CRD_DIR: Final = Path(__file__).resolve().parent.parent / "deploy" / "crds"
CHART_CRD_DIR: Final = CRD_DIR.parent / "helm" / "wardgate" / "crds"
CRD_DIRS: Final = (CRD_DIR, CHART_CRD_DIR)
CHART_TEMPLATE_DIR: Final = CRD_DIR.parent / "helm" / "wardgate" / "templates"

_HS: Final = "startsWith('HS')"


def _rule(rule: str, message: str, **extra: str) -> dict[str, str]:
    return {"rule": rule, "message": message, **extra}


def _exactly_one(*names: str) -> dict[str, Any]:
    return {"schema": {"oneOf": [{"required": [name]} for name in names]}}


# Model validators (by qualified name) and their equivalents: CEL rules, or OpenAPI junctors
# (`{"schema": ...}`) where a field has no type (CEL cannot see those).
MODEL_VALIDATOR_RULES: Final[Mapping[str, list[dict[str, Any]]]] = {
    "JwtAuthorizer._check_keys": [
        _exactly_one("secret", "jwksUri", "jwks"),
        _rule(
            "!(has(self.algorithm) && has(self.algorithms))",
            "give `algorithm` or `algorithms`, not both",
        ),
        _rule(
            f"has(self.secret) ? ((!has(self.algorithm) || self.algorithm.{_HS}) && "
            f"(!has(self.algorithms) || self.algorithms.all(a, a.{_HS}))) : "
            f"((!has(self.algorithm) || !self.algorithm.{_HS}) && "
            f"(!has(self.algorithms) || !self.algorithms.exists(a, a.{_HS})))",
            "`secret` works only with HS* algorithms, and HS* algorithms need `secret`",
        ),
    ],
    "Auth0Authorizer._check_algorithms": [
        _rule(
            f"!has(self.algorithms) || !self.algorithms.exists(a, a.{_HS})",
            "Auth0 authorizers verify with the tenant's JWKS: use RS256/PS256",
        )
    ],
    "SupabaseAuthorizer._check_algorithms": [
        _rule(
            f"has(self.jwtSecret) || !has(self.algorithms) || !self.algorithms.exists(a, a.{_HS})",
            "HS256 needs `jwtSecret` (the project's legacy JWT secret)",
        )
    ],
    "JwtAuthorizerSpec._check_secret_ref": [
        _rule(
            "!has(self.secret) || has(self.secretRef)",
            "`secret` is a `$secret.NAME` reference: set `secretRef`",
        )
    ],
    "SupabaseAuthorizerSpec._check_secret_ref": [
        _rule(
            "!has(self.jwtSecret) || has(self.secretRef)",
            "`jwtSecret` is a `$secret.NAME` reference: set `secretRef`",
        )
    ],
    "PathEntry._check_action": [_exactly_one("response", "integration")],
    "Limits._check_reachable": [
        _rule(
            "(has(self.maxHeaderBytes) ? self.maxHeaderBytes : "
            f"{gateway_config.Limits().max_header_bytes}) >= "
            "(has(self.maxTokenBytes) ? self.maxTokenBytes : "
            f"{gateway_config.Limits().max_token_bytes}) + "
            f"{gateway_config.AUTHORIZATION_FIELD_OVERHEAD + 1}",
            "`maxHeaderBytes` must be at least `maxTokenBytes` + "
            f"{gateway_config.AUTHORIZATION_FIELD_OVERHEAD + 1}: a smaller header limit "
            "refuses large tokens before `maxTokenBytes` can",
        )
    ],
    # Scanning `allowOrigins` in every path of a Route exceeds the API server's CEL cost
    # budget (the lists are unbounded): the operator checks it.
    "CorsPolicy._check_credentials": [],
    # `body` is free JSON (null and absent are one to the API server) and a schema cannot
    # constrain map keys: the operator checks both.
    "StaticIntegration._check_answer": [],
    "GatewayServer._check_target": [
        _rule("has(self.service) != has(self.url)", "give exactly one of `service` or `url`")
    ],
    "RouteNamespaces._check_selector": [
        _rule(
            "(has(self.from) && self.from == 'Selector') == has(self.selector)",
            "`selector` is required with `from: Selector`, and only then",
        )
    ],
    # `size()` of the unbounded lists exceeds the CEL cost budget: admission checks that
    # one is given, the operator that it is not empty.
    "UnauthenticatedRule._check_scope": [
        _rule("has(self.namespaces) || has(self.paths)", "give `namespaces`, `paths` or both")
    ],
    # Overlap between namespaces' patterns follows the matcher's semantics: the operator
    # checks it and reports the Gateway `Accepted=False, reason=Invalid`.
    "GatewaySpec._check_delegations": [],
    # Wildcards cover names the way the matcher decides (`hostname_covers`): the operator
    # checks it and reports the Route `Accepted=False, reason=Invalid`.
    "RouteSpec._check_path_hostnames": [],
    # A Secret listed twice: the operator reports the Gateway `Accepted=False, reason=Invalid`
    # (a CEL rule comparing every pair of the list costs more than the budget allows).
    "GatewayTls._check_unique": [],
    "Autoscaling._check_bounds": [
        _rule(
            "!has(self.minReplicas) || self.minReplicas <= self.maxReplicas",
            "`minReplicas` must not exceed `maxReplicas`",
        )
    ],
}

_LABEL_PATTERN: Final = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
# Two labels at least after `*.`, as `check_hostname` requires.
_HOSTNAME_PATTERN: Final = (
    rf"(\*\.{_LABEL_PATTERN}(\.{_LABEL_PATTERN})+|{_LABEL_PATTERN}(\.{_LABEL_PATTERN})*)"
)
_URL_PATTERN: Final = r"^https?://[^/?#\s]+(/[^?#\s]*)?$"
_METHOD_PATTERN: Final = r"^([A-Z]+|\*)$"
_FIELD_NAME_PATTERN: Final = r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$"


# A field that takes several JSON types (a string or a list, `true` or an object) has no
# `type` in a structural schema: the API server keeps it as written and CEL cannot see it, so
# its content is checked by the operator (reported as `Accepted=False, reason=Invalid`).
def _one_or_many(inner: Schema) -> Schema:
    return {PRESERVE: True, "description": "One string, or a list of strings."}


def _auth_shorthand(inner: Schema) -> Schema:
    return {PRESERVE: True}


def _server_shorthand(inner: Schema) -> Schema:
    return {PRESERVE: True}


# Field validators (by function) and the schema they become.
BEFORE_VALIDATORS: Final[Mapping[Callable[..., Any], Callable[[Schema], Schema]]] = {
    gateway_config._one_or_many: _one_or_many,
    gateway_config._auth_shorthand: _auth_shorthand,
    gateway_config._server_shorthand: _server_shorthand,
}
AFTER_VALIDATORS: Final[Mapping[Callable[..., Any], Schema]] = {
    gateway_config._check_secret_reference: {
        "pattern": "^" + r"\$secret\." + gateway_config.SECRET_NAME_PATTERN + "$"
    },
    gateway_config._check_http_url: {"pattern": _URL_PATTERN},
    # CEL rules rather than patterns where users paste the wrong shape: the API server then
    # answers with the message written here, not a regular expression.
    gateway_config._check_domain: {
        "maxLength": 253,
        VALIDATIONS: [
            _rule(
                "!self.contains('/')",
                "must be a bare domain such as `tenant.eu.auth0.com`, without scheme or path "
                "(the issuer `https://DOMAIN/` and the JWKS URL are derived from it)",
            )
        ],
    },
    gateway_config._check_project_url: {
        "maxLength": 2048,
        VALIDATIONS: [
            _rule(
                "self.matches('^https?://[^/?#\\\\s]+/?$')",
                "must be the project's base URL, e.g. `https://REF.supabase.co`, without a path",
            )
        ],
    },
    gateway_config._check_token_sources: {
        VALIDATIONS: [
            _rule(
                "self.all(a, self.filter(b, b.type == a.type && (!has(a.name) || "
                "(has(b.name) && b.name == a.name))).size() == 1)",
                "a source is listed twice (one `authorization` and one `subprotocol` at most)",
            )
        ]
    },
    # A pattern, not a CEL rule with a readable message: `matches()` on every item of these
    # unbounded lists exceeds the API server's CEL cost budget.
    hosts.check_hostname: {"maxLength": 253, "pattern": f"^{_HOSTNAME_PATTERN}$"},
    # Duplicates are refused by the API server itself (a list of type `set`).
    hosts.check_unique_hostnames: {"x-kubernetes-list-type": "set"},
    gateway_config._check_method: {"pattern": _METHOD_PATTERN},
    # Header names and values a config writes: the reserved names (framing, the gateway's
    # own) are refused by the operator, which names them.
    gateway_config._check_forwarded_field_name: {"pattern": _FIELD_NAME_PATTERN},
    gateway_config._check_cors_field_name: {"pattern": r"^(\*|[!#$%&'*+\-.^_`|~0-9A-Za-z]+)$"},
    gateway_config._check_field_value: {"pattern": r"^[^\x00-\x08\x0a-\x1f\x7f]*$"},
    gateway_config._check_scope_token: {"pattern": r"^[\x21\x23-\x5b\x5d-\x7e]+$"},
    # The matcher's full rules (dot segments, parameter names, wildcard placement) are checked
    # by the operator, which reports them as `Accepted=False, reason=Invalid`.
    gateway_config._check_pattern: {"pattern": r"^/([^/%?#]+/)*[^/%?#]*$"},
}


def _cel_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")


class CrdJsonSchema(GenerateJsonSchema):
    """pydantic's JSON Schema, with our validators translated (see the module docstring)."""

    def function_before_schema(
        self, schema: core_schema.BeforeValidatorFunctionSchema
    ) -> JsonSchemaValue:
        function = schema["function"]["function"]
        inner = self.generate_inner(schema["schema"])
        if function in BEFORE_VALIDATORS:
            return BEFORE_VALIDATORS[function](self._resolved(inner))
        if getattr(function, "__qualname__", "").endswith("_authorizer_name_shorthand"):
            return inner  # GatewayConfig only, not part of any CRD
        raise ValueError(f"no CRD translation for the before-validator {function!r}")

    def function_after_schema(
        self, schema: core_schema.AfterValidatorFunctionSchema
    ) -> JsonSchemaValue:
        function = schema["function"]["function"]
        inner = self.generate_inner(schema["schema"])
        name = getattr(function, "__qualname__", "")
        if name in MODEL_VALIDATOR_RULES:
            rules = MODEL_VALIDATOR_RULES[name]
            wrapped: Schema = {"allOf": [inner]}
            cel = [r for r in rules if "rule" in r]
            junctors = [r["schema"] for r in rules if "schema" in r]
            if cel:
                wrapped[VALIDATIONS] = cel
            if junctors:
                wrapped[JUNCTORS] = junctors
            return wrapped
        if function in AFTER_VALIDATORS:
            return {**inner, **AFTER_VALIDATORS[function]}
        if name == "GatewayConfig._check_references":
            return inner  # cross-object checks: the operator reports them in status
        raise ValueError(f"no CRD translation for the after-validator {name or function!r}")

    def _resolved(self, schema: Schema) -> Schema:
        return schema


@dataclass
class Structural:
    """Turns a JSON Schema (with `$defs`) into a Kubernetes structural schema."""

    defs: Mapping[str, Schema]
    seen: list[str] = field(default_factory=list)

    def convert(self, node: Schema) -> Schema:
        node = dict(node)
        if "$ref" in node:
            name = node.pop("$ref").rsplit("/", 1)[-1]
            if name in self.seen:
                raise ValueError(f"recursive schema {name}: not representable in a CRD")
            self.seen.append(name)
            try:
                target = self.convert(self.defs[name])
            finally:
                self.seen.pop()
            return self._merge(target, self.convert_keywords(node))
        if "allOf" in node:
            parts = node.pop("allOf")
            if len(parts) != 1:
                raise ValueError("allOf with several parts is not supported")
            return self._merge(self.convert(parts[0]), self.convert_keywords(node))
        if "anyOf" in node or "oneOf" in node:
            return self._merge(self.convert_union(node), self.convert_keywords(node))
        return self.convert_plain(node)

    def convert_keywords(self, node: Schema) -> Schema:
        """Keywords beside a reference or union (description, rules, defaults)."""
        out: Schema = {}
        default = node.get("default")
        description = node.get("description")
        if description is not None:
            out["description"] = " ".join(str(description).split())
        if "default" in node and default is not None and default not in ([], {}, ""):
            out["description"] = (
                f"{out.get('description', '')} Default: {json.dumps(default)}.".strip()
            )
        for key in (VALIDATIONS, JUNCTORS):
            if key in node:
                out[key] = node[key]
        for key in ("pattern", "minLength", "maxLength"):
            if key in node:
                out[key] = node[key]
        return out

    @staticmethod
    def _merge(base: Schema, extra: Schema) -> Schema:
        merged = dict(base)
        for key, value in extra.items():
            if key in (VALIDATIONS, JUNCTORS):
                merged[key] = [*merged.get(key, []), *value]
            elif key == "description" and "description" in merged and key in extra:
                merged[key] = value
            else:
                merged[key] = value
        return merged

    def convert_union(self, node: Schema) -> Schema:
        variants = node.get("anyOf") or node.get("oneOf") or []
        variants = [v for v in variants if v.get("type") != "null"]
        if len(variants) == 1:
            return self.convert(variants[0])
        converted = [self.convert(v) for v in variants]
        types = sorted(str(v.get("type")) for v in converted)
        if types == ["integer", "string"]:
            return {"x-kubernetes-int-or-string": True}
        if all(v.get("type") == "object" and "properties" in v for v in converted):
            return self.merge_tagged(converted)
        raise ValueError(f"cannot represent the union of {types} in a structural schema")

    def merge_tagged(self, variants: list[Schema]) -> Schema:
        """A `type`-tagged union as one object; per-type fields become CEL rules."""
        tags: list[str] = []
        for variant in variants:
            enum = variant["properties"].get("type", {}).get("enum", [])
            if len(enum) != 1:
                raise ValueError("a union of objects needs a `type` tag with one value each")
            tags.append(enum[0])
        properties: dict[str, Schema] = {}
        owners: dict[str, list[str]] = {}
        rules: list[dict[str, str]] = []
        junctors: list[Schema] = []
        moved: set[str] = set()
        required_everywhere = set.intersection(*(set(v.get("required", [])) for v in variants))
        for index, (tag, variant) in enumerate(zip(tags, variants, strict=True)):
            for name, schema in variant["properties"].items():
                owners.setdefault(name, []).append(tag)
                if name == "type":
                    continue
                differs = name in properties and _strip_docs(properties[name]) != _strip_docs(
                    schema
                )
                if differs or name in moved:
                    # The types check this field differently: each type's rules move to the
                    # union, guarded by its tag; what remains must be the same.
                    if name not in moved:
                        moved.add(name)
                        for first_tag, first in zip(tags[:index], variants[:index], strict=True):
                            if name in first["properties"]:
                                rules += _guarded_rules(first_tag, name, first["properties"][name])
                        properties[name] = _without_rules(properties[name])
                    rules += _guarded_rules(tag, name, schema)
                    if _strip_docs(properties[name]) != _strip_docs(_without_rules(schema)):
                        raise ValueError(f"`{name}` differs between the types of a union")
                properties.setdefault(name, schema)
            others = [t for t in tags if t != tag]
            for name in variant.get("required", []):
                if name not in required_everywhere:
                    junctors.append(
                        {
                            "anyOf": [
                                {"properties": {"type": {"enum": others}}},
                                {"required": [name]},
                            ]
                        }
                    )
            for rule in variant.get(VALIDATIONS, []):
                rules.append({**rule, "rule": f"self.type != '{tag}' || ({rule['rule']})"})
            for junctor in variant.get(JUNCTORS, []):
                junctors.append({"anyOf": [{"properties": {"type": {"enum": others}}}, junctor]})
        for name, field_tags in owners.items():
            if len(field_tags) < len(tags):
                junctors.append(
                    {
                        "anyOf": [
                            {"not": {"required": [name]}},
                            {"properties": {"type": {"enum": field_tags}}},
                        ]
                    }
                )
        properties["type"] = {
            "type": "string",
            "enum": tags,
            "description": "One of: " + ", ".join(tags) + ".",
        }
        merged: Schema = {
            "type": "object",
            "properties": dict(sorted(properties.items(), key=lambda kv: kv[0] != "type")),
            "required": sorted(required_everywhere | {"type"}),
        }
        if rules:
            merged[VALIDATIONS] = rules
        if junctors:
            merged[JUNCTORS] = junctors
        return merged

    def convert_plain(self, node: Schema) -> Schema:
        out = self.convert_keywords(node)
        if "const" in node:
            out["enum"] = [node["const"]]
        kind = node.get("type")
        if kind is None and "const" in node:
            kind = "string"
        if kind is None:
            if "enum" in node:
                kind = "string"
            else:
                out[PRESERVE] = True
                for key in (PRESERVE, VALIDATIONS):
                    if key in node:
                        out[key] = node[key]
                return out
        out["type"] = kind
        for key in ("enum", "minimum", "maximum", "minItems", "maxItems", "minProperties"):
            if key in node:
                out[key] = node[key]
        for key, base in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
            if key in node:
                out[base] = node[key]
                out[key] = True
        if kind == "array":
            out["items"] = self.convert(node.get("items", {}))
            if "x-kubernetes-list-type" in node:
                out["x-kubernetes-list-type"] = node["x-kubernetes-list-type"]
        if kind == "object":
            if "properties" in node:
                out["properties"] = {k: self.convert(v) for k, v in node["properties"].items()}
                if node.get("required"):
                    out["required"] = list(node["required"])
            additional = node.get("additionalProperties")
            if isinstance(additional, dict):
                out["additionalProperties"] = self.convert(additional)
                if (
                    out["additionalProperties"].get(PRESERVE)
                    and len(out["additionalProperties"]) == 1
                ):
                    out["additionalProperties"] = {PRESERVE: True}
            elif "properties" not in node:
                out[PRESERVE] = True
        return out


def _without_rules(schema: Schema) -> Schema:
    return {k: v for k, v in schema.items() if k != VALIDATIONS}


def _guarded_rules(tag: str, name: str, schema: Schema) -> list[dict[str, str]]:
    """A field's own rules, restated on the union object for one of its types."""
    out = []
    for rule in schema.get(VALIDATIONS, []):
        scoped = re.sub(r"\bself\b", f"self.{name}", rule["rule"])
        out.append(
            {
                **rule,
                "rule": f"self.type != '{tag}' || !has(self.{name}) || ({scoped})",
                "message": f"{name}: {rule['message']}",
            }
        )
    return out


def _strip_docs(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: _strip_docs(v) for k, v in schema.items() if k != "description"}
    if isinstance(schema, list):
        return [_strip_docs(v) for v in schema]
    return schema


def structural_schema(adapter: TypeAdapter[Any]) -> Schema:
    """The structural OpenAPI schema of one model."""
    raw = adapter.json_schema(by_alias=True, mode="validation", schema_generator=CrdJsonSchema)
    defs = raw.pop("$defs", {})
    converted: Schema = _emit_junctors(Structural(defs).convert(raw))
    return converted


def _emit_junctors(node: Any) -> Any:
    """Collected junctors become the node's `allOf` (after its skeleton)."""
    if isinstance(node, list):
        return [_emit_junctors(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _emit_junctors(v) for k, v in node.items() if k != JUNCTORS}
    if node.get(JUNCTORS):
        out["allOf"] = node[JUNCTORS]
    return out


@dataclass(frozen=True)
class Kind:
    """One custom resource kind."""

    kind: str
    plural: str
    short_names: tuple[str, ...]
    spec: TypeAdapter[Any]
    status: TypeAdapter[Any]
    description: str
    columns: tuple[dict[str, Any], ...]


def _condition_column(name: str, condition: str) -> dict[str, Any]:
    return {
        "name": name,
        "type": "string",
        "jsonPath": f'.status.conditions[?(@.type=="{condition}")].status',
    }


AGE: Final = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
# Why an object is (not) Ready, in `kubectl get wardgate`; the message with `-o wide`.
READY_REASON: Final = {
    "name": "Reason",
    "type": "string",
    "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
}
READY_MESSAGE: Final = {
    "name": "Message",
    "type": "string",
    "priority": 1,
    "jsonPath": '.status.conditions[?(@.type=="Ready")].message',
}

KINDS: Final = (
    Kind(
        kind="Gateway",
        plural="gateways",
        short_names=("wgw",),
        spec=models.GATEWAY_SPEC_ADAPTER,
        status=TypeAdapter(models.GatewayStatus),
        description=(
            "A Wardgate gateway: a Deployment of `wardgate gateway` pods that enforce auth on "
            "the paths of the Routes attached to it."
        ),
        columns=(
            _condition_column("Ready", "Ready"),
            {"name": "Routes", "type": "integer", "jsonPath": ".status.routes"},
            {"name": "Replicas", "type": "integer", "jsonPath": ".status.replicas"},
            {"name": "Available", "type": "integer", "jsonPath": ".status.availableReplicas"},
            {"name": "Serving", "type": "integer", "jsonPath": ".status.servingReplicas"},
            {"name": "Config", "type": "string", "jsonPath": ".status.configHash"},
            READY_REASON,
            AGE,
            READY_MESSAGE,
        ),
    ),
    Kind(
        kind="Route",
        plural="routes",
        short_names=("wrt",),
        spec=models.ROUTE_SPEC_ADAPTER,
        status=TypeAdapter(models.RouteStatus),
        description="Paths served by a Wardgate Gateway, in the gateway config's format.",
        columns=(
            {"name": "Gateway", "type": "string", "jsonPath": ".spec.gatewayRef.name"},
            {"name": "Paths", "type": "integer", "jsonPath": ".status.paths"},
            {"name": "Auth", "type": "string", "jsonPath": ".status.auth"},
            _condition_column("Accepted", "Accepted"),
            _condition_column("Ready", "Ready"),
            READY_REASON,
            AGE,
            READY_MESSAGE,
        ),
    ),
    Kind(
        kind="Authorizer",
        plural="authorizers",
        short_names=("waz",),
        spec=models.AUTHORIZER_SPEC_ADAPTER,
        status=TypeAdapter(models.AuthorizerStatus),
        description=(
            "How a Wardgate gateway verifies tokens: `jwt`, `auth0` or `supabase`. Secret "
            "material only as `$secret.NAME`, the key NAME of the Secret `secretRef` names."
        ),
        columns=(
            {"name": "Type", "type": "string", "jsonPath": ".spec.type"},
            {"name": "Issuer", "type": "string", "jsonPath": ".status.issuer"},
            {"name": "JWKS", "type": "boolean", "jsonPath": ".status.jwks.reachable"},
            {"name": "Keys", "type": "string", "jsonPath": ".status.jwks.keyIds"},
            {"name": "Last-Success", "type": "date", "jsonPath": ".status.jwks.lastSuccess"},
            _condition_column("Ready", "Ready"),
            READY_REASON,
            AGE,
            READY_MESSAGE,
        ),
    ),
)


def build_crd(kind: Kind) -> Schema:
    """The CustomResourceDefinition of one kind."""
    spec = structural_schema(kind.spec)
    status = structural_schema(kind.status)
    spec["description"] = kind.description
    status["description"] = f"Observed state of the {kind.kind}, written by the operator."
    schema: Schema = {
        "type": "object",
        "description": kind.description,
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
        "required": ["spec"],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{kind.plural}.{models.GROUP}",
            "labels": {"app.kubernetes.io/part-of": "wardgate"},
        },
        "spec": {
            "group": models.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.kind.lower(),
                "shortNames": list(kind.short_names),
                "categories": ["wardgate"],
            },
            "versions": [
                {
                    "name": models.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": list(kind.columns),
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


HEADER: Final = "# Generated by `python -m wardgate.operator.crds` from the models: do not edit.\n"


ROUTE_AUTH_POLICY: Final = f"route-auth.{models.GROUP}"


def build_route_auth_policy() -> list[Schema]:
    """A ValidatingAdmissionPolicy (and its binding) refusing unknown fields in a Route
    path's `auth` at `kubectl apply`.

    `auth` is `true`, `false` or an object, so its CRD schema has no type and the API
    server neither prunes it nor lets CRD rules see into it (a `scope:` typo would be
    stored and reported only in status). An admission policy sees the object untyped.
    """
    fields = sorted(
        info.alias or name for name, info in gateway_config.RouteAuth.model_fields.items()
    )
    known = "[" + ", ".join(f"'{name}'" for name in fields) + "]"
    unknown = (
        f"object.spec.paths.map(p, has(p.auth) && type(p.auth) == map ? "
        f"p.auth.filter(k, !(k in {known})) : []).flatten()"
    )
    listing = ", ".join(f"`{name}`" for name in fields)
    return [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {
                "name": ROUTE_AUTH_POLICY,
                "labels": {"app.kubernetes.io/part-of": "wardgate"},
            },
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": [models.GROUP],
                            "apiVersions": ["*"],
                            "operations": ["CREATE", "UPDATE"],
                            "resources": ["routes"],
                        }
                    ]
                },
                "validations": [
                    {
                        "expression": (
                            "!has(object.spec.paths) || object.spec.paths.all(p, !has(p.auth) "
                            f"|| type(p.auth) != map || p.auth.all(k, k in {known}))"
                        ),
                        "message": f"spec.paths[].auth: unknown field; auth takes {listing}",
                        "messageExpression": (
                            f"'spec.paths[].auth: unknown field ' + {unknown}.join(', ') + "
                            f"'; auth takes {listing}, or true/false'"
                        ),
                        "reason": "Invalid",
                    }
                ],
            },
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {
                "name": ROUTE_AUTH_POLICY,
                "labels": {"app.kubernetes.io/part-of": "wardgate"},
            },
            "spec": {"policyName": ROUTE_AUTH_POLICY, "validationActions": ["Deny"]},
        },
    ]


def render_crd_files() -> dict[str, str]:
    """File name → YAML text of every CRD."""
    return {
        f"{kind.plural}.{models.GROUP}.yaml": HEADER
        + yaml.safe_dump(build_crd(kind), sort_keys=False, width=100)
        for kind in KINDS
    }


def render_policy_files() -> dict[str, str]:
    """File name → YAML text of the Route `auth` admission policy and its binding, for
    deploy/crds (`kubectl apply -f deploy/crds`)."""
    policy, binding = build_route_auth_policy()
    return {
        f"{ROUTE_AUTH_POLICY}.policy.yaml": HEADER
        + yaml.safe_dump(policy, sort_keys=False, width=100),
        f"{ROUTE_AUTH_POLICY}.binding.yaml": HEADER
        + yaml.safe_dump(binding, sort_keys=False, width=100),
    }


def render_chart_policy() -> dict[str, str]:
    """The chart's template of the same policy, on unless `routeAuthPolicy.enabled` is
    false (Kubernetes before 1.30 has no ValidatingAdmissionPolicy)."""
    documents = yaml.safe_dump_all(build_route_auth_policy(), sort_keys=False, width=100)
    text = f"{HEADER}{{{{- if .Values.routeAuthPolicy.enabled }}}}\n{documents}{{{{- end }}}}\n"
    return {"route-auth-policy.yaml": text}


def render_files(directory: Path) -> dict[str, str]:
    """What `directory` holds: deploy/crds has the admission policy beside the CRDs."""
    files = render_crd_files()
    if directory == CRD_DIR:
        files.update(render_policy_files())
    return files


def outdated_files(directory: Path, files: Mapping[str, str]) -> list[str]:
    """The files of `directory` that differ from `files`, are missing, or are generated
    ones no longer produced."""
    found = {p.name for p in directory.glob("*.yaml")} if directory.is_dir() else set()
    stale = [
        name
        for name, text in files.items()
        if name not in found or (directory / name).read_text(encoding="utf-8") != text
    ]
    extra = [name for name in sorted(found - set(files)) if _generated(directory / name)]
    return stale + extra


def write_files(directory: Path, files: Mapping[str, str]) -> None:
    """Make `directory` hold exactly `files` (generated files no longer produced go)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text, encoding="utf-8")
    for path in directory.glob("*.yaml"):
        if path.name not in files and _generated(path):
            path.unlink()


def _generated(path: Path) -> bool:
    return path.read_text(encoding="utf-8").startswith(HEADER)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Write or check deploy/crds/*.yaml and deploy/helm/wardgate/crds/*.yaml."
    )
    parser.add_argument("--check", action="store_true", help="fail when a file is outdated")
    parser.add_argument(
        "--dir",
        type=Path,
        action="append",
        help="a directory to write or check instead of the two (repeatable)",
    )
    args = parser.parse_args(argv)
    targets = (
        {d: render_crd_files() for d in args.dir}
        if args.dir
        else {
            **{d: render_files(d) for d in CRD_DIRS},
            CHART_TEMPLATE_DIR: render_chart_policy(),
        }
    )
    outdated = []
    for directory, files in targets.items():
        if args.check:
            outdated += [str(directory / name) for name in outdated_files(directory, files)]
        else:
            write_files(directory, files)
    if outdated:
        print(f"outdated: {', '.join(outdated)}; run python -m wardgate.operator.crds")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
