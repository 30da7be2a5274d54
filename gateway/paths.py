"""Request path normalisation: the one canonical form that routes are matched against.

The gateway normalises the path of every request before matching, authorises the normalised
path, and sends the normalised path upstream, so that a request cannot be matched as one path
and served as another. `normalise_path` takes the path part of an origin-form request target
(`/a/b`, without the query string, which the app splits off first). Absolute-form targets
(`GET http://host/a HTTP/1.1`) are reduced to their path by the app before calling it; an
asterisk-form target (`OPTIONS *`) is never given to it.

Rules, in the order they apply:

1. The path must start with `/`.
2. Rejected with `PathEncodingError` (the app answers 400 `invalid_path_encoding`):
   a raw control character (U+0000 to U+001F, U+007F) or a raw backslash; an encoded `/`
   (`%2F`) or `\\` (`%5C`) in any hex case, since they would let one segment pose as two;
   an encoded control character (`%00` to `%1F`, `%7F`); a malformed escape (`%G1`, `%4`,
   a `%` at the end); bytes that are not valid UTF-8 once every escape is decoded (this
   includes overlong forms such as `%C0%AE`, and raw bytes the HTTP parser could not decode).
3. Escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded; every other
   escape is kept, with its hex digits in upper case (`%3b` becomes `%3B`, which stays
   distinct from a raw `;`, as RFC 3986 section 6.2.2 requires). Raw characters that may
   not appear unencoded in a path (space, `"`, `<`, `>`, `[`, `]`, `^`, backquote, `{`,
   `|`, `}`, `?`, `#` and any non-ASCII character) are percent-encoded as UTF-8 bytes, so
   `/café` and `/caf%C3%A9` are the same path.
   Decoding happens once: `%252e` is the literal text `%2e` and stays `%252e` (the `2e`
   after `%25` is ordinary text, so its case is kept); it is never a dot segment.
4. Dot segments are removed as in RFC 3986 section 5.2.4, after decoding, so `%2e%2e` is
   `..`; a `..` above the root stays at the root (`/../a` is `/a`).
5. Repeated slashes are merged (`//a///b` is `/a/b`).

Choices where the specifications leave room (each as Envoy does with `normalize_path` and
`merge_slashes` on, unless said otherwise):

- A trailing slash is kept and significant: `/a/` and `/a` are different paths. A trailing
  dot segment leaves a trailing slash (`/a/b/..` is `/a/`, `/a/.` is `/a/`), as in RFC 3986.
- Case is preserved everywhere; matching is case-sensitive.
- `;` is an ordinary character of a segment: `/orders;x` is one segment `orders;x`, never
  `/orders` with a parameter stripped. Except after a dot segment: `..;` and `.;` (with
  anything after the `;`, and `%2e` for a dot) are rejected, since servers that strip path
  parameters per segment (Tomcat, Jetty, Spring) read `/public/..;/private` as `/private`
  when the gateway would match and forward it as `/public/...`.
- Escaped slashes are rejected rather than kept encoded (Envoy's default keeps them):
  rejecting is the one choice no upstream can misread.

A path that needs none of this (only characters allowed raw, no `%`, no `//`, no `.` or `..`
segment) is returned as it is after one character-class scan and two substring tests: this
runs on every request.
"""

from __future__ import annotations

import re
from urllib.parse import quote

__all__ = ["PathEncodingError", "normalise_path"]


