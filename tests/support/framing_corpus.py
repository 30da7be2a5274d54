"""The corpus of the framing differential: raw HTTP/1.x exchanges from RFC 9112's edge cases
and the request-smuggling literature (CL.TE, TE.CL, TE.TE, chunk extensions, trailers,
obs-fold, bare CR and LF, request-target forms, pipelining, `Expect: 100-continue`,
upgrades, versions, tunnels, head sizes, connection options).

`{c}` stands for the case's own path segment (see `support.framing`). Labels: `a` and `b`
are requests the client sent; `s` is what a request-smuggling attempt hides in a body, so
it must never reach the upstream as a request.
"""

from __future__ import annotations

from tests.support.framing import Case

HOST = b"Host: a\r\n"


def path(label: str) -> bytes:
    return b"/public/{c}/" + label.encode()


def request(
    label: str = "a",
    *,
    method: bytes = b"GET",
    headers: bytes = b"",
    body: bytes = b"",
    version: bytes = b"HTTP/1.1",
    target: bytes | None = None,
    host: bytes = HOST,
    eol: bytes = b"\r\n",
) -> bytes:
    line = method + b" " + (target if target is not None else path(label)) + b" " + version
    return line + eol + host + headers + eol + body


SMUGGLED = request("s")
CLOSE = b"Connection: close\r\n"


def post(headers: bytes, body: bytes, *, label: str = "a", version: bytes = b"HTTP/1.1") -> bytes:
    return request(label, method=b"POST", headers=headers, body=body, version=version)


def chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


# Chunked bodies of the corpus that RFC 9112 section 7.1 allows.
VALID_CHUNKED = frozenset(
    {
        "chunk extension",
        "chunk extension quoted",
        "trailer field",
        "trailer Content-Length",
        "last chunk 000",
        "upper-case hex size",
        # Bare LF as a line end: RFC 9112 section 2.2 lets a recipient accept it.
        "bare LF after chunk size",
        "bare LF after chunk data",
        "bare LF everywhere in chunks",
    }
)


