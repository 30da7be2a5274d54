"""One way to load a config for the commands, whatever its source, with one exit-code policy.

A source is a file, the embedded demo, or a document read elsewhere (the ConfigMap the
operator renders for a Gateway: `wardgate gateway --watch-config` and `wardgate explain
--gateway` read it). Each is loaded whole: parsed, validated, its `$secret.NAME` references
resolved and the gateway built once without starting it (route patterns and keys only show
there). The result is a `LoadedConfig`, or a `LoadError` with the problems and its exit code:

- `EXIT_INVALID` (1): the config was read and is not valid: `validate`'s answer, and a
  config `gateway` refuses to serve;
- `EXIT_UNUSABLE` (2): no config could be read: a missing or unreadable file, a cluster that
  cannot be reached or has no rendered config, secrets that cannot be read; bad arguments
  are 2 as well (argparse's own status).

A command whose exit status 1 answers another question (`explain`: the request is refused)
exits `EXIT_UNUSABLE` for every `LoadError`: it could not answer.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TextIO

from wardgate.gateway.app import Gateway
from wardgate.gateway.authorizers import Authorizers
from wardgate.gateway.config import ConfigError
from wardgate.gateway.embedded import (
    DEMO_SECRET,
    DEMO_SECRET_NAME,
    DEMO_SERVER,
    bind_loopback,
    demo_document,
)
from wardgate.gateway.loading import (
    LoadedConfig,
    SecretSource,
    ValidatedPaths,
    load_config,
    read_document,
)

EXIT_INVALID: Final = 1
EXIT_UNUSABLE: Final = 2
EMBEDDED_ORIGIN: Final = "<embedded demo config>"


class LoadError(Exception):
    """A source that gives no config: where, what is wrong, and the exit code."""

    def __init__(self, origin: str, problems: Sequence[str], exit_code: int) -> None:
        super().__init__("; ".join(problems))
        self.origin = origin
        self.problems = list(problems)
        self.exit_code = exit_code

    @classmethod
    def unusable(cls, origin: str, reason: str) -> LoadError:
        """No config could be read from `origin`."""
        return cls(origin, [reason], EXIT_UNUSABLE)

    @classmethod
    def unreadable_source(cls, exc: Exception) -> LoadError:
        """No config could be read; the error's message names the source itself."""
        return cls("", [str(exc)], EXIT_UNUSABLE)

    def report(self, stream: TextIO | None = None) -> None:
        """Print the problems (never a secret value: problems name references, not values)."""
        out = stream if stream is not None else sys.stderr
        if self.exit_code == EXIT_UNUSABLE:
            prefix = f"{self.origin}: " if self.origin else ""
            for problem in self.problems:
                print(prefix + problem, file=out)
            return
        print(f"{self.origin}: invalid config ({len(self.problems)} problem(s)):", file=out)
        for problem in self.problems:
            print(f"  {problem}", file=out)


def parse_server_override(item: str) -> tuple[str, str]:
    """`NAME=URL` (a `--server` item) as its two parts."""
    name, sep, url = item.partition("=")
    if not sep or not name:
        raise ValueError(f"--server {item!r}: expected NAME=URL")
    return name, url


def apply_server_overrides(document: object, overrides: Sequence[str]) -> object:
    """The document with `servers.NAME` set to each `NAME=URL` (timeouts kept)."""
    if not overrides or not isinstance(document, dict):
        return document
    servers = document.get("servers")
    servers = dict(servers) if isinstance(servers, dict) else {}
    for item in overrides:
        name, url = parse_server_override(item)
        existing = servers.get(name)
        servers[name] = {**existing, "url": url} if isinstance(existing, dict) else url
    return {**document, "servers": servers}


def check_runtime(loaded: LoadedConfig, previous: Gateway | None = None) -> Gateway:
    """What only shows when building the gateway (route patterns, keys): raises ConfigError.
    The build is returned; `previous`: an earlier one, whose unchanged parts are reused."""
    # Prepares every key (no client session: nothing is fetched) and compiles the route
    # table; opens no connection and starts nothing.
    if previous is None:
        return Gateway(loaded, Authorizers.build(loaded))
    return Gateway(
        loaded,
        Authorizers.build(loaded, previous=previous.authorizers),
        upstreams=previous.upstreams,
        previous=previous,
    )


def load_document(
    document: object,
    secrets: SecretSource,
    *,
    origin: str,
    overrides: Sequence[str] = (),
    config_hash: str | None = None,
    paths: ValidatedPaths | None = None,
) -> LoadedConfig:
    """A decoded document loaded whole (raises `LoadError`, `EXIT_INVALID`); `paths`: where
    its validated path entries are kept for the next version (`ValidatedPaths`)."""
    try:
        loaded = load_config(
            apply_server_overrides(document, overrides),
            secrets,
            origin=origin,
            config_hash=config_hash,
            paths=paths,
        )
        check_runtime(loaded)
    except ConfigError as exc:
        raise LoadError(origin, exc.problems, EXIT_INVALID) from None
    except ValueError as exc:
        raise LoadError(origin, [str(exc)], EXIT_INVALID) from None
    return loaded


def load_file(
    path: Path, secrets_dir: Path | None = None, overrides: Sequence[str] = ()
) -> LoadedConfig:
    """A config file (JSON, YAML by suffix, `.gz` compressed) loaded whole (raises
    `LoadError`: `EXIT_UNUSABLE` when it cannot be read, `EXIT_INVALID` when it is not valid,
    a document that does not parse included)."""
    origin = str(path)
    try:
        document = read_document(path)
    except OSError as exc:
        raise LoadError.unusable(origin, f"cannot read: {exc.strerror or exc}") from None
    except ConfigError as exc:
        raise LoadError(origin, exc.problems, EXIT_INVALID) from None
    return load_document(
        document, SecretSource(directory=secrets_dir), origin=origin, overrides=overrides
    )


@dataclass(frozen=True, slots=True)
class EmbeddedDemo:
    """The embedded demo config loaded, with the socket of its `orders` upstream (None when
    `--server orders=...` points elsewhere) and the secret its tokens are signed with."""

    loaded: LoadedConfig
    upstream_socket: socket.socket | None
    secret: str


def load_embedded_demo(
    secrets_dir: Path | None = None,
    overrides: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
) -> EmbeddedDemo:
    """The embedded demo config (raises `LoadError`); binds its upstream's loopback socket
    unless `orders` is overridden."""
    upstream = None
    orders_url = None
    if not any(item.partition("=")[0] == DEMO_SERVER for item in overrides):
        upstream = bind_loopback()
        orders_url = f"http://127.0.0.1:{upstream.getsockname()[1]}"
    values = dict(os.environ if environ is None else environ)
    values.setdefault(DEMO_SECRET_NAME, DEMO_SECRET)
    try:
        loaded = load_document(
            demo_document(orders_url),
            SecretSource(directory=secrets_dir, environ=values),
            origin=EMBEDDED_ORIGIN,
            overrides=overrides,
        )
    except LoadError:
        if upstream is not None:
            upstream.close()
        raise
    return EmbeddedDemo(loaded, upstream, loaded.secret("$secret." + DEMO_SECRET_NAME))
