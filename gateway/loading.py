"""Loading a config file: parse, validate, resolve `$secret.NAME` references. All or nothing.

A process that follows a config (`wardgate gateway --watch-config`) loads every version
whole, but lends each load what the previous one validated (`ValidatedPaths`): a change of
one Route among 10,000 validates its own path entries, not 20,000.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import marshal
import os
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml
from pydantic import SecretStr, TypeAdapter, ValidationError

from wardgate.gateway.config import (
    ConfigError,
    GatewayConfig,
    PathEntry,
    parse_config,
    secret_name,
)

PATH_ENTRY_ADAPTER: Final = TypeAdapter(PathEntry)
MARSHAL_VERSION: Final = 2
"""Without references between objects: equal entries are written the same."""


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    """A validated config with its secret values, ready to serve."""

    config: GatewayConfig
    secrets: Mapping[str, SecretStr] = field(default_factory=dict)
    source: str = "<memory>"
    config_hash: str = ""
    """What the config is served under: the operator's hash of it, else `document_hash`."""

    def secret(self, reference: str) -> str:
        """The value of a `$secret.NAME` reference (resolved at load time)."""
        return self.secrets[secret_name(reference)].get_secret_value()


@dataclass(frozen=True, slots=True)
class SecretSource:
    """Where secret values come from: a directory with one file per key (a mounted
    Kubernetes Secret), then environment variables of the same name."""

    directory: Path | None = None
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))

    def lookup(self, name: str) -> str | None:
        if self.directory is not None:
            candidate = self.directory / name
            # A mounted Secret's keys are symlinks into a `..data` folder: follow them, but
            # never outside names (NAME cannot hold `/`, see SECRET_NAME_PATTERN).
            if candidate.is_file():
                return candidate.read_text(encoding="utf-8").rstrip("\r\n")
        return self.environ.get(name)


def resolve_secrets(config: GatewayConfig, source: SecretSource) -> dict[str, SecretStr]:
    """Look up every reference; a missing one is an error that names it, never a value."""
    resolved: dict[str, SecretStr] = {}
    problems: list[str] = []
    for where, reference in config.secret_references():
        name = secret_name(reference)
        value = source.lookup(name)
        if value is None:
            places = f"file {source.directory / name} or " if source.directory else ""
            problems.append(
                f"{where}: secret reference {reference} is not set (looked for {places}"
                f"environment variable {name})"
            )
        elif value == "":
            problems.append(f"{where}: secret reference {reference} is empty")
        else:
            resolved[name] = SecretStr(value)
    if problems:
        raise ConfigError(problems)
    return resolved


def read_document(path: Path) -> object:
    """Read a JSON or YAML file (YAML for `.yaml`/`.yml`; gzip-compressed with `.gz` after
    either, as the operator stores it)."""
    return parse_document(path.read_bytes(), path.name)


def parse_document(data: bytes, name: str) -> object:
    """Decode a JSON or YAML document named `name` (its suffixes say the format)."""
    inner = name
    try:
        if name.endswith(".gz"):
            inner = name[: -len(".gz")]
            data = gzip.decompress(data)
        text = data.decode("utf-8")
        if inner.endswith((".yaml", ".yml")):
            return yaml.safe_load(text)
        return json.loads(text)
    except (ValueError, yaml.YAMLError, OSError, EOFError, zlib.error) as exc:
        raise ConfigError([f"(document): cannot parse {name}: {exc}"]) from None
    except RecursionError:
        raise ConfigError([f"(document): cannot parse {name}: nested too deeply"]) from None


class ValidatedPaths:
    """The validated path entries of the last config loaded, by the text of each (the
    decoded entry written by `marshal`): the next load validates only the entries whose
    text is new, and takes the others' models as they are (the same objects, so that the
    route table can tell them unchanged too).

    Why this gives what a full load gives: an entry's model depends on its own text only
    (no validator of `PathEntry` reads anything else), and every check across entries or
    against the rest of the config (`GatewayConfig.check_references`: names, duplicates,
    hostnames) runs on the whole config each time. A config that fails anywhere is
    validated again whole, from the document, so that its problems are exactly a full
    load's. Holds the entries of one config only (each config that validates replaces
    them; one that does not leaves them as they were), so memory follows the config's
    size, not the number of changes."""

    def __init__(self) -> None:
        self._by_text: dict[bytes, PathEntry] = {}

    def __len__(self) -> int:
        return len(self._by_text)

    def parse(self, data: object) -> GatewayConfig:
        """`parse_config(data)`, reusing the entries validated last time (raises
        `ConfigError` as `parse_config` does)."""
        if not isinstance(data, dict) or not isinstance(data.get("paths"), list):
            return parse_config(data)
        paths: list[Any] = data["paths"]
        known = self._by_text
        entries: dict[bytes, PathEntry] = {}
        models: list[PathEntry] = []
        try:
            for raw in paths:
                # Tells apart every value a JSON document decodes to (`1`, `1.0`, `True`,
                # `"1"`; string and integer keys), and is quick; what marshal cannot write
                # (a YAML date) is a ValueError: loaded whole below.
                text = marshal.dumps(raw, MARSHAL_VERSION)
                entry = known.get(text)
                if entry is None:
                    entry = entries.get(text)
                if entry is None:
                    entry = PATH_ENTRY_ADAPTER.validate_python(raw)
                entries[text] = entry
                models.append(entry)
            # The rest of the document validated without its paths, then the paths put in
            # as validated and the config's checks across them run (the model validator
            # `parse_config` would run last; a problem it finds is reported below).
            shell = parse_config({**data, "paths": []})
            config = shell.model_copy(update={"paths": models})
            config.check_references()
        except (ValidationError, ConfigError, TypeError, ValueError):
            # Whole, from the document: the problems exactly as a full load reports them.
            config = parse_config(data)
            self._by_text = {}
            return config
        self._by_text = entries
        return config


def load_config(
    data: object,
    source: SecretSource,
    origin: str = "<memory>",
    config_hash: str | None = None,
    paths: ValidatedPaths | None = None,
) -> LoadedConfig:
    """Validate a decoded document and resolve its secrets. `paths`: the entries a previous
    load validated, reused where unchanged (see `ValidatedPaths`)."""
    config = paths.parse(data) if paths is not None else parse_config(data)
    return LoadedConfig(
        config=config,
        secrets=resolve_secrets(config, source),
        source=origin,
        config_hash=config_hash or document_hash(data),
    )


def load_config_file(path: Path, source: SecretSource) -> LoadedConfig:
    """Read, validate and resolve a config file."""
    try:
        data = read_document(path)
    except OSError as exc:
        raise ConfigError([f"(document): cannot read {path}: {exc.strerror}"]) from None
    return load_config(data, source, origin=str(path))


def document_hash(document: object) -> str:
    """The hash a config file is served under (the operator's hash when it has one)."""
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
