"""Object bodies (as the API returns them) → render inputs. Pure.

A Secret becomes its keys' sizes and digests here, and its values go no further.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from typing import Any

from wardgate.operator.render import Meta, Resource, SecretInfo, SecretKeyInfo


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


def secret_from_body(body: Mapping[str, Any]) -> SecretInfo:
    """A Secret's keys from its `data` (base64) and `stringData`."""
    keys: dict[str, SecretKeyInfo] = {}
    for key, encoded in (body.get("data") or {}).items():
        try:
            value = base64.b64decode(str(encoded or ""), validate=True)
        except (binascii.Error, ValueError):
            value = b""
        keys[str(key)] = key_info(value)
    for key, text in (body.get("stringData") or {}).items():
        keys[str(key)] = key_info(str(text).encode("utf-8"))
    return SecretInfo(keys)
