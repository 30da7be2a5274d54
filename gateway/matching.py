"""Route matching: which configured route serves a method and a normalised path.

Patterns
--------
A pattern is a path made of segments separated by `/`:

- a literal segment (`orders`, `v1`, `items:batchGet`) matches exactly that text, case
  included. Literal text may hold any character a normalised path holds unencoded (see
  `wardgate.gateway.paths`); a non-ASCII character is allowed too and matches its UTF-8
  percent-encoded form, which is how `normalise_path` writes it.
- `{name}` (a whole segment; `name` is an identifier) matches any one non-empty segment and
  captures its normalised text under `name`.
- `*` as the last segment is a prefix wildcard: `/public/*` matches `/public`, `/public/`,
  `/public/x` and `/public/x/y`, never `/publicx`, and captures the rest of the path after
  `/public/` (`""`, `""`, `"x"`, `"x/y"`) under the key `"*"`. `/*` matches every path.
- A trailing slash is significant: `/a` matches `/a` only and `/a/` matches `/a/` only.
  The pattern `/` matches the root path only.

`validate_pattern` rejects a pattern that does not start with `/`, has an empty segment
(`//`), a `.` or `..` segment, `%` (write characters unencoded), `?` or `#`, a character that
a normalised path never holds unencoded (space, `"`, `<`, `>`, `[`, `]`, `\\`, `^`, backquote,
`|`, control characters), `*` anywhere but as the whole last segment, `{` or `}` outside a
whole-segment parameter, an empty or non-identifier parameter name, or the same parameter
name twice.

Methods
-------
A route lists methods (upper-case HTTP tokens, compared case-sensitively, as HTTP does) or
accepts any method (`methods=None`). Among the routes of one pattern, a request's method
picks, in order: the route listing that method; for `HEAD`, the route listing `GET` (so
that `HEAD` is authorised exactly like `GET`); the any-method route. `OPTIONS` is an
ordinary method here: the app answers CORS preflights before matching, and finds their
route with `Router.routes_for_path`.

Precedence
----------
The route chosen for a path is the most specific one whose pattern matches the path and
whose methods accept the request's method. Two patterns that both match a path are ranked
by comparing them segment by segment from the left: at the first position where they
differ, a literal segment beats a `{param}`, and a `{param}` beats the wildcard; a pattern
that ends where the path ends beats a wildcard that matches the empty rest (`/public`
beats `/public/*` for the path `/public`). So for the routes `/a/{x}/c` and `/a/b/{y}`, the
path `/a/b/c` goes to `/a/b/{y}`, decided at the second segment. Only after that does the
method count: a more specific pattern with any-method beats a less specific one listing
the method.

When no matching pattern accepts the method, the next one in that order is tried (as in
Envoy and Kong, where the method is one more match condition). If patterns match the path
but none accepts the method, the result is `MethodNotAllowed` whose `allowed` lists every
method those routes accept (sorted; `HEAD` included wherever `GET` is), for the 405's
`Allow` header. If no pattern matches the path, the result is `NoRoute`, with up to three
patterns that share the longest prefix with the path, for diagnostics.

Two routes with the same method and the same pattern are a configuration error
(`DuplicateRouteError`); parameter names do not make patterns different, so `/u/{id}` and
`/u/{name}` are the same pattern.

Cost
----
`Router.build` compiles the routes into a segment trie: each node holds a dictionary of
literal children, at most one parameter child and at most one wildcard, and the routes
ending at a node share a precompiled method table and `Allow` tuple. Patterns made only of
literals are also looked up whole in one dictionary, with their `Match` prebuilt. A match
costs one dictionary lookup per segment, plus backtracking to a parameter or wildcard
sibling where a literal branch fails; it does not depend on the number of routes, only on
the path's depth and on how many of these alternatives the trie holds along the path (the
search visits a trie node at most once, so even a pathological table bounds it).
Nothing is cached per request. `match` expects a path returned by `normalise_path`.
"""

