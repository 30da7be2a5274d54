"""CORS as a browser sees it: headless Chromium (Debian's `chromium` and `chromium-driver`)
loads a page from a second loopback origin, whose script calls the gateway with `fetch`.

For the allowed origin, every answer is readable by the page, errors included (a mistyped
path's 404 after its preflight, 400, 401 with its `WWW-Authenticate`, 405, 413), with
`X-Request-Id` exposed and in credentials mode; for an origin the policy does not allow,
the same calls are opaque network errors (`TypeError: Failed to fetch`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.support.gateway import (
    CountingUpstream,
    RunningGateway,
    bearer,
    seed_document,
    start_gateway,
    stop_gateway,
)
from tests.support.ports import free_port
from wardgate.gateway.errors import BY_CODE

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PAGE = b"<!doctype html><html><head><title>app</title></head><body>app</body></html>"

# Each call: the page's `fetch` options; the result the page reads back.
SCRIPT = """
const [base, calls, done] = arguments;
const results = [];
for (const call of calls) {
  try {
    const response = await fetch(base + call.path, call.init);
    const text = await response.text();
    results.push({
      status: response.status,
      body: text,
      requestId: response.headers.get("X-Request-Id"),
      challenge: response.headers.get("WWW-Authenticate"),
    });
  } catch (error) {
    results.push({error: String(error)});
  }
}
done(results);
"""


@pytest.fixture
async def page_server() -> AsyncIterator[int]:
    """The app's page, served on its own loopback port (another origin than the gateway)."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(body=PAGE, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield port
    await runner.cleanup()


@pytest.fixture
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert CHROMIUM.exists(), "hack/install-system-deps.sh installs chromium"
    assert CHROMEDRIVER.exists(), "hack/install-system-deps.sh installs chromium-driver"
    profile = tempfile.mkdtemp(prefix="wardgate-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    # The driver is given: Selenium must not look for (or download) one.
    os.environ["SE_OFFLINE"] = "true"
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


async def _gateway(upstream: CountingUpstream, origin: str) -> RunningGateway:
    document = seed_document(upstream.url, limits={"maxBodyBytes": 100})
    document["cors"] = {"allowOrigins": [origin], "allowCredentials": True}
    document["paths"].append(
        {
            "method": "POST",
            "path": "/public/upload",
            "integration": {"type": "http_proxy", "server": "orders"},
        }
    )
    return await start_gateway(document)


def _calls() -> list[dict[str, Any]]:
    token = bearer()["Authorization"]
    return [
        # A header that needs a preflight, to a path no route matches.
        {"path": "/privat/orders", "init": {"headers": {"Authorization": token}}},
        {"path": "/private/orders", "init": {}},
        {"path": "/private%2forders", "init": {}},
        {"path": "/private/orders", "init": {"method": "POST", "body": "x"}},
        {"path": "/public/upload", "init": {"method": "POST", "body": "x" * 1000}},
        {
            "path": "/private/orders",
            "init": {"headers": {"Authorization": token}, "credentials": "include"},
        },
    ]


EXPECTED = [(404, "no_route"), (401, "missing_token"), (400, "invalid_path"),
            (405, "method_not_allowed"), (413, "body_too_large"), (200, None)]  # fmt: skip


async def test_a_page_on_an_allowed_origin_reads_every_answer(
    browser: Any, page_server: int, upstream: CountingUpstream
) -> None:
    import asyncio

    origin = f"http://127.0.0.1:{page_server}"
    gateway = await _gateway(upstream, origin)
    try:
        await asyncio.to_thread(browser.get, origin + "/")
        results = await asyncio.to_thread(
            browser.execute_async_script, SCRIPT, gateway.url, _calls()
        )
    finally:
        await stop_gateway(gateway)
    for result, (status, code) in zip(results, EXPECTED, strict=True):
        assert "error" not in result, (status, result)
        assert result["status"] == status, result
        assert result["requestId"], result
        if code is not None:
            assert json.loads(result["body"])["error"]["code"] == code
            assert BY_CODE[code].status == status
    assert "insufficient_scope" not in results[1]["challenge"]
    assert 'error="invalid_request"' in results[1]["challenge"]


async def test_a_page_on_another_origin_gets_opaque_errors(
    browser: Any, page_server: int, upstream: CountingUpstream
) -> None:
    import asyncio

    # The policy allows some other origin, not the page's.
    gateway = await _gateway(upstream, "https://app.example.com")
    try:
        await asyncio.to_thread(browser.get, f"http://127.0.0.1:{page_server}/")
        results = await asyncio.to_thread(
            browser.execute_async_script, SCRIPT, gateway.url, _calls()
        )
    finally:
        await stop_gateway(gateway)
    for result in results:
        assert result.get("error", "").startswith("TypeError"), result
