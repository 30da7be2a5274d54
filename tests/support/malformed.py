"""Malformed HTTP/1.1 requests carrying a bearer token, as raw bytes: what the parser refuses
(folded and invalid headers, bad framing, oversized fields). The security suite checks the
answers; the secret-leakage sweep searches every log for the token's bytes."""

from __future__ import annotations


def request(path: str, *lines: str) -> bytes:
    """A `GET` with these header lines, closing the connection after the answer."""
    head = f"GET {path} HTTP/1.1\r\nHost: gw\r\n" + "".join(f"{line}\r\n" for line in lines)
    return (head + "Connection: close\r\n\r\n").encode("latin-1")


def malformed_corpus(token: str) -> dict[str, bytes]:
    """Requests the parser refuses, each carrying `token`, by name."""
    auth = f"Authorization: Bearer {token}"
    return {
        "folded Authorization": request("/private/orders", "Authorization: Bearer", f" {token}"),
        "Authorization then a folded line": request("/private/orders", auth, " continued"),
        "bare LF": f"GET /private/orders HTTP/1.1\nHost: a\n{auth}\nX: \x01\n\n".encode(),
        "NUL in a header": request("/private/orders", auth + "\x00"),
        "space before colon": request("/private/orders", f"Authorization : Bearer {token}"),
        "header without colon": request("/private/orders", auth, "NoColon"),
        "oversized Authorization": request(
            "/private/orders", "Authorization: Bearer " + token * 40
        ),
        "bad version": f"GET /private/orders HTTP/9.9\r\n{auth}\r\n\r\n".encode(),
        "bad chunked": (
            f"POST /private/orders HTTP/1.1\r\nHost: a\r\n{auth}\r\n"
            "Transfer-Encoding: chunked\r\n\r\nzz\r\n"
        ).encode(),
        "CL and TE": (
            f"POST /private/orders HTTP/1.1\r\nHost: a\r\n{auth}\r\nContent-Length: 3\r\n"
            "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        ).encode(),
        "control char in target": (
            f"GET /private/\x7forders HTTP/1.1\r\nHost: a\r\n{auth}\r\n\r\n"
        ).encode("latin-1"),
    }


def token_fragments(token: str) -> list[str]:
    """The token and each of its segments (any one would be a leak), and their starts."""
    parts = [token, *token.split(".")]
    return [p for p in parts if len(p) >= 8] + [p[:24] for p in parts if len(p) >= 24]
