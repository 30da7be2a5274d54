"""The verified-token cache: a signature is checked once per token, not once per request.

Keyed by the full token string (exact equality, so no collision can make one token pass
for another). Only tokens that passed every route-independent check are stored; their
validity window (`exp`/`nbf`/`iat` with the leeway) is stored with them and checked on
every use. Bounded by entries and by total token bytes; when full, the oldest entry goes
(insertion order: a plain dict, so a hit costs one lookup and nothing else).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Generic, TypeVar

T = TypeVar("T")

DEFAULT_MAX_ENTRIES: Final = 10_000
DEFAULT_MAX_BYTES: Final = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Verified(Generic[T]):
    """A verified token's result, usable while `not_before <= now < expires`."""

    value: T
    not_before: float
    expires: float


class VerifiedTokens(Generic[T]):
    """A bounded map of token → `Verified` result."""

    __slots__ = ("_bytes", "_entries", "max_bytes", "max_entries")

    def __init__(
        self, max_entries: int = DEFAULT_MAX_ENTRIES, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        self._entries: dict[str, Verified[T]] = {}
        self._bytes = 0
        self.max_entries = max_entries
        self.max_bytes = max_bytes

    def get(self, token: str, now: float) -> T | None:
        """The cached result if the token is cached and inside its validity window."""
        entry = self._entries.get(token)
        if entry is None:
            return None
        if entry.not_before <= now < entry.expires:
            return entry.value
        # Expired (or not yet valid): the full path reports the precise reason.
        self._remove(token)
        return None

    def put(self, token: str, entry: Verified[T]) -> None:
        if self.max_entries <= 0 or len(token) > self.max_bytes:
            return
        if token in self._entries:
            self._remove(token)
        self._entries[token] = entry
        self._bytes += len(token)
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            self._remove(next(iter(self._entries)))

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def _remove(self, token: str) -> None:
        if self._entries.pop(token, None) is not None:
            self._bytes -= len(token)