from __future__ import annotations

import enum
import functools
import itertools
import re
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Generic, NamedTuple, TypeAlias, TypeVar

from wardgate.gateway.paths import normalise_path

__all__ = [
    "ANY_METHOD",
    "WILDCARD_PARAM",
    "Consideration",
    "DuplicateRouteError",
    "Explanation",
    "Match",
    "MatchResult",
    "MethodError",
    "MethodNotAllowed",
    "NoRoute",
    "PatternError",
    "RouteEntry",
    "RouteError",
    "Router",
    "Verdict",
    "pattern_covers",
    "patterns_overlap",
    "validate_pattern",
]

T = TypeVar("T")

ANY_METHOD: Final = "*"
"""Spelling of "any method" in a method set; `RouteEntry.methods=None` means the same."""
WILDCARD_PARAM: Final = "*"
"""Key under which a prefix wildcard captures the rest of the path."""

_NO_PARAMS: Mapping[str, str] = MappingProxyType({})


class RouteError(ValueError):
    """A route that cannot be compiled; `index` is its position in the entries, if known."""

    def __init__(self, reason: str, *, pattern: str, index: int | None = None) -> None:
        where = f"route {index} " if index is not None else ""
        super().__init__(f"{where}{pattern!r}: {reason}")
        self.reason = reason
        self.pattern = pattern
        self.index = index


class PatternError(RouteError):
    """An invalid route pattern."""


class MethodError(RouteError):
    """An invalid method list."""


class DuplicateRouteError(RouteError):
    """Two routes with the same method and pattern; `other_index` is the earlier one."""

    def __init__(
        self, reason: str, *, pattern: str, index: int | None = None, other_index: int
    ) -> None:
        super().__init__(reason, pattern=pattern, index=index)
        self.other_index = other_index


@dataclass(frozen=True, slots=True)
class RouteEntry(Generic[T]):
    """One route: a pattern, its methods (`None` for any method) and what it leads to."""

    pattern: str
    methods: frozenset[str] | None
    payload: T


class Match(NamedTuple, Generic[T]):
    """The route chosen for a request, with the captured parameters.

    A named tuple rather than a frozen dataclass: one is built per matched request, and
    this is the cheapest immutable record to build.
    """

    payload: T
    params: Mapping[str, str]
    pattern: str
    methods: frozenset[str] | None


@dataclass(frozen=True, slots=True)
class NoRoute:
    """No pattern matches the path; `closest` names up to three near patterns."""

    closest: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class MethodNotAllowed:
    """Patterns match the path but none accepts the method; `allowed` is for `Allow`."""

    allowed: tuple[str, ...]


MatchResult: TypeAlias = Match[T] | NoRoute | MethodNotAllowed


class Verdict(enum.StrEnum):
    """What `Router.explain_match` found for one route."""

    SELECTED = "selected"
    SHADOWED = "shadowed"
    METHOD_MISMATCH = "method_mismatch"
    SEGMENT_MISMATCH = "segment_mismatch"
    PATH_TOO_SHORT = "path_too_short"
    PATH_TOO_LONG = "path_too_long"


@dataclass(frozen=True, slots=True)
class Consideration:
    """One route as `explain_match` saw it; `index` is the path segment that decided."""

    pattern: str
    methods: tuple[str, ...]
    verdict: Verdict
    index: int | None
    detail: str


@dataclass(frozen=True, slots=True)
class Explanation(Generic[T]):
    """Why a request matched what it matched, for humans and the `explain` command."""

    method: str
    path: str
    result: MatchResult[T]
    considered: tuple[Consideration, ...]


# Segment kinds; their values are the precedence ranks (lower wins). `_END` ranks the end of
# an exact pattern, which only ever competes with a wildcard matching the empty rest.
_LITERAL: Final = 0
_PARAM: Final = 1
_END: Final = 1
_WILDCARD: Final = 2

_PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Characters of pattern text besides ASCII letters and digits that a normalised path holds
# unencoded, plus the pattern syntax `{`, `}` and `*`, checked separately.
_PATTERN_ASCII = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/{}]*\Z")
_METHOD_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Z-]+\Z")


@dataclass(frozen=True, slots=True)
class _Segment:
    kind: int
    text: str  # literal text (canonical encoding) or parameter name


@dataclass(frozen=True, slots=True)
class _Pattern:
    segments: tuple[_Segment, ...]
    canonical: str  # params written `{}`: equal canonical forms are the same pattern
    rank: tuple[int, ...]
    literal_path: str | None  # the one path it matches, when it has literals only
    param_names: tuple[str, ...]  # of its parameters and wildcard, in order


def validate_pattern(pattern: str) -> None:
    """Raise `PatternError` when `pattern` is not a valid route pattern."""
    _compile_pattern(pattern)


def pattern_covers(outer: str, inner: str) -> bool:
    """Whether every normalised path `inner` matches is matched by `outer` too.

    Decided on the compiled segments, with the matcher's own semantics: a `{param}` of
    `inner` is covered by a `{param}` or the wildcard of `outer` only (it matches any
    segment, so no literal covers it); a wildcard of `inner` only by a wildcard of `outer`
    at the same or an earlier position; the trailing slash is a segment of its own.
    Raise `PatternError` for an invalid pattern."""
    outer_segments = _segments_of(outer)
    inner_segments = _segments_of(inner)
    for i, segment in enumerate(inner_segments):
        if i == len(outer_segments):
            return False  # `inner` goes on where `outer` has ended
        wanted = outer_segments[i]
        if wanted.kind == _WILDCARD:
            return True
        if segment.kind == _WILDCARD:
            return False  # matches the path ending here (or going on), `outer` does not
        if wanted.kind == _LITERAL and (segment.kind != _LITERAL or segment.text != wanted.text):
            return False
        if wanted.kind == _PARAM and segment.kind == _LITERAL and not segment.text:
            return False  # a trailing slash is an empty segment, which `{param}` refuses
    # `inner` has ended: `outer` must end here too, or match the empty rest with a wildcard.
    rest = outer_segments[len(inner_segments) :]
    return not rest or rest[0].kind == _WILDCARD


@functools.lru_cache(maxsize=8192)
def _segments_of(pattern: str) -> tuple[_Segment, ...]:
    # The operator asks about the same few delegated patterns for every path it renders.
    return _compile_pattern(pattern).segments


def patterns_overlap(first: str, second: str) -> bool:
    """Whether some normalised path is matched by both patterns (`PatternError` if invalid)."""
    a = _segments_of(first)
    b = _segments_of(second)
    for i in range(max(len(a), len(b))):
        if i == len(a) or i == len(b):
            # One has ended: the other matches the same path only with a wildcard here.
            longer = a if i < len(a) else b
            return longer[i].kind == _WILDCARD
        x, y = a[i], b[i]
        if x.kind == _WILDCARD or y.kind == _WILDCARD:
            return True
        if x.kind == _LITERAL and y.kind == _LITERAL and x.text != y.text:
            return False
        literal = x if x.kind == _LITERAL else y if y.kind == _LITERAL else None
        if literal is not None and not literal.text and (x.kind == _PARAM or y.kind == _PARAM):
            return False
    return True


MAX_PATTERN_SEGMENTS: Final = 128


