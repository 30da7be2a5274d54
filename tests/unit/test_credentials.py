"""Token sources: their config (dotted-path problems), the readers of cookies, query
parameters and subprotocols, and the property that a token sent in the query never shows
in the URL the upstream receives nor in any log or explain line."""

from __future__ import annotations

import asyncio
import copy
from typing import Any
from urllib.parse import quote, unquote, unquote_plus

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict
from pydantic import SecretStr

from tests.support.tokens import AUDIENCE, HS_SECRET, ISSUER, claims, hs_token
from wardgate.commands.explain import render_text
from wardgate.gateway.app import Admission, Gateway
from wardgate.gateway.authorizers import Authorizers
from wardgate.gateway.config import ConfigError, CookieSource, QuerySource, parse_config
from wardgate.gateway.credentials import (
    CredentialSources,
    cookie_values,
    query_values,
    redact_target,
    subprotocol_tokens,
    without_parameters,
    without_subprotocol_tokens,
)
from wardgate.gateway.errors import GatewayError
from wardgate.gateway.explain import explain_request
from wardgate.gateway.loading import LoadedConfig
from wardgate.gateway.requestlog import format_entry

NAME = "access_token"
DOCUMENT: dict[str, Any] = {
    "authorizer": {
        "type": "jwt",
        "secret": "$secret.JWT_SECRET",
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "tokenSources": [{"type": "authorization"}, {"type": "query", "name": NAME}],
    },
    "servers": {"api": "http://127.0.0.1:9"},
    "paths": [
        {
            "method": "*",
            "path": "/*",
            "auth": True,
            "integration": {"type": "http_proxy", "server": "api"},
        }
    ],
}


def problems(document: object) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(document)
    return caught.value.problems


def with_sources(sources: Any, where: str = "authorizer") -> dict[str, Any]:
    document = copy.deepcopy(DOCUMENT)
    if where == "authorizer":
        document["authorizer"]["tokenSources"] = sources
    else:
        document["paths"][0]["auth"] = {"tokenSources": sources}
    return document


@pytest.mark.parametrize(
    ("sources", "where", "expected"),
    [
        ([], "authorizer", "authorizer.tokenSources: List should have at least 1 item"),
        (
            [{"type": "cookie", "name": "a b"}],
            "authorizer",
            "authorizer.tokenSources.0.name: String should match pattern",
        ),
        (
            [{"type": "query", "name": "a&b"}],
            "route",
            "paths.0.auth.tokenSources.0.name: String should match pattern",
        ),
        (
            [{"type": "header"}],
            "authorizer",
            "authorizer.tokenSources.0: Input tag 'header' found using 'type' does not match",
        ),
        (
            [{"type": "query", "name": "t"}, {"type": "query", "name": "t"}],
            "route",
            "paths.0.auth.tokenSources: the source `query t` is listed twice",
        ),
        ([{"type": "subprotocol"}], "authorizer", "authorizer.tokenSources.0.prefix: Field"),
    ],
)
def test_source_problems_are_dotted_paths(sources: Any, where: str, expected: str) -> None:
    found = problems(with_sources(sources, where))
    assert any(line.startswith(expected) for line in found), found


def test_sources_round_trip_and_default_is_the_header() -> None:
    config = parse_config(DOCUMENT)
    assert config.authorizer is not None
    assert config.authorizer.token_sources is not None
    assert isinstance(config.authorizer.token_sources[1], QuerySource)
    assert parse_config(config.model_dump(by_alias=True, exclude_unset=True)) == config
    assert CredentialSources(None, None, 8192).default


def test_cookie_values() -> None:
    assert cookie_values(["a=1; sb=tok; c=3"], "sb") == ["tok"]
    assert cookie_values(["a=1", 'sb="tok"'], "sb") == ["tok"]
    assert cookie_values(["sb=; other=sb=x"], "sb") == []
    assert cookie_values(["SB=tok"], "sb") == ["tok"]  # some frameworks fold case
    assert cookie_values(["sbx=tok; xsb=t"], "sb") == []


