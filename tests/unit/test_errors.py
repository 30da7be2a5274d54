"""Reading the code back from an error body (the demo and the test clients do)."""

from __future__ import annotations

import pytest

from wardgate.gateway.errors import code_of_body


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'{"error":{"code":"missing_token","message":"m","requestId":"r"}}', "missing_token"),
        ('{"error": {"code": "no_route"}}', "no_route"),
        (b'{"path": "/private/orders"}', None),
        (b'{"error": "text"}', None),
        (b'{"error": {"code": 7}}', None),
        (b"[]", None),
        (b"not json", None),
        (b"\xff\xfe", None),
        (b"", None),
    ],
)
def test_code_of_body(body: bytes | str, code: str | None) -> None:
    assert code_of_body(body) == code
