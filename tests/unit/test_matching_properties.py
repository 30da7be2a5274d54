"""Property tests: the trie matcher against a brute-force reference, and normalisation."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from wardgate.gateway.matching import (
    Match,
    MethodNotAllowed,
    NoRoute,
    RouteEntry,
    Router,
    Verdict,
)
from wardgate.gateway.paths import PathEncodingError, normalise_path

# The reference matcher: every route tried in turn, ranked as the docstring of `matching` says.

LITERAL, PARAM, END, WILDCARD = 0, 1, 1, 2


@dataclass(frozen=True)
class Reference:
    pattern: str
    methods: frozenset[str] | None
    payload: int

    @property
    def texts(self) -> list[str]:
        return self.pattern[1:].split("/")

    def kind(self, text: str) -> int:
        return WILDCARD if text == "*" else PARAM if text.startswith("{") else LITERAL

    @property
    def rank(self) -> tuple[int, ...]:
        kinds = tuple(self.kind(t) for t in self.texts)
        return kinds if kinds[-1] == WILDCARD else (*kinds, END)

    def params(self, segments: list[str]) -> dict[str, str] | None:
        """The captures when the pattern matches the path segments, else None."""
        found: dict[str, str] = {}
        for i, text in enumerate(self.texts):
            if text == "*":
                found["*"] = "/".join(segments[i:])
                return found
            if i >= len(segments):
                return None
            if text.startswith("{"):
                if not segments[i]:
                    return None
                found[text[1:-1]] = segments[i]
            elif text != segments[i]:
                return None
        return found if len(segments) == len(self.texts) else None


def accepts(step: str, methods: frozenset[str] | None, method: str) -> bool:
    """The three steps of method selection among the routes of one pattern."""
    if step == "listed":
        return methods is not None and method in methods
    if step == "head as get":
        return methods is not None and method == "HEAD" and "GET" in methods
    return methods is None


def reference_match(
    routes: list[Reference], method: str, path: str
) -> tuple[Reference, dict[str, str]] | tuple[str, ...] | None:
    """The chosen route and captures, or the `Allow` tuple for a 405, or None for a 404."""
    segments = path[1:].split("/")
    candidates = [(r.rank, r, p) for r in routes if (p := r.params(segments)) is not None]
    ranks = sorted({rank for rank, _, _ in candidates})
    for rank in ranks:
        group = [(r, p) for k, r, p in candidates if k == rank]
        for step in ("listed", "head as get", "any"):
            for route, params in group:
                if accepts(step, route.methods, method):
                    return route, params
    if not candidates:
        return None
    allowed: set[str] = set()
    for _, route, _ in candidates:
        assert route.methods is not None
        allowed |= route.methods | ({"HEAD"} if "GET" in route.methods else set())
    return tuple(sorted(allowed))


# Strategies: small alphabets, so that routes overlap and paths hit them often.

LITERALS = ["a", "b", "c"]
METHODS = ["GET", "HEAD", "POST"]


@st.composite
def patterns(draw: st.DrawFn) -> str:
    count = draw(st.integers(0, 4))
    texts: list[str] = []
    for position in range(count):
        if draw(st.booleans()):
            texts.append(draw(st.sampled_from(LITERALS)))
        else:
            texts.append("{" + draw(st.sampled_from(["x", "y", "id"])) + f"{position}}}")
    ending = draw(st.sampled_from(["", "wildcard", "slash"]))
    if ending == "wildcard":
        texts.append("*")
    elif ending == "slash" or not texts:
        texts.append("")
    return "/" + "/".join(texts)


def canonical(pattern: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", pattern)


@st.composite
def route_sets(draw: st.DrawFn) -> list[Reference]:
    routes: list[Reference] = []
    taken: set[tuple[str, str]] = set()
    for _ in range(draw(st.integers(0, 14))):
        pattern = draw(patterns())
        methods = draw(st.none() | st.frozensets(st.sampled_from(METHODS), min_size=1))
        keys = {(canonical(pattern), m) for m in (methods if methods is not None else {"*"})}
        if keys & taken:
            continue
        taken |= keys
        routes.append(Reference(pattern, methods, len(routes)))
    return routes


@st.composite
def normalised_paths(draw: st.DrawFn) -> str:
    segments = draw(st.lists(st.sampled_from([*LITERALS, "d", "a;b"]), max_size=5))
    if draw(st.booleans()):
        segments.append("")
    return "/" + "/".join(segments)


def build(routes: list[Reference]) -> Router[int]:
    return Router.build(RouteEntry(r.pattern, r.methods, r.payload) for r in routes)


@settings(max_examples=500)
@given(routes=route_sets(), method=st.sampled_from([*METHODS, "PUT"]), path=normalised_paths())
def test_matcher_agrees_with_reference(routes: list[Reference], method: str, path: str) -> None:
    router = build(routes)
    expected = reference_match(routes, method, path)
    result = router.match(method, path)
    if expected is None:
        assert isinstance(result, NoRoute)
    elif isinstance(expected, tuple) and not isinstance(expected[0], Reference):
        assert result == MethodNotAllowed(expected)
    else:
        route, params = expected
        assert isinstance(result, Match)
        assert (result.payload, result.pattern, result.methods) == (
            route.payload,
            route.pattern,
            route.methods,
        )
        assert dict(result.params) == params


@settings(max_examples=200)
@given(routes=route_sets(), method=st.sampled_from(METHODS), path=normalised_paths())
def test_diagnostics_agree_with_match(routes: list[Reference], method: str, path: str) -> None:
    router = build(routes)
    segments = path[1:].split("/")
    expected = sorted(
        ((r.rank, r.payload) for r in routes if r.params(segments) is not None),
    )
    assert [m.payload for m in router.routes_for_path(path)] == [p for _, p in expected]

    result = router.match(method, path)
    explanation = router.explain_match(method, path, near_misses=len(routes))
    assert explanation.result == result
    assert len(explanation.considered) == len(routes)
    selected = [c for c in explanation.considered if c.verdict == Verdict.SELECTED]
    if isinstance(result, Match):
        assert [c.pattern for c in selected] == [result.pattern]
    else:
        assert selected == []


# Normalisation

ESCAPE = re.compile(r"%([0-9A-F]{2})")
UNRESERVED = re.compile(r"[A-Za-z0-9._~-]")
PATHISH = [
    "/",
    "//",
    ".",
    "..",
    "a",
    "B",
    ";",
    "%",
    "%2e",
    "%2E",
    "%2f",
    "%5C",
    "%25",
    "%41",
    "%7e",
    "%3b",
    "%c3%a9",
    "%C0%AE",
    "%ff",
    "%00",
    "%1",
    "%g",
    "\\",
    "é",
    " ",
    "?",
    "\x00",
]


def check_normalised(out: str) -> None:
    assert out.startswith("/")
    segments = out[1:].split("/")
    assert "." not in segments
    assert ".." not in segments
    assert "" not in segments[:-1]
    assert "//" not in out
    assert ESCAPE.sub("", out).count("%") == 0, out
    for hex_digits in ESCAPE.findall(out):
        byte = int(hex_digits, 16)
        assert byte not in (0x2F, 0x5C)
        assert byte >= 0x20
        assert byte != 0x7F
        assert not UNRESERVED.fullmatch(chr(byte))
    assert re.fullmatch(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/%]*", out), out
    assert normalise_path(out) == out


@settings(max_examples=500)
@given(raw=st.text() | st.text().map(lambda s: "/" + s))
def test_normalise_random_text(raw: str) -> None:
    try:
        out = normalise_path(raw)
    except PathEncodingError:
        return
    check_normalised(out)


@settings(max_examples=1000)
@given(raw=st.lists(st.sampled_from(PATHISH), max_size=12).map(lambda t: "/" + "".join(t)))
def test_normalise_pathlike_text(raw: str) -> None:
    try:
        out = normalise_path(raw)
    except PathEncodingError:
        return
    check_normalised(out)


@given(path=normalised_paths())
def test_normalised_paths_are_fixed_points(path: str) -> None:
    assert normalise_path(path) == path


def test_params_are_mappings() -> None:
    result = build([Reference("/{x0}", frozenset({"GET"}), 0)]).match("GET", "/q")
    assert isinstance(result, Match)
    assert isinstance(result.params, Mapping)