class PathEncodingError(ValueError):
    """A request path that cannot be normalised safely; the app answers 400."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# Characters a normalised path holds unencoded: RFC 3986 `pchar` (unreserved, sub-delims,
# ":" and "@") and "/". Anything else, `%` included, sends a path down the slow path.
_PATH_SAFE = "A-Za-z0-9\\-._~!$&'()*+,;=:@/"
_UNSAFE_CHAR = re.compile(f"[^{_PATH_SAFE}]")
_DOT_SEGMENT = re.compile(r"/\.\.?(?:/|\Z)")
_DOT_PARAMETER_SEGMENT = re.compile(r"/\.\.?;")
_DOT_PARAMETER_REASON = "the path has a dot segment with a ';' parameter ('..;' or '.;')"
_RAW_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f\\]")
# `quote` keeps ASCII letters, digits and `_.-~` by itself; these are the rest of `pchar`.
_QUOTE_SAFE = "!$&'()*+,;=:@/"
_HEX = frozenset(b"0123456789abcdefABCDEF")
_UNRESERVED = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~",
)


def normalise_path(raw_path: str) -> str:
    """Return the canonical form of a request path, or raise `PathEncodingError`."""
    if raw_path[:1] != "/":
        raise PathEncodingError("the path does not start with '/'")
    # Three separate scans: a character class alone is several times faster than one
    # pattern with alternatives.
    if (
        _UNSAFE_CHAR.search(raw_path) is None
        and "//" not in raw_path
        and ("/." not in raw_path or _DOT_SEGMENT.search(raw_path) is None)
    ):
        if ";" in raw_path and _DOT_PARAMETER_SEGMENT.search(raw_path) is not None:
            raise PathEncodingError(_DOT_PARAMETER_REASON)
        return raw_path
    canonical = _canonical_encoding(raw_path)
    if ";" in canonical and _DOT_PARAMETER_SEGMENT.search(canonical) is not None:
        raise PathEncodingError(_DOT_PARAMETER_REASON)
    return _remove_dot_segments(canonical)


def _canonical_encoding(raw_path: str) -> str:
    """Validate escapes and bytes; decode unreserved escapes, upper-case and add the rest."""
    forbidden = _RAW_FORBIDDEN.search(raw_path)
    if forbidden is not None:
        char = forbidden.group()
        if char == "\\":
            raise PathEncodingError("the path contains a backslash")
        raise PathEncodingError(f"the path contains the control character {ord(char):#04x}")
    try:
        raw_bytes = raw_path.encode("utf-8")
    except UnicodeEncodeError:
        # aiohttp hands over undecodable raw bytes as lone surrogates.
        raise PathEncodingError("the path is not valid UTF-8") from None

    pieces = raw_bytes.split(b"%")
    out = [quote(pieces[0], safe=_QUOTE_SAFE)]
    decoded = [pieces[0]]
    for piece in pieces[1:]:
        digits = piece[:2]
        if len(digits) != 2 or digits[0] not in _HEX or digits[1] not in _HEX:
            raise PathEncodingError(f"malformed percent-escape '%{_shown(digits)}'")
        byte = int(digits, 16)
        if byte == 0x2F:
            raise PathEncodingError("the path contains an encoded '/' (%2F)")
        if byte == 0x5C:
            raise PathEncodingError("the path contains an encoded '\\' (%5C)")
        if byte < 0x20 or byte == 0x7F:
            raise PathEncodingError(f"the path contains the encoded control character %{byte:02X}")
        out.append(chr(byte) if byte in _UNRESERVED else f"%{byte:02X}")
        rest = piece[2:]
        out.append(quote(rest, safe=_QUOTE_SAFE))
        decoded.append(bytes((byte,)))
        decoded.append(rest)
    try:
        b"".join(decoded).decode("utf-8")
    except UnicodeDecodeError:
        raise PathEncodingError("the path is not valid UTF-8 once decoded") from None
    return "".join(out)


def _shown(digits: bytes) -> str:
    return digits.decode("utf-8", "backslashreplace")


def _remove_dot_segments(path: str) -> str:
    """Remove `.` and `..` segments (RFC 3986 5.2.4) and merge repeated slashes."""
    segments = path.split("/")
    kept: list[str] = []
    for segment in segments[1:]:
        if segment == "" or segment == ".":
            continue
        if segment == "..":
            if kept:
                kept.pop()
            continue
        kept.append(segment)
    result = "/" + "/".join(kept)
    if kept and segments[-1] in ("", ".", ".."):
        result += "/"
    return result


def lenient_readings(path: str) -> list[str]:
    """Other paths common upstream servers read in a normalised `path`: without `;`
    parameters (Tomcat, Jetty, Spring), case folded and without a trailing slash (Express's
    defaults), and all of these at once; empty when there is none.

    The gateway matches the path as sent; a reading that another route would protect
    differently makes the request ambiguous (`Gateway.admit` refuses it)."""
    readings: list[str] = []
    if ";" in path:
        readings.append("/".join(segment.partition(";")[0] for segment in path.split("/")))
    lowered = path.lower()
    if lowered != path:
        readings.append(lowered)
    if len(path) > 1 and path[-1] == "/":
        readings.append(path.rstrip("/") or "/")
    if len(readings) > 1:
        combined = "/".join(segment.partition(";")[0] for segment in lowered.split("/"))
        readings.append(combined.rstrip("/") or "/" if len(combined) > 1 else combined)
    return [reading for reading in dict.fromkeys(readings) if reading != path]
