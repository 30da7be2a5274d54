"""Config validation and loading: the seed example, dotted-path problems, secrets, and the
`validate`/`schema` commands."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from wardgate.cli import main
from wardgate.gateway.config import ConfigError, HttpProxyIntegration, parse_config
from wardgate.gateway.embedded import SEED_CONFIG
from wardgate.gateway.loading import SecretSource, load_config, load_config_file
from wardgate.gateway.sources import apply_server_overrides

SEED: dict[str, Any] = copy.deepcopy(SEED_CONFIG)


def problems(document: object) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(document)
    return caught.value.problems


def with_orders(document: dict[str, Any]) -> dict[str, Any]:
    return {**document, "servers": {"orders": "http://127.0.0.1:9000"}}


def test_seed_example_verbatim_needs_only_the_orders_server() -> None:
    assert problems(SEED) == [
        "paths.1.integration.server: no server named 'orders' (there are no servers)"
    ]
    config = parse_config(with_orders(SEED))
    assert config.default_authorizer_name() == "default"
    assert config.paths[0].effective_integration().body == {"status": "ok"}
    integration = config.paths[1].integration
    assert isinstance(integration, HttpProxyIntegration)
    assert integration.server == "orders"
    assert config.servers["orders"].url == "http://127.0.0.1:9000"


def test_server_override_defines_and_keeps_timeouts() -> None:
    document = apply_server_overrides(SEED, ["orders=http://127.0.0.1:9001"])
    assert parse_config(document).servers["orders"].url == "http://127.0.0.1:9001"
    timed = {**SEED, "servers": {"orders": {"url": "http://a:1", "readTimeout": 3}}}
    config = parse_config(apply_server_overrides(timed, ["orders=http://b:2"]))
    assert config.servers["orders"].url == "http://b:2"
    assert config.servers["orders"].read_timeout == 3
    with pytest.raises(ValueError, match="NAME=URL"):
        apply_server_overrides(SEED, ["orders"])


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda d: d["authorizer"].update(algorithm="HS999"),
            "authorizer.algorithm: Input should be",
        ),
        (lambda d: d["authorizer"].update(colour="blue"), "authorizer.colour: unknown field"),
        (
            lambda d: d["authorizer"].update(secret="plain-text-secret"),
            "authorizer.secret: must be a secret reference",
        ),
        (lambda d: d["paths"][0].update(method="get"), "paths.0.method: 'get' is not"),
        (
            lambda d: d["paths"][1]["integration"].update(type="lambda"),
            "paths.1.integration: Input tag 'lambda'",
        ),
        (
            lambda d: d["paths"][1].update(auth={"authorizer": "missing"}),
            "paths.1.auth.authorizer: no authorizer named 'missing'",
        ),
        (
            lambda d: d["paths"][0].update(integration={"type": "static"}),
            "paths.0: give exactly one of `response` or `integration`",
        ),
        (
            lambda d: d.update(servers={"orders": "ftp://x"}),
            "servers.orders",
        ),
        (
            lambda d: d.update(cors={"allowOrigins": ["*"], "allowCredentials": True}),
            "cors: `allowCredentials` cannot be used with the `*` origin",
        ),
        (
            lambda d: d.update(limits={"maxHeaders": 2}),
            "limits.maxHeaders: Input should be greater than or equal to 8",
        ),
        (
            lambda d: d["paths"].append(
                {"method": "GET", "path": "/health", "response": {"again": True}}
            ),
            "paths.2: GET /health duplicates paths.0",
        ),
        (
            lambda d: d.update(limits={"keepAliveTimeoutSeconds": 0}),
            "limits.keepAliveTimeoutSeconds: Input should be greater than 0",
        ),
        (
            lambda d: d.update(limits={"keepAliveTimeoutSeconds": 7200}),
            "limits.keepAliveTimeoutSeconds: Input should be less than or equal to 3600",
        ),
    ],
)
def test_problems_are_dotted_paths(change: Any, expected: str) -> None:
    document = with_orders(copy.deepcopy(SEED))
    change(document)
    found = problems(document)
    assert any(p.startswith(expected) for p in found), found


def test_idle_keep_alive_connections_close_after_75_seconds_by_default() -> None:
    """Above the 60 s idle timeout of most load balancers (a shorter one is tested on the
    traffic server)."""
    config = parse_config(with_orders(copy.deepcopy(SEED)))
    assert config.limits.keep_alive_timeout_seconds == 75.0
    changed = with_orders(copy.deepcopy(SEED))
    changed["limits"] = {"keepAliveTimeoutSeconds": 620}
    assert parse_config(changed).limits.keep_alive_timeout_seconds == 620.0


def test_duplicate_parameter_patterns() -> None:
    document = with_orders(copy.deepcopy(SEED))
    document["paths"] += [
        {"method": "GET", "path": "/u/{id}", "response": 1},
        {"method": ["POST", "GET"], "path": "/u/{name}", "response": 2},
    ]
    assert problems(document) == ["paths.3: GET /u/{name} duplicates paths.2"]


def test_jwt_needs_one_key_source() -> None:
    document = with_orders(copy.deepcopy(SEED))
    document["authorizer"]["jwksUri"] = "https://issuer.example.com/jwks.json"
    (problem,) = problems(document)
    assert problem.startswith("authorizer: exactly one key source")


def test_secrets_from_directory_then_environment(tmp_path: Path) -> None:
    (tmp_path / "JWT_SECRET").write_text("from-the-directory-0123456789abcdef\n")
    source = SecretSource(directory=tmp_path, environ={"JWT_SECRET": "from-env"})
    loaded = load_config(with_orders(SEED), source)
    assert loaded.secret("$secret.JWT_SECRET") == "from-the-directory-0123456789abcdef"
    from_env = load_config(with_orders(SEED), SecretSource(environ={"JWT_SECRET": "env-value"}))
    assert from_env.secret("$secret.JWT_SECRET") == "env-value"
    assert "env-value" not in repr(from_env)


def test_missing_secret_names_the_reference_never_a_value(tmp_path: Path) -> None:
    source = SecretSource(directory=tmp_path, environ={"OTHER": "do-not-print-me"})
    with pytest.raises(ConfigError) as caught:
        load_config(with_orders(SEED), source)
    (problem,) = caught.value.problems
    assert problem.startswith("authorizer.secret: secret reference $secret.JWT_SECRET is not set")
    assert "do-not-print-me" not in str(caught.value)
    empty = SecretSource(environ={"JWT_SECRET": ""})
    with pytest.raises(ConfigError, match=r"\$secret.JWT_SECRET is empty"):
        load_config(with_orders(SEED), empty)


def test_yaml_and_unreadable_files(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("servers: {orders: 'http://127.0.0.1:9000'}\npaths: []\n")
    assert load_config_file(path, SecretSource(environ={})).config.paths == []
    with pytest.raises(ConfigError, match="cannot read"):
        load_config_file(tmp_path / "absent.json", SecretSource(environ={}))


def test_validate_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JWT_SECRET", raising=False)
    config = tmp_path / "gateway.json"
    config.write_text(json.dumps(SEED))
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "JWT_SECRET").write_text("a-validate-secret-0123456789abcdef-xyz")

    assert main(["validate", str(config), "--secrets-dir", str(secrets)]) == 1
    err = capsys.readouterr().err
    assert "paths.1.integration.server: no server named 'orders'" in err

    args = ["validate", str(config), "--secrets-dir", str(secrets)]
    assert main([*args, "--server", "orders=http://127.0.0.1:9000"]) == 0
    assert "valid (2 paths)" in capsys.readouterr().out

    assert main(["validate", str(config), "--server", "orders=http://127.0.0.1:9000"]) == 1
    err = capsys.readouterr().err
    assert "$secret.JWT_SECRET is not set" in err
    assert "a-validate-secret" not in err

    bad_pattern = json.loads(json.dumps(SEED))
    bad_pattern["paths"][0]["path"] = "/a/*/b"
    config.write_text(json.dumps(bad_pattern))
    assert main([*args, "--server", "orders=http://127.0.0.1:9000"]) == 1
    assert "paths.0.path:" in capsys.readouterr().err

    assert main(["validate", str(tmp_path / "absent.json")]) == 2
    config.write_text("{not json")
    assert main(["validate", str(config)]) == 1


def test_schema_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert "paths" in schema["properties"]
    assert "defaultAuthorizer" in schema["properties"]


def test_validation_reports_schema_and_references_in_one_pass() -> None:
    document = {
        "authorizers": {"partners": {"type": "jwt", "secret": "$secret.X", "scope": 1}},
        "servers": {"orders": "http://127.0.0.1:9", "billing": "http://127.0.0.1:8"},
        "paths": [
            {
                "method": "GET",
                "path": "/a",
                "auth": {"authorizer": "partner", "scope": ["read:orders"]},
                "integration": {"type": "http_proxy", "server": "ordres"},
            },
            {"method": "GET", "path": "/b", "respons": {"ok": True}},
        ],
        "limit": {},
    }
    with pytest.raises(ConfigError) as info:
        parse_config(document)
    found = info.value.problems
    assert "paths.0.auth.scope: unknown field; did you mean `scopes`?" in found
    assert "paths.1.respons: unknown field; did you mean `response`?" in found
    assert "limit: unknown field; did you mean `limits`?" in found
    assert (
        "paths.0.auth.authorizer: no authorizer named 'partner'; did you mean 'partners'? "
        "(authorizers: partners)"
    ) in found
    assert (
        "paths.0.integration.server: no server named 'ordres'; did you mean 'orders'? "
        "(servers: billing, orders)"
    ) in found
    assert any(p.startswith("authorizers.partners.scope: unknown field") for p in found)


def test_an_unknown_name_lists_the_names_that_exist() -> None:
    document = {
        "authorizers": {"a0": {"type": "jwt", "secret": "$secret.X"}},
        "defaultAuthorizer": "zzz",
        "paths": [{"method": "GET", "path": "/a", "auth": True, "response": 1}],
    }
    with pytest.raises(ConfigError) as info:
        parse_config(document)
    assert info.value.problems == ["defaultAuthorizer: no authorizer named 'zzz' (authorizers: a0)"]


def static(**integration: Any) -> dict[str, Any]:
    return {
        "paths": [{"method": "GET", "path": "/a", "integration": {"type": "static", **integration}}]
    }


def cors(**policy: Any) -> dict[str, Any]:
    document = static()
    document["cors"] = {"allowOrigins": ["https://app.example.com"], **policy}
    return document


def forwarded(header: str) -> dict[str, Any]:
    return {
        **static(),
        "authorizer": {
            "type": "jwt",
            "secret": "$secret.S",
            "forwardClaims": [{"claim": "c", "header": header}],
        },
    }


# Every way a config could write a header line of its choosing, or reframe a message: a
# control character in a value (CR/LF split the response, NUL and others are refused by
# peers), a name that is not a token, a framing or hop-by-hop field, a claim forwarded in a
# field the gateway sets, an interim status or a body where none may be.
@pytest.mark.parametrize(
    ("document", "where", "reason"),
    [
        *(
            (static(headers={"X-A": f"1{c}Set-Cookie: s=evil"}), "headers.X-A", "control")
            for c in ("\r\n", "\n", "\r", "\x00", "\x0b", "\x7f")
        ),
        *(
            (static(headers={name: "1"}), "integration: headers", "not a header name")
            for name in ("X A", "X-A:", "X\r\nSet-Cookie", "", "Ä")
        ),
        *(
            (static(headers={name: "x"}), "integration: headers", "frames the message")
            for name in ("Content-Length", "transfer-encoding", "Connection", "Upgrade", "TE")
        ),
        (static(status=101), "integration.status", "greater than or equal to 200"),
        (static(status=100), "integration.status", "greater than or equal to 200"),
        (static(status=204, body="x"), "integration", "has no body"),
        (static(status=304, body={"a": 1}), "integration", "has no body"),
        (cors(allowMethods=["GET\r\nX: y"]), "cors.allowMethods.0", "method"),
        (cors(allowHeaders=["a b"]), "cors.allowHeaders.0", "not a header name"),
        (cors(exposeHeaders=["X\r\nSet-Cookie: a=b"]), "cors.exposeHeaders.0", "header name"),
        (cors(allowOrigins=["null"], allowCredentials=True), "cors", "`null` origin"),
        *(
            (forwarded(name), "forwardClaims.0.header", "frames the message")
            for name in ("Transfer-Encoding", "Content-Length", "Connection", "Keep-Alive")
        ),
        *(
            (forwarded(name), "forwardClaims.0.header", "set or removed by the gateway")
            for name in ("Host", "X-Forwarded-For", "X-Request-Id", "X-HTTP-Method-Override")
        ),
    ],
)
def test_a_config_cannot_write_a_header_line_of_its_choosing(
    document: dict[str, Any], where: str, reason: str
) -> None:
    found = problems(document)
    assert any(where in problem and reason in problem for problem in found), found


def test_ordinary_written_headers_are_accepted() -> None:
    parse_config(
        static(status=204, headers={"Cache-Control": "no-store", "X-Tab": "a\tb", "ETag": '"1"'})
    )
    parse_config(cors(allowHeaders=["*", "x-api-key"], exposeHeaders=["ETag"]))
    parse_config(forwarded("X-Tenant-Id"))


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://orders:abc", "port must be a number"),
        ("http://orders:99999", "port must be a number"),
        ("http://orders:0", "port must be a number"),
        ("http://svc:S3cr3tPassw0rd@orders", "user info"),
        ("http://user@orders", "user info"),
        ("http://orders/a b", "spaces or control characters"),
        ("http://orders/a\tb", "spaces or control characters"),
    ],
)
def test_a_server_url_that_cannot_be_used_as_written_is_refused(url: str, reason: str) -> None:
    found = problems({"servers": {"orders": url}, "paths": []})
    assert any(p.startswith("servers.orders") and reason in p for p in found), found
    assert all("S3cr3t" not in p for p in found)


def test_deep_patterns_and_documents_are_refused_not_crashed(tmp_path: Path) -> None:
    deep = "/a" * 129
    found = problems({"paths": [{"method": "GET", "path": deep, "response": 1}]})
    assert found == ["paths.0.path: 129 segments: at most 128"]
    parse_config({"paths": [{"method": "GET", "path": "/a" * 128, "response": 1}]})
    nested = tmp_path / "nested.json"
    nested.write_text("[" * 100_000 + "]" * 100_000)
    assert main(["validate", str(nested)]) == 1
