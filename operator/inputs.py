"""Object bodies (as the API returns them) → render inputs. Pure.

A Secret becomes its keys' sizes and digests here, and its values go no further (a TLS
Secret's certificate is checked here, and only what is wrong with it goes on).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from wardgate.gateway.tls import CertificateError, check_certificate, upstream_tls_context
from wardgate.operator.render import (
    TLS_KEYS,
    TLS_SECRET_TYPE,
    CaBundleInfo,
    ConfigMapInfo,
    Meta,
    Resource,
    SecretInfo,
    SecretKeyInfo,
)

CERTIFICATE_KEY, PRIVATE_KEY_KEY = TLS_KEYS


def meta_from_body(body: Mapping[str, Any]) -> Meta:
    metadata = body.get("metadata") or {}
    return Meta(
        namespace=str(metadata.get("namespace") or ""),
        name=str(metadata.get("name") or ""),
        generation=int(metadata.get("generation") or 1),
        creation_timestamp=str(metadata.get("creationTimestamp") or ""),
        uid=str(metadata.get("uid") or ""),
        deleting=bool(metadata.get("deletionTimestamp")),
    )


def resource_from_body(body: Mapping[str, Any]) -> Resource:
    spec = body.get("spec")
    return Resource(meta_from_body(body), dict(spec) if isinstance(spec, Mapping) else {})


def key_info(value: bytes) -> SecretKeyInfo:
    """What render may know of a secret value."""
    stripped = value.rstrip(b"\r\n")
    try:
        stripped.decode("utf-8")
        utf8 = True
    except UnicodeDecodeError:
        utf8 = False
    return SecretKeyInfo(len(stripped), utf8, hashlib.sha256(value).hexdigest())


def secret_from_body(body: Mapping[str, Any], now: datetime | None = None) -> SecretInfo:
    """A Secret's keys from its `data` (base64) and `stringData`; for a TLS Secret (or one
    with `tls.crt`), what is wrong with its certificate at `now` (the time of reading)."""
    keys: dict[str, SecretKeyInfo] = {}
    values: dict[str, bytes] = {}
    for key, encoded in (body.get("data") or {}).items():
        try:
            value = base64.b64decode(str(encoded or ""), validate=True)
        except (binascii.Error, ValueError):
            value = b""
        keys[str(key)] = key_info(value)
        values[str(key)] = value
    for key, text in (body.get("stringData") or {}).items():
        keys[str(key)] = key_info(str(text).encode("utf-8"))
        values[str(key)] = str(text).encode("utf-8")
    secret_type = str(body.get("type") or "Opaque")
    problem = None
    if secret_type == TLS_SECRET_TYPE or CERTIFICATE_KEY in values:
        problem = _certificate_problem(values, now or datetime.now(UTC))
    return SecretInfo(keys, secret_type, problem)


def _certificate_problem(values: Mapping[str, bytes], now: datetime) -> str | None:
    missing = [key for key in (CERTIFICATE_KEY, PRIVATE_KEY_KEY) if not values.get(key)]
    if missing:
        return f"no {' and no '.join(missing)} (or empty)"
    try:
        check_certificate(values[CERTIFICATE_KEY], values[PRIVATE_KEY_KEY], now)
    except CertificateError as exc:
        return str(exc)
    return None


def config_map_from_body(body: Mapping[str, Any]) -> ConfigMapInfo:
    """A ConfigMap's keys as CA bundles: the PEM text of each key holding CA certificates
    (kept: they are public, and small), only what is wrong with any other."""
    found: dict[str, CaBundleInfo] = {}
    for key, value in sorted((body.get("data") or {}).items()):
        text = str(value)
        if "-----BEGIN CERTIFICATE-----" not in text:
            # Any other data is never needed: not kept, however large.
            found[str(key)] = CaBundleInfo(problem="not PEM: it has no CERTIFICATE block")
            continue
        try:
            upstream_tls_context(text)
        except ValueError as exc:
            found[str(key)] = CaBundleInfo(problem=str(exc))
        else:
            found[str(key)] = CaBundleInfo(pem=text)
    for key in sorted(body.get("binaryData") or {}):
        found[str(key)] = CaBundleInfo(problem="binary data, not PEM text")
    return found