def build_corpus() -> list[Case]:
    cases: list[Case] = []

    def add(
        family: str,
        name: str,
        data: bytes,
        requests: tuple[str, ...] = (),
        bodies: tuple[tuple[str, bytes], ...] = (),
    ) -> None:
        cases.append(Case(name, family, data, requests, bodies))

    # Plain requests, every one of them forwardable.
    add("baseline", "GET", request(headers=CLOSE), ("a",))
    add("baseline", "HEAD", request(method=b"HEAD", headers=CLOSE), ("a",))
    add("baseline", "DELETE", request(method=b"DELETE", headers=CLOSE), ("a",))
    add(
        "baseline",
        "POST with Content-Length",
        post(b"Content-Length: 5\r\n" + CLOSE, b"hello"),
        ("a",),
        (("a", b"hello"),),
    )
    add(
        "baseline",
        "POST chunked",
        post(b"Transfer-Encoding: chunked\r\n" + CLOSE, chunked(b"hel", b"lo")),
        ("a",),
        (("a", b"hello"),),
    )
    add(
        "baseline",
        "PUT with Content-Length 0",
        request(method=b"PUT", headers=b"Content-Length: 0\r\n" + CLOSE),
        ("a",),
    )
    add("baseline", "query string", request(target=path("a") + b"?x=1&y=2", headers=CLOSE), ("a",))

    # CL.TE and TE.CL: both framings present (RFC 9112 section 6.3: TE wins, or refuse).
    inner = SMUGGLED
    add(
        "CL.TE",
        "CL then TE chunked",
        post(b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n" + inner),
        ("a",),
    )
    add(
        "CL.TE",
        "TE chunked then CL",
        post(b"Transfer-Encoding: chunked\r\nContent-Length: 6\r\n", b"0\r\n\r\n" + inner),
        ("a",),
    )
    add(
        "TE.CL",
        "TE.CL with a body holding a request",
        post(
            b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n",
            b"%x\r\n" % len(inner) + inner + b"\r\n0\r\n\r\n",
        ),
        ("a",),
        (("a", inner),),
    )
    add(
        "TE.CL",
        "CL 0 with a chunked body",
        post(b"Content-Length: 0\r\nTransfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"),
        ("a",),
        (("a", b"hello"),),
    )
    # TE.TE: obfuscated Transfer-Encoding that one parser honours and another ignores.
    for name, header in [
        ("TE xchunked", b"Transfer-Encoding: xchunked\r\n"),
        ("TE chunked with trailing junk", b"Transfer-Encoding: chunkedx\r\n"),
        ("TE identity", b"Transfer-Encoding: identity\r\n"),
        ("TE chunked, identity", b"Transfer-Encoding: chunked, identity\r\n"),
        ("TE identity, chunked", b"Transfer-Encoding: identity, chunked\r\n"),
        ("TE gzip, chunked", b"Transfer-Encoding: gzip, chunked\r\n"),
        ("TE deflate, chunked", b"Transfer-Encoding: deflate, chunked\r\n"),
        ("TE chunked, chunked", b"Transfer-Encoding: chunked, chunked\r\n"),
        ("TE chunked twice", b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"),
        ("TE gzip then TE chunked", b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n"),
        ("TE chunked then TE gzip", b"Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n"),
        ("TE space before colon", b"Transfer-Encoding : chunked\r\n"),
        ("TE tab before value", b"Transfer-Encoding:\tchunked\r\n"),
        ("TE vertical tab", b"Transfer-Encoding:\x0bchunked\r\n"),
        ("TE form feed", b"Transfer-Encoding:\x0cchunked\r\n"),
        ("TE obs-fold", b"Transfer-Encoding:\r\n chunked\r\n"),
        ("TE quoted", b'Transfer-Encoding: "chunked"\r\n'),
        ("TE upper case", b"Transfer-Encoding: CHUNKED\r\n"),
        ("TE with NUL", b"Transfer-Encoding: chunked\x00\r\n"),
        ("TE underscore name", b"Transfer_Encoding: chunked\r\n"),
        ("TE with comma only", b"Transfer-Encoding: ,chunked\r\n"),
        ("TE empty", b"Transfer-Encoding: \r\n"),
    ]:
        # Read as chunked, the body is the inner request (nothing follows it); read by
        # Content-Length (4: the size line), the inner request would follow as a second one.
        size_line = b"%x\r\n" % len(inner)
        add(
            "TE.TE",
            name,
            post(
                header + b"Content-Length: %d\r\n" % len(size_line),
                size_line + inner + b"\r\n0\r\n\r\n",
            ),
            ("a",),
        )
        add(
            "TE.TE",
            name + " (no Content-Length)",
            post(header, size_line + inner + b"\r\n0\r\n\r\n"),
            ("a",),
        )

    # Content-Length variants.
    for name, header in [
        ("two equal Content-Length", b"Content-Length: 5\r\nContent-Length: 5\r\n"),
        ("two different Content-Length", b"Content-Length: 5\r\nContent-Length: 50\r\n"),
        ("Content-Length list equal", b"Content-Length: 5, 5\r\n"),
        ("Content-Length list", b"Content-Length: 5, 50\r\n"),
        ("negative Content-Length", b"Content-Length: -5\r\n"),
        ("signed Content-Length", b"Content-Length: +5\r\n"),
        ("hex Content-Length", b"Content-Length: 0x5\r\n"),
        ("Content-Length with space inside", b"Content-Length: 5 0\r\n"),
        ("Content-Length with a tab after", b"Content-Length: 5\t\r\n"),
        ("Content-Length with leading zeros", b"Content-Length: 005\r\n"),
        ("Content-Length space before colon", b"Content-Length : 5\r\n"),
        ("Content-Length obs-fold", b"Content-Length:\r\n 5\r\n"),
        ("huge Content-Length", b"Content-Length: 99999999999999999999999\r\n"),
        ("empty Content-Length", b"Content-Length: \r\n"),
    ]:
        # Read as 5 (the only valid reading, where there is one), "b" follows as a request.
        add(
            "Content-Length",
            name,
            post(header, b"hello" + request("b")),
            ("a", "b"),
            (("a", b"hello"),),
        )
    add(
        "Content-Length",
        "GET with a body",
        request(headers=b"Content-Length: 5\r\n", body=b"hello"),
        ("a",),
        (("a", b"hello"),),
    )
    add(
        "Content-Length",
        "body shorter than Content-Length",
        post(b"Content-Length: 50\r\n", b"hello"),
        ("a",),
        (("a", b"hello"),),
    )

    # Chunk framing: sizes, extensions, trailers, line ends.
    te = b"Transfer-Encoding: chunked\r\n"
    for name, body in [
        ("chunk size overflow", b"fffffffffffffffffff\r\nx\r\n0\r\n\r\n"),
        ("chunk size 2^64-1", b"FFFFFFFFFFFFFFFF\r\nx\r\n0\r\n\r\n"),
        ("chunk size with junk", b"5x\r\nhello\r\n0\r\n\r\n"),
        ("chunk size with a sign", b"+5\r\nhello\r\n0\r\n\r\n"),
        ("chunk size 0x", b"0x5\r\nhello\r\n0\r\n\r\n"),
        ("chunk size with space", b"5 \r\nhello\r\n0\r\n\r\n"),
        ("chunk size with leading space", b" 5\r\nhello\r\n0\r\n\r\n"),
        ("chunk extension", b"5;ext=1\r\nhello\r\n0\r\n\r\n"),
        ("chunk extension quoted", b'5;ext="a b"\r\nhello\r\n0\r\n\r\n'),
        ("chunk extension bare LF inside", b"5;a\nb\r\nhello\r\n0\r\n\r\n"),
        ("chunk extension with CR", b"5;a\rb\r\nhello\r\n0\r\n\r\n"),
        ("chunk data longer than its size", b"3\r\nhello\r\n0\r\n\r\n"),
        ("chunk data shorter than its size", b"8\r\nhello\r\n0\r\n\r\n"),
        ("chunk without CRLF after data", b"5\r\nhelloXX0\r\n\r\n"),
        ("bare LF after chunk size", b"5\nhello\r\n0\r\n\r\n"),
        ("bare LF after chunk data", b"5\r\nhello\n0\r\n\r\n"),
        ("bare LF everywhere in chunks", b"5\nhello\n0\n\n"),
        ("bare CR after chunk size", b"5\rhello\r\n0\r\n\r\n"),
        ("trailer field", b"5\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n"),
        ("trailer Content-Length", b"5\r\nhello\r\n0\r\nContent-Length: 50\r\n\r\n"),
        ("trailer without colon", b"5\r\nhello\r\n0\r\nNoColon\r\n\r\n"),
        ("last chunk 000", b"5\r\nhello\r\n000\r\n\r\n"),
        ("upper-case hex size", b"A\r\nhellohello\r\n0\r\n\r\n"),
    ]:
        valid = name in VALID_CHUNKED
        expected = b"hellohello" if name == "upper-case hex size" else b"hello"
        # After a valid chunked body "b" is a pipelined request; after a broken one, what
        # follows must not be read as a request.
        add(
            "chunks",
            name,
            post(te, body + (request("b") if valid else inner)),
            ("a", "b") if valid else ("a",),
            (("a", expected),),
        )

    # Header syntax.
    for name, header in [
        ("obs-fold in a field", b"X-A: a\r\n b\r\n"),
        ("obs-fold in Host", b"Host2: a\r\n\tb\r\n"),
        ("header without a colon", b"NoColon\r\n"),
        ("space in a header name", b"X A: b\r\n"),
        ("empty header name", b": b\r\n"),
        ("NUL in a value", b"X-A: a\x00b\r\n"),
        ("CR inside a value", b"X-A: a\rX-B: b\r\n"),
        ("bare LF inside a value line", b"X-A: a\nX-B: b\r\n"),
        ("DEL in a value", b"X-A: a\x7fb\r\n"),
        ("high bytes in a value", b"X-A: caf\xc3\xa9\r\n"),
        ("non-token byte in a name", b"X-\xc3\xa9: b\r\n"),
        ("leading whitespace first header", b" X-A: b\r\n"),
    ]:
        add("header syntax", name, request(headers=header + CLOSE), ("a",))
    add("header syntax", "no Host on HTTP/1.1", request(host=b"", headers=CLOSE), ("a",))
    add("header syntax", "two Host headers", request(headers=b"Host: b\r\n" + CLOSE), ("a",))
    add("header syntax", "Host with a path", request(host=b"Host: a/b\r\n", headers=CLOSE), ("a",))

    # Line endings.
    add(
        "line ends",
        "bare LF request",
        request(headers=CLOSE, eol=b"\n").replace(b"\r\n", b"\n"),
        ("a",),
    )
    add(
        "line ends",
        "bare LF pipelined",
        (request("a", eol=b"\n") + request("b", headers=CLOSE, eol=b"\n")).replace(b"\r\n", b"\n"),
        ("a", "b"),
    )
    add(
        "line ends",
        "bare CR request line",
        request(headers=CLOSE).replace(b"HTTP/1.1\r\n", b"HTTP/1.1\r", 1),
        ("a",),
    )
    add("line ends", "leading empty line", b"\r\n" + request(headers=CLOSE), ("a",))
    add("line ends", "two leading empty lines", b"\r\n\r\n" + request(headers=CLOSE), ("a",))
    add("line ends", "space before request line", b" " + request(headers=CLOSE), ("a",))
    add(
        "line ends",
        "tab separators in request line",
        request(headers=CLOSE).replace(b"GET ", b"GET\t", 1),
        ("a",),
    )
    add(
        "line ends",
        "double space in request line",
        request(headers=CLOSE).replace(b"GET ", b"GET  ", 1),
        ("a",),
    )

    # Request-target forms.
    add(
        "target forms",
        "absolute form",
        request(target=b"http://a" + path("a"), headers=CLOSE),
        ("a",),
    )
    add(
        "target forms",
        "absolute form, other host",
        request(target=b"http://elsewhere.example" + path("a"), headers=CLOSE),
        ("a",),
    )
    add(
        "target forms",
        "absolute form https",
        request(target=b"https://a" + path("a"), headers=CLOSE),
        ("a",),
    )
    add("target forms", "authority form on GET", request(target=b"a:80", headers=CLOSE))
    add(
        "target forms",
        "asterisk form on OPTIONS",
        request(method=b"OPTIONS", target=b"*", headers=CLOSE),
    )
    add("target forms", "asterisk form on GET", request(target=b"*", headers=CLOSE))
    add(
        "target forms",
        "fragment in target",
        request(target=path("a") + b"#f", headers=CLOSE),
        ("a",),
    )
    add("target forms", "space in target", request(target=path("a") + b" x", headers=CLOSE), ("a",))
    add("target forms", "NUL in target", request(target=path("a") + b"\x00", headers=CLOSE), ("a",))
    add(
        "target forms",
        "high bytes in target",
        request(target=path("a") + b"\xc3\xa9", headers=CLOSE),
        ("a",),
    )

    # Tunnels and methods.
    # After a refused CONNECT, "b" is the next request only if the connection stays open.
    add(
        "tunnels",
        "CONNECT authority form",
        request(method=b"CONNECT", target=b"a:443") + request("b"),
        ("a", "b"),
    )
    add("tunnels", "CONNECT origin form", request(method=b"CONNECT") + request("b"), ("a", "b"))
    add(
        "tunnels",
        "CONNECT with Connection: close",
        request(method=b"CONNECT", headers=CLOSE),
        ("a",),
    )
    add("tunnels", "TRACE", request(method=b"TRACE", headers=CLOSE), ("a",))
    add("methods", "lower-case method", request(method=b"get", headers=CLOSE), ("a",))
    add("methods", "unknown method", request(method=b"FOO", headers=CLOSE), ("a",))
    add("methods", "method with a slash", request(method=b"G/ET", headers=CLOSE), ("a",))
    add("methods", "PRI method", request(method=b"PRI", headers=CLOSE), ("a",))

    # Versions.
    add("versions", "HTTP/1.0", request(version=b"HTTP/1.0"), ("a",))
    add("versions", "HTTP/1.0 without Host", request(version=b"HTTP/1.0", host=b""), ("a",))
    add("versions", "HTTP/1.2", request(version=b"HTTP/1.2", headers=CLOSE), ("a",))
    add("versions", "HTTP/1.10", request(version=b"HTTP/1.10", headers=CLOSE), ("a",))
    add("versions", "HTTP/2.0", request(version=b"HTTP/2.0", headers=CLOSE), ("a",))
    add("versions", "HTTP/3.0", request(version=b"HTTP/3.0", headers=CLOSE), ("a",))
    add("versions", "HTTP/7.1", request(version=b"HTTP/7.1", headers=CLOSE), ("a",))
    add("versions", "HTTP/0.9", b"GET " + path("a") + b"\r\n")
    add("versions", "lower-case http", request(version=b"http/1.1", headers=CLOSE))
    add("versions", "no version", b"GET " + path("a") + b" \r\n" + HOST + b"\r\n")
    add("versions", "HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    add("versions", "HTTP/1.1 with junk", request(version=b"HTTP/1.1x", headers=CLOSE))

    # HTTP/1.0 framing and connection options.
    add(
        "HTTP/1.0 framing",
        "HTTP/1.0 keep-alive with chunked body",
        post(b"Connection: keep-alive\r\n" + te, chunked(b"hello"), version=b"HTTP/1.0")
        + request("b"),
        ("a",),
    )
    add(
        "HTTP/1.0 framing",
        "HTTP/1.0 chunked",
        post(te, chunked(b"hello"), version=b"HTTP/1.0") + SMUGGLED,
        ("a",),
    )
    add(
        "HTTP/1.0 framing",
        "HTTP/1.0 keep-alive pipelined",
        request("a", version=b"HTTP/1.0", headers=b"Connection: keep-alive\r\n")
        + request("b", headers=CLOSE),
        ("a", "b"),
    )
    add(
        "HTTP/1.0 framing",
        "HTTP/1.0 without keep-alive, pipelined",
        request("a", version=b"HTTP/1.0") + request("b", headers=CLOSE),
        ("a",),
    )
    add(
        "HTTP/1.0 framing",
        "HTTP/1.0 with Content-Length",
        post(b"Content-Length: 5\r\n", b"hello", version=b"HTTP/1.0"),
        ("a",),
        (("a", b"hello"),),
    )
    add(
        "connection options",
        "Connection: keep-alive, close",
        request("a", headers=b"Connection: keep-alive, close\r\n") + request("b"),
        ("a",),
    )
    add(
        "connection options",
        "Connection: close, keep-alive",
        request("a", headers=b"Connection: close, keep-alive\r\n") + request("b"),
        ("a",),
    )
    add(
        "connection options",
        "Connection: CLOSE",
        request("a", headers=b"Connection: CLOSE\r\n") + request("b"),
        ("a",),
    )
    add(
        "connection options",
        "data after Connection: close",
        request("a", headers=CLOSE) + request("b"),
        ("a",),
    )
    add(
        "connection options",
        "Connection names a header",
        request("a", headers=b"Connection: close, X-Secret\r\nX-Secret: 1\r\n"),
        ("a",),
    )

    # Pipelining.
    add(
        "pipelining",
        "two GETs",
        request("a") + request("b", headers=CLOSE),
        ("a", "b"),
    )
    add(
        "pipelining",
        "POST then GET",
        post(b"Content-Length: 5\r\n", b"hello") + request("b", headers=CLOSE),
        ("a", "b"),
        (("a", b"hello"),),
    )
    add(
        "pipelining",
        "chunked POST then GET",
        post(te, chunked(b"hello")) + request("b", headers=CLOSE),
        ("a", "b"),
        (("a", b"hello"),),
    )
    add(
        "pipelining",
        "valid then malformed",
        request("a") + b"GET " + path("b") + b" HTTP/1.1\r\nBad Header\r\n\r\n",
        ("a",),
    )
    add(
        "pipelining",
        "valid then ambiguous framing",
        request("a") + post(b"Content-Length: 6\r\n" + te, b"0\r\n\r\n" + SMUGGLED, label="b"),
        ("a", "b"),
    )
    add(
        "pipelining",
        "three GETs",
        request("a") + request("b") + request("c", headers=CLOSE),
        ("a", "b", "c"),
    )

    # Expect: 100-continue.
    add(
        "100-continue",
        "Expect with body sent",
        post(b"Expect: 100-continue\r\nContent-Length: 5\r\n" + CLOSE, b"hello"),
        ("a",),
        (("a", b"hello"),),
    )
    add(
        "100-continue",
        "Expect on HTTP/1.0",
        post(b"Expect: 100-continue\r\nContent-Length: 5\r\n", b"hello", version=b"HTTP/1.0"),
        ("a",),
        (("a", b"hello"),),
    )
    add(
        "100-continue",
        "unknown expectation",
        post(b"Expect: 200-ok\r\nContent-Length: 5\r\n" + CLOSE, b"hello"),
        ("a",),
        (("a", b"hello"),),
    )

    # Upgrades.
    add(
        "upgrades",
        "h2c upgrade",
        request(
            "a",
            headers=b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
            b"HTTP2-Settings: AAMAAABkAAQAAP__\r\n" + CLOSE,
        ),
        ("a",),
    )
    add(
        "upgrades",
        "h2c upgrade with a pipelined request",
        request(
            "a",
            headers=b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
            b"HTTP2-Settings: AAMAAABkAAQAAP__\r\n",
        )
        + request("b", headers=CLOSE),
        ("a", "b"),
    )
    add(
        "upgrades",
        "websocket upgrade",
        request(
            "a",
            headers=b"Connection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        ),
        ("a",),
    )
    add(
        "upgrades",
        "Upgrade without Connection",
        request("a", headers=b"Upgrade: websocket\r\n" + CLOSE),
        ("a",),
    )

    # Head sizes.
    add(
        "head size",
        "40 KB head of 4 KB fields",
        request(headers=b"".join(b"X-F%d: %s\r\n" % (i, b"v" * 4000) for i in range(10)) + CLOSE),
        ("a",),
    )
    add(
        "head size",
        "400 KB head of 8 KB fields",
        request(headers=b"".join(b"X-F%d: %s\r\n" % (i, b"v" * 8000) for i in range(50)) + CLOSE),
        ("a",),
    )
    add(
        "head size",
        "1000 small fields",
        request(headers=b"".join(b"X-F%d: v\r\n" % i for i in range(1000)) + CLOSE),
        ("a",),
    )
    add(
        "head size",
        "10 KB request target",
        request(target=path("a") + b"?" + b"q" * 10000, headers=CLOSE),
        ("a",),
    )
    add(
        "head size",
        "a 100 KB field",
        request(headers=b"X-Big: " + b"v" * 100000 + b"\r\n" + CLOSE),
        ("a",),
    )
    return cases


CORPUS = build_corpus()
