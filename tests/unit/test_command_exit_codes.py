"""One exit-code policy for every command that loads a config (`wardgate.gateway.sources`):
whatever the source (a file, the embedded demo, a cluster), a config that cannot be read is
2, an invalid one is 1 for `gateway` and `validate` (their answer) and 2 for `explain`
(whose 1 means a refused request); bad arguments are 2."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from wardgate.cli import main
from wardgate.commands import serve as gateway_serving
from wardgate.gateway.embedded import SEED_CONFIG

REQUEST = ["GET", "/private/orders"]


def _invoke(command: str, source: list[str]) -> list[str]:
    """The arguments that run `command` on a config given by `source`."""
    if command == "validate":
        return ["validate", *source]
    if command == "explain":
        return ["explain", "--config", *source, *REQUEST]
    return ["gateway", "--config", *source, "--port", "0", "--admin-port", "-1"]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    invalid = json.loads(json.dumps(SEED_CONFIG))
    invalid["paths"][1]["auth"] = {"authorizer": "nope"}
    made = {
        "missing": tmp_path / "absent.json",
        "directory": tmp_path,
        "bad": tmp_path / "bad.json",
        "bad-yaml": tmp_path / "bad.yaml",
        "bad-gzip": tmp_path / "bad.json.gz",
        "invalid": tmp_path / "invalid.json",
    }
    made["bad"].write_text("{not json")
    made["bad-yaml"].write_text("paths: [unclosed")
    made["bad-gzip"].write_bytes(b"not gzip at all")
    made["invalid"].write_text(json.dumps(invalid))
    return made


EXPECTED = {
    # what:        gateway, validate, explain
    "missing": (2, 2, 2),
    "directory": (2, 2, 2),
    "bad": (1, 1, 2),
    "bad-yaml": (1, 1, 2),
    "bad-gzip": (1, 1, 2),
    "invalid": (1, 1, 2),
}


@pytest.mark.parametrize("what", sorted(EXPECTED))
@pytest.mark.parametrize("command", ["gateway", "validate", "explain"])
def test_a_config_file_that_cannot_be_used_has_one_exit_code_per_command(
    command: str,
    what: str,
    files: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JWT_SECRET", "an-exit-code-secret-0123456789-abcdefgh")
    expected = EXPECTED[what][["gateway", "validate", "explain"].index(command)]
    assert main(_invoke(command, [str(files[what])])) == expected
    captured = capsys.readouterr()
    assert str(files[what]) in captured.err
    assert captured.out == ""
    if what == "invalid":
        assert "paths.1.auth.authorizer: no authorizer named 'nope'" in captured.err
    if what in {"missing", "directory"}:
        assert "cannot read" in captured.err


def test_explain_says_its_exit_status_in_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["explain", "--help"])
    assert exited.value.code == 0
    assert "2 unusable config or arguments" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("command", ["gateway", "validate", "explain"])
def test_a_bad_server_override_is_a_bad_argument(
    command: str, files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*_invoke(command, [str(files["invalid"])]), "--server", "orders"])
    assert exited.value.code == 2
    assert "'orders': expected NAME=URL" in capsys.readouterr().err


def test_the_embedded_demo_made_invalid_by_an_override_is_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["gateway", "--server", "orders=ftp://x", "--admin-port", "-1"]) == 1
    assert "<embedded demo config>: invalid config" in capsys.readouterr().err


@pytest.fixture
def unreachable_kubeconfig(tmp_path: Path) -> Path:
    """A kubeconfig whose API server is a loopback port nothing listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    path = tmp_path / "kubeconfig"
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "gone",
                        "cluster": {
                            "server": f"https://127.0.0.1:{port}",
                            "insecure-skip-tls-verify": True,
                        },
                    }
                ],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": {"cluster": "gone", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    return path


def test_explain_with_an_unreachable_cluster_is_2(
    unreachable_kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["explain", "--gateway", "api", "-n", "shop", "--kubeconfig"]
    assert main([*args, str(unreachable_kubeconfig), *REQUEST]) == 2
    err = capsys.readouterr().err
    assert "configmap/wardgate-api-config -n shop: cannot read it" in err


def test_explain_with_an_unusable_kubeconfig_is_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("not: [a kubeconfig")
    args = ["explain", "--gateway", "api", "--kubeconfig", str(kubeconfig), *REQUEST]
    assert main(args) == 2
    assert f"kubeconfig {kubeconfig}: " in capsys.readouterr().err


def test_gateway_watching_an_unreachable_cluster_is_2(
    unreachable_kubeconfig: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # How long the gateway waits for its ConfigMap at start: shortened, a margin not a sync.
    monkeypatch.setattr(gateway_serving, "WATCH_START_SECONDS", 0.5)
    args = ["gateway", "--watch-config", "shop/wardgate-api-config", "--admin-port", "-1"]
    assert main([*args, "--kubeconfig", str(unreachable_kubeconfig)]) == 2
    assert "configmap/wardgate-api-config -n shop: cannot read it" in capsys.readouterr().err


def test_gateway_with_an_unusable_kubeconfig_is_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("not: [a kubeconfig")
    args = ["gateway", "--watch-config", "shop/x", "--kubeconfig", str(kubeconfig)]
    assert main(args) == 2
    assert f"kubeconfig {kubeconfig}: " in capsys.readouterr().err


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
DOCUMENTS = st.one_of(
    st.binary(max_size=64),
    JSON.map(lambda value: json.dumps(value).encode()),
    # Near the seed example: one of its fields replaced by any JSON value.
    st.tuples(st.sampled_from(["authorizer", "paths", "servers", "limits", "cors"]), JSON).map(
        lambda change: json.dumps({**SEED_CONFIG, change[0]: change[1]}).encode()
    ),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=DOCUMENTS)
@example(data=json.dumps(SEED_CONFIG).encode())
@example(data=b"{not json")
def test_explain_exits_2_exactly_when_validate_refuses_the_file(
    data: bytes,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whatever the file holds: `validate` answers 0 or 1 with the problems, `explain` exits
    2 for the same files and 0 or 1 (its answer) for the others, and neither raises."""
    monkeypatch.setenv("JWT_SECRET", "an-exit-code-secret-0123456789-abcdefgh")
    config = tmp_path / "config.json"
    config.write_bytes(data)
    validated = main(["validate", str(config), "--server", "orders=http://127.0.0.1:9"])
    assert validated in (0, 1)
    if validated == 1:
        assert "invalid config" in capsys.readouterr().err
    explained = main(
        ["explain", "--config", str(config), "--server", "orders=http://127.0.0.1:9", *REQUEST]
    )
    capsys.readouterr()
    assert explained in ((2,) if validated == 1 else (0, 1))