# Spellings of the cookie name `tok` that an upstream's cookie parser may read as `tok`
# (aiohttp strips any Unicode whitespace around names; others fold case or decode the
# header as Latin-1): each is that cookie to the gateway too.
LOOK_ALIKES = [
    "\u00a0tok",
    "tok\u00a0",
    "\u2003tok",
    "\u3000tok\u205f",
    "\x85tok",
    "\u00c2\u00a0tok",  # UTF-8 NBSP read as Latin-1
    "\x0btok",
    "\x1ftok",
    "TOK",
    "Tok",
]


@pytest.mark.parametrize("spelling", LOOK_ALIKES)
def test_a_look_alike_cookie_name_with_another_value_is_ambiguous(spelling: str) -> None:
    sources = CredentialSources([CookieSource(type="cookie", name="tok")], None, 8192)
    assert cookie_values([f"tok=A; {spelling}=B"], "tok") == ["A", "B"]
    with pytest.raises(GatewayError) as info:
        sources.find("GET", CIMultiDict({"Cookie": f"tok=A; {spelling}=B"}), "")
    assert info.value.error.code == "ambiguous_token"


def test_query_values_and_removal() -> None:
    assert query_values("a=1&access%5Ftoken=t%2Eu&b", NAME) == ["t.u"]
    assert without_parameters("a=1&access%5Ftoken=t&access_token&b=2", frozenset({NAME})) == (
        "a=1&b=2"
    )
    assert redact_target("/x?a=1&access_token=t.u", frozenset({NAME})) == (
        "/x?a=1&access_token=REDACTED"
    )
    assert redact_target("/x?a=1;access_token=t", frozenset({NAME})) == "/x?REDACTED"
    assert redact_target("/x?a=tok&access_token=tok", frozenset({NAME})) == "/x?REDACTED"


def test_subprotocol_tokens() -> None:
    assert subprotocol_tokens(["chat, bearer.a.b.c", "x"], "bearer.") == ["a.b.c"]
    assert without_subprotocol_tokens("chat, bearer.a.b.c", "bearer.") == "chat"


def test_two_different_cookies_of_one_name_are_ambiguous() -> None:
    sources = CredentialSources(
        [parse_config(with_sources([{"type": "cookie", "name": "s"}])).authorizer.token_sources[0]],  # type: ignore[union-attr]
        None,
        8192,
    )
    headers = CIMultiDict([("Cookie", "s=a.b.c"), ("Cookie", "s=d.e.f")])
    with pytest.raises(GatewayError) as caught:
        sources.find("GET", headers, "")
    assert caught.value.error.code == "ambiguous_token"
    same = CIMultiDict([("Cookie", "s=a.b.c"), ("Cookie", "s=a.b.c")])
    assert sources.find("GET", same, "").token == "a.b.c"


class _Policy:
    origins = frozenset({"https://app.example.com"})


@pytest.mark.parametrize(
    ("headers", "allowed"),
    [
        ([("Origin", "https://app.example.com")], True),
        ([("Origin", "https://APP.example.com")], True),
        ([("Origin", "https://api.example.com"), ("Host", "api.example.com")], True),
        ([("Origin", "https://api.example.com"), ("Host", "API.example.com:443")], True),
        ([("Origin", "http://api.example.com:8080"), ("Host", "api.example.com:8080")], True),
        ([("Origin", "http://api.example.com"), ("Host", "api.example.com:8080")], False),
        ([("Referer", "https://app.example.com/a?b")], True),
        ([("Referer", "/relative")], False),
        ([("Referer", "https://evil.example.net/")], False),
        ([("Origin", "null"), ("Referer", "https://app.example.com/")], False),
        ([("Origin", "https://app.example.com"), ("Origin", "https://evil.example.net")], False),
        ([("Origin", "https://app.example.com.evil.example.net")], False),
        ([], False),
    ],
)
def test_origin_check(headers: list[tuple[str, str]], allowed: bool) -> None:
    from wardgate.gateway.credentials import check_origin

    if allowed:
        check_origin(CIMultiDict(headers), _Policy())
    else:
        with pytest.raises(GatewayError) as caught:
            check_origin(CIMultiDict(headers), _Policy())
        assert caught.value.error.code == "csrf_origin_refused"


