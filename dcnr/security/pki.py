"""Certificates: the orchestrator's CA, what it issues, PNode key pairs and the ids derived from them.

The orchestrator creates a CA on first start (`CertificateAuthority.load_or_create`) and a
certificate for itself, which it presents as a server and as a client. A PNode creates an
EC key pair on first start; its id is derived from the public key (`pnode_id`), so a
certificate for an id can only go to whoever holds that key. It registers with a
certificate request and gets a short-lived certificate binding that id, renewed while it
heartbeats. Every certificate names its holder's role (organizational unit) and id
(common name); TLS peers verify the role's name (`ORCHESTRATOR_TLS_NAME`,
`PNODE_TLS_NAME`) rather than a host name, because PNodes are reached by IP address.

A volunteer checks the CA it is given against the fingerprint the orchestrator printed:
SHA-256 of the CA certificate's DER encoding (`fingerprint`), fetched once
(`fetch_ca_certificate`) and kept in the PNode's state directory.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from dcnr.errors import InvalidArgument, PermissionDenied, Unavailable
from dcnr.storage.files import write_atomic

ORCHESTRATOR_TLS_NAME = "orchestrator.dcnr"  # every orchestrator certificate names it; its clients check it
PNODE_TLS_NAME = "pnode.dcnr"  # every PNode certificate names it
RELAY_TLS_NAME = "relay.dcnr"  # every relay certificate names it (the orchestrator's own relay too)
ORCHESTRATOR, PNODE, RELAY = "orchestrator", "pnode", "relay"  # roles a certificate can bind
TLS_NAMES = {PNODE: PNODE_TLS_NAME, RELAY: RELAY_TLS_NAME}  # of the roles the CA issues on request
CA_LIFETIME = datetime.timedelta(days=3650)
ORCHESTRATOR_LIFETIME = datetime.timedelta(days=365)
PNODE_LIFETIME = datetime.timedelta(hours=24)
CLOCK_SKEW = datetime.timedelta(minutes=5)  # certificates are valid from a little before they are issued
MAX_PEM_BYTES = 16384  # a certificate or request larger than this is refused unread


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def write_private(path: Path, data: bytes) -> None:
    """Write a secret (a key, a token file) atomically, readable by its owner only (mode 0600)."""
    write_atomic(path, data)
    os.chmod(path, 0o600)


def fingerprint(cert_pem: bytes) -> str:
    """`SHA256:<hex>` of a certificate's DER encoding: what a volunteer compares."""
    der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    return "SHA256:" + hashlib.sha256(der).hexdigest()


def public_key_der(cert_pem: bytes) -> bytes:
    """The public key a certificate binds (SubjectPublicKeyInfo, DER)."""
    return x509.load_pem_x509_certificate(cert_pem).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def same_fingerprint(a: str, b: str) -> bool:
    """Whether two fingerprints name the same certificate (case and the `SHA256:` prefix do not matter)."""
    def norm(f: str) -> str:
        f = f.strip().lower()
        return f[len("sha256:"):] if f.startswith("sha256:") else f
    return hmac.compare_digest(norm(a).replace(":", "").encode(), norm(b).replace(":", "").encode())


def load_or_create_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The EC P-256 key kept at `path` (created, mode 0600, on first use)."""
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise InvalidArgument(f"{path}: expected an EC private key")
        return key
    key = ec.generate_private_key(ec.SECP256R1())
    write_private(path, key_pem(key))
    return key


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def pnode_id(public_key: ec.EllipticCurvePublicKey, role: str = PNODE) -> str:
    """A PNode's id: `pn-` and 20 hex digits (80 bits) of the SHA-256 of its public key (a relay's: `rl-`)."""
    spki = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return ("rl-" if role == RELAY else "pn-") + hashlib.sha256(spki).hexdigest()[:20]


def certificate_request(key: ec.EllipticCurvePrivateKey) -> bytes:
    """A PEM certificate request for this key, naming the id derived from it."""
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(_name(pnode_id(key.public_key()), PNODE))
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM)


def _name(common_name: str, role: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dcnr"),
                      x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@dataclass(frozen=True)
class Peer:
    """Who a verified certificate says its holder is."""

    role: str  # ORCHESTRATOR, PNODE or RELAY
    id: str


def peer_of(cert_pem: bytes) -> Peer:
    """The role and id a certificate binds (it must already be verified against the CA)."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    units = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(units) != 1 or len(names) != 1:
        raise PermissionDenied("the peer's certificate names no single role and id")
    return Peer(str(units[0].value), str(names[0].value))


