"""A PNode as a whole: identity, hardware, registration, heartbeats, the gRPC server, shutdown.

Owns this PNode's identity and its membership in the fleet. On first start it creates a
key pair in its state directory (its id derives from the public key) and fetches the
orchestrator's CA certificate, trusted only if it matches the fingerprint it was given;
on every start it enrols for a short-lived certificate, serves behind mutual TLS,
registers (id, protocol version, address, hardware), heartbeats with its load (taking
the renewed certificates heartbeats bring), registers again if the orchestrator forgot
it, and unregisters when it stops. It must not decide where VNodes run: it asks.

A PNode that hosts nothing stays light: it does not import torch, nor the node catalog.
`dcnr.pnode.hardware` asks torch about the machine in a child process, and the runtime is
made (torch loaded, its thread count set) when the first VNode arrives (`_make_runtime`).
"""

from __future__ import annotations

import fcntl
import logging
import random
import socket
import threading
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import platformdirs

from dcnr.errors import DcnrError, InvalidArgument, NotFound, Unavailable
from dcnr.pnode.hardware import compute_class, detect_hardware
from dcnr.pnode.lazy import LazyRuntime
from dcnr.proto.version import VERSION_TEXT
from dcnr.security import pki
from dcnr.storage.files import write_atomic
from dcnr.transport.grpc.link import GrpcOrchestratorLink, enroll
from dcnr.transport.grpc.pnode import DEFAULT_MAX_MESSAGE_BYTES, GrpcHopTransport, pnode_channels, serve_pnode
from dcnr.transport.grpc.security import Identity
from dcnr.transport.messages import Membership

if TYPE_CHECKING:
    from dcnr.pnode.runtime import PNodeRuntime

__all__ = ["PNode", "compute_class", "default_state_dir", "detect_hardware", "trusted_ca"]

log = logging.getLogger("dcnr.pnode")

REGISTER_WAIT = 60.0  # seconds to keep trying to reach the orchestrator at start-up
FIRST_START = ("the first start needs --ca-fingerprint SHA256:<hex>: `dcnr orchestrator` prints the whole join "
               "command")


def default_state_dir() -> Path:
    """Where a PNode keeps its key and the CA it trusts unless told otherwise."""
    return Path(platformdirs.user_data_dir("dcnr")) / "pnode"


def trusted_ca(state_dir: Path, orchestrator: str, fingerprint: str | None) -> bytes:
    """The CA certificate this PNode trusts: the one kept in its state directory, or, on first start or
    when given another fingerprint, the one the orchestrator presents if it matches `fingerprint`."""
    path = state_dir / "ca.crt"
    if path.exists():
        kept = path.read_bytes()
        if not fingerprint or pki.same_fingerprint(pki.fingerprint(kept), fingerprint):
            return kept
        log.warning("--ca-fingerprint differs from the CA kept in %s: fetching the new one", path)
    if not fingerprint:
        raise InvalidArgument(FIRST_START)
    pem = pki.fetch_ca_certificate(orchestrator, fingerprint)
    write_atomic(path, pem)
    return pem


def _lock(state_dir: Path) -> IO[bytes]:
    """Hold the state directory for this process (one identity, one PNode)."""
    handle = open(state_dir / ".lock", "wb")  # noqa: SIM115 - held open for the PNode's lifetime
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise InvalidArgument(f"--state-dir {state_dir}: another PNode uses it (each PNode needs its own)") from None
    return handle


