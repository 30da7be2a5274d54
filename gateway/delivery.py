"""How a config reaches a gateway from the operator: the layout of the Gateway's ConfigMap.

The operator writes it (`wardgate.operator.manifests`); a gateway started with
`--watch-config` reads it (`wardgate.gateway.kubesource`). The config itself is the one
schema of `wardgate.gateway.config`; secret values are never in the ConfigMap.
"""

from __future__ import annotations

from typing import Final

CONFIG_KEY: Final = "config.json.gz"
"""In `binaryData`: the rendered config, JSON, gzip-compressed. JSON of 20,000 paths is
about 2.2 MB; compressed, about 62 kB (docs/performance.md)."""
SECRET_ITEMS_KEY: Final = "secrets.json"
"""In `data`: the Secret keys the config's `$secret.NAME` references name, as a JSON list of
`{"secret", "key", "path"}` (`path` is NAME). Names only, never values."""
CONFIG_HASH_ANNOTATION: Final = "wardgate.io/config-hash"
"""On the ConfigMap: the hash of the config and of the secret values it uses."""
POD_NAME_VARIABLE: Final = "WARDGATE_POD_NAME"
"""In a gateway pod's environment (the downward API): its name, the key under which it
records the hash of the config it serves (`--report-served`)."""
