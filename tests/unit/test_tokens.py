"""The bearer-token parser: header extraction, limits, segments, base64url and JSON."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.tokens import b64url, hs_token, json_bytes, raw_token
from wardgate.gateway.errors import GatewayError
from wardgate.gateway.tokens import NOT_SHOWN, bearer_token, parse_token

HEADER = json_bytes({"alg": "HS256", "typ": "JWT"})
PAYLOAD = json_bytes({"sub": "u"})


def code_of(call: object, *args: object) -> str:
    with pytest.raises(GatewayError) as info:
        call(*args)  # type: ignore[operator]
    return info.value.error.code


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, "missing_token"),
        ("", "missing_token"),
        ("   ", "missing_token"),
        ("Basic dXNlcjpwYXNz", "invalid_auth_scheme"),
        ("Token abc.def.ghi", "invalid_auth_scheme"),
        ("Bearer", "invalid_auth_scheme"),
        ("Bearer ", "invalid_auth_scheme"),
        ("Bearer  a.b.c", "invalid_auth_scheme"),
        ("Bearer a.b.c d.e.f", "invalid_auth_scheme"),
        ("Bearer a.b.c\td", "invalid_auth_scheme"),
        ("Bearera.b.c", "invalid_auth_scheme"),
        ("Bearer " + "a" * 9000, "token_too_large"),
    ],
)
def test_bearer_header_errors(header: str | None, code: str) -> None:
    assert code_of(bearer_token, header, 8192) == code


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_bearer_scheme_is_case_insensitive(scheme: str) -> None:
    assert bearer_token(f"{scheme} a.b.c", 8192) == "a.b.c"


def test_scheme_error_never_echoes_credentials() -> None:
    with pytest.raises(GatewayError) as info:
        bearer_token("Basic c2VjcmV0LXBhc3N3b3Jk", 8192)
    assert "c2VjcmV0" not in repr(info.value.detail)
    assert info.value.detail["actual"] == "Basic"


@pytest.mark.parametrize(
    "value",
    [
        "sk_live_51Hsupersecretkeyvalue",
        "Basic\tdXNlcjpwYXNzd29yZA==",
        "Token:ghp_0123456789abcdefghijklmnopqrstuvwxyz",
        "dXNlcjpwYXNzd29yZA==",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.c2ln",
        "ApiKey=s3cr3t-value rest",
        "Secret:x y",
        "a" * 40 + " tail",
    ],
)
def test_a_value_without_a_scheme_name_is_never_echoed(value: str) -> None:
    """Only a short scheme name followed by a space is shown; anything else may be the
    credential itself (an API key, Basic with a tab, a bare token)."""
    with pytest.raises(GatewayError) as info:
        bearer_token(value, 8192)
    assert info.value.error.code == "invalid_auth_scheme"
    shown = repr(info.value.detail) + info.value.error.message
    for part in value.replace("\t", " ").replace(":", " ").replace("=", " ").split():
        assert len(part) < 6 or part not in shown, part
    assert info.value.detail["actual"] == NOT_SHOWN


def test_token_size_limit_is_inclusive() -> None:
    assert bearer_token("Bearer " + "a" * 256, 256) == "a" * 256
    with pytest.raises(GatewayError) as info:
        bearer_token("Bearer " + "a" * 257, 256)
    assert info.value.error.code == "token_too_large"
    assert info.value.detail["expected"] == 256
    assert info.value.detail["actual"] == 257


def test_parses_a_real_token() -> None:
    token = hs_token({"sub": "u", "n": 1}, headers={"kid": "k1"})
    parsed = parse_token(token)
    assert parsed.alg == "HS256"
    assert parsed.kid == "k1"
    assert dict(parsed.claims) == {"sub": "u", "n": 1}
    assert parsed.signing_input == token.rsplit(".", 1)[0].encode()
    assert len(parsed.signature) == 32


def test_no_dots_is_opaque() -> None:
    assert code_of(parse_token, "abcdefghijklmnop") == "opaque_token"


@pytest.mark.parametrize(
    "token",
    [
        "a.b",
        "a.b.c.d",
        "a.b.c.d.e.f",
        ".",
        "..",
        "...",
        f"{b64url(HEADER)}.{b64url(PAYLOAD)}.sig=",
        f"{b64url(HEADER)}=.{b64url(PAYLOAD)}.c2ln",
        f"'{b64url(HEADER)}.{b64url(PAYLOAD)}.c2ln'",
        f"{b64url(HEADER)}.{b64url(PAYLOAD)}.c2l+",
        f"{b64url(HEADER)}.{b64url(PAYLOAD)}.c2l/",
        f"{b64url(HEADER)}.{b64url(PAYLOAD)}.A",  # length 1 mod 4
        f"{b64url(HEADER)}.{b64url(PAYLOAD)}.AB",  # non-canonical trailing bits
        f".{b64url(PAYLOAD)}.c2ln",
        f"{b64url(HEADER)}..c2ln",
    ],
)
def test_malformed_shapes(token: str) -> None:
    assert code_of(parse_token, token) == "malformed_token"


def test_jwe_is_malformed_with_a_note() -> None:
    with pytest.raises(GatewayError) as info:
        parse_token("eyJhbGciOiJSU0EtT0FFUCJ9.a.b.c.d")
    assert info.value.error.code == "malformed_token"
    assert "JWE" in info.value.detail["note"]


@pytest.mark.parametrize(
    ("header", "payload"),
    [
        (b'{"alg":"HS256","alg":"none"}', PAYLOAD),
        (HEADER, b'{"sub":"a","sub":"b"}'),
        (HEADER, b'{"o":{"x":1,"x":2}}'),
        (b"\xff\xfe{}", PAYLOAD),
        (HEADER, b'{"sub":"\xc3\x28"}'),
        (HEADER, b'{"sub":"\xed\xa0\x80"}'),  # an encoded surrogate is not UTF-8
        (HEADER, b'{"exp":NaN}'),
        (HEADER, b'{"exp":Infinity}'),
        (HEADER, b'{"exp":-Infinity}'),
        (HEADER, b'{"exp":1e400}'),
        (HEADER, b'{"exp":' + b"9" * 5000 + b"}"),
        (HEADER, b"[1,2]"),
        (HEADER, b'"x"'),
        (HEADER, b"null"),
        (HEADER, b""),
        (HEADER, b'{"a":1} {"b":2}'),
        (HEADER, b'{"a":"line\nbreak"}'),
        (HEADER, b"[" * 100000 + b"]" * 100000),
        (b"[]", PAYLOAD),
        (b"{}", PAYLOAD),  # no alg
        (b'{"alg":null}', PAYLOAD),
        (b'{"alg":""}', PAYLOAD),
        (b'{"alg":["HS256"]}', PAYLOAD),
        (b'{"alg":"HS256","kid":7}', PAYLOAD),
        (b'{"alg":"HS256","cty":"JWT"}', PAYLOAD),
        (b'{"alg":"HS256","cty":"jwt"}', PAYLOAD),
        (b'{"alg":"HS256","b64":false,"crit":["b64"]}', PAYLOAD),
        (b'{"alg":"HS256","b64":false}', PAYLOAD),
        (b'{"alg":"HS256","crit":["exp"]}', PAYLOAD),
        (b'{"alg":"HS256","crit":[]}', PAYLOAD),
        (b'{"alg":"HS256","crit":"x"}', PAYLOAD),
    ],
)
def test_malformed_content(header: bytes, payload: bytes) -> None:
    assert code_of(parse_token, raw_token(header, payload, "k" * 32)) == "malformed_token"


def test_whitespace_around_json_is_fine() -> None:
    parsed = parse_token(raw_token(b' {"alg":"HS256"} ', b'\n{"sub":"x"}\n', "k" * 32))
    assert parsed.claims == {"sub": "x"}


def test_key_selecting_headers_are_reported_as_ignored() -> None:
    header = {"alg": "HS256", "jku": "https://evil/jwks", "x5u": "https://evil", "jwk": {}}
    parsed = parse_token(raw_token(json_bytes(header), PAYLOAD, "k" * 32))
    assert parsed.ignored_headers == ("jku", "jwk", "x5u")


def test_huge_kid_is_clipped_in_details() -> None:
    from wardgate.gateway.tokens import clip

    assert len(str(clip("k" * 10000))) < 100


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_crash_the_parser(data: bytes) -> None:
    token = data.decode("latin-1")
    try:
        parse_token(bearer_token("Bearer " + token, 8192))
    except GatewayError:
        return


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=60), min_size=3, max_size=3))
def test_random_segments_never_crash_the_parser(parts: list[bytes]) -> None:
    token = ".".join(b64url(p) for p in parts)
    codes = set()
    try:
        parse_token(token)
    except GatewayError as exc:
        codes.add(exc.error.code)
    assert codes <= {"malformed_token"}
