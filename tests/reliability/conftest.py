"""Fixtures of the reliability suites: a counting upstream and gateways in front of it, and
the operator tests' API access."""

from integration.operator_support import objects
from support.gateway_fixtures import gateway_factory, upstream

__all__ = ["gateway_factory", "objects", "upstream"]
