"""Object bodies to render inputs: a Secret becomes sizes and digests, never its values."""

from __future__ import annotations

import base64

from wardgate.operator.inputs import key_info, secret_from_body


def test_secret_metadata_never_holds_the_value() -> None:
    info = secret_from_body(
        {"data": {"A": base64.b64encode(b"value\n").decode()}, "stringData": {"B": ""}}
    )
    assert info.keys["A"].size == 5  # the gateway strips the trailing line break
    assert info.keys["B"].size == 0
    assert "value" not in repr(info)
    assert not key_info(b"\xff\xfe").utf8