class PNode:
    """One PNode: `start` enrols, serves and joins the fleet; `stop` leaves it cleanly."""

    def __init__(self, orchestrator: str, state_dir: str | Path | None = None, ca_fingerprint: str | None = None,
                 name: str | None = None, bind: str = "127.0.0.1", port: int = 0, advertise: str | None = None,
                 memory_budget: int | None = None, threads: int | None = None, device: str = "cpu",
                 heartbeat_interval: float | None = None, task_timeout: float = 300.0,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, set_torch_threads: bool = True) -> None:
        self.orchestrator = orchestrator
        self.state_dir = Path(state_dir) if state_dir else default_state_dir()
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not ca_fingerprint and not (self.state_dir / "ca.crt").exists():
            raise InvalidArgument(FIRST_START)
        self._held = _lock(self.state_dir)
        self.key = pki.load_or_create_key(self.state_dir / "key.pem")
        self.id = pki.pnode_id(self.key.public_key())
        self.name = name or socket.gethostname()
        self.ca_fingerprint = ca_fingerprint
        self.bind, self.port, self.advertise = bind, port, advertise
        if threads is not None and threads < 1:
            raise ValueError(f"--threads must be at least 1, got {threads}")
        self.hardware = detect_hardware(device, memory_budget, threads, self.state_dir)
        self.threads = int(self.hardware["threads"])
        self.heartbeat_interval = heartbeat_interval
        self.set_torch_threads = set_torch_threads
        self.device, self.task_timeout = device, task_timeout
        self.max_message_bytes = max_message_bytes
        self.identity: Identity | None = None
        self.peer_address = ""  # the orchestrator's mutual-TLS port, learnt when enrolling
        self.link: Any = None
        self.hops: Any = None
        self.runtime: Any = None
        self.server: Any = None
        self.address = ""
        self._stop = threading.Event()
        self._beats: threading.Thread | None = None

    def _enroll(self) -> Identity:
        """A fresh certificate for our key from the orchestrator (kept up to date in `self.identity`)."""
        ca = trusted_ca(self.state_dir, self.orchestrator, self.ca_fingerprint)
        pid, cert, peer_port = enroll(self.orchestrator, ca, pki.certificate_request(self.key))
        if pid != self.id:
            raise ConnectionError(f"the orchestrator issued a certificate for {pid}, not for this PNode's key")
        creds = pki.Credentials(pki.key_pem(self.key), cert, ca)
        self.peer_address = f"{self.orchestrator.rpartition(':')[0]}:{peer_port}"
        if self.identity is None:
            self.identity = Identity(creds)
        else:
            self.identity.update(creds)
        return self.identity

    def start(self) -> None:
        identity = self._until_reachable(self._enroll, deadline=time.monotonic() + REGISTER_WAIT)
        self.link = GrpcOrchestratorLink(self.peer_address, identity, self.max_message_bytes)
        self.hops = GrpcHopTransport(pnode_channels(identity, self.max_message_bytes))
        self.runtime = LazyRuntime(self._make_runtime)
        self.server, port = serve_pnode(self.runtime, identity, f"{self.bind}:{self.port}",
                                        max_message_bytes=self.max_message_bytes)
        self.address = f"{self.advertise or self.bind}:{port}"
        interval = self._register(deadline=time.monotonic() + REGISTER_WAIT)
        self.heartbeat_interval = self.heartbeat_interval or interval
        self._beats = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        self._beats.start()
        log.info("PNode %s (%s) serving at %s, joined %s", self.id, self.name, self.address, self.orchestrator,
                 extra={"pnode": self.id, "address": self.address})

    def _make_runtime(self) -> PNodeRuntime:
        """This PNode's runtime, made when the first VNode arrives: torch and the node catalog load here,
        and torch's thread count is set before any compute."""
        import torch

        from dcnr.pnode.runtime import PNodeRuntime
        from dcnr.validation.digest import sign_hop

        if self.set_torch_threads:
            torch.set_num_threads(self.threads)
        # the first optimizer of a process imports a lot of torch: do it now, not in the first step
        torch.optim.Adam([torch.zeros(1, requires_grad=True)])
        return PNodeRuntime(self.id, self.hops, self.link, self.device, int(self.hardware["memory_budget_bytes"]),
                            self.task_timeout,
                            signer=lambda network, run, key, digest: sign_hop(self.key, network, run, key, digest))

    def _until_reachable(self, attempt: Any, deadline: float) -> Any:
        """`attempt()` until the orchestrator answers (Unavailable is retried until `deadline`)."""
        delay = 0.1
        while True:
            try:
                return attempt()
            except Unavailable as exc:
                if time.monotonic() > deadline:
                    raise ConnectionError(f"cannot reach the orchestrator at {self.orchestrator}: {exc}") from None
            except DcnrError as exc:
                raise ConnectionError(f"the orchestrator at {self.orchestrator} refused this PNode: {exc}") from None
            if self._stop.wait(delay):
                raise ConnectionError("stopped before joining")
            delay = min(2.0, delay * 2)

    def _register(self, deadline: float) -> float:
        member = Membership(self.id, self.address, self.hardware, VERSION_TEXT, self.name)
        interval: float = self._until_reachable(lambda: self.link.register(member), deadline)
        return interval

    def _heartbeat_loop(self) -> None:
        """Beat every interval; while the orchestrator is away, back off exponentially with jitter (so a
        returning orchestrator is not stormed), and register again as soon as it answers that it forgot us."""
        assert self.heartbeat_interval is not None
        wait, failures = self.heartbeat_interval, 0
        while not self._stop.wait(wait):
            try:
                renewed = self.link.heartbeat(self.id, *self.runtime.usage())
                if renewed:
                    assert self.identity is not None
                    creds = self.identity.creds
                    self.identity.update(pki.Credentials(creds.key_pem, renewed, creds.ca_pem))
                    log.info("certificate renewed until %s", time.ctime(pki.expires_at(renewed)))
                wait, failures = self.heartbeat_interval, 0
                continue
            except NotFound:  # forgotten (marked dead, or a fresh orchestrator)
                log.warning("the orchestrator does not know this PNode any more: registering again")
                self.runtime.forget_all()
                try:
                    self._register(deadline=time.monotonic() + self.heartbeat_interval)
                    wait, failures = self.heartbeat_interval, 0
                    continue
                except ConnectionError as err:
                    log.warning("%s", err)
            except DcnrError as exc:
                log.warning("heartbeat failed: %s", exc)
                self._enroll_again_if_expired()
            failures += 1
            cap = max(10 * self.heartbeat_interval, 1.0)
            wait = min(cap, self.heartbeat_interval * 2 ** min(failures, 16)) * random.uniform(0.5, 1.0)

    def _enroll_again_if_expired(self) -> None:
        """A certificate that expired while the orchestrator was away (or this machine slept) cannot
        reconnect: enrol for a new one."""
        assert self.identity is not None
        if pki.expires_at(self.identity.creds.cert_pem) > time.time() + (self.heartbeat_interval or 30.0):
            return
        try:
            self._enroll()
            log.info("enrolled again: the certificate had expired")
        except (DcnrError, OSError) as exc:
            log.warning("could not enrol again: %s", exc)

    def stop(self) -> None:
        """Unregister, stop serving, stop computing (idempotent)."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self.link is not None:
            try:
                self.link.unregister(self.id)
            except DcnrError as exc:
                log.warning("could not unregister: %s", exc)
        if self.server is not None:
            self.server.stop(1.0).wait()
        if self.runtime is not None:
            self.runtime.stop()
            self.hops.close()
            self.link.close()
        self._held.close()
        log.info("PNode %s stopped", self.id, extra={"pnode": self.id})
