"""Identities: the orchestrator's CA, PNode keys and the ids derived from them, certificates that
renew, tokens kept as hashes, the client configuration, and the per-identity rate limit."""

from __future__ import annotations

import datetime
import math
import os
import stat
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from dcnr.errors import InvalidArgument, PermissionDenied, ResourceExhausted, Unauthenticated
from dcnr.orchestrator.app import Orchestrator
from dcnr.orchestrator.store import SQLiteStore
from dcnr.pnode.agent import PNode
from dcnr.security import pki
from dcnr.security.config import ClientConfig, find
from dcnr.security.pki import CertificateAuthority
from dcnr.security.ratelimit import RateLimiter
from dcnr.security.tokens import Tokens, parse_duration


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_ca_is_created_once_with_its_key_private(tmp_path: Path) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path)
    again = CertificateAuthority.load_or_create(tmp_path)
    assert again.fingerprint == ca.fingerprint and ca.fingerprint.startswith("SHA256:") and len(ca.fingerprint) == 71
    assert mode(tmp_path / "ca.key") == 0o600
    creds = ca.orchestrator_credentials(tmp_path)
    assert pki.peer_of(creds.cert_pem) == pki.Peer("orchestrator", "orchestrator") and ca.issued(creds.cert_pem)
    assert mode(tmp_path / "server.key") == 0o600


def test_a_pnode_id_is_its_key_and_nobody_else_gets_a_certificate_for_it(tmp_path: Path) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path)
    key = pki.load_or_create_key(tmp_path / "pnode.key")
    pid, cert = ca.issue_pnode(pki.certificate_request(key))
    assert pid == pki.pnode_id(key.public_key()) and pki.peer_of(cert) == pki.Peer("pnode", pid)
    other = ec.generate_private_key(ec.SECP256R1())
    assert ca.issue_pnode(pki.certificate_request(other))[0] != pid
    # a request naming someone else's id still gets a certificate for the requester's own key only
    forged = (x509.CertificateSigningRequestBuilder()
              .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, pid)]))
              .sign(other, pki.hashes.SHA256()))
    from cryptography.hazmat.primitives import serialization
    got, _ = ca.issue_pnode(forged.public_bytes(serialization.Encoding.PEM))
    assert got == pki.pnode_id(other.public_key()) != pid
    with pytest.raises(InvalidArgument, match="not a PEM certificate request"):
        ca.issue_pnode(b"junk")


def test_certificates_renew_for_the_same_key_and_only_ours(tmp_path: Path) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path / "a")
    key = ec.generate_private_key(ec.SECP256R1())
    pid, cert = ca.issue_pnode(pki.certificate_request(key), datetime.timedelta(seconds=60))
    renewed = ca.renew(cert, datetime.timedelta(hours=1))
    assert pki.peer_of(renewed) == pki.Peer("pnode", pid) and pki.expires_at(renewed) > pki.expires_at(cert)
    assert x509.load_pem_x509_certificate(renewed).public_key() == key.public_key()
    other = CertificateAuthority.load_or_create(tmp_path / "b")
    _, foreign = other.issue_pnode(pki.certificate_request(key))
    with pytest.raises(PermissionDenied):
        ca.renew(foreign)
    with pytest.raises(PermissionDenied):  # the orchestrator's own certificate is not a PNode's
        ca.renew(ca.orchestrator_credentials(tmp_path / "a").cert_pem)


@given(st.text(alphabet="0123456789abcdefABCDEF:", max_size=80))
def test_fingerprints_compare_whatever_the_case_or_separators(noise: str) -> None:
    f = "SHA256:" + "ab" * 32
    assert pki.same_fingerprint(f, f.lower().replace("sha256:", "sha256:")) and pki.same_fingerprint(f, "ab" * 32)
    assert pki.same_fingerprint(f, ":".join("AB" for _ in range(32)))
    assert pki.same_fingerprint(f, noise) == (noise.replace(":", "").lower().removeprefix("sha256") == "ab" * 32
                                              or noise.lower().removeprefix("sha256:").replace(":", "") == "ab" * 32)