@functools.lru_cache(maxsize=65_536)
def _compile_pattern(pattern: str) -> _Pattern:
    # Cached: a config is validated, then compiled into a router, and compiled again on each
    # change of a large config, where nearly every pattern is one seen before.
    def fail(reason: str) -> PatternError:
        return PatternError(reason, pattern=pattern)

    if not pattern.startswith("/"):
        raise fail("a pattern must start with '/'")
    for char, reason in (
        ("%", "'%' is not allowed: write characters unencoded, as the normalised path has them"),
        ("?", "'?' is not allowed: a pattern matches the path, never the query string"),
        ("#", "'#' is not allowed: a pattern matches the path, never a fragment"),
        ("//", "empty segment ('//')"),
    ):
        if char in pattern:
            raise fail(reason)
    ascii_part = "".join(c for c in pattern if ord(c) < 0x80)
    if not _PATTERN_ASCII.match(ascii_part):
        bad = next(c for c in ascii_part if not _PATTERN_ASCII.match(c))
        raise fail(f"character {bad!r} is not allowed in a pattern")

    texts = pattern[1:].split("/")
    if len(texts) > MAX_PATTERN_SEGMENTS:
        # The matcher walks one trie level per segment (recursively): bounded here.
        raise fail(f"{len(texts)} segments: at most {MAX_PATTERN_SEGMENTS}")
    segments: list[_Segment] = []
    names: set[str] = set()
    for position, text in enumerate(texts):
        last = position == len(texts) - 1
        if text in (".", ".."):
            raise fail(f"dot segment {text!r} at segment {position}")
        if text == "*":
            if not last:
                raise fail("the wildcard '*' must be the last segment")
            segments.append(_Segment(_WILDCARD, WILDCARD_PARAM))
        elif "*" in text:
            raise fail(f"'*' is only allowed as the whole last segment, not in {text!r}")
        elif text.startswith("{") and text.endswith("}"):
            name = text[1:-1]
            if not name:
                raise fail(f"empty parameter name '{{}}' at segment {position}")
            if not _PARAM_NAME.match(name):
                raise fail(f"parameter name {name!r} is not an identifier")
            if name in names:
                raise fail(f"parameter name {name!r} is used twice")
            names.add(name)
            segments.append(_Segment(_PARAM, name))
        elif "{" in text or "}" in text:
            raise fail(f"a parameter must be a whole segment written '{{name}}', not {text!r}")
        else:
            # Non-ASCII text is matched in the encoded form `normalise_path` produces.
            segments.append(_Segment(_LITERAL, _quote_literal(text)))

    canonical = "/" + "/".join(
        s.text if s.kind == _LITERAL else "{}" if s.kind == _PARAM else "*" for s in segments
    )
    rank = tuple(s.kind for s in segments)
    if not segments or segments[-1].kind != _WILDCARD:
        rank += (_END,)
    literal_path = canonical if all(s.kind == _LITERAL for s in segments) else None
    param_names = tuple(s.text for s in segments if s.kind != _LITERAL)
    return _Pattern(tuple(segments), canonical, rank, literal_path, param_names)


def _quote_literal(text: str) -> str:
    """Percent-encode the non-ASCII characters of pattern text as `normalise_path` does."""
    if text.isascii():
        return text
    return "".join(c if c.isascii() else "".join(f"%{b:02X}" for b in c.encode()) for c in text)


def _compile_methods(methods: frozenset[str] | None, pattern: str) -> frozenset[str] | None:
    if methods is None:
        return None
    compiled, problem = _method_set(methods)
    if problem is not None:
        raise MethodError(problem, pattern=pattern)
    return compiled


@functools.lru_cache(maxsize=1024)
def _method_set(methods: frozenset[str]) -> tuple[frozenset[str] | None, str | None]:
    """The compiled method set and None, or None and why it is refused. Cached: a table of
    20,000 routes has a handful of distinct method sets."""
    if not methods:
        return None, "the method list is empty"
    if ANY_METHOD in methods:
        if len(methods) > 1:
            return None, f"{ANY_METHOD!r} (any method) cannot be listed with others"
        return None, None
    for method in sorted(methods):
        if not _METHOD_TOKEN.match(method):
            return None, f"method {method!r} is not an upper-case HTTP method token"
    return frozenset(methods), None


