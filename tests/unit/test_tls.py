"""The TLS listener's pure parts: what is wrong with a certificate (never quoting the key),
selection by server name, and the 421 rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from tests.support.certificates import Authority, Pair, new_authority
from wardgate.gateway.config import ConfigError, parse_config
from wardgate.gateway.tls import (
    CertificateError,
    CertificateSet,
    CertificateSpec,
    check_certificate,
    name_matches,
)
from wardgate.operator.inputs import config_map_from_body
from wardgate.operator.render import CaBundleInfo


@pytest.fixture(scope="module")
def authority() -> Authority:
    return new_authority()


@pytest.fixture(scope="module")
def pair(authority: Authority) -> Pair:
    return authority.issue("api.example.com", "www.example.com")


def test_a_good_pair_is_summarised(pair: Pair) -> None:
    summary = check_certificate(pair.chain_pem, pair.key_pem, datetime.now(UTC))
    assert summary.names == ("api.example.com", "www.example.com")
    assert summary.fingerprint == pair.fingerprint
    assert "api.example.com" in summary.describe()


def _reason(chain: str, key: str, now: datetime | None = None) -> str:
    with pytest.raises(CertificateError) as refused:
        check_certificate(chain, key, now or datetime.now(UTC))
    return str(refused.value)


def test_what_is_wrong_is_named_and_the_key_never_quoted(authority: Authority, pair: Pair) -> None:
    other = authority.issue("api.example.com")
    encrypted = serialization.load_pem_private_key(pair.key_pem.encode(), None).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pass"),
    )
    garbled = pair.chain_pem.replace("MII", "@@@", 1)
    now = datetime.now(UTC)
    cases = {
        "tls.crt is not PEM: it has no CERTIFICATE block": ("hello", pair.key_pem),
        "tls.crt is not PEM: a CERTIFICATE block does not decode": (garbled, pair.key_pem),
        "tls.key is not PEM: it has no PRIVATE KEY block": (pair.chain_pem, "nope"),
        "tls.key is encrypted": (pair.chain_pem, encrypted.decode()),
        "tls.key does not match the certificate in tls.crt": (pair.chain_pem, other.key_pem),
        "tls.crt expired on": (pair.chain_pem, pair.key_pem, now + timedelta(days=31)),
        "tls.crt is not yet valid": (pair.chain_pem, pair.key_pem, now - timedelta(days=1)),
    }
    for expected, (chain, key, *at) in cases.items():
        reason = _reason(chain, key, *at)
        assert reason.startswith(expected), reason
        assert "PRIVATE KEY-----" not in reason
        assert key.strip().splitlines()[1 if "\n" in key.strip() else 0] not in reason


def test_a_key_block_that_does_not_decode_is_not_usable(pair: Pair) -> None:
    broken = pair.key_pem.replace("M", "!", 3)
    reason = _reason(pair.chain_pem, broken)
    assert reason.startswith("tls.key is not a usable PEM private key")


def _specs(authority: Authority) -> tuple[list[CertificateSpec], list[Pair]]:
    pairs = [
        authority.issue("api.example.com"),
        authority.issue("*.apps.example.com"),
        authority.issue("a.apps.example.com"),
    ]
    specs = [
        CertificateSpec(f"c{index}", p.chain_pem, p.key_pem, where=f"tls.certificates.{index}")
        for index, p in enumerate(pairs)
    ]
    return specs, pairs


def test_selection_exact_then_wildcard_then_default(authority: Authority) -> None:
    specs, _ = _specs(authority)
    certificates, fatal, kept = CertificateSet.build(specs, "1.2", datetime.now(UTC))
    assert (fatal, kept) == ([], [])

    def chosen(name: str | None) -> tuple[str | None, bool]:
        certificate, matched = certificates.select(name)
        return (certificate.label if certificate else None, matched)

    assert chosen("api.example.com") == ("c0", True)
    assert chosen("a.apps.example.com") == ("c2", True)  # exact before the wildcard
    assert chosen("b.apps.example.com") == ("c1", True)
    assert chosen("x.b.apps.example.com") == ("c0", False)  # a wildcard covers one label
    assert chosen("apps.example.com") == ("c0", False)
    assert chosen(None) == ("c0", False)
    assert certificates.session("API.Example.COM.").server_name == "api.example.com"


def test_the_421_rule(authority: Authority) -> None:
    specs, _ = _specs(authority)
    certificates, _, _ = CertificateSet.build(specs, "1.2", datetime.now(UTC))
    wildcard = certificates.session("b.apps.example.com")
    assert wildcard.host_allowed("b.apps.example.com")
    assert wildcard.host_allowed("c.apps.example.com")  # another name of the same certificate
    assert not wildcard.host_allowed("api.example.com")
    assert not wildcard.host_allowed("x.c.apps.example.com")
    fallback = certificates.session("unknown.example.org")
    assert fallback.host_allowed("unknown.example.org")
    assert not fallback.host_allowed("api.example.com")  # the default's names do not count
    assert certificates.session(None).host_allowed("anything.example.net")


def test_a_failing_certificate_keeps_its_last_good_version(authority: Authority) -> None:
    specs, pairs = _specs(authority)
    first, _, _ = CertificateSet.build(specs, "1.2", datetime.now(UTC))
    broken = [
        CertificateSpec("c0", pairs[0].chain_pem, pairs[1].key_pem, where="tls.certificates.0"),
        *specs[1:],
    ]
    second, fatal, kept = CertificateSet.build(broken, "1.2", datetime.now(UTC), previous=first)
    assert fatal == []
    assert len(kept) == 1
    assert kept[0].startswith("tls.certificates.0 (c0): tls.key does not match")
    assert second.certificates[0] is first.certificates[0]
    # Unchanged certificates are not loaded again.
    assert second.certificates[1] is first.certificates[1]
    _, fatal, _ = CertificateSet.build(broken, "1.2", datetime.now(UTC))
    assert fatal == [
        "tls.certificates.0: tls.key does not match the certificate in tls.crt "
        "(subject CN=api.example.com)"
    ]


def test_config_validation_names_the_field() -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config(
            {
                "tls": {
                    "certificates": [
                        {"certificate": "-----BEGIN CERTIFICATE-----", "key": "$secret.k"},
                        {"certificate": "$secret.a", "key": "$secret.b", "name": "x"},
                        {"certificate": "$secret.c", "key": "$secret.d", "name": "x"},
                    ],
                    "minVersion": "1.1",
                },
                "servers": {"plain": {"url": "http://up", "caBundle": "$secret.ca"}},
            }
        )
    problems = "\n".join(refused.value.problems)
    assert "tls.certificates.0.certificate: must be a secret reference" in problems
    assert "tls.minVersion: Input should be '1.2' or '1.3'" in problems
    assert "servers.plain: `caBundle` applies to an `https://` URL only" in problems
    with pytest.raises(ConfigError) as duplicate:
        parse_config(
            {
                "tls": {
                    "certificates": [
                        {"certificate": "$secret.a", "key": "$secret.b", "name": "x"},
                        {"certificate": "$secret.c", "key": "$secret.d", "name": "x"},
                    ]
                }
            }
        )
    assert duplicate.value.problems == [
        "tls: certificates.1: the name 'x' is taken by certificates.0"
    ]


LABEL = st.from_regex(r"[a-z0-9]{1,6}", fullmatch=True)


@given(st.lists(LABEL, min_size=1, max_size=4), st.lists(LABEL, min_size=2, max_size=4))
def test_a_wildcard_covers_exactly_one_label(head: list[str], suffix: list[str]) -> None:
    pattern = "*." + ".".join(suffix)
    name = ".".join([*head, *suffix])
    assert name_matches(pattern, name) == (len(head) == 1)
    assert not name_matches(pattern, ".".join(suffix))


def test_a_key_of_another_curve_does_not_match(authority: Authority) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    pair = authority.issue("api.example.com")
    assert _reason(pair.chain_pem, pem).startswith("tls.key does not match")


def test_an_inline_ca_bundle_is_one_of_two_forms_and_for_https_only() -> None:
    pem = new_authority().pem
    config = parse_config({"servers": {"internal": {"url": "https://up", "caBundlePem": pem}}})
    assert config.servers["internal"].ca_bundle_pem == pem
    with pytest.raises(ConfigError) as refused:
        parse_config(
            {
                "servers": {
                    "both": {"url": "https://up", "caBundle": "$secret.ca", "caBundlePem": pem},
                    "plain": {"url": "http://up", "caBundlePem": pem},
                }
            }
        )
    problems = "\n".join(refused.value.problems)
    assert "servers.both: give at most one of `caBundle` or `caBundlePem`" in problems
    assert "servers.plain: `caBundle` applies to an `https://` URL only" in problems


def test_a_config_map_keeps_only_its_ca_bundles_text() -> None:
    pem = new_authority().pem
    info = config_map_from_body(
        {
            "data": {
                "ca.crt": pem,
                "settings.yaml": "level: debug",
                "broken.pem": "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----",
            },
            "binaryData": {"blob": "AAAA"},
        }
    )
    assert info["ca.crt"] == CaBundleInfo(pem=pem)
    assert info["settings.yaml"] == CaBundleInfo(problem="not PEM: it has no CERTIFICATE block")
    assert info["broken.pem"].pem is None
    assert (info["broken.pem"].problem or "").startswith("not usable CA certificates")
    assert info["blob"] == CaBundleInfo(problem="binary data, not PEM text")
