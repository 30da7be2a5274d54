"""What one gateway process shares, created first, then the services built on it.

The shape of gafaelfawr's `factory.py`: a `ProcessContext` is created inside the running
event loop (an aiohttp client session must be) and holds the clients every config of the
process shares; a config's authorizers are then built with those real objects passed in.
Commands that only check a config (`wardgate validate`, the supervisor's check) build no
context: `Authorizers.build(loaded)` without a session prepares every key and fetches
nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from wardgate.gateway.authorizers import Authorizers
from wardgate.gateway.jwks import AuthMetrics
from wardgate.gateway.loading import LoadedConfig
from wardgate.gateway.proxy import create_client_session, create_upstream_pools
from wardgate.gateway.upstream import UpstreamPools


@dataclass(frozen=True, slots=True)
class ProcessContext:
    """The clients of one gateway process, shared by every config it serves."""

    session: aiohttp.ClientSession
    """The process's one client session: the authorizers fetch JWKS with it."""
    upstreams: UpstreamPools
    """The upstream keep-alive pools, shared by every config the process serves."""

    @classmethod
    def create(cls) -> ProcessContext:
        """The process's clients; call inside the running event loop."""
        asyncio.get_running_loop()  # raises outside a loop, where a session must not be made
        return cls(session=create_client_session(), upstreams=create_upstream_pools())

    def authorizers(
        self,
        loaded: LoadedConfig,
        metrics: AuthMetrics | None = None,
        clock: Callable[[], float] = time.time,
        previous: Authorizers | None = None,
    ) -> Authorizers:
        """The runtime authorizers of `loaded`, fetching with this process's session
        (raises `ConfigError` as `Authorizers.build` does); `previous`: those of the config
        serving before, taken over where unchanged."""
        return Authorizers.build(loaded, self.session, metrics, clock, previous)

    async def close(self) -> None:
        self.upstreams.close()
        await self.session.close()
