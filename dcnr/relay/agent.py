"""`RelayNode`: a relay as a whole, from enrolment to a clean stop."""

from __future__ import annotations

import fcntl
import logging
import random
import threading
import time
from pathlib import Path
from typing import IO, Any

from dcnr.errors import DcnrError, InvalidArgument, NotFound
from dcnr.security import pki
from dcnr.transport.grpc.link import GrpcRelayMembership, enroll, until_reachable
from dcnr.transport.grpc.pnode import DEFAULT_MAX_MESSAGE_BYTES, pnode_channels
from dcnr.transport.grpc.relay import Relay, serve_relay
from dcnr.transport.grpc.security import Identity

log = logging.getLogger("dcnr.relay")

JOIN_WAIT = 60.0  # seconds to keep trying to reach the orchestrator at start-up


class RelayNode:
    """One relay: `start` enrols (with an operator's token), serves and registers; `stop` leaves."""

    def __init__(self, orchestrator: str, ca_pem: bytes, token: str, state_dir: str | Path, bind: str = "127.0.0.1",
                 port: int = 0, advertise: str | None = None, max_pnodes: int = 64,
                 heartbeat_interval: float | None = None,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        if not token:
            raise InvalidArgument("a relay needs an operator's token (--token, or a --config holding one)")
        if max_pnodes < 1:
            raise ValueError(f"--max-pnodes must be at least 1, got {max_pnodes}")
        self.orchestrator, self.ca_pem, self.token = orchestrator, ca_pem, token
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._held = _lock(self.state_dir)
        self.key = pki.load_or_create_key(self.state_dir / "key.pem")
        self.id = pki.pnode_id(self.key.public_key(), pki.RELAY)
        self.bind, self.port, self.advertise = bind, port, advertise
        self.max_pnodes, self.heartbeat_interval = max_pnodes, heartbeat_interval
        self.max_message_bytes = max_message_bytes
        self.address = ""
        self.identity: Identity | None = None
        self.relay: Relay | None = None
        self.membership: GrpcRelayMembership | None = None
        self._server: Any = None
        self._stop = threading.Event()
        self._beats: threading.Thread | None = None

    def start(self) -> None:
        deadline = time.monotonic() + JOIN_WAIT
        rid, cert, peer_port = self._until_reachable(lambda: enroll(
            self.orchestrator, self.ca_pem, pki.certificate_request(self.key), role=pki.RELAY, token=self.token),
            deadline)
        if rid != self.id:
            raise ConnectionError(f"the orchestrator issued a certificate for {rid}, not for this relay's key")
        self.identity = Identity(pki.Credentials(pki.key_pem(self.key), cert, self.ca_pem))
        self.relay = Relay(pnode_channels(self.identity, self.max_message_bytes), self.max_pnodes)
        self._server, port = serve_relay(self.relay, self.identity, f"{self.bind}:{self.port}",
                                         max_message_bytes=self.max_message_bytes)
        self.address = f"{self.advertise or self.bind}:{port}"
        self.membership = GrpcRelayMembership(f"{self.orchestrator.rpartition(':')[0]}:{peer_port}", self.identity)
        interval = self._until_reachable(lambda: self._membership().register(self.id, self.address), deadline)
        self.heartbeat_interval = self.heartbeat_interval or interval
        self._beats = threading.Thread(target=self._heartbeat_loop, name="relay-heartbeat", daemon=True)
        self._beats.start()
        log.info("relay %s serving at %s for %s", self.id, self.address, self.orchestrator)

    def _membership(self) -> GrpcRelayMembership:
        assert self.membership is not None
        return self.membership

    def _until_reachable(self, attempt: Any, deadline: float) -> Any:
        return until_reachable(attempt, deadline, self._stop, self.orchestrator, "this relay")

    def _heartbeat_loop(self) -> None:
        """Beat with what it carries; register again when forgotten; back off with jitter while the orchestrator
        is away."""
        assert self.heartbeat_interval is not None and self.relay is not None and self.identity is not None
        wait, failures = self.heartbeat_interval, 0
        while not self._stop.wait(wait):
            try:
                renewed = self._membership().heartbeat(self.id, self.relay.attached, self.relay.bytes_forwarded,
                                                       self.relay.hop_bytes)
                if renewed:
                    creds = self.identity.creds
                    self.identity.update(pki.Credentials(creds.key_pem, renewed, creds.ca_pem))
                wait, failures = self.heartbeat_interval, 0
                continue
            except NotFound:
                log.warning("the orchestrator does not know this relay any more: registering again")
                try:
                    self._membership().register(self.id, self.address)
                    wait, failures = self.heartbeat_interval, 0
                    continue
                except DcnrError as exc:
                    log.warning("could not register again: %s", exc)
            except DcnrError as exc:
                log.warning("heartbeat failed: %s", exc)
            failures += 1
            wait = min(10 * self.heartbeat_interval, self.heartbeat_interval * 2 ** min(failures, 16)) * \
                random.uniform(0.5, 1.0)

    def stop(self) -> None:
        """Stop serving (attached PNodes reconnect elsewhere) and leave (idempotent)."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._server is not None:
            self._server.stop(1.0).wait()
        if self.relay is not None:
            self.relay.close()
        if self.membership is not None:
            self.membership.close()
        self._held.close()
        log.info("relay %s stopped", self.id)


def _lock(state_dir: Path) -> IO[bytes]:
    handle = open(state_dir / ".lock", "wb")  # noqa: SIM115 - held open for the relay's lifetime
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise InvalidArgument(f"--state-dir {state_dir}: another process uses it (each relay needs its own)") from None
    return handle
