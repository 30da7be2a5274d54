"""TLS on the traffic port: certificates checked, selected by SNI, replaced between handshakes.

Certificates come as PEM text: a chain (leaf first) and its private key, the `tls.crt` and
`tls.key` of a Kubernetes TLS Secret as cert-manager writes them. `check_certificate` says
what is wrong with a pair (not PEM, an encrypted key, a key that does not match, expired, not
yet valid) without ever quoting the key; the operator runs the same check on the Secrets it
reads (status reason `InvalidCertificate`).

Selection by the ClientHello's server name (SNI), as nginx and Envoy do: a certificate's
names are its `hostnames` when the config lists them, else the DNS names of its
subjectAltName. An exact name wins, then a wildcard `*.example.com` for a name one label
below `example.com` (a client accepts a wildcard certificate for one label only, RFC 6125
section 6.4.3), then the first certificate listed (the default, also for clients that send
no SNI).

Rotation: the listening socket's context never changes; its SNI callback hands each new
handshake the context of the serving config's certificate, so a new config (or a rotated
Secret) applies from the next handshake on, and connections already open keep theirs. A
certificate that fails its check while an earlier version of it serves keeps serving that
version (`CertificateSet.build` returns why, and the gateway logs it); one with no earlier
version makes the config invalid.

Misdirected requests (421, `check_misdirected`): on a connection whose ClientHello named a
server, a request's host must be that name, or a name of the certificate the handshake
selected for it (HTTP/2-style connection reuse within one certificate). A client that sent
no SNI (an IP address) is not checked.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import ssl
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID

TLS_VERSIONS: Final = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
# TLS 1.2 suites with forward secrecy and an AEAD (Mozilla's "intermediate" profile); TLS 1.3
# suites are OpenSSL's, all of them AEAD.
TLS12_CIPHERS: Final = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)
ALPN: Final = ["http/1.1"]
TLS_SESSION_ATTRIBUTE: Final = "wardgate_tls"
"""Set on each server-side `ssl.SSLObject` by the SNI callback: its `TlsSession`."""


class CertificateError(ValueError):
    """A certificate and key that cannot serve: the reason, never the key."""


@dataclass(frozen=True, slots=True)
class CertificateSummary:
    """What may be shown of a certificate: its subject, names, validity and fingerprint."""

    subject: str
    names: tuple[str, ...]
    """DNS names of its subjectAltName (lower case); its common name when it has none."""
    not_before: datetime
    not_after: datetime
    fingerprint: str
    """SHA-256 of the leaf certificate (DER), hex."""

    def describe(self) -> str:
        names = ", ".join(self.names) or self.subject
        until = f"{self.not_after:%Y-%m-%d %H:%M} UTC"
        return f"{names} (valid until {until}, sha256 {self.fingerprint[:16]})"


def _text(value: str | bytes) -> bytes:
    return value.encode("utf-8", "replace") if isinstance(value, str) else value


def check_certificate(
    chain_pem: str | bytes,
    key_pem: str | bytes,
    now: datetime,
    *,
    certificate_field: str = "tls.crt",
    key_field: str = "tls.key",
) -> CertificateSummary:
    """Check a PEM chain (leaf first) and its key; raises `CertificateError` saying what is
    wrong. `now` is the time the validity window is checked against."""
    chain_bytes = _text(chain_pem)
    if b"-----BEGIN CERTIFICATE-----" not in chain_bytes:
        raise CertificateError(f"{certificate_field} is not PEM: it has no CERTIFICATE block")
    try:
        chain = x509.load_pem_x509_certificates(chain_bytes)
    except ValueError:
        raise CertificateError(
            f"{certificate_field} is not PEM: a CERTIFICATE block does not decode"
        ) from None
    key_bytes = _text(key_pem)
    if b"PRIVATE KEY-----" not in key_bytes:
        raise CertificateError(f"{key_field} is not PEM: it has no PRIVATE KEY block")
    if b"ENCRYPTED" in key_bytes:
        raise CertificateError(f"{key_field} is encrypted: the key must be unencrypted PEM")
    try:
        key = serialization.load_pem_private_key(key_bytes, password=None)
    except TypeError:
        raise CertificateError(
            f"{key_field} is encrypted: the key must be unencrypted PEM"
        ) from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        # The library's message names the failure, never key bytes.
        reason = str(exc).splitlines()[0][:120] if str(exc) else "unreadable"
        raise CertificateError(f"{key_field} is not a usable PEM private key ({reason})") from None
    if not isinstance(
        key,
        rsa.RSAPrivateKey
        | ec.EllipticCurvePrivateKey
        | ed25519.Ed25519PrivateKey
        | ed448.Ed448PrivateKey,
    ):
        raise CertificateError(f"{key_field}: unsupported key type {type(key).__name__}")
    leaf = chain[0]
    summary = summarise(leaf)
    public = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if leaf.public_key().public_bytes(*public) != key.public_key().public_bytes(*public):
        raise CertificateError(
            f"{key_field} does not match the certificate in {certificate_field} "
            f"(subject {summary.subject})"
        )
    if now < summary.not_before:
        raise CertificateError(
            f"{certificate_field} is not yet valid: valid from "
            f"{summary.not_before:%Y-%m-%dT%H:%M:%SZ}"
        )
    if now > summary.not_after:
        raise CertificateError(
            f"{certificate_field} expired on {summary.not_after:%Y-%m-%dT%H:%M:%SZ}"
        )
    return summary


def summarise(certificate: x509.Certificate) -> CertificateSummary:
    """A certificate's subject, names, validity window and fingerprint."""
    subject = certificate.subject.rfc4514_string() or "(empty subject)"
    names: list[str] = []
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = [n.lower().rstrip(".") for n in san.value.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        names = [
            str(a.value).lower()
            for a in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        ]
    fingerprint = certificate.fingerprint(hashes.SHA256()).hex()
    return CertificateSummary(
        subject,
        tuple(dict.fromkeys(names)),
        certificate.not_valid_before_utc,
        certificate.not_valid_after_utc,
        fingerprint,
    )


def name_matches(pattern: str, name: str) -> bool:
    """Whether a certificate name (exact, or `*.` and one label) covers a host name."""
    if pattern.startswith("*."):
        head, dot, rest = name.partition(".")
        return bool(head) and bool(dot) and "." + rest == pattern[1:]
    return pattern == name


def new_server_context(minimum: str) -> ssl.SSLContext:
    """A server context with the gateway's protocol settings (no certificate yet)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = TLS_VERSIONS[minimum]
    # The highest version both sides support is negotiated: TLS 1.3 whenever the client has it.
    context.maximum_version = ssl.TLSVersion.MAXIMUM_SUPPORTED
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.options |= ssl.OP_NO_RENEGOTIATION
    context.set_alpn_protocols(ALPN)
    return context


@contextlib.contextmanager
def _pem_file(data: bytes) -> Iterator[str]:
    """A path OpenSSL can read `data` from: an anonymous memory file where Linux has them
    (the key never touches a disk), else a private temporary file, removed at once."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("wardgate-tls", os.MFD_CLOEXEC)
        try:
            os.write(fd, data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="wardgate-tls-") as directory:  # pragma: no cover
        path = Path(directory) / "pair.pem"
        path.touch(mode=0o600)
        path.write_bytes(data)
        yield str(path)


def load_context(chain_pem: str | bytes, key_pem: str | bytes, minimum: str) -> ssl.SSLContext:
    """A server context serving this chain and key (checked before: see `check_certificate`)."""
    context = new_server_context(minimum)
    with _pem_file(_text(chain_pem).rstrip() + b"\n" + _text(key_pem).rstrip() + b"\n") as path:
        try:
            context.load_cert_chain(path)
        except ssl.SSLError as exc:
            raise CertificateError(f"OpenSSL refused the certificate: {exc.reason}") from None
    return context


@dataclass(frozen=True, slots=True)
class ServedCertificate:
    """One certificate of the TLS listener, ready for handshakes."""

    label: str
    """How logs, explain and statuses name it (the Secret, or the config's references)."""
    names: tuple[str, ...]
    """The names it is selected for (exact, or `*.` wildcards), lower case."""
    summary: CertificateSummary
    context: ssl.SSLContext
    material: str
    """Digest of the PEM chain and key (to know an unchanged pair; not the key)."""


@dataclass(frozen=True, slots=True)
class CertificateSpec:
    """A certificate as the config lists it: PEM values already resolved."""

    label: str
    chain_pem: str
    key_pem: str
    hostnames: tuple[str, ...] = ()
    where: str = ""
    """The dotted path of the config entry, for problems."""


def material_digest(chain_pem: str, key_pem: str) -> str:
    return hashlib.sha256(_text(chain_pem) + b"\0" + _text(key_pem)).hexdigest()


@dataclass(frozen=True, slots=True)
class TlsSession:
    """What a connection's handshake decided: the SNI name and the certificate selected."""

    server_name: str | None
    """The ClientHello's server name (lower case, no trailing dot); None without SNI."""
    certificate: ServedCertificate | None
    """None when no certificate is configured (the handshake then fails)."""
    matched: bool
    """Whether the name selected the certificate (else it is the default)."""

    def host_allowed(self, host: str) -> bool:
        """Whether a request for `host` may be answered on this connection (421 if not)."""
        name = self.server_name
        if name is None or not host or host == name:
            return True
        certificate = self.certificate
        if certificate is None or not self.matched:
            return False
        return any(name_matches(pattern, host) for pattern in certificate.names)

    def describe(self) -> str:
        """`TLS, SNI api.example.com, certificate api-tls (…)`, for explain."""
        sni = f"SNI {self.server_name}" if self.server_name else "no SNI"
        if self.certificate is None:
            return f"TLS, {sni}, no certificate"
        how = "selected by name" if self.matched else "the default certificate"
        return f"TLS, {sni}, certificate {self.certificate.label} ({how})"


class CertificateSet:
    """The certificates of one config, and the SNI selection among them."""

    def __init__(self, certificates: Sequence[ServedCertificate], minimum: str) -> None:
        self.certificates = tuple(certificates)
        self.minimum = minimum
        self.default = self.certificates[0] if self.certificates else None
        self._exact: dict[str, ServedCertificate] = {}
        self._wildcard: dict[str, ServedCertificate] = {}
        for certificate in self.certificates:
            for name in certificate.names:
                if name.startswith("*."):
                    self._wildcard.setdefault(name[1:], certificate)
                else:
                    self._exact.setdefault(name, certificate)

    def select(self, server_name: str | None) -> tuple[ServedCertificate | None, bool]:
        """The certificate for a ClientHello's server name, and whether the name chose it."""
        if server_name:
            found = self._exact.get(server_name)
            if found is None:
                dot = server_name.find(".")
                if dot > 0:
                    found = self._wildcard.get(server_name[dot:])
            if found is not None:
                return found, True
        return self.default, False

    def session(self, server_name: str | None) -> TlsSession:
        name = server_name.lower().rstrip(".") if server_name else None
        certificate, matched = self.select(name)
        return TlsSession(name, certificate, matched)

    @classmethod
    def build(
        cls,
        specs: Sequence[CertificateSpec],
        minimum: str,
        now: datetime,
        previous: CertificateSet | None = None,
    ) -> tuple[CertificateSet, list[str], list[str]]:
        """Check and load certificates: (the set, problems that make the config invalid,
        problems of certificates whose last good version keeps serving)."""
        before = {c.label: c for c in previous.certificates} if previous is not None else {}
        served: list[ServedCertificate] = []
        fatal: list[str] = []
        kept: list[str] = []
        for spec in specs:
            material = material_digest(spec.chain_pem, spec.key_pem)
            earlier = before.get(spec.label)
            try:
                if (
                    earlier is not None
                    and earlier.material == material
                    and (previous is not None and previous.minimum == minimum)
                ):
                    served.append(earlier)
                    continue
                summary = check_certificate(spec.chain_pem, spec.key_pem, now)
                context = load_context(spec.chain_pem, spec.key_pem, minimum)
            except CertificateError as exc:
                if earlier is not None:
                    kept.append(
                        f"{spec.where or spec.label} ({spec.label}): {exc}; its last good "
                        f"version keeps serving ({earlier.summary.describe()})"
                    )
                    served.append(earlier)
                else:
                    fatal.append(f"{spec.where or spec.label}: {exc}")
                continue
            names = spec.hostnames or summary.names
            served.append(ServedCertificate(spec.label, tuple(names), summary, context, material))
        return cls(served, minimum), fatal, kept


class TlsListener:
    """The listening socket's context: its SNI callback serves the current certificates."""

    def __init__(self, certificates: Callable[[], CertificateSet | None]) -> None:
        self._certificates = certificates
        current = certificates()
        self.context = new_server_context(current.minimum if current is not None else "1.2")
        self.context.sni_callback = self._handshake

    def refresh(self) -> None:
        """Apply the serving config's minimum version to the next handshakes."""
        current = self._certificates()
        if current is not None:
            self.context.minimum_version = TLS_VERSIONS[current.minimum]

    def _handshake(
        self, connection: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: object
    ) -> int | None:
        try:
            current = self._certificates()
            if current is None:
                setattr(connection, TLS_SESSION_ATTRIBUTE, TlsSession(server_name, None, False))
                return ssl.ALERT_DESCRIPTION_HANDSHAKE_FAILURE
            session = current.session(server_name)
            if session.certificate is None:
                return ssl.ALERT_DESCRIPTION_HANDSHAKE_FAILURE
            connection.context = session.certificate.context
            setattr(connection, TLS_SESSION_ATTRIBUTE, session)
        except Exception:  # a handshake must fail cleanly, never take the loop with it
            return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR
        return None


def session_of(ssl_object: object) -> TlsSession | None:
    """The `TlsSession` the SNI callback left on a connection's `ssl.SSLObject`."""
    session = getattr(ssl_object, TLS_SESSION_ATTRIBUTE, None)
    return session if isinstance(session, TlsSession) else None


def utc_now() -> datetime:
    return datetime.now(UTC)


def upstream_tls_context(ca_bundle: str) -> ssl.SSLContext:
    """A client context that trusts the CA certificates of a PEM bundle only (the upstream's
    name is verified as with the system store); `ValueError` when it holds no certificate."""
    if "-----BEGIN CERTIFICATE-----" not in ca_bundle:
        raise ValueError("not PEM: it has no CERTIFICATE block")
    try:
        return ssl.create_default_context(cadata=ca_bundle)
    except (ssl.SSLError, ValueError) as exc:
        raise ValueError(f"not usable CA certificates ({exc})") from None
