"""Fixtures of the security suites: a counting upstream and gateways in front of it."""

from tests.support.gateway_fixtures import gateway_factory, upstream

__all__ = ["gateway_factory", "upstream"]