def expires_at(cert_pem: bytes) -> float:
    """When a certificate stops being valid (Unix time)."""
    return x509.load_pem_x509_certificate(cert_pem).not_valid_after_utc.timestamp()


def issued_at(cert_pem: bytes) -> float:
    return (x509.load_pem_x509_certificate(cert_pem).not_valid_before_utc + CLOCK_SKEW).timestamp()


@dataclass(frozen=True)
class Credentials:
    """What one end of a TLS connection presents and trusts: its key, its certificate, the CA."""

    key_pem: bytes
    cert_pem: bytes
    ca_pem: bytes


class CertificateAuthority:
    """The orchestrator's CA: `ca.key` (mode 0600) and `ca.crt` in its state directory."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        self.key = key
        self.cert = cert
        self.cert_pem = _pem(cert)
        self.fingerprint = fingerprint(self.cert_pem)

    @classmethod
    def load_or_create(cls, directory: Path) -> CertificateAuthority:
        directory.mkdir(parents=True, exist_ok=True)
        key_path, cert_path = directory / "ca.key", directory / "ca.crt"
        if key_path.exists() and cert_path.exists():
            return cls(load_or_create_key(key_path), x509.load_pem_x509_certificate(cert_path.read_bytes()))
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        name = _name("dcnr orchestrator CA", ORCHESTRATOR)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - CLOCK_SKEW).not_valid_after(now + CA_LIFETIME)
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                             key_encipherment=False, data_encipherment=False, key_agreement=False,
                                             key_cert_sign=True, crl_sign=True, encipher_only=False,
                                             decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(key, hashes.SHA256()))
        write_private(key_path, key_pem(key))
        write_atomic(cert_path, _pem(cert))
        return cls(key, cert)

    def _issue(self, public_key: ec.EllipticCurvePublicKey, common_name: str, role: str, dns_name: str,
               lifetime: datetime.timedelta) -> bytes:
        now = _now()
        cert = (x509.CertificateBuilder().subject_name(_name(common_name, role)).issuer_name(self.cert.subject)
                .public_key(public_key).serial_number(x509.random_serial_number())
                .not_valid_before(now - CLOCK_SKEW).not_valid_after(now + lifetime)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(dns_name)]), critical=False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                               critical=False)
                .sign(self.key, hashes.SHA256()))
        return _pem(cert)

    def orchestrator_credentials(self, directory: Path) -> Credentials:
        """The orchestrator's own key and certificate (`server.key`, `server.crt`), issued again when it
        has less than a month left."""
        key = load_or_create_key(directory / "server.key")
        path = directory / "server.crt"
        cert_pem = path.read_bytes() if path.exists() else b""
        if not cert_pem or expires_at(cert_pem) - _now().timestamp() < 30 * 86400 or not self.issued(cert_pem):
            cert_pem = self._issue(key.public_key(), ORCHESTRATOR, ORCHESTRATOR, ORCHESTRATOR_TLS_NAME,
                                   ORCHESTRATOR_LIFETIME)
            write_atomic(path, cert_pem)
        return Credentials(key_pem(key), cert_pem + self.cert_pem, self.cert_pem)

    def issued(self, cert_pem: bytes) -> bool:
        """Whether this CA signed the certificate."""
        cert = x509.load_pem_x509_certificate(cert_pem)
        try:
            cert.verify_directly_issued_by(self.cert)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True

    def relay_credentials(self, directory: Path) -> Credentials:
        """The orchestrator's own relay (serving when no relay process runs): its server key with a relay
        certificate, issued afresh at every start."""
        key = load_or_create_key(directory / "server.key")
        cert_pem = self._issue(key.public_key(), ORCHESTRATOR, RELAY, RELAY_TLS_NAME, ORCHESTRATOR_LIFETIME)
        return Credentials(key_pem(key), cert_pem + self.cert_pem, self.cert_pem)

    def issue_pnode(self, csr_pem: bytes, lifetime: datetime.timedelta = PNODE_LIFETIME,
                    role: str = PNODE) -> tuple[str, bytes]:
        """A PNode (or relay) certificate for a certificate request: (the id derived from its key, certificate
        PEM). The caller decides who may have a relay's."""
        if len(csr_pem) > MAX_PEM_BYTES:
            raise InvalidArgument(f"certificate request larger than {MAX_PEM_BYTES} bytes")
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError:
            raise InvalidArgument("the certificate request is not a PEM certificate request") from None
        public_key = csr.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(public_key.curve, ec.SECP256R1):
            raise InvalidArgument("the certificate request must be for an EC P-256 key")
        if not csr.is_signature_valid:
            raise InvalidArgument("the certificate request's signature does not match its key")
        pid = pnode_id(public_key, role)
        return pid, self._issue(public_key, pid, role, TLS_NAMES[role], lifetime)

    def renew(self, cert_pem: bytes, lifetime: datetime.timedelta = PNODE_LIFETIME) -> bytes:
        """A fresh certificate for the same PNode (or relay) key, id and role (the caller proved it holds the
        key)."""
        cert = x509.load_pem_x509_certificate(cert_pem)
        public_key = cert.public_key()
        if not self.issued(cert_pem) or not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise PermissionDenied("only a PNode certificate this CA issued can be renewed")
        peer = peer_of(cert_pem)
        pid = pnode_id(public_key, peer.role)
        if peer.id != pid or peer.role not in TLS_NAMES:
            raise PermissionDenied("only a PNode or relay certificate can be renewed")
        return self._issue(public_key, pid, peer.role, TLS_NAMES[peer.role], lifetime)


