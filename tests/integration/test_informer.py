"""The operator's informers on the real API server: a watch of a namespace where nothing
changes follows the API server's BOOKMARK events, so when it times out and resumes it
starts from a current resourceVersion and never needs a new listing.

Without bookmarks a quiet watch resumes from the version of its listing; once the API
server's history window has moved past it (writes elsewhere in the cluster), the resumed
watch is answered `410 Gone` and every object of the namespace is listed again: at
10,000 Routes, a listing of the whole resource per quiet namespace per watch timeout."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable

import pytest
from kubernetes import client as k8s_client

from wardgate.devcluster.cluster import KubeCluster
from wardgate.gateway.kubesource import load_client_configuration
from wardgate.operator.informer import Informer, Watched
from wardgate.operator.kube import Body

pytestmark = pytest.mark.cluster

WATCH_SECONDS = 4
"""Short watches, so that several time out and resume within the test (the API server
sends a bookmark shortly before a watch's timeout)."""


async def _until(
    condition: Callable[[], bool], what: str, *, between: Callable[[], object] = lambda: None
) -> None:
    """Poll `condition` for up to a minute, calling `between` before each check."""
    deadline = time.monotonic() + 60.0
    while True:
        between()
        if condition():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after 60 s waiting for {what}")
        await asyncio.sleep(0.2)


def _created_version(cluster: KubeCluster, namespace: str, name: str) -> int:
    made = cluster.kubectl(
        "-n", namespace, "create", "configmap", name, "-o", "jsonpath={.metadata.resourceVersion}"
    )
    return int(made.stdout)


async def test_a_quiet_watch_resumes_from_its_bookmarks_without_listing_again(
    cluster: KubeCluster, namespace: str
) -> None:
    quiet = namespace
    busy = f"{namespace}-busy"
    cluster.kubectl("create", "namespace", busy)
    _created_version(cluster, quiet, "listed")
    events: list[tuple[str, str]] = []

    def record(kind: str, body: Body) -> None:
        events.append((kind, str(body["metadata"]["name"])))

    watched: Watched[str, str] = Watched(kind="ConfigMap", index=lambda body: {}, on_event=record)
    api = k8s_client.ApiClient(load_client_configuration(cluster.kubeconfig))
    stop = threading.Event()
    informer = Informer(
        api, watched, quiet, asyncio.get_running_loop(), stop, watch_seconds=WATCH_SECONDS
    )
    informer.start()
    try:
        await asyncio.wait_for(informer.synced.wait(), 60)
        listed_at = int(informer.resource_version)
        assert ("ADDED", "listed") in events
        listed = list(events)  # with the namespace's kube-root-ca.crt

        # Writes in another namespace move the cluster's resourceVersion while the quiet
        # namespace's watch sees no event. The API server tells a watch how far it is
        # current with a bookmark shortly before the watch's timeout, when the version
        # moved during that watch: keep writing until one arrives.
        written = itertools.count()
        await _until(
            lambda: informer.bookmarks >= 1 and int(informer.resource_version) > listed_at,
            "a bookmark carrying the writes elsewhere",
            between=lambda: _created_version(cluster, busy, f"elsewhere-{next(written)}"),
        )
        # The watch times out and resumes from the bookmark's version, not the listing's.
        await _until(
            lambda: int(informer.watching_from or 0) > listed_at,
            "a watch resumed from a bookmark's version",
        )
        assert events == listed, "nothing changed in the quiet namespace"

        # The resumed watch still delivers what happens in its namespace.
        _created_version(cluster, quiet, "after")
        await _until(lambda: ("ADDED", "after") in events, "the ConfigMap created after resuming")
        assert informer.listings == 1, "resumed from a bookmark: never listed again"
    finally:
        stop.set()
        api.close()  # type: ignore[no-untyped-call]
        cluster.kubectl("delete", "namespace", busy, "--wait=false", "--ignore-not-found")
