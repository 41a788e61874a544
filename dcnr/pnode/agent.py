"""A PNode as a whole: identity, hardware, registration, heartbeats, the gRPC server, shutdown.

Owns this PNode's identity and its membership in the fleet. On first start it creates a
key pair in its state directory (its id derives from the public key) and fetches the
orchestrator's CA certificate, trusted only if it matches the fingerprint it was given;
on every start it enrols for a short-lived certificate, serves behind mutual TLS,
registers (id, protocol version, address, hardware), heartbeats with its load and the
compute it did (taking the renewed certificates heartbeats bring), registers again if the
orchestrator forgot it, and unregisters when it stops. Its volunteer may pause it (a file
in its state directory, `dcnr.pnode.status`): it says so in its next heartbeat, at once,
and hands back what it hosts; it keeps its status file there current. It must not decide
where VNodes run: it asks.

Outbound-only (`outbound_only`, or when the orchestrator's probe cannot reach the address it
advertised), it listens on no port: it asks the orchestrator for a relay, keeps one stream to
it (`dcnr.transport.grpc.relay.RelayLink`) that carries the calls for it and the hops it
sends, and registers the address "relay-host:port/ID". When that stream breaks, its work is
dropped and it leaves the fleet (the orchestrator re-places its VNodes, as for a dead PNode),
then attaches again (another relay if it can) with backoff and jitter, and registers again.

A PNode that hosts nothing stays light: it does not import torch, nor the node catalog.
`dcnr.pnode.hardware` asks torch about the machine in a child process, and the runtime is
made (torch loaded, its thread count set) when the first VNode arrives (`_make_runtime`).

With a metrics port it serves its Prometheus metrics (`dcnr.web.pnode_metrics`) over plain HTTP.
"""

from __future__ import annotations

import fcntl
import functools
import logging
import random
import socket
import threading
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import platformdirs

from dcnr.errors import DcnrError, InvalidArgument, NotFound, Unavailable, Unreachable
from dcnr.pnode.hardware import compute_class, detect_hardware
from dcnr.pnode.lazy import LazyRuntime
from dcnr.pnode.status import LOCK_FILE, PAUSE_POLL, StatusWriter, pause_requested
from dcnr.proto.version import VERSION_TEXT
from dcnr.security import pki
from dcnr.storage.files import write_atomic
from dcnr.transport.grpc.link import GrpcOrchestratorLink, enroll, until_reachable
from dcnr.transport.grpc.pnode import (
    DEFAULT_MAX_MESSAGE_BYTES,
    GrpcHopTransport,
    pnode_channels,
    pnode_services,
    serve_pnode,
)
from dcnr.transport.grpc.relay import RelayedHopTransport, RelayLink, method_handlers
from dcnr.transport.grpc.security import Identity
from dcnr.transport.messages import Membership

if TYPE_CHECKING:
    from dcnr.pnode.runtime import PNodeRuntime

__all__ = ["PNode", "compute_class", "default_state_dir", "detect_hardware", "trusted_ca"]

log = logging.getLogger("dcnr.pnode")

