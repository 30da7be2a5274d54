"""The embedded default config: what `wardgate gateway` serves without `--config`.

It is the seed example verbatim, plus `servers.orders` pointing at a small demo upstream
the gateway starts on another loopback port, and the demo secret
`JWT_SECRET=wardgate-demo-secret-change-me-0123456789` supplied through the secret source
(a real `JWT_SECRET` in the environment or the secrets directory wins). At startup the
gateway prints a `curl` for a 200 and one for a 401, with a freshly minted token.
"""

from __future__ import annotations

import copy
import json
import socket
import time
from typing import Any, Final

import jwt
from aiohttp import web

DEMO_SECRET_NAME: Final = "JWT_SECRET"
DEMO_SECRET: Final = "wardgate-demo-secret-change-me-0123456789"
DEMO_ISSUER: Final = "https://issuer.example.com"
DEMO_AUDIENCE: Final = "api-audience"
DEMO_SERVER: Final = "orders"

SEED_CONFIG: Final[dict[str, Any]] = {
    "authorizer": {
        "type": "jwt",
        "secret": "$secret.JWT_SECRET",
        "algorithm": "HS256",
        "issuer": "https://issuer.example.com",
        "audience": "api-audience",
    },
    "paths": [
        {"method": "GET", "path": "/health", "response": {"status": "ok"}},
        {
            "method": "GET",
            "path": "/private/orders",
            "auth": True,
            "integration": {"type": "http_proxy", "server": "orders"},
        },
    ],
}
"""The seed example of the gateway issue, verbatim."""

DEMO_ORDERS: Final = {
    "orders": [
        {"id": "ord_1001", "item": "keyboard", "quantity": 1},
        {"id": "ord_1002", "item": "monitor", "quantity": 2},
    ]
}


def demo_document(orders_url: str | None) -> dict[str, Any]:
    """The seed example with `servers.orders` (when a URL is given)."""
    document = copy.deepcopy(SEED_CONFIG)
    if orders_url is not None:
        document["servers"] = {DEMO_SERVER: orders_url}
    return document


def mint_demo_token(
    secret: str = DEMO_SECRET, lifetime: float = 3600.0, now: float | None = None
) -> str:
    """An HS256 token the demo config accepts."""
    issued = int(now if now is not None else time.time())
    claims = {
        "sub": "demo-user",
        "iss": DEMO_ISSUER,
        "aud": DEMO_AUDIENCE,
        "iat": issued,
        "exp": issued + int(lifetime),
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def bind_loopback() -> socket.socket:
    """A listening socket on a free loopback port, for the demo upstream."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def build_demo_upstream() -> web.Application:
    """The demo `orders` service: answers JSON and says what the gateway forwarded."""
    body = json.dumps(DEMO_ORDERS).encode()

    async def orders(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", orders)
    return app


def usage_banner(base_url: str, secret: str) -> str:
    """Ready-to-run commands for a first request that passes and one that is refused."""
    token = mint_demo_token(secret)
    if secret == DEMO_SECRET:
        note = (
            f"  the demo secret is {DEMO_SECRET_NAME}={DEMO_SECRET} (demo only: never use it "
            "for real traffic); the token above is valid for an hour"
        )
    else:
        note = f"  the token above is signed with the {DEMO_SECRET_NAME} you supplied"
    return "\n".join(
        [
            "wardgate: serving the embedded demo config (the seed example; see "
            "docs/configuration.md)",
            f"  public route:      curl -i {base_url}/health",
            f"  401 without token: curl -i {base_url}/private/orders",
            f"  200 with a token:  curl -i -H 'Authorization: Bearer {token}' "
            f"{base_url}/private/orders",
            note,
            "",
        ]
    )
