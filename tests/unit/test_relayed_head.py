"""An upstream answer's fields relayed still encoded (`relayed_head`) are the fields the
decoding path relays (`response_headers`, the request's own fields, `Server`): the same
fields dropped, replaced and kept, byte for byte."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from wardgate.gateway.exchange import SERVER_HEADER, Reply, head_fields
from wardgate.gateway.proxy import relayed_head, response_headers

OWN = {"X-Request-Id": "abc-1"}


def decoded(raw: list[tuple[bytes, bytes]], own: dict[str, str]) -> list[tuple[str, str]]:
    """What the decoding path relays (`HttpProxy._relayed_headers`), own fields last."""
    headers, _ = response_headers(raw)
    for name in own:
        headers.popall(name, None)
    headers.setdefault("Server", SERVER_HEADER)
    server = headers.popall("Server")
    return [*headers.items(), *(("Server", v) for v in server), *own.items()]


def relayed(raw: list[tuple[bytes, bytes]], own: dict[str, str]) -> list[tuple[str, str]]:
    head = relayed_head(200, raw, own)
    assert head is not None
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    fields = list(head_fields(head))
    server = [f for f in fields if f[0].lower() == "server"]
    rest = [f for f in fields if f[0].lower() != "server"]
    return [*rest, *(("Server", v) for _, v in server), *own.items()]


def test_hop_by_hop_length_and_own_fields_are_dropped() -> None:
    raw = [
        (b"Content-Type", b"application/json"),
        (b"Content-Length", b"44"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Connection", b"keep-alive"),
        (b"PROXY-CONNECTION", b"close"),
        (b"x-request-id", b"spoofed-by-upstream"),
        (b"Set-Cookie", b"a=1"),
        (b"Set-Cookie", b"b=2"),
    ]
    head = relayed_head(200, raw, OWN)
    assert head == (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        b"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\nServer: wardgate\r\n"
    )


def test_the_upstreams_server_is_kept() -> None:
    head = relayed_head(404, [(b"server", b"orders/1.2")], {})
    assert head == b"HTTP/1.1 404 Not Found\r\nserver: orders/1.2\r\n"


def test_bytes_that_are_not_utf8_pass_unchanged() -> None:
    raw = [(b"X-Name", b"caf\xe9 \xff\xfe"), (b"X-Ok", b"\xc3\xa9")]
    head = relayed_head(200, raw, {})
    assert head is not None
    assert b"X-Name: caf\xe9 \xff\xfe\r\n" in head
    assert b"X-Ok: \xc3\xa9\r\n" in head
    # Decoded for another server the way the decoding path decodes them.
    assert list(head_fields(head))[:2] == [
        (n.decode("latin-1"), v.decode("utf-8", "surrogateescape")) for n, v in raw
    ]


def test_a_connection_field_naming_others_takes_the_decoding_path() -> None:
    # Listed after the field it names, as before it: either way the field is dropped.
    for raw in (
        [(b"X-Internal", b"1"), (b"Connection", b"close, X-Internal")],
        [(b"Connection", b"X-Internal"), (b"X-Internal", b"1")],
    ):
        assert relayed_head(200, raw, {}) is None
        headers, _ = response_headers(raw)
        assert "X-Internal" not in headers


def test_a_relayed_reply_gives_the_reference_server_its_fields() -> None:
    raw = [(b"Content-Type", b"text/plain"), (b"Content-Length", b"2")]
    head = relayed_head(200, raw, OWN)
    assert head is not None
    reply = Reply(200, OWN, b"ok", head=head)
    assert list(reply.all_headers().items()) == [
        ("Content-Type", "text/plain"),
        ("Server", SERVER_HEADER),
        ("X-Request-Id", "abc-1"),
    ]


_NAMES = st.sampled_from(
    [
        b"Content-Type",
        b"content-length",
        b"Transfer-Encoding",
        b"Connection",
        b"Keep-Alive",
        b"TE",
        b"Trailer",
        b"Upgrade",
        b"Proxy-Authenticate",
        b"Server",
        b"SERVER",
        b"X-Request-Id",
        b"Set-Cookie",
        b"Vary",
        b"Access-Control-Allow-Origin",
        b"X-Custom",
    ]
)
_VALUES = st.binary(max_size=12).map(lambda v: v.replace(b"\r", b"").replace(b"\n", b"").strip())
_OWN = st.dictionaries(
    st.sampled_from(["X-Request-Id", "Access-Control-Allow-Origin", "Vary"]),
    st.just("own"),
)


@given(st.lists(st.tuples(_NAMES, _VALUES), max_size=10), _OWN)
def test_relayed_fields_equal_the_decoding_paths(
    raw: list[tuple[bytes, bytes]], own: dict[str, str]
) -> None:
    head = relayed_head(200, raw, own)
    if head is None:
        # Only a `Connection` field that names fields falls back.
        plain = (b"keep-alive", b"close", b"Keep-Alive", b"Close")
        assert any(n.lower() == b"connection" and v not in plain for n, v in raw)
        return
    assert sorted(relayed(raw, own)) == sorted(decoded(raw, own))
