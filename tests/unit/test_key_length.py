"""The gateway, `wardgate validate` and the operator refuse the same HMAC secrets: one
minimum-length table (`config.HMAC_MIN_KEY_BYTES`, RFC 7518 section 3.2) for all three."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.tokens import rsa_key
from wardgate.cli import main
from wardgate.gateway.authorizers import Authorizers
from wardgate.gateway.config import HMAC_MIN_KEY_BYTES, ConfigError
from wardgate.gateway.loading import SecretSource, load_config
from wardgate.operator.conditions import LINT_CONDITION
from wardgate.operator.inputs import key_info
from wardgate.operator.render import Meta, Resource, SecretInfo, render_authorizer

NAMESPACE = "shop"
ALGORITHM_SETS: list[list[str]] = [
    ["HS256"],
    ["HS384"],
    ["HS512"],
    ["HS256", "HS384"],
    ["HS256", "HS512"],
    ["HS384", "HS512"],
    ["HS256", "HS384", "HS512"],
]


def jwt_spec(algorithms: list[str]) -> dict[str, Any]:
    return {"type": "jwt", "secret": "$secret.KEY", "algorithms": algorithms, "audience": "api"}


def supabase_spec() -> dict[str, Any]:
    """Legacy HS256 secret beside the project's JWKS."""
    return {"type": "supabase", "projectUrl": "https://ref.supabase.co", "jwtSecret": "$secret.KEY"}


def secret_value(size: int, newline: bool = False) -> bytes:
    """A secret of `size` bytes (a mounted Secret's trailing newline is not part of it)."""
    return (b"k" * size) + (b"\n" if newline else b"")


def gateway_refuses(spec: dict[str, Any], value: bytes, secrets_dir: Path) -> bool:
    (secrets_dir / "KEY").write_bytes(value)
    loaded = load_config({"authorizer": spec, "paths": []}, SecretSource(directory=secrets_dir))
    try:
        Authorizers.build(loaded)
    except ConfigError:
        return True
    return False


def validate_refuses(
    spec: dict[str, Any], value: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> bool:
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir(exist_ok=True)
    (secrets_dir / "KEY").write_bytes(value)
    config = tmp_path / "gateway.json"
    config.write_text(json.dumps({"authorizer": spec, "paths": []}))
    code = main(["validate", str(config), "--secrets-dir", str(secrets_dir)])
    captured = capsys.readouterr()
    assert code in (0, 1), captured.err
    # The value never shows, valid or not.
    assert value.strip().decode() not in captured.out + captured.err
    return code == 1


def operator_refuses(spec: dict[str, Any], value: bytes) -> bool:
    authorizer = Resource(Meta(NAMESPACE, "auth"), {**spec, "secretRef": {"name": "keys"}})
    secrets = {(NAMESPACE, "keys"): SecretInfo({"KEY": key_info(value)})}
    result = render_authorizer(authorizer, secrets)
    refs = next(c for c in result.status.conditions if c.type == "ResolvedRefs")
    if refs.ok:
        assert result.entry is not None
        return False
    assert refs.reason == "InvalidKey"
    assert result.entry is None
    return True


def minimum_of(algorithms: list[str]) -> int:
    return max(HMAC_MIN_KEY_BYTES[a] for a in algorithms)


def specs() -> list[tuple[str, dict[str, Any], int]]:
    """(id, spec, the shortest secret it accepts)."""
    cases = [
        ("jwt-" + "+".join(algorithms), jwt_spec(algorithms), minimum_of(algorithms))
        for algorithms in ALGORITHM_SETS
    ]
    cases.append(("supabase-legacy-secret", supabase_spec(), HMAC_MIN_KEY_BYTES["HS256"]))
    return cases


@pytest.mark.parametrize(("spec", "minimum"), [c[1:] for c in specs()], ids=[c[0] for c in specs()])
@pytest.mark.parametrize("offset", [-1, 0, 1])
@pytest.mark.parametrize("newline", [False, True])
def test_gateway_validate_and_operator_agree_on_the_boundary(
    spec: dict[str, Any],
    minimum: int,
    offset: int,
    newline: bool,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    value = secret_value(minimum + offset, newline)
    refused = offset < 0
    secrets_dir = tmp_path / "gateway-secrets"
    secrets_dir.mkdir()
    assert gateway_refuses(spec, value, secrets_dir) is refused
    assert validate_refuses(spec, value, tmp_path, capsys) is refused
    assert operator_refuses(spec, value) is refused


@settings(max_examples=150, deadline=None)
@given(
    algorithms=st.sampled_from(ALGORITHM_SETS),
    size=st.integers(min_value=1, max_value=200),
    newline=st.booleans(),
)
def test_gateway_and_operator_agree_for_every_length(
    algorithms: list[str], size: int, newline: bool, tmp_path_factory: pytest.TempPathFactory
) -> None:
    spec = jwt_spec(algorithms)
    value = secret_value(size, newline)
    expected = size < minimum_of(algorithms)
    secrets_dir = tmp_path_factory.mktemp("secrets")
    assert gateway_refuses(spec, value, secrets_dir) is expected
    assert operator_refuses(spec, value) is expected


def test_the_refusal_names_the_field_and_the_reason(tmp_path: Path) -> None:
    (tmp_path / "KEY").write_bytes(secret_value(40))
    loaded = load_config(
        {"authorizers": {"partner": jwt_spec(["HS512"])}, "paths": []},
        SecretSource(directory=tmp_path),
    )
    with pytest.raises(ConfigError) as info:
        Authorizers.build(loaded)
    assert info.value.problems == [
        "authorizers.partner: the secret is 40 bytes; the algorithm needs at least 64 "
        "(RFC 7518 section 3.2)"
    ]


def test_inline_key_sets_are_warned_of_and_refused_alike(tmp_path: Path) -> None:
    """A skipped inline key is the same warning in the gateway's log and the operator's
    `ConfigWarnings` condition; a set without one usable key is refused by both."""
    good_key = rsa_key("rs-1").jwk()
    secret_key = {"kty": "oct", "k": "c2VjcmV0"}
    skipped = "spec.jwks keys[1]: kty 'oct' is not a public key type (RSA, EC, OKP)"

    def spec(*keys: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "jwt",
            "jwks": {"keys": list(keys)},
            "algorithms": ["RS256"],
            "audience": "a",
        }

    def gateway(document: dict[str, Any]) -> Authorizers:
        loaded = load_config(
            {"authorizer": document, "paths": []}, SecretSource(directory=tmp_path)
        )
        return Authorizers.build(loaded)

    warned = gateway(spec(good_key, secret_key)).warnings()
    assert warned == [skipped.replace("spec.", "authorizer.")]
    status = render_authorizer(Resource(Meta(NAMESPACE, "auth"), spec(good_key, secret_key)), {})
    lint = next(c for c in status.status.conditions if c.type == LINT_CONDITION)
    assert lint.message == skipped

    with pytest.raises(ConfigError) as refused:
        gateway(spec(secret_key))
    assert refused.value.problems[-1] == "authorizer.jwks: no usable key (see the problems above)"
    result = render_authorizer(Resource(Meta(NAMESPACE, "auth"), spec(secret_key)), {})
    accepted = next(c for c in result.status.conditions if c.type == "Accepted")
    assert (accepted.status, accepted.reason) == ("False", "Invalid")
    assert "spec.jwks: no usable key" in accepted.message
    assert result.entry is None
