"""Path normalisation: the canonical form, and every encoding that is refused."""

from __future__ import annotations

import pytest

from wardgate.gateway.paths import PathEncodingError, normalise_path


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        # The path-confusion list of the security suite.
        ("/private/orders", "/private/orders"),
        ("//private/orders", "/private/orders"),
        ("/private//orders", "/private/orders"),
        ("///private///orders", "/private/orders"),
        ("/private/./orders", "/private/orders"),
        ("/public/../private/orders", "/private/orders"),
        ("/public/%2e%2e/private/orders", "/private/orders"),
        ("/public/%2E%2E/private/orders", "/private/orders"),
        ("/public/.%2e/private/orders", "/private/orders"),
        ("/private/%2e/orders", "/private/orders"),
        ("/private/orders;x", "/private/orders;x"),
        ("/private;x/orders", "/private;x/orders"),
        ("/Private/Orders", "/Private/Orders"),
        # Double encoding decodes once: `%25` stays, the `2e` after it is plain text.
        ("/%252e%252e/private/orders", "/%252e%252e/private/orders"),
        ("/public/%252e%252e/%252fprivate", "/public/%252e%252e/%252fprivate"),
        # Dot segments above the root stay at the root.
        ("/..", "/"),
        ("/../private/orders", "/private/orders"),
        ("/a/../../b", "/b"),
        # Trailing slashes are kept; a trailing dot segment leaves one (RFC 3986 5.2.4).
        ("/", "/"),
        ("//", "/"),
        ("/a/", "/a/"),
        ("/a//", "/a/"),
        ("/a/b/..", "/a/"),
        ("/a/.", "/a/"),
        ("/a/..", "/"),
        # Segments that only look like dot segments.
        ("/.well-known/jwks.json", "/.well-known/jwks.json"),
        ("/a/.../b", "/a/.../b"),
        ("/a/..b/c.", "/a/..b/c."),
        # Unreserved escapes are decoded; the rest are kept with upper-case hex.
        ("/%41%7a%30%2D%5f%7E", "/Az0-_~"),
        ("/a%3bb", "/a%3Bb"),
        ("/a%3Bb", "/a%3Bb"),
        ("/caf%c3%a9", "/caf%C3%A9"),
        ("/a%20b", "/a%20b"),
        ("/%25", "/%25"),
        ("/%25zz", "/%25zz"),
        # Raw characters that may not appear unencoded are encoded.
        ("/café", "/caf%C3%A9"),
        ("/a b", "/a%20b"),
        ('/a"<>^`{|}[]', "/a%22%3C%3E%5E%60%7B%7C%7D%5B%5D"),
        ("/a?b#c", "/a%3Fb%23c"),
        # Sub-delimiters, ':' and '@' stay raw.
        ("/a!$&'()*+,;=:@b", "/a!$&'()*+,;=:@b"),
    ],
)
def test_normalise(raw: str, normalised: str) -> None:
    assert normalise_path(raw) == normalised
    assert normalise_path(normalised) == normalised


def test_clean_path_is_returned_as_is() -> None:
    raw = "/api/v1/orders/42"
    assert normalise_path(raw) is raw


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "does not start with '/'"),
        ("private/orders", "does not start with '/'"),
        ("http://host/private/orders", "does not start with '/'"),
        ("*", "does not start with '/'"),
        ("/private%2Forders", "encoded '/'"),
        ("/private%2forders", "encoded '/'"),
        ("/public/..%2f..%2fprivate", "encoded '/'"),
        ("/private%5Corders", "encoded '\\'"),
        ("/private%5corders", "encoded '\\'"),
        ("/private\\orders", "backslash"),
        ("/private/orders%00", "encoded control character %00"),
        ("/a%0a", "encoded control character %0A"),
        ("/a%0D", "encoded control character %0D"),
        ("/a%1f", "encoded control character %1F"),
        ("/a%7f", "encoded control character %7F"),
        ("/a\x00", "control character 0x00"),
        ("/a\tb", "control character 0x09"),
        ("/a\nb", "control character 0x0a"),
        ("/a\x7f", "control character 0x7f"),
        ("/a%G1", "malformed percent-escape '%G1'"),
        ("/a%1G", "malformed percent-escape"),
        ("/a%4", "malformed percent-escape '%4'"),
        ("/a%", "malformed percent-escape '%'"),
        ("/a%+1", "malformed percent-escape"),
        ("/a% 1", "malformed percent-escape"),
        ("/a%%41", "malformed percent-escape"),
        ("/caf%C3", "not valid UTF-8"),
        ("/%FF", "not valid UTF-8"),
        ("/%C0%AE%C0%AE/private", "not valid UTF-8"),
        ("/%ED%A0%80", "not valid UTF-8"),
        ("/caf\udce9", "not valid UTF-8"),
    ],
)
def test_rejected(raw: str, reason: str) -> None:
    with pytest.raises(PathEncodingError, match=None) as caught:
        normalise_path(raw)
    assert reason in caught.value.reason
    assert isinstance(caught.value, ValueError)
    assert str(caught.value) == caught.value.reason
