"""Fixtures of the reliability suites: a counting upstream and gateways in front of it, and
the operator tests' API access."""

from tests.support.gateway_fixtures import gateway_factory, upstream
from tests.support.operator_fixtures import objects

__all__ = ["gateway_factory", "objects", "upstream"]