class _Route(Generic[T]):
    __slots__ = ("entry", "index", "methods", "param_names", "pattern", "payload", "shape")

    def __init__(
        self, index: int, entry: RouteEntry[T], shape: _Pattern, methods: frozenset[str] | None
    ) -> None:
        self.index = index
        """Its position in the entries it was built from (in a router built from a previous
        one, the position may have moved: the router's `_routes` order is the truth)."""
        self.entry = entry
        self.pattern = entry.pattern
        self.payload = entry.payload
        self.methods = methods
        self.shape = shape
        self.param_names = shape.param_names

    def match_with(self, values: list[str]) -> Match[T]:
        names = self.param_names
        params: Mapping[str, str]
        if not names:
            params = _NO_PARAMS
        elif len(names) == 1:
            params = {names[0]: values[0]}
        else:
            # Equal lengths by construction; `strict=True` would double the cost.
            params = dict(zip(names, values))  # noqa: B905
        return Match(self.payload, params, self.pattern, self.methods)


class _Endpoint(Generic[T]):
    """The routes of one pattern, with their method table compiled."""

    __slots__ = ("allow", "any_route", "by_method", "prebuilt", "prebuilt_any", "routes")

    def __init__(self) -> None:
        self.routes: list[_Route[T]] = []
        self.by_method: dict[str, _Route[T]] = {}
        self.any_route: _Route[T] | None = None
        self.allow: tuple[str, ...] = ()
        self.prebuilt: dict[str, Match[T]] = {}
        self.prebuilt_any: Match[T] | None = None

    def add(self, route: _Route[T]) -> None:
        for other in self.routes:
            if route.methods is None or other.methods is None:
                both_any = route.methods is None and other.methods is None
                same = [ANY_METHOD] if both_any else []
            else:
                same = sorted(route.methods & other.methods)
            if same:
                which = "any method" if same == [ANY_METHOD] else ", ".join(same)
                raise DuplicateRouteError(
                    f"same pattern and method ({which}) as route {other.index} "
                    f"{other.pattern!r}; parameter names do not make patterns different",
                    pattern=route.pattern,
                    index=route.index,
                    other_index=other.index,
                )
        self.routes.append(route)

    def compile(self, static: bool) -> None:
        for route in self.routes:
            if route.methods is None:
                self.any_route = route
            else:
                for method in route.methods:
                    self.by_method[method] = route
        if "GET" in self.by_method and "HEAD" not in self.by_method:
            self.by_method["HEAD"] = self.by_method["GET"]
        self.allow = tuple(sorted(self.by_method))
        if static:
            self.prebuilt = {m: r.match_with([]) for m, r in self.by_method.items()}
            if self.any_route is not None:
                self.prebuilt_any = self.any_route.match_with([])

    def lookup(self, method: str) -> _Route[T] | None:
        return self.by_method.get(method, self.any_route)


class _Node(Generic[T]):
    __slots__ = ("endpoint", "literals", "param", "wildcard")

    def __init__(self) -> None:
        self.literals: dict[str, _Node[T]] = {}
        self.param: _Node[T] | None = None
        self.endpoint: _Endpoint[T] | None = None
        self.wildcard: _Endpoint[T] | None = None


def _search(
    node: _Node[T],
    segments: list[str],
    i: int,
    method: str,
    values: list[str],
    refused: list[_Endpoint[T]],
) -> _Route[T] | None:
    """Depth-first search in precedence order; `values` holds the captures on success."""
    if i == len(segments):
        endpoint = node.endpoint
        if endpoint is not None:
            route = endpoint.by_method.get(method, endpoint.any_route)
            if route is not None:
                return route
            refused.append(endpoint)
    else:
        segment = segments[i]
        child = node.literals.get(segment)
        if child is not None:
            route = _search(child, segments, i + 1, method, values, refused)
            if route is not None:
                return route
        child = node.param
        if child is not None and segment:
            values.append(segment)
            route = _search(child, segments, i + 1, method, values, refused)
            if route is not None:
                return route
            values.pop()
    endpoint = node.wildcard
    if endpoint is not None:
        route = endpoint.by_method.get(method, endpoint.any_route)
        if route is not None:
            values.append("/".join(segments[i:]))
            return route
        refused.append(endpoint)
    return None