def test_a_fingerprint_with_other_characters_is_no_match_not_an_error() -> None:
    """A mistyped --ca-fingerprint (non-ASCII) must not crash the constant-time comparison (it takes ASCII only)."""
    f = "SHA256:" + "ab" * 32
    assert not pki.same_fingerprint(f, "SHA256:" + "é" * 64) and not pki.same_fingerprint("ＡＢ" * 32, f)


@pytest.mark.parametrize("lifetime", [math.nan, math.inf, -1.0])
def test_a_token_lifetime_that_is_no_number_of_seconds_is_refused(tmp_path: Path, lifetime: float) -> None:
    """A fuzzed CreateToken with a lifetime of nan was stored as NULL, which the store refuses: INTERNAL."""
    tokens = Tokens(SQLiteStore(tmp_path / "s.sqlite"))
    with pytest.raises(InvalidArgument, match="a token's lifetime must be a number of seconds"):
        tokens.create("alice", "researcher", expires_in=lifetime)
    assert tokens.list() == []


def test_tokens_are_stored_hashed_expire_and_revoke(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.sqlite")
    tokens = Tokens(store)
    secret = tokens.create("alice", "researcher", expires_in=3600)
    assert tokens.authenticate(secret).role == "researcher"
    raw = (tmp_path / "s.sqlite").read_bytes() + b"".join(p.read_bytes() for p in tmp_path.glob("s.sqlite-*"))
    random_part = secret.split("_", 2)[2]  # "dcnr_<key>_<secret>"; the secret itself may hold "_"
    assert secret.encode() not in raw and random_part.encode() not in raw  # only its hash is kept
    short = tokens.create("brief", "operator", expires_in=1)
    with pytest.raises(InvalidArgument, match="role"):
        tokens.create("x", "root")
    time.sleep(1.2)
    with pytest.raises(Unauthenticated, match="expired"):
        tokens.authenticate(short)
    assert tokens.revoke("alice") and not tokens.revoke("alice")
    for bad in (secret, "", "dcnr_0000000000000000_" + "A" * 43, "Bearer x"):
        with pytest.raises(Unauthenticated):
            tokens.authenticate(bad)


@pytest.mark.parametrize("text, seconds", [("30d", 30 * 86400), ("12h", 43200), ("90m", 5400), ("2w", 1209600)])
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds
    with pytest.raises(InvalidArgument, match="duration"):
        parse_duration(text[:-1] + "y")


def test_the_rate_limit_is_per_identity_and_refills() -> None:
    limiter = RateLimiter(rate=20, burst=3)
    for _ in range(3):
        limiter.take("a")
    with pytest.raises(ResourceExhausted, match="too many calls from a"):
        limiter.take("a")
    limiter.take("b")  # another identity has its own allowance
    time.sleep(0.2)  # 20 per second: four calls' worth
    limiter.take("a")


def test_the_client_configuration_is_checked_and_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path)
    path = tmp_path / "c.yaml"
    ClientConfig("h:1", ca.cert_pem.decode(), "dcnr_x").save(path)
    assert mode(path) == 0o600 and ClientConfig.load(path) == ClientConfig("h:1", ca.cert_pem.decode(), "dcnr_x")
    assert "ca_certificate: |" in path.read_text()  # the PEM as a literal block
    for text, message in [("orchestrator: h:1\n", "ca_certificate: expected a non-empty string"),
                          ("- a\n", "expected a mapping"), ("orchestrator: [\n", "not valid YAML"),
                          ("orchestrator: h\nca_certificate: x\nserver: y\n", "unknown key 'server'")]:
        path.write_text(text)
        with pytest.raises(InvalidArgument, match=message):
            ClientConfig.load(path)
    monkeypatch.setenv("DCNR_CONFIG", str(tmp_path / "env.yaml"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home"))
    assert find("explicit.yaml") == Path("explicit.yaml") and find() == tmp_path / "env.yaml"
    monkeypatch.delenv("DCNR_CONFIG")
    assert find() is None
    (tmp_path / "home" / "dcnr").mkdir(parents=True)
    (tmp_path / "home" / "dcnr" / "config.yaml").write_text("")
    assert find() == tmp_path / "home" / "dcnr" / "config.yaml"


def test_the_orchestrator_writes_admin_yaml_once_and_keeps_its_token(tmp_path: Path) -> None:
    orch = Orchestrator(tmp_path / "state")
    orch.start("127.0.0.1:0")
    first = ClientConfig.load(orch.admin_config)
    orch.stop(grace=0)
    assert mode(orch.admin_config) == 0o600 and first.orchestrator == f"127.0.0.1:{orch.port}"
    assert orch.join_command("example.org") == (f"dcnr join example.org:{orch.port} "
                                                f"--ca-fingerprint {orch.ca.fingerprint}")
    again = Orchestrator(tmp_path / "state")
    again.start("127.0.0.1:0")
    try:
        second = ClientConfig.load(again.admin_config)
        assert second.token == first.token and again.tokens.authenticate(second.token).role == "operator"
        assert second.orchestrator == f"127.0.0.1:{again.port}" and second.ca_certificate == first.ca_certificate
    finally:
        again.stop(grace=0)


def test_a_pnode_trusts_only_the_ca_with_its_fingerprint_and_renews_while_it_beats(tmp_path: Path) -> None:
    orch = Orchestrator(tmp_path / "state", heartbeat_interval=1.0,
                        certificate_lifetime=datetime.timedelta(seconds=8))
    orch.start("127.0.0.1:0")
    address = f"127.0.0.1:{orch.port}"
    try:
        impostor = PNode(address, state_dir=tmp_path / "p", ca_fingerprint="SHA256:" + "0" * 64)
        with pytest.raises(ConnectionError, match="no CA certificate with fingerprint"):
            impostor.start()
        impostor.stop()
        assert not (tmp_path / "p" / "ca.crt").exists()
        with pytest.raises(InvalidArgument, match="--ca-fingerprint"):
            PNode(address, state_dir=tmp_path / "q")
        pnode = PNode(address, state_dir=tmp_path / "p", ca_fingerprint=orch.ca.fingerprint, name="mine",
                      set_torch_threads=False)
        with pytest.raises(InvalidArgument, match="another PNode uses it"):
            PNode(address, state_dir=tmp_path / "p", ca_fingerprint=orch.ca.fingerprint)
        pnode.start()
        try:
            assert mode(tmp_path / "p" / "key.pem") == 0o600
            assert pnode.id == pki.pnode_id(pki.load_or_create_key(tmp_path / "p" / "key.pem").public_key())
            assert identity_expiry(pnode) - time.time() < 9
            first = identity_expiry(pnode)
            deadline = time.monotonic() + 60
            while identity_expiry(pnode) == first:  # past half its life, a heartbeat brings a new one
                assert time.monotonic() < deadline, "the certificate was never renewed"
                time.sleep(0.2)
            time.sleep(9)  # the first certificate has expired: the PNode is still a member
            assert [p.state for p in orch.store.list_pnodes()] == ["alive"]
        finally:
            pnode.stop()
        restarted = PNode(address, state_dir=tmp_path / "p", set_torch_threads=False)  # the kept CA is enough
        assert restarted.id == pnode.id
        restarted.start()
        restarted.stop()
    finally:
        orch.stop(grace=0)


def identity_expiry(pnode: PNode) -> float:
    assert pnode.identity is not None
    return pki.expires_at(pnode.identity.creds.cert_pem)


def test_files_are_private(tmp_path: Path) -> None:
    pki.write_private(tmp_path / "s", b"x")
    assert mode(tmp_path / "s") == 0o600 and os.stat(tmp_path / "s").st_size == 1
