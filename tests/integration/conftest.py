"""Fixtures of the operator's integration tests (defined in `operator_support`)."""

from integration.operator_support import objects

__all__ = ["objects"]
