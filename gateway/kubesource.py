"""The gateway's config read from the Kubernetes API: its own ConfigMap, by name, watched.

Why a watch and not the mounted ConfigMap file: the kubelet refreshes ConfigMap and Secret
volumes only after its sync period plus its cache's TTL (a minute or more), so a config
change would take that long to reach a running pod; and changing the pod template instead
(a config hash annotation) replaced every pod for each change of any Route. Watching its own
ConfigMap, a replica has a new config within the API server's watch latency, and the pods
roll only when their spec changes.

What a replica may read is narrow (the operator's Role for the Gateway, by `resourceNames`):
`get`/`list`/`watch` of its one ConfigMap (a list or watch with the field selector
`metadata.name=NAME` is authorised against the name) and `get` of the Secrets its
authorizers use. Secret values never pass through the ConfigMap: it lists which Secret keys
the config needs (`SECRET_ITEMS_KEY`), and the replica reads those keys itself.

The same code runs in a pod (its ServiceAccount) and in a process elsewhere (a kubeconfig).
The blocking `kubernetes` client runs in one thread; snapshots are handed to the event loop.

The layout of the ConfigMap is `wardgate.gateway.delivery`'s.

With `--report-served NAME`, a replica also records the hash of the config it serves, at
start and after each swap, under its pod's name in ConfigMap NAME (`ServedReport`): the
operator reads those records for the Gateway's status, so that `Ready` means served, not
only written. Why there and not an annotation on the replica's own Pod: a Role cannot name
a Pod that does not exist yet, so it would have to allow `patch` on every Pod of the
namespace, and a Pod's spec is mutable (a container's image): a compromised gateway could
then run any image under another workload's identity. `patch` of one ConfigMap by name lets
it, at worst, misreport its own Gateway's replicas. Why not the operator polling each
pod's admin endpoint: it would need a network path to every gateway pod and would learn of
a swap only at its next poll; a write lands in the operator's watch at once.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from wardgate.gateway.config import ConfigError
from wardgate.gateway.delivery import CONFIG_HASH_ANNOTATION, CONFIG_KEY, SECRET_ITEMS_KEY
from wardgate.gateway.loading import ValidatedPaths, parse_document

logger = logging.getLogger("wardgate.gateway")

WATCH_SECONDS: Final = 240
RETRY_SECONDS: Final = (0.5, 1.0, 2.0, 5.0, 10.0)
FIELD_MANAGER: Final = "wardgate-gateway"


class SourceError(Exception):
    """The ConfigMap or a Secret could not be read (or is not in the expected shape)."""


@dataclass(frozen=True, slots=True)
class ConfigObject:
    """Which ConfigMap holds the config."""

    namespace: str
    name: str

    @classmethod
    def parse(cls, text: str) -> ConfigObject:
        """`NAMESPACE/NAME`."""
        namespace, sep, name = text.partition("/")
        if not sep or not namespace or not name or "/" in name:
            raise ValueError(f"--watch-config {text!r}: expected NAMESPACE/NAME")
        return cls(namespace, name)


@dataclass(frozen=True, slots=True)
class ServedReport:
    """Where a replica records the config hash it serves: key `pod` of ConfigMap
    `config_map`, in the namespace of the watched one."""

    config_map: str
    pod: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One version of the config: the document, its hash and the secret values it needs."""

    config_hash: str
    document: object
    secrets: Mapping[str, str]
    resource_version: str
    origin: str


def load_client_configuration(kubeconfig: Path | None) -> k8s_client.Configuration:
    """The given kubeconfig, else the pod's ServiceAccount, else the default kubeconfig
    (raises `SourceError` when none of them can be used)."""
    configuration = k8s_client.Configuration()
    try:
        if kubeconfig is not None:
            k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=str(kubeconfig), client_configuration=configuration
            )
            return configuration
        try:
            k8s_config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration
            )
        except k8s_config.ConfigException:
            k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration
            )
    except (k8s_config.ConfigException, yaml.YAMLError, OSError, ValueError, TypeError) as exc:
        where = f"kubeconfig {kubeconfig}" if kubeconfig is not None else "no usable kubeconfig"
        first_line = next(iter(str(exc).splitlines()), "") or type(exc).__name__
        raise SourceError(f"{where}: {first_line}") from None
    return configuration