REGISTER_WAIT = 60.0  # seconds to keep trying to reach the orchestrator at start-up
RELAY_ATTACH_TIMEOUT = 15.0  # seconds a relay has to confirm an attachment
RELAY_REJOIN_WAIT = 120.0  # seconds one attempt to attach again keeps trying (then the next one starts)
RELAY_BACKOFF_CAP = 30.0  # the longest pause between attempts to attach
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
    handle = open(state_dir / LOCK_FILE, "wb")  # noqa: SIM115 - held open for the PNode's lifetime
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
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, set_torch_threads: bool = True,
                 outbound_only: bool = False, metrics_port: int | None = None) -> None:
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
        self.outbound_only = outbound_only
        self.relay = ""  # the relay that carries this PNode's traffic ("": it is reached directly)
        self.relay_link: RelayLink | None = None
        self._services: Any = None
        self._membership = threading.Lock()  # registering again: the heartbeat loop or the relay watch
        self._rejoined = threading.Event()  # the relay watch registered again: beat now
        self.paused = False  # its volunteer asked it to pause (`dcnr pnode pause`)
        self.told_paused = False  # what the orchestrator last heard: paused or not
        self.paused_since = 0.0  # since when the orchestrator holds it paused (unix time; 0: it does not)
        self.started_at = time.time()
        self.last_beat = 0.0  # unix time of the last heartbeat the orchestrator answered
        self.beat_error = ""  # why the last heartbeat failed ("" when it did not)
        self.stopped = False
        self._compute_base = 0.0  # compute done before it last registered
        self.status = StatusWriter(self)
        self._stop = threading.Event()
        self._beats: threading.Thread | None = None
        self._relay_watch: threading.Thread | None = None
        self.metrics_port = metrics_port  # None: no metrics; 0: any free port (the one bound, once started)
        self.metrics: Any = None
        self.last_beat = 0.0  # unix time the orchestrator last answered a heartbeat or the registration

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
        relayed = RelayedHopTransport(lambda: self.relay_link)
        self.hops = (relayed if self.outbound_only else
                     GrpcHopTransport(pnode_channels(identity, self.max_message_bytes)))
        self.runtime = LazyRuntime(self._make_runtime)
        self._services = pnode_services(self.runtime, self.id)
        if self.metrics_port is not None:
            self._serve_metrics()
        self.paused = pause_requested(self.state_dir)
        if self.paused:
            log.info("starting paused (`dcnr pnode resume` lets it take work)")
        deadline = time.monotonic() + REGISTER_WAIT
        interval: float | None = None
        if not self.outbound_only:
            self.server, port = serve_pnode(self.runtime, identity, f"{self.bind}:{self.port}",
                                            max_message_bytes=self.max_message_bytes)
            self.address = f"{self.advertise or self.bind}:{port}"
            interval = self._register(deadline)
            if interval is None:  # nobody can call us here: close the port, go through a relay
                self.server.stop(0).wait()
                self.server = None
                self.hops.close()
                self.hops = relayed
                if self.runtime.made is not None:  # (made only when a VNode arrived meanwhile)
                    self.runtime.made.hops = relayed
                self.outbound_only = True
        if interval is None:
            interval = self._attach(avoid="", deadline=deadline)
            self._relay_watch = threading.Thread(target=self._relay_loop, name="relay-watch", daemon=True)
            self._relay_watch.start()
        self.heartbeat_interval = self.heartbeat_interval or interval
        self.last_beat = time.time()
        self._beats = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        self._beats.start()
        self.status.start()
        log.info("PNode %s (%s) %s at %s, joined %s", self.id, self.name,
                 f"relayed by {self.relay}" if self.relay else "serving", self.address, self.orchestrator,
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

    def _serve_metrics(self) -> None:
        from dcnr.web.pnode_metrics import pnode_registry  # HTTP only for PNodes that serve metrics
        from dcnr.web.server import serve_metrics

        registry = pnode_registry(self.runtime, lambda: self.hops, lambda: self.last_beat, lambda: bool(self.relay),
                                  lambda: (len(self.runtime.usage()[2]), self.runtime.usage()[1]))
        self.metrics = serve_metrics(registry, f"{self.bind}:{self.metrics_port}")
        self.metrics_port = self.metrics.port

    def _until_reachable(self, attempt: Any, deadline: float) -> Any:
        """`attempt()` until the orchestrator answers (Unavailable is retried until `deadline`)."""
        return until_reachable(attempt, deadline, self._stop, self.orchestrator, "this PNode")

    def _register(self, deadline: float) -> float | None:
        """Join the fleet at `self.address`: the heartbeat interval, or None when the orchestrator cannot reach
        that address."""
        member = Membership(self.id, self.address, self.hardware, VERSION_TEXT, self.name)

        def attempt() -> float | None:
            try:
                return self.link.register(member)
            except Unreachable as exc:
                log.warning("%s: joining through a relay", exc)
                return None
        interval: float | None = self._until_reachable(attempt, deadline)
        if interval is not None:
            self._compute_base, self.told_paused = self.compute_seconds(), False  # a new registration starts afresh
        return interval

    def _attach(self, avoid: str, deadline: float) -> float:
        """Attach to a relay the orchestrator names (not `avoid` if it has another) and register through it;
        returns the heartbeat interval. Raises ConnectionError past `deadline`."""
        delay = 0.5
        while True:
            relay, where = self._until_reachable(functools.partial(self.link.assign_relay, self.id, avoid), deadline)
            host, _, port = where.rpartition(":")
            address = f"{host or self.orchestrator.rpartition(':')[0]}:{port}"
            assert self.identity is not None
            link = RelayLink(address, self.identity, method_handlers(self._services), self.max_message_bytes)
            try:
                link.open(timeout=RELAY_ATTACH_TIMEOUT)
                self.relay_link, self.relay, self.address = link, relay, f"{address}/{self.id}"
                interval = self._register(deadline)
                if interval is not None:
                    return interval
                problem = "the orchestrator cannot reach this PNode through it"
            except Unavailable as exc:
                problem = str(exc)
            link.close()
            log.warning("relay %s at %s: %s; trying again", relay, address, problem)
            avoid = relay
            if time.monotonic() > deadline:
                raise ConnectionError(f"could not join through a relay: {problem}")
            if self._stop.wait(delay * random.uniform(0.5, 1.0)):
                raise ConnectionError("stopped before joining")
            delay = min(RELAY_BACKOFF_CAP, delay * 2)

    def _relay_loop(self) -> None:
        """Attach again whenever the relay stream breaks: the work in flight is dropped and the PNode leaves the
        fleet first (fenced like a dead PNode's work), then attaches (to another relay if one serves) and
        registers, backing off with jitter while it cannot."""
        while not self._stop.is_set():
            link = self.relay_link
            assert link is not None
            while not link.broken.wait(1.0):
                if self._stop.is_set():
                    return
            if self._stop.is_set():
                return
            with self._membership:
                log.warning("the stream to relay %s broke (%s): attaching again", self.relay, link.why)
                link.close()
                self.runtime.forget_all()
                try:
                    self.link.unregister(self.id)
                except DcnrError as exc:
                    log.info("could not leave the fleet first: %s", exc)
                try:
                    self._attach(avoid=self.relay, deadline=time.monotonic() + RELAY_REJOIN_WAIT)
                    self._rejoined.set()
                    log.info("attached to relay %s again as %s", self.relay, self.address)
                except ConnectionError as exc:
                    log.warning("%s", exc)  # the next turn tries again (the dead link is still `broken`)

    def compute_seconds(self) -> float:
        """Seconds this PNode spent computing VNodes and verifying others' work since it started."""
        runtime = self.runtime.made if self.runtime is not None else None
        if runtime is None:  # not made yet: nothing computed
            return 0.0
        return float(runtime.stats["busy_seconds"] + runtime.stats["verify_seconds"])

    def _until_beat(self, wait: float) -> bool:
        """Wait `wait` seconds for the next heartbeat, or less when the volunteer pauses or resumes this PNode
        (its pause file is looked at every `PAUSE_POLL` s) or it registered again through a relay (a heartbeat
        backing off meanwhile must not let it look dead); True when stopping."""
        deadline = time.monotonic() + wait
        while not self._stop.wait(max(0.0, min(PAUSE_POLL, deadline - time.monotonic()))):
            if self._rejoined.is_set():
                self._rejoined.clear()
                return False
            wanted = pause_requested(self.state_dir)
            if wanted != self.paused:
                self.paused = wanted
                log.info("pausing: telling the orchestrator" if wanted else "resuming: telling the orchestrator")
                self.status.poke()
                return False
            if time.monotonic() >= deadline:
                return False
        return True

    def _beaten(self, paused: bool) -> None:
        """The orchestrator took a heartbeat that said `paused`: while paused, hand back whatever is hosted
        here (the orchestrator placed it elsewhere as it took the beat)."""
        self.last_beat, self.beat_error = time.time(), ""
        if paused != self.told_paused:
            self.paused_since = time.time() if paused else 0.0
            log.info("paused: no new work until `dcnr pnode resume`" if paused else "resumed: taking work again")
        self.told_paused = paused
        runtime = self.runtime.made
        if paused and runtime is not None and runtime.host.networks():
            hosted = len(runtime.host.local())
            self.runtime.forget_all()
            log.info("handed back %d VNode(s)", hosted)
        self.status.poke()

    def _heartbeat_loop(self) -> None:
        """Beat every interval; while the orchestrator is away, back off exponentially with jitter (so a
        returning orchestrator is not stormed), and register again as soon as it answers that it forgot us."""
        assert self.heartbeat_interval is not None
        wait, failures = (0.0 if self.paused else self.heartbeat_interval), 0
        while not self._until_beat(wait):
            try:
                paused = self.paused
                renewed = self.link.heartbeat(self.id, *self.runtime.usage(), paused=paused,
                                              compute_seconds=self.compute_seconds() - self._compute_base)
                self._beaten(paused)
                if renewed:
                    assert self.identity is not None
                    creds = self.identity.creds
                    self.identity.update(pki.Credentials(creds.key_pem, renewed, creds.ca_pem))
                    log.info("certificate renewed until %s", time.ctime(pki.expires_at(renewed)))
                wait, failures, self.last_beat = self.heartbeat_interval, 0, time.time()
                continue
            except NotFound:  # forgotten (marked dead, or a fresh orchestrator)
                if self._registered_again():
                    wait, failures = (0.0 if self.paused else self.heartbeat_interval), 0
                    continue
            except DcnrError as exc:
                log.warning("heartbeat failed: %s", exc)
                self.beat_error = str(exc)
                self._enroll_again_if_expired()
            failures += 1
            cap = max(10 * self.heartbeat_interval, 1.0)
            wait = min(cap, self.heartbeat_interval * 2 ** min(failures, 16)) * random.uniform(0.5, 1.0)

    def _registered_again(self) -> bool:
        """After the orchestrator forgot this PNode: drop its work and register again (unless the relay stream is
        down: the relay watch does it then)."""
        assert self.heartbeat_interval is not None
        with self._membership:
            if self.relay_link is not None and self.relay_link.broken.is_set():
                return False
            log.warning("the orchestrator does not know this PNode any more: registering again")
            self.runtime.forget_all()
            try:
                return self._register(deadline=time.monotonic() + self.heartbeat_interval) is not None
            except ConnectionError as err:
                log.warning("%s", err)
                self.beat_error = str(err)
                return False

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
        self.stopped = True
        self.status.stop()
        if self.link is not None:
            try:
                self.link.unregister(self.id)
            except DcnrError as exc:
                log.warning("could not unregister: %s", exc)
        if self.server is not None:
            self.server.stop(1.0).wait()
        if self.relay_link is not None:
            self.relay_link.close()
        if self.metrics is not None:
            self.metrics.stop()
        if self.runtime is not None:
            self.runtime.stop()
            self.hops.close()
            self.link.close()
        self._held.close()
        log.info("PNode %s stopped", self.id, extra={"pnode": self.id})
