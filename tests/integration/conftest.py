"""Fixtures of the integration suites: the operator's (`tests.support.operator_fixtures`) and
a counting upstream for the in-process gateways (`tests.support.gateway_fixtures`)."""

from tests.support.gateway_fixtures import upstream
from tests.support.operator_fixtures import objects, operator

__all__ = ["objects", "operator", "upstream"]
