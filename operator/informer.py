"""Listing and watching the objects the operator reads, with no per-object handler.

Why not kopf's indexes and event handlers: kopf runs one worker task per object, and at
start-up each listed object of an indexed resource adds a toggle to one `ToggleSet` whose
every change wakes every waiting worker, each of which then reads every toggle (kopf 1.45.2,
the latest release: `ToggleSet.make_toggle` calls `Condition.notify_all`). With 10,000
Routes the first reconcile came after 836 s at 100 % CPU, and the workers' memory crossed
the chart's limit. Here each resource has one thread that lists it (in pages) and then
watches it; each event updates an index (a dict) and calls a function on the event loop.
Start-up cost is linear in the objects listed.

After the initial listing of every resource (`Informers.synced`) the indexes hold the
whole state, so the first reconcile never sees a partial one. A watch that ends (timeout,
`410 Gone`, an API server restart) resumes from its last resourceVersion, or lists again:
objects missing from a new listing are reported deleted, so nothing deleted while a watch
was cut off stays indexed.

The `kubernetes` client blocks: listing and watching run in one thread per resource, with
their own connection pool; events are handed to the event loop with
`call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Generic, NamedTuple, TypeVar

from kubernetes import client as k8s_client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from wardgate.operator.kube import Body, object_path

log = logging.getLogger(__name__)

PAGE_SIZE: Final = 500
WATCH_SECONDS: Final = 300
READ_MARGIN_SECONDS: Final = 30
"""How long past its timeout a watch may stay silent before its connection counts as lost."""
RETRY_SECONDS: Final = (0.5, 1.0, 2.0, 5.0, 10.0)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

IndexFunction = Callable[[Body], Mapping[K, V]]
"""An object's entries in an index (key → value); empty when it is not indexed."""
EventFunction = Callable[[str, Body], None]
"""Called on the event loop for each change: (`ADDED` | `MODIFIED` | `DELETED`, object)."""


class Index(Mapping[K, list[V]]):
    """key → the values of the objects indexed under it (as kopf's `Index` reads)."""

    def __init__(self) -> None:
        self._entries: dict[K, dict[str, V]] = {}

    def __getitem__(self, key: K) -> list[V]:
        return list(self._entries[key].values())

    def __iter__(self) -> Iterator[K]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, uid: str, entries: Mapping[K, V]) -> None:
        for key, value in entries.items():
            self._entries.setdefault(key, {})[uid] = value

    def drop(self, uid: str, keys: Iterable[K]) -> None:
        for key in keys:
            values = self._entries.get(key)
            if values is not None:
                values.pop(uid, None)
                if not values:
                    del self._entries[key]


class Seen(NamedTuple, Generic[K]):
    """What an informer remembers of one object it indexed."""

    resource_version: str
    keys: tuple[K, ...]
    """Its keys in the index."""
    namespace: str
    name: str


@dataclass
class Watched(Generic[K, V]):
    """One resource: what to list, how to index it, what to call on each change."""

    kind: str
    index: IndexFunction[K, V]
    on_event: EventFunction
    label_selector: str = ""
    store: Index[K, V] = field(default_factory=Index)
    versions: dict[str, Seen[K]] = field(default_factory=dict)
    """uid → what was last seen of it."""

    def apply(self, kind: str, body: Body) -> None:
        """One watch event, on the event loop."""
        metadata = body.get("metadata") or {}
        uid = str(metadata.get("uid") or "")
        previous = self.versions.pop(uid, None)
        if previous is not None:
            self.store.drop(uid, previous.keys)
        if kind == "DELETED":
            if previous is None:
                return
        else:
            entries = self.index(body)
            self.store.put(uid, entries)
            self.versions[uid] = Seen(
                resource_version=str(metadata.get("resourceVersion") or ""),
                keys=tuple(entries),
                namespace=str(metadata.get("namespace") or ""),
                name=str(metadata.get("name") or ""),
            )
            if previous is not None and previous.resource_version == metadata.get(
                "resourceVersion"
            ):
                return  # listed again, unchanged
            kind = "MODIFIED" if previous is not None else "ADDED"
        self.on_event(kind, body)

    def replace(self, items: list[Body]) -> None:
        """A new listing: what is missing from it was deleted meanwhile."""
        listed = {str((item.get("metadata") or {}).get("uid") or "") for item in items}
        for uid in [u for u in self.versions if u not in listed]:
            seen = self.versions.pop(uid)
            self.store.drop(uid, seen.keys)
            gone = {"uid": uid, "namespace": seen.namespace, "name": seen.name}
            self.on_event("DELETED", {"metadata": gone})
        for item in items:
            self.apply("ADDED", item)


