"""Helpers shared by the test suites: keys, tokens, a JWKS server."""
