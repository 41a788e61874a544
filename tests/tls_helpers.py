"""TLS for tests that speak raw gRPC: identities issued by a CA, and channels as each role."""

from __future__ import annotations

from pathlib import Path

import grpc
from cryptography.hazmat.primitives.asymmetric import ec

from dcnr.security import pki
from dcnr.security.pki import CertificateAuthority, Credentials
from dcnr.transport.grpc.security import Identity, secure_channel


def pnode_identity(ca: CertificateAuthority) -> tuple[str, Identity]:
    """A new PNode key with a certificate from `ca`: (its id, its identity)."""
    key = ec.generate_private_key(ec.SECP256R1())
    pid, cert = ca.issue_pnode(pki.certificate_request(key))
    return pid, Identity(Credentials(pki.key_pem(key), cert, ca.cert_pem))


def orchestrator_identity(ca: CertificateAuthority, directory: Path) -> Identity:
    return Identity(ca.orchestrator_credentials(directory))


def to_pnode(address: str, identity: Identity, options: list[tuple[str, object]] | None = None) -> grpc.Channel:
    """A channel to a PNode's server, presenting `identity`."""
    return secure_channel(address, identity.creds.ca_pem, pki.PNODE_TLS_NAME, list(options or []), identity)


def to_orchestrator(address: str, ca_pem: bytes, identity: Identity | None = None, token: str = "",
                    options: list[tuple[str, object]] | None = None) -> grpc.Channel:
    """A channel to an orchestrator port: as a PNode (`identity`), with a token, or anonymous."""
    return secure_channel(address, ca_pem, pki.ORCHESTRATOR_TLS_NAME, list(options or []), identity, token)