class Router(Generic[T]):
    """A compiled route table; build it with `Router.build`."""

    __slots__ = ("_endpoints", "_root", "_routes", "_static")

    def __init__(self) -> None:
        self._root: _Node[T] = _Node()
        self._static: dict[str, _Endpoint[T]] = {}
        self._endpoints: dict[str, _Endpoint[T]] = {}
        self._routes: list[_Route[T]] = []

    @classmethod
    def build(
        cls, entries: Iterable[RouteEntry[T]], previous: Router[T] | None = None
    ) -> Router[T]:
        """Compile routes; raise `PatternError`, `MethodError` or `DuplicateRouteError`.

        `previous`: a router built before, from mostly the same `RouteEntry` objects (a
        config's next version): the routes of a pattern whose entries are the same, in the
        same order, keep their compiled method table, and the trie is built anew around
        them in the order a build without `previous` gives; the router is the same. A
        table that fails is built again without it, so that its error is a full build's."""
        if previous is not None:
            entries = list(entries)
            try:
                return cls._rebuild(entries, previous)
            except RouteError:
                pass  # raised below with the positions a full build reports
        router: Router[T] = cls()
        for index, entry in enumerate(entries):
            try:
                shape = _compile_pattern(entry.pattern)
            except PatternError as e:
                raise PatternError(e.reason, pattern=entry.pattern, index=index) from None
            try:
                methods = _compile_methods(entry.methods, entry.pattern)
            except MethodError as e:
                raise MethodError(e.reason, pattern=entry.pattern, index=index) from None
            route = _Route(index, entry, shape, methods)
            endpoint = router._endpoints.get(shape.canonical)
            if endpoint is None:
                endpoint = router._endpoints[shape.canonical] = router._insert(shape)
            endpoint.add(route)
            router._routes.append(route)
        for canonical, endpoint in router._endpoints.items():
            static = endpoint.routes[0].shape.literal_path is not None
            endpoint.compile(static)
            if static:
                router._static[canonical] = endpoint
        return router

    @classmethod
    def _rebuild(cls, entries: list[RouteEntry[T]], previous: Router[T]) -> Router[T]:
        known = {id(route.entry): route for route in previous._routes}
        router: Router[T] = cls()
        by_pattern: dict[str, list[_Route[T]]] = {}
        for index, entry in enumerate(entries):
            route = known.get(id(entry))
            if route is None or route.entry is not entry:
                shape = _compile_pattern(entry.pattern)
                route = _Route(index, entry, shape, _compile_methods(entry.methods, entry.pattern))
            routes = by_pattern.get(route.shape.canonical)
            if routes is None:
                by_pattern[route.shape.canonical] = [route]
            else:
                routes.append(route)
            router._routes.append(route)
        # Patterns in the order they first appear, as `build` inserts them.
        for canonical, routes in by_pattern.items():
            endpoint = previous._endpoints.get(canonical)
            static = routes[0].shape.literal_path is not None
            if endpoint is None or endpoint.routes != routes:
                endpoint = _Endpoint()
                for route in routes:
                    endpoint.add(route)
                endpoint.compile(static)
            router._place(routes[0].shape, endpoint)
            router._endpoints[canonical] = endpoint
            if static:
                router._static[canonical] = endpoint
        return router

    def _place(self, shape: _Pattern, endpoint: _Endpoint[T]) -> None:
        node = self._root
        for segment in shape.segments:
            if segment.kind == _LITERAL:
                child = node.literals.get(segment.text)
                if child is None:
                    child = node.literals[segment.text] = _Node()
                node = child
            elif segment.kind == _PARAM:
                if node.param is None:
                    node.param = _Node()
                node = node.param
            else:
                node.wildcard = endpoint
                return
        node.endpoint = endpoint

    def _insert(self, shape: _Pattern) -> _Endpoint[T]:
        node = self._root
        for segment in shape.segments:
            if segment.kind == _LITERAL:
                child = node.literals.get(segment.text)
                if child is None:
                    child = node.literals[segment.text] = _Node()
                node = child
            elif segment.kind == _PARAM:
                if node.param is None:
                    node.param = _Node()
                node = node.param
            else:
                node.wildcard = _Endpoint()
                return node.wildcard
        node.endpoint = _Endpoint()
        return node.endpoint

    def __len__(self) -> int:
        return len(self._routes)

    def match(self, method: str, path: str) -> MatchResult[T]:
        """Choose the route for `method` and a path returned by `normalise_path`."""
        static = self._static.get(path)
        if static is not None:
            prebuilt = static.prebuilt.get(method, static.prebuilt_any)
            if prebuilt is not None:
                return prebuilt
        segments = path[1:].split("/")
        values: list[str] = []
        # The first branch of the search, in one loop: literal child, else parameter child,
        # else this node's wildcard. Its answer is the search's first candidate; anything
        # else (a refused method, a dead end) goes to the full search.
        node = self._root
        for i, segment in enumerate(segments):
            child = node.literals.get(segment)
            if child is None:
                child = node.param
                if child is None or not segment:
                    endpoint = node.wildcard
                    if endpoint is not None:
                        route = endpoint.by_method.get(method, endpoint.any_route)
                        if route is not None:
                            values.append("/".join(segments[i:]))
                            return route.match_with(values)
                    break
                values.append(segment)
            node = child
        else:
            endpoint = node.endpoint
            if endpoint is not None:
                route = endpoint.by_method.get(method, endpoint.any_route)
                if route is not None:
                    return route.match_with(values)
        values.clear()
        refused: list[_Endpoint[T]] = []
        route = _search(self._root, segments, 0, method, values, refused)
        if route is not None:
            return route.match_with(values)
        if refused:
            if len(refused) == 1:
                return MethodNotAllowed(refused[0].allow)
            return MethodNotAllowed(tuple(sorted({m for e in refused for m in e.allow})))
        return NoRoute(self._closest(segments))

    def routes_for_path(self, path: str) -> list[Match[T]]:
        """Every route whose pattern matches a normalised path, whatever its methods.

        Most specific pattern first, the routes of one pattern in configuration order.
        For a CORS preflight, `match(<Access-Control-Request-Method>, path)` finds the route
        the actual request would take; this lists them all.
        """
        segments = path[1:].split("/")
        found: list[Match[T]] = []
        _collect(self._root, segments, 0, [], found)
        return found

    def explain_match(self, method: str, path: str, near_misses: int = 10) -> Explanation[T]:
        """Report every route matching the path and the nearest misses, with reasons.

        `path` may be raw; it is normalised first (`PathEncodingError` propagates). Walks
        every route: for diagnostics only, never on the request path.
        """
        path = normalise_path(path)
        segments = path[1:].split("/")
        result = self.match(method, path)
        matching: list[tuple[tuple[int, ...], int, _Route[T]]] = []
        misses: list[tuple[int, int, Consideration]] = []
        for position, route in enumerate(self._routes):
            outcome = _match_segments(route.shape.segments, segments)
            if isinstance(outcome, list):
                matching.append((route.shape.rank, position, route))
            else:
                verdict, index, detail = outcome
                considered = Consideration(
                    route.pattern, _shown_methods(route.methods), verdict, index, detail
                )
                misses.append((-index, position, considered))
        matching.sort(key=lambda item: (item[0], item[1]))

        chosen: _Route[T] | None = None
        for _, _, route in matching:
            chosen = self._endpoints[route.shape.canonical].lookup(method)
            if chosen is not None:
                break
        considered_matching: list[Consideration] = []
        for _, _, route in matching:
            if route is chosen:
                verdict, detail = Verdict.SELECTED, "the most specific route accepting the method"
            elif chosen is not None and _accepts(route.methods, method):
                verdict, detail = Verdict.SHADOWED, f"a more specific route won: {chosen.pattern!r}"
            else:
                allowed = ", ".join(_shown_methods(route.methods, head=True))
                verdict, detail = Verdict.METHOD_MISMATCH, f"{method} is not among {allowed}"
            considered_matching.append(
                Consideration(route.pattern, _shown_methods(route.methods), verdict, None, detail)
            )
        misses.sort(key=lambda item: (item[0], item[1]))
        return Explanation(
            method=method,
            path=path,
            result=result,
            considered=(*considered_matching, *(c for _, _, c in misses[:near_misses])),
        )

    def _closest(self, segments: list[str]) -> tuple[str, ...]:
        """Up to three patterns under the deepest trie node the path reaches."""
        deepest, depth = self._root, 0
        stack: list[tuple[_Node[T], int]] = [(self._root, 0)]
        while stack:
            node, i = stack.pop()
            if i > depth:
                deepest, depth = node, i
            if i == len(segments):
                continue
            if node.param is not None and segments[i]:
                stack.append((node.param, i + 1))
            child = node.literals.get(segments[i])
            if child is not None:
                stack.append((child, i + 1))
        found: list[str] = []
        queue: deque[_Node[T]] = deque([deepest])
        while queue and len(found) < 3:
            node = queue.popleft()
            for endpoint in (node.endpoint, node.wildcard):
                if endpoint is not None:
                    found.extend(r.pattern for r in endpoint.routes[:1])
            # A few children per node keep this cheap under a node with thousands.
            queue.extend(itertools.islice(node.literals.values(), 8))
            if node.param is not None:
                queue.append(node.param)
        return tuple(found[:3])


