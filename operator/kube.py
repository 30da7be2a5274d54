"""The one layer that calls the Kubernetes API (besides kopf's own watches).

The `kubernetes` client is blocking, so every call runs in a worker thread
(a pool of `CLIENT_THREADS`). Bodies are plain JSON dicts (no generated model classes). API failures
become `KubeError`; every write goes through `_write`, which counts it (`writes` by what,
`namespace_writes` by namespace), so tests can prove that a reconcile with nothing to change
writes nothing.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Final

from kubernetes import client as k8s_client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from wardgate.operator.models import GROUP, VERSION

Body = dict[str, Any]

FIELD_MANAGER: Final = "wardgate-operator"
REQUEST_TIMEOUT: Final = 30.0
CLIENT_THREADS: Final = 16
"""Threads (and pooled connections) for the blocking client: the calls in flight at once."""

# kind → (API prefix, plural)
KINDS: Final[Mapping[str, tuple[str, str]]] = {
    "ConfigMap": ("api/v1", "configmaps"),
    "Pod": ("api/v1", "pods"),
    "Service": ("api/v1", "services"),
    "Secret": ("api/v1", "secrets"),
    "Event": ("api/v1", "events"),
    "Deployment": ("apis/apps/v1", "deployments"),
    "ReplicaSet": ("apis/apps/v1", "replicasets"),
    "PodDisruptionBudget": ("apis/policy/v1", "poddisruptionbudgets"),
    "HorizontalPodAutoscaler": ("apis/autoscaling/v2", "horizontalpodautoscalers"),
    "Gateway": (f"apis/{GROUP}/{VERSION}", "gateways"),
    "Route": (f"apis/{GROUP}/{VERSION}", "routes"),
    "Authorizer": (f"apis/{GROUP}/{VERSION}", "authorizers"),
    "Namespace": ("api/v1", "namespaces"),
    "ServiceAccount": ("api/v1", "serviceaccounts"),
    "Role": ("apis/rbac.authorization.k8s.io/v1", "roles"),
    "RoleBinding": ("apis/rbac.authorization.k8s.io/v1", "rolebindings"),
}
CLUSTER_SCOPED: Final = frozenset({"Namespace"})
# Objects' metadata only (no spec, no Secret values), as `kubectl get` lists them.
METADATA_LIST: Final = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"


class KubeError(Exception):
    """An API call failed; `status` is the HTTP status (0 when the server was not reached)."""

    def __init__(self, verb: str, path: str, status: int, reason: str) -> None:
        super().__init__(f"{verb} {path}: {status} {reason}")
        self.status = status
        self.reason = reason

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def namespace_gone(self) -> bool:
        """A write refused because the namespace no longer exists."""
        return self.status == 404 and self.reason.startswith("namespaces ")


def object_path(kind: str, namespace: str, name: str | None = None) -> str:
    prefix, plural = KINDS[kind]
    if kind in CLUSTER_SCOPED:
        return f"/{prefix}/{plural}/{name}" if name else f"/{prefix}/{plural}"
    path = f"/{prefix}/namespaces/{namespace}/{plural}"
    return f"{path}/{name}" if name else path


@dataclass
class KubeApi:
    """JSON-in, JSON-out access to the API server."""

    api: k8s_client.ApiClient
    writes: Counter[str]
    namespace_writes: Counter[str]

    executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(CLIENT_THREADS, thread_name_prefix="kube")
    )

    @classmethod
    def from_configuration(cls, configuration: k8s_client.Configuration) -> KubeApi:
        # As many pooled connections as threads: a thread never waits for a connection.
        configuration.connection_pool_maxsize = CLIENT_THREADS
        return cls(k8s_client.ApiClient(configuration), Counter(), Counter())

    def close(self) -> None:
        self.api.close()  # type: ignore[no-untyped-call]
        self.executor.shutdown(wait=False)

    async def _in_thread(self, call: Callable[[], Body | None]) -> Body | None:
        return await asyncio.get_running_loop().run_in_executor(self.executor, call)

    def _call(
        self,
        verb: str,
        path: str,
        *,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
        accept: str = "application/json",
    ) -> Body | None:
        headers = {"Accept": accept, "Content-Type": content_type}
        try:
            method, url, headers, body, post = self.api.param_serialize(
                verb,
                path,
                query_params=query or [],
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            response = self.api.call_api(
                method, url, headers, body, post, _request_timeout=REQUEST_TIMEOUT
            )
            data = response.read()  # type: ignore[no-untyped-call]
        except ApiException as exc:
            raise KubeError(
                verb, path, int(exc.status or 0), _reason(exc.body, exc.reason)
            ) from exc
        except (HTTPError, OSError) as exc:
            raise KubeError(verb, path, 0, type(exc).__name__) from exc
        if verb == "GET" and response.status == 404:
            return None
        if not 200 <= response.status < 300:
            raise KubeError(verb, path, response.status, _reason(data, response.reason))
        if not data:
            return {}
        decoded: Body = json.loads(data)
        return decoded

    async def _read(
        self,
        path: str,
        query: list[tuple[str, str]] | None = None,
        accept: str = "application/json",
    ) -> Body | None:
        return await self._in_thread(
            functools.partial(self._call, "GET", path, query=query, accept=accept)
        )

    async def _write(self, what: str, verb: str, path: str, **kwargs: Any) -> Body:
        self.writes[what] += 1
        self.namespace_writes[_namespace_of(path)] += 1
        result = await self._in_thread(functools.partial(self._call, verb, path, **kwargs))
        return result or {}

    def get_blocking(self, kind: str, namespace: str, name: str) -> Body | None:
        """`get` for scripts and tests (blocks the calling thread)."""
        return self._call("GET", object_path(kind, namespace, name))

    def request_blocking(
        self,
        verb: str,
        path: str,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
        accept: str = "application/json",
    ) -> Body | None:
        """Any call, for scripts and tests (blocks; not counted as a write)."""
        return self._call(
            verb, path, body=body, query=query, content_type=content_type, accept=accept
        )

    async def get(self, kind: str, namespace: str, name: str) -> Body | None:
        """The object, or None when it does not exist."""
        return await self._read(object_path(kind, namespace, name))

    async def list_metadata(self, kind: str, namespace: str) -> list[Body]:
        """The metadata of every object of `kind` in `namespace` (ignored when the kind is
        cluster-scoped)."""
        found = await self._read(object_path(kind, namespace), accept=METADATA_LIST)
        # An empty metadata list comes as `"items": null`.
        return [item.get("metadata") or {} for item in (found or {}).get("items") or []]

    async def list(self, kind: str, namespace: str, label_selector: str = "") -> list[Body]:
        query = [("labelSelector", label_selector)] if label_selector else []
        found = await self._read(object_path(kind, namespace), query)
        items: list[Body] = (found or {}).get("items") or []
        return items

    async def apply(self, manifest: Body) -> Body:
        """Server-side apply (this operator's field manager owns what it sets)."""
        metadata = manifest["metadata"]
        path = object_path(manifest["kind"], metadata["namespace"], metadata["name"])
        return await self._write(
            f"apply {manifest['kind']}",
            "PATCH",
            path,
            body=manifest,
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
            content_type="application/apply-patch+yaml",
        )

    async def delete(self, kind: str, namespace: str, name: str, *, orphan: bool = False) -> None:
        """Delete the object (`orphan`: leaving what it owns, for a new owner to adopt)."""
        query = [("propagationPolicy", "Orphan")] if orphan else None
        try:
            await self._write(
                f"delete {kind}", "DELETE", object_path(kind, namespace, name), query=query
            )
        except KubeError as exc:
            if exc.status != 404:
                raise

    async def patch_status(self, kind: str, namespace: str, name: str, status: Body) -> Body:
        """Merge-patch the status subresource (never the spec)."""
        return await self._write(
            f"status {kind}",
            "PATCH",
            object_path(kind, namespace, name) + "/status",
            body={"status": status},
            content_type="application/merge-patch+json",
        )

    async def merge_patch(self, kind: str, namespace: str, name: str, body: Body) -> Body:
        """JSON merge patch of the object (null removes a key)."""
        return await self._write(
            f"patch {kind}",
            "PATCH",
            object_path(kind, namespace, name),
            body=body,
            content_type="application/merge-patch+json",
        )

    async def create_event(self, namespace: str, event: Body) -> None:
        await self._write("create Event", "POST", object_path("Event", namespace), body=event)


def _namespace_of(path: str) -> str:
    """The namespace of an object path (`object_path`'s shape), "" when cluster-scoped."""
    parts = path.split("/")
    return parts[parts.index("namespaces") + 1] if "namespaces" in parts else ""


def _reason(data: Any, reason: Any) -> str:
    """The API's message (never a request body: those may hold secret values)."""
    try:
        message = json.loads(data or "{}").get("message")
    except (ValueError, AttributeError, TypeError):
        message = None
    return str(message or reason or "error")