def fetch_ca_certificate(address: str, expected: str, timeout: float = 10.0) -> bytes:
    """The CA certificate an orchestrator presents in its TLS handshake, if its fingerprint is `expected`.

    Nothing is trusted before the comparison: the handshake is not verified, the chain is read, and only
    a certificate with the expected fingerprint is returned (PermissionDenied otherwise)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise InvalidArgument(f"orchestrator address must be HOST:PORT, got {address!r}")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the fingerprint below is the check
    context.set_alpn_protocols(["h2"])
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as raw, \
                context.wrap_socket(raw, server_hostname=ORCHESTRATOR_TLS_NAME) as tls:
            chain = _unverified_chain(tls)
    except OSError as exc:
        raise Unavailable(f"cannot reach the orchestrator at {address} to fetch its CA certificate: {exc}") from None
    for der in chain:
        pem = x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)
        if same_fingerprint(fingerprint(pem), expected):
            return pem
    raise PermissionDenied(f"the orchestrator at {address} presents no CA certificate with fingerprint {expected}: "
                           "check the address and the fingerprint you were given")


def _unverified_chain(tls: ssl.SSLSocket) -> list[bytes]:
    """DER certificates the peer sent (public as `get_unverified_chain` from Python 3.13)."""
    public = getattr(tls, "get_unverified_chain", None)
    if public is not None:
        return [bytes(c) for c in public()]
    certs = tls._sslobj.get_unverified_chain() or []  # type: ignore[attr-defined]  # Python 3.11-3.12
    return [c.public_bytes(ssl._ssl.ENCODING_DER) for c in certs]  # type: ignore[attr-defined]