class ConfigMapSource:
    """Reads and follows one ConfigMap and the Secret keys it lists."""

    def __init__(
        self,
        target: ConfigObject,
        configuration: k8s_client.Configuration,
        *,
        origin: str | None = None,
        skip_unreadable_secrets: bool = False,
    ) -> None:
        self.target = target
        self._api = k8s_client.ApiClient(configuration)
        self._core = k8s_client.CoreV1Api(self._api)
        self._origin = origin or f"configmap/{target.name} -n {target.namespace}"
        # A person's view (`wardgate explain --gateway`) may lack access to a Secret and
        # supply its values otherwise; a gateway's ServiceAccount may read them all.
        self._skip_unreadable = skip_unreadable_secrets

    def close(self) -> None:
        self._api.close()  # type: ignore[no-untyped-call]

    def _list(self) -> tuple[dict[str, Any] | None, str]:
        # Plain JSON, as the watch below delivers it: no generated model classes.
        response: Any = self._core.list_namespaced_config_map(
            self.target.namespace,
            field_selector=f"metadata.name={self.target.name}",
            _preload_content=False,
        )
        found = json.loads(response.data)
        items = found.get("items") or []
        version = (found.get("metadata") or {}).get("resourceVersion")
        return (items[0] if items else None), str(version or "")

    def read(self) -> Snapshot:
        """The current snapshot (blocking)."""
        try:
            config_map, version = self._list()
        except (ApiException, HTTPError, OSError) as exc:
            raise SourceError(f"{self._origin}: cannot read it: {api_reason(exc)}") from None
        if config_map is None:
            raise SourceError(f"{self._origin} does not exist (yet)")
        return self.snapshot(config_map, version)

    def snapshot(self, config_map: Mapping[str, Any], version: str) -> Snapshot:
        """The snapshot a ConfigMap (as JSON) gives, its Secret keys read now."""
        binary = config_map.get("binaryData") or {}
        data = config_map.get("data") or {}
        metadata = config_map.get("metadata") or {}
        annotations = metadata.get("annotations") or {}
        encoded = binary.get(CONFIG_KEY)
        if not isinstance(encoded, str):
            raise SourceError(f"{self._origin} has no binaryData.{CONFIG_KEY}")
        try:
            document = parse_document(base64.b64decode(encoded), CONFIG_KEY)
            items = json.loads(data.get(SECRET_ITEMS_KEY) or "[]")
        except (ConfigError, ValueError) as exc:
            raise SourceError(f"{self._origin}: {exc}") from None
        secrets = self._secret_values(items)
        config_hash = str(annotations.get(CONFIG_HASH_ANNOTATION) or "")
        return Snapshot(
            config_hash,
            document,
            secrets,
            str(metadata.get("resourceVersion") or version),
            self._origin,
        )

    def report_served(self, report: ServedReport, config_hash: str) -> None:
        """Record that this replica serves `config_hash` (blocking; raises `SourceError`)."""
        body = {"data": {report.pod: config_hash}}
        try:
            self._core.patch_namespaced_config_map(
                report.config_map, self.target.namespace, body, field_manager=FIELD_MANAGER
            )
        except (ApiException, HTTPError, OSError) as exc:
            raise SourceError(
                f"configmap/{report.config_map} -n {self.target.namespace}: cannot record the "
                f"served config: {api_reason(exc)}"
            ) from None

    def _secret_values(self, items: list[Mapping[str, str]]) -> dict[str, str]:
        values: dict[str, str] = {}
        read: dict[str, Mapping[str, Any]] = {}
        for item in items:
            name = item["secret"]
            if name not in read:
                try:
                    secret = self._core.read_namespaced_secret(name, self.target.namespace)
                except ApiException as exc:
                    if exc.status == 404 or self._skip_unreadable:
                        read[name] = {}
                        continue
                    raise SourceError(
                        f"Secret {self.target.namespace}/{name}: cannot read it: {api_reason(exc)}"
                    ) from None
                except (HTTPError, OSError) as exc:
                    raise SourceError(
                        f"Secret {self.target.namespace}/{name}: cannot read it: {api_reason(exc)}"
                    ) from None
                read[name] = secret.data or {}
            encoded = read[name].get(item["key"])
            if encoded is not None:
                # As from a mounted file: without the trailing line break.
                raw = base64.b64decode(str(encoded)).decode("utf-8", "replace")
                values[item["path"]] = raw.rstrip("\r\n")
        return values

    def follow(
        self,
        deliver: Callable[[Snapshot], None],
        stop: threading.Event,
        since: str = "",
    ) -> None:
        """Call `deliver` with each new snapshot until `stop` is set (blocking: run it in a
        thread). Reconnects after failures, listing again when the version is too old."""
        version = since
        failures = 0
        while not stop.is_set():
            try:
                if not version:
                    config_map, version = self._list()
                    if config_map is not None:
                        deliver(self.snapshot(config_map, version))
                stream = k8s_watch.Watch()  # type: ignore[no-untyped-call]
                for event in stream.stream(  # type: ignore[no-untyped-call]
                    self._core.list_namespaced_config_map,
                    self.target.namespace,
                    field_selector=f"metadata.name={self.target.name}",
                    resource_version=version,
                    timeout_seconds=WATCH_SECONDS,
                    allow_watch_bookmarks=True,
                    deserialize=False,
                ):
                    if stop.is_set():
                        stream.stop()  # type: ignore[no-untyped-call]
                        break
                    kind = event.get("type")
                    obj = event.get("object") or {}
                    version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                    if kind in ("ADDED", "MODIFIED"):
                        deliver(self.snapshot(obj, version))
                failures = 0
            except ApiException as exc:
                if exc.status == 410:  # too old: list again
                    version = ""
                    continue
                failures += 1
                self._pause(stop, failures, exc)
            except (SourceError, HTTPError, OSError, ValueError) as exc:
                failures += 1
                self._pause(stop, failures, exc)
            except Exception as exc:  # the watch must outlive any surprise: it is the config
                logger.exception("%s: following failed", self._origin)
                failures += 1
                self._pause(stop, failures, exc)

    def _pause(self, stop: threading.Event, failures: int, exc: Exception) -> None:
        delay = RETRY_SECONDS[min(failures, len(RETRY_SECONDS)) - 1]
        logger.warning("%s: %s; watching again in %.1f s", self._origin, api_reason(exc), delay)
        stop.wait(delay)


def api_reason(exc: Exception) -> str:
    """An API failure in one line: the status and the server's message, or the error."""
    if isinstance(exc, ApiException):
        try:
            message = json.loads(exc.body or "{}").get("message")
        except (ValueError, AttributeError):
            message = None
        return f"{exc.status} {message or exc.reason or ''}".strip()
    return str(exc) or type(exc).__name__


@dataclass(frozen=True, slots=True)
class ConfigWatch:
    """What `wardgate gateway --watch-config` follows, and how a snapshot becomes a config."""

    source: ConfigMapSource
    since: str
    """The resourceVersion of the snapshot served first."""
    prepare: Callable[[object], object] = lambda document: document
    """Applied to each document before validation (the `--server` overrides)."""
    report: ServedReport | None = None
    """Where to record the hash served (`--report-served`); None: nowhere."""
    paths: ValidatedPaths = field(default_factory=ValidatedPaths)
    """The path entries of the config validated last (the first one's included), which
    the next version reuses where unchanged."""


def wait_for_snapshot(source: ConfigMapSource, timeout: float) -> Snapshot:
    """The first snapshot, retrying while the ConfigMap does not exist yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return source.read()
        except SourceError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