def _collect(
    node: _Node[T], segments: list[str], i: int, values: list[str], found: list[Match[T]]
) -> None:
    """Append the matches of every route matching the path, in precedence order."""
    if i == len(segments):
        if node.endpoint is not None:
            found.extend(r.match_with(list(values)) for r in node.endpoint.routes)
    else:
        segment = segments[i]
        child = node.literals.get(segment)
        if child is not None:
            _collect(child, segments, i + 1, values, found)
        if node.param is not None and segment:
            values.append(segment)
            _collect(node.param, segments, i + 1, values, found)
            values.pop()
    if node.wildcard is not None:
        rest = [*values, "/".join(segments[i:])]
        found.extend(r.match_with(rest) for r in node.wildcard.routes)


def _match_segments(
    pattern: tuple[_Segment, ...], segments: list[str]
) -> list[str] | tuple[Verdict, int, str]:
    """Match one pattern against path segments: the captures, or why it does not match."""
    values: list[str] = []
    for i, segment in enumerate(pattern):
        if segment.kind == _WILDCARD:
            values.append("/".join(segments[i:]))
            return values
        if i >= len(segments):
            return Verdict.PATH_TOO_SHORT, i, f"the path ends before segment {i}"
        text = segments[i]
        if segment.kind == _LITERAL:
            if text != segment.text:
                return (
                    Verdict.SEGMENT_MISMATCH,
                    i,
                    f"segment {i} is {text!r}, the pattern wants {segment.text!r}",
                )
        elif not text:
            return (
                Verdict.SEGMENT_MISMATCH,
                i,
                f"segment {i} is empty and {{{segment.text}}} needs a non-empty segment",
            )
        else:
            values.append(text)
    if len(segments) > len(pattern):
        n = len(pattern)
        return Verdict.PATH_TOO_LONG, n, f"the path goes on after the pattern's {n} segments"
    return values


def _accepts(methods: frozenset[str] | None, method: str) -> bool:
    return methods is None or method in methods or (method == "HEAD" and "GET" in methods)


def _shown_methods(methods: frozenset[str] | None, head: bool = False) -> tuple[str, ...]:
    if methods is None:
        return (ANY_METHOD,)
    if head and "GET" in methods:
        return tuple(sorted(methods | {"HEAD"}))
    return tuple(sorted(methods))