class Informer:
    """Lists, then watches, one resource in one namespace (or all), in a thread."""

    def __init__(
        self,
        api: k8s_client.ApiClient,
        watched: Watched[Any, Any],
        namespace: str,
        loop: asyncio.AbstractEventLoop,
        stop: threading.Event,
        *,
        watch_seconds: int = WATCH_SECONDS,
    ) -> None:
        self.api = api
        self.watched = watched
        self.namespace = namespace
        self.loop = loop
        self.stop = stop
        self.watch_seconds = watch_seconds
        self.synced = asyncio.Event()
        self.listed = 0
        """Objects in the latest listing."""
        self.listings = 0
        """Listings so far: one at start, then one per `410 Gone` (a watch too far behind)."""
        self.bookmarks = 0
        """BOOKMARK events received: each moves the version a resumed watch starts from."""
        self.resource_version = ""
        """The version the next watch starts from (the latest listing's, event's or bookmark's)."""
        self.watching_from = ""
        """The version the current (or last) watch started from."""
        self._thread = threading.Thread(
            target=self._run, name=f"informer-{watched.kind}-{namespace or 'all'}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _path(self) -> str:
        if self.namespace:
            return object_path(self.watched.kind, self.namespace)
        # Every namespace: the path without one.
        path = object_path(self.watched.kind, "NAMESPACE")
        return path.replace("/namespaces/NAMESPACE", "")

    def _request(self, query: list[tuple[str, str]], timeout: float | tuple[float, float]) -> Any:
        method, url, headers, body, post = self.api.param_serialize(
            "GET",
            self._path(),
            query_params=query,
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        return self.api.call_api(method, url, headers, body, post, _request_timeout=timeout)

    def _list(self) -> tuple[list[Body], str]:
        items: list[Body] = []
        token = ""
        while True:
            query = [("limit", str(PAGE_SIZE))]
            if self.watched.label_selector:
                query.append(("labelSelector", self.watched.label_selector))
            if token:
                query.append(("continue", token))
            response = self._request(query, 60.0)
            data = json.loads(response.read())
            if response.status != 200:
                raise ApiException(status=response.status, reason=str(data.get("message")))
            items.extend(data.get("items") or [])
            metadata = data.get("metadata") or {}
            token = metadata.get("continue") or ""
            if not token:
                return items, str(metadata.get("resourceVersion") or "")

    def _watch(self, version: str) -> str:
        """Follow changes from `version` until the watch ends; the last version seen."""
        self.watching_from = version
        query = [
            ("watch", "true"),
            ("resourceVersion", version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(self.watch_seconds)),
        ]
        if self.watched.label_selector:
            query.append(("labelSelector", self.watched.label_selector))
        response = self._request(query, (10.0, self.watch_seconds + READ_MARGIN_SECONDS))
        if response.status != 200:
            raise ApiException(status=response.status, reason=response.reason)
        try:
            for line in _lines(response.response):
                if self.stop.is_set():
                    break
                event = json.loads(line)
                kind = event.get("type")
                body = event.get("object") or {}
                if kind == "ERROR":
                    raise ApiException(
                        status=int(body.get("code") or 0), reason=body.get("message")
                    )
                # A BOOKMARK carries only a resourceVersion: the watch is current up to it,
                # even when nothing it selects changed. Resuming from it (rather than from
                # the last object seen) keeps a quiet namespace's watch inside the API
                # server's history window, so it is not answered `410 Gone` and listed again.
                version = str((body.get("metadata") or {}).get("resourceVersion") or version)
                self.resource_version = version
                if kind == "BOOKMARK":
                    self.bookmarks += 1
                elif kind in ("ADDED", "MODIFIED", "DELETED"):
                    self.loop.call_soon_threadsafe(self.watched.apply, kind, body)
        finally:
            response.response.release_conn()
        return version

    def _run(self) -> None:
        version = ""
        failures = 0
        while not self.stop.is_set():
            try:
                if not version:
                    items, version = self._list()
                    self.listed = len(items)
                    self.listings += 1
                    self.resource_version = version
                    self.loop.call_soon_threadsafe(self._replace, items)
                version = self._watch(version)
                failures = 0
            except ApiException as exc:
                if exc.status == 410:  # too old: list again, report what went meanwhile
                    version = ""
                    continue
                failures += 1
                self._pause(failures, f"{exc.status} {exc.reason}")
            except (HTTPError, OSError, ValueError) as exc:
                failures += 1
                self._pause(failures, str(exc) or type(exc).__name__)
            except RuntimeError:
                if self.loop.is_closed():
                    return  # the operator has stopped
                raise
            except Exception as exc:  # the watch must outlive any surprise
                log.exception("watching %s failed", self.watched.kind)
                failures += 1
                self._pause(failures, type(exc).__name__)

    def _replace(self, items: list[Body]) -> None:
        self.watched.replace(items)
        self.synced.set()

    def _pause(self, failures: int, reason: str) -> None:
        delay = RETRY_SECONDS[min(failures, len(RETRY_SECONDS)) - 1]
        where = self.namespace or "every namespace"
        log.warning(
            "watching %s in %s: %s; again in %.1f s", self.watched.kind, where, reason, delay
        )
        self.stop.wait(delay)


def _lines(response: Any) -> Iterator[bytes]:
    """The lines of a streamed response (one JSON watch event each)."""
    pending = b""
    for chunk in response.stream(65536, decode_content=True):
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            if line.strip():
                yield line
    if pending.strip():
        yield pending


class Informers:
    """Every watched resource in every watched namespace."""

    def __init__(
        self,
        configuration: k8s_client.Configuration,
        watched: list[Watched[Any, Any]],
        namespaces: list[str] | None,
        cluster_scoped: frozenset[str],
    ) -> None:
        self._api = k8s_client.ApiClient(configuration)
        self._stop = threading.Event()
        loop = asyncio.get_running_loop()
        self.informers: list[Informer] = []
        for item in watched:
            everywhere = item.kind in cluster_scoped or not namespaces
            for namespace in [""] if everywhere else list(namespaces or ()):
                self.informers.append(Informer(self._api, item, namespace, loop, self._stop))

    def start(self) -> None:
        for informer in self.informers:
            informer.start()

    async def synced(self) -> None:
        """Once every resource has been listed."""
        for informer in self.informers:
            await informer.synced.wait()

    def listed(self) -> int:
        return sum(informer.listed for informer in self.informers)

    async def stop(self) -> None:
        self._stop.set()
        # Watches end within their read timeout; the threads are daemons, so a stop does
        # not wait for them.
        self._api.close()  # type: ignore[no-untyped-call]
