"""The orchestrator process: its parts wired together, and their life from `start` to `stop`.

Owns what an orchestrator runs besides answering requests: the heartbeat monitor (of PNodes
and relays), its own relay (for PNodes behind NAT while no relay process serves them),
resuming the sessions a crash interrupted, its TLS identity (a CA of its own, created on
first start under `STATE_DIR/tls`) and `admin.yaml`. Its services (`networks`, `serving`,
`sessions`, `data`, `fleet`, `standings`, `blob_access`) are served over gRPC by
`dcnr.transport.grpc.server`, which `start` starts, and read over HTTP (metrics, the
dashboard and its JSON API) by `dcnr.web`, which `start` starts when given an HTTP address.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import threading
from pathlib import Path

from dcnr.errors import InvalidArgument
from dcnr.orchestrator.blob_access import BlobAccess
from dcnr.orchestrator.checkpoints import KEEP_CHECKPOINTS, Checkpoints
from dcnr.orchestrator.datastore import DataStore
from dcnr.orchestrator.driver import Driver, Inbox
from dcnr.orchestrator.fleet import Fleet
from dcnr.orchestrator.history import History
from dcnr.orchestrator.limits import Limits
from dcnr.orchestrator.networks import Networks
from dcnr.orchestrator.relays import Relays
from dcnr.orchestrator.serving import Serving
from dcnr.orchestrator.sessions import Sessions
from dcnr.orchestrator.standing import COOLING_OFF, QUARANTINE_AFTER, Standings
from dcnr.orchestrator.store import SQLiteStore
from dcnr.orchestrator.timeline import Timelines
from dcnr.orchestrator.validator import Validator
from dcnr.security import pki
from dcnr.security.config import ClientConfig
from dcnr.security.tokens import Tokens
from dcnr.spec.model import NetworkSpec
from dcnr.storage import BlobStore, open_store
from dcnr.transport.grpc.pnode import GrpcConnector, pnode_channels
from dcnr.transport.grpc.relay import Relay
from dcnr.transport.grpc.security import Identity
from dcnr.transport.grpc.server import OrchestratorServer
from dcnr.web import api as web
from dcnr.web.server import HttpServer

log = logging.getLogger("dcnr.orchestrator")

DEFAULT_MAX_MESSAGE_BYTES = 256 * 2**20
DEFAULT_RATE_LIMIT = 500.0  # calls per second per identity (bursts of twice that)
ADMIN_CONFIG = "admin.yaml"
ADMIN_TOKEN = "admin"


def _local_host(host: str) -> str:
    """The host a client on this machine dials for a server bound to `host`."""
    return "127.0.0.1" if host in ("", "0.0.0.0", "[::]", "::") else host


class Orchestrator:
    """Everything one orchestrator runs, wired together; `start` serves, `stop` shuts down cleanly."""

    def __init__(self, state_dir: str | Path, heartbeat_interval: float = 30.0, step_timeout: float = 600.0,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, storage: str | None = None,
                 s3_endpoint_url: str | None = None, recovery_timeout: float = 600.0, public_reads: bool = True,
                 rate_limit: float = DEFAULT_RATE_LIMIT,
                 certificate_lifetime: datetime.timedelta = pki.PNODE_LIFETIME, limits: Limits | None = None,
                 keep_checkpoints: int = KEEP_CHECKPOINTS, quarantine_after: int = QUARANTINE_AFTER,
                 cooling_off: float = COOLING_OFF) -> None:
        self.limits = limits or Limits()  # what one request may ask of it
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.store = SQLiteStore(self.state_dir / "state.sqlite")
        self.tokens = Tokens(self.store)
        self.history = History(self.store)  # step events and the fleet's events, kept across restarts
        self.standings = Standings(self.store, quarantine_after, cooling_off,  # PNodes' trust, charges, quarantine
                                   fleet_events=self.history.fleet_event)
        self.ca = pki.CertificateAuthority.load_or_create(self.state_dir / "tls")
        self.identity = Identity(self.ca.orchestrator_credentials(self.state_dir / "tls"))
        self.public_reads, self.rate_limit, self.certificate_lifetime = public_reads, rate_limit, certificate_lifetime
        objects = open_store(storage or (self.state_dir / "storage").resolve().as_uri(), s3_endpoint_url)
        self.data = DataStore(objects, self.limits)
        self.fleet = Fleet(self.store, GrpcConnector(self.identity, max_message_bytes, timeout=step_timeout),
                           heartbeat_interval, standings=self.standings, events=self.history.fleet_event)
        self.inbox = Inbox()
        self.checkpoints = Checkpoints(BlobStore(objects), keep=keep_checkpoints)
        self.validator = Validator(self.fleet, self.standings, blob_reader=self.checkpoints.blobs.get_blob)
        self.timelines = Timelines()  # the recent steps of sessions, as timed (in memory)
        self.driver = Driver(self.store, self.fleet, self.inbox, step_timeout, vocabularies=self._vocabularies,
                             from_seed=self.checkpoints.from_seed, validator=self.validator, timelines=self.timelines)
        self.blob_access = BlobAccess(self.checkpoints, self.store)
        self.sessions = Sessions(self.store, self.driver, self.data, self.checkpoints, recovery_timeout, self.limits,
                                 history=self.history)
        self.networks = Networks(self.store, self.driver, self.fleet, self.data, self.checkpoints, self.limits)
        self.serving = Serving(self.store, self.driver, self.data, self.networks, self.limits, history=self.history)
        self.max_message_bytes = max_message_bytes
        # PNodes behind NAT attach to relays, and to the orchestrator's own when none runs
        self.relay_identity = Identity(self.ca.relay_credentials(self.state_dir / "tls"))
        self.relay = Relay(pnode_channels(self.relay_identity, max_message_bytes))
        self.relays = Relays(heartbeat_interval, lambda: (self.relay_port, self.relay.attached,
                                                          self.relay.bytes_forwarded, self.relay.hop_bytes),
                             events=self.history.fleet_event)
        self.server: OrchestratorServer | None = None
        self.http: HttpServer | None = None
        self.port = self.peer_port = self.relay_port = self.http_port = 0
        self._stop = threading.Event()
        self._monitor: threading.Thread | None = None

    def _vocabularies(self, spec: NetworkSpec) -> dict[str, str]:
        """The tokenizer JSON of every stored vocabulary the network's tokenizer nodes name (PNodes get them
        with the network's placement)."""
        names = {v for node in spec.nodes.values() if (v := getattr(node.impl.cfg, "vocabulary", None))}
        return {name: self.data.tokenizer(name).to_str() for name in sorted(names)}

    def start(self, address: str = "127.0.0.1:0", peer_address: str | None = None, threads: int = 32,
              relay_address: str | None = None, http_address: str | None = None, dashboard: bool = True) -> int:
        """Serve on `address` and, for PNodes, on `peer_address` and (its relay) on `relay_address` (default:
        the same host, any free port), and with `http_address` (port 0: any free one) metrics and, unless
        `dashboard` is off, the dashboard; watch heartbeats, resume interrupted sessions, keep `admin.yaml`
        pointing here; returns the port."""
        host = address.rpartition(":")[0]
        self.server = OrchestratorServer(self, address, peer_address or f"{host}:0", threads,
                                         relay_address or f"{host}:0")
        self.port, self.peer_port, self.relay_port = self.server.port, self.server.peer_port, self.server.relay_port
        if http_address is not None:
            try:
                self.http = web.serve(self, http_address, dashboard)
            except OSError:
                self.server.stop(0)
                raise
            self.http_port = self.http.port
        self.write_admin_config(f"{_local_host(host)}:{self.port}")
        self._monitor = threading.Thread(target=self._watch, name="heartbeats", daemon=True)
        self._monitor.start()
        resumed = self.sessions.resume_interrupted()  # a crash left them running: back from their checkpoints
        if resumed:
            log.info("resuming %d interrupted session(s): %s", len(resumed), ", ".join(resumed))
        log.info("orchestrator serving on port %d, PNodes on port %d, relaying on port %d (state in %s)",
                 self.port, self.peer_port, self.relay_port, self.state_dir, extra={"port": self.port})
        return self.port

    @property
    def admin_config(self) -> Path:
        return self.state_dir / ADMIN_CONFIG

    def write_admin_config(self, address: str) -> None:
        """`admin.yaml`: this orchestrator's address, CA and an operator token (created with the file; the
        file keeps it, since only its hash is stored)."""
        token = ""
        if self.admin_config.exists():
            with contextlib.suppress(InvalidArgument):
                token = ClientConfig.load(self.admin_config).token
        if not token:
            self.tokens.revoke(ADMIN_TOKEN)  # its secret is lost with the file
            token = self.tokens.create(ADMIN_TOKEN, "operator")
        ClientConfig(address, self.ca.cert_pem.decode(), token).save(self.admin_config)

    def join_command(self, host: str) -> str:
        """What a volunteer runs to lend a machine to this orchestrator."""
        return f"dcnr pnode --orchestrator {host}:{self.port} --ca-fingerprint {self.ca.fingerprint}"

    def _watch(self) -> None:
        interval = max(0.05, self.fleet.heartbeat_interval / 2)
        while not self._stop.wait(interval):
            try:
                self.fleet.sweep()
                for relay in self.relays.sweep():
                    log.warning("relay %s missed its heartbeats: marked dead", relay)
            except Exception:  # never let the monitor die
                log.exception("heartbeat sweep failed")

    def stop(self, grace: float = 2.0) -> None:
        self._stop.set()
        for rec in self.store.list_sessions():
            if rec.state == "running":
                self.sessions.suspend(rec.id)
        if self.http is not None:
            self.http.stop()
        if self.server is not None:
            self.server.stop(grace)
        self.relay.close()
        self.driver.close()
        self.validator.close()
        self.fleet.close()
        self.store.close()