# --- the property -------------------------------------------------------------------------

_LOADED = LoadedConfig(config=parse_config(DOCUMENT), secrets={"JWT_SECRET": SecretStr(HS_SECRET)})
_TOKEN = hs_token(claims(iss=ISSUER, aud=AUDIENCE, lifetime=10**7))
_OTHER = hs_token(claims(iss=ISSUER, aud=AUDIENCE, sub="other", lifetime=10**7))

_name_spellings = st.sampled_from([NAME, "access%5Ftoken", "access%5ftoken", "acc%65ss_token"])
_value_spellings = st.sampled_from(
    [
        _TOKEN,
        _TOKEN.replace(".", "%2E"),
        quote(_TOKEN, safe=""),
        _TOKEN.replace(".", "%252E"),
    ]
)
_noise = st.text(alphabet="abcxyz019=%;+._-", max_size=12)


@st.composite
def _query(draw: st.DrawFn) -> str:
    pairs = draw(st.lists(_noise, max_size=4))
    for _ in range(draw(st.integers(1, 3))):
        pair = f"{draw(_name_spellings)}={draw(_value_spellings)}"
        if draw(st.booleans()) and pairs:
            # Glued to another pair with `;`, or inside another parameter's value.
            index = draw(st.integers(0, len(pairs) - 1))
            pairs[index] += draw(st.sampled_from([";", "=", ""])) + pair
        else:
            pairs.insert(draw(st.integers(0, len(pairs))), pair)
    if draw(st.booleans()):
        pairs.append(f"{NAME}={_OTHER}")
    return "&".join(pairs)


def _segments_in(text: str) -> list[str]:
    """The token's signature and claims segments found in `text`, in any decoding."""
    forms = [text, unquote_plus(text), unquote(unquote_plus(text))]
    return [part for part in _TOKEN.split(".")[1:] if any(part in form for form in forms)]


async def _decide(query: str, headers: list[tuple[str, str]]) -> tuple[Admission, str]:
    authorizers = Authorizers.build(_LOADED)
    gateway = Gateway(_LOADED, authorizers)
    admission = Admission("id", "GET", f"/feed?{query}", {})
    code = None
    try:
        await gateway.admit(admission, CIMultiDict(headers))
    except GatewayError as exc:
        code = exc.error.code
    finally:
        gateway.upstreams.close()
    line = format_entry(
        request_id="id",
        method=admission.method,
        path=admission.path,
        route_json="null",
        authorizer_json="null",
        status=200 if code is None else 400,
        code=code,
        started=0.0,
        detail=None,
        trusted_path=admission.trusted_path,
    )
    return admission, line


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(query=_query(), header=st.booleans())
def test_a_query_token_never_reaches_the_upstream_url_or_a_log_line(
    query: str, header: bool
) -> None:
    headers = [("Authorization", f"Bearer {_TOKEN}")] if header else []
    admission, line = asyncio.run(_decide(query, headers))
    if admission.principal is not None:
        upstream_url = f"{admission.path}?{admission.query}"
        assert _segments_in(upstream_url) == [], upstream_url
    assert _segments_in(line) == []
    report = asyncio.run(explain_request(_LOADED, "GET", f"/feed?{query}", headers))
    shown = render_text(report, "test")
    if header:
        # The header's token is the user's own input to explain: only the target is checked.
        shown = report.target
    assert _segments_in(shown) == [], shown
    assert _segments_in(str(report.to_json()["request"])) == []


def test_a_stray_percent_before_a_token_parameter_does_not_smuggle_a_second_token() -> None:
    """`%access%5Ftoken` decodes to no known name (`%ac` swallows two letters), yet a
    lenient reader sees `access_token` in it: the request is refused, never forwarded
    with an unverified token beside the verified one."""
    query = f"%{NAME.replace('_', '%5F')}={_TOKEN}&{NAME}={_OTHER}"
    admission, line = asyncio.run(_decide(query, []))
    assert admission.principal is None
    assert '"code":"ambiguous_token"' in line.replace(" ", "")
    assert _segments_in(line) == []
