"""The orchestrator process: its parts wired together, and their life from `start` to `stop`.

Owns what an orchestrator runs besides answering requests: the heartbeat monitor, and
resuming the sessions a crash interrupted. Its services (`networks`, `serving`,
`sessions`, `data`, `fleet`, `blob_access`) are served over gRPC by
`dcnr.transport.grpc.server`, which `start` starts.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from dcnr.orchestrator.blob_access import BlobAccess
from dcnr.orchestrator.checkpoints import KEEP_CHECKPOINTS, Checkpoints
from dcnr.orchestrator.datastore import DataStore
from dcnr.orchestrator.driver import Driver, Inbox
from dcnr.orchestrator.fleet import Fleet
from dcnr.orchestrator.networks import Networks
from dcnr.orchestrator.serving import Serving
from dcnr.orchestrator.sessions import Sessions
from dcnr.orchestrator.store import SQLiteStore
from dcnr.spec.model import NetworkSpec
from dcnr.storage import BlobStore, open_store
from dcnr.transport.grpc.pnode import GrpcConnector
from dcnr.transport.grpc.server import OrchestratorServer

log = logging.getLogger("dcnr.orchestrator")

DEFAULT_MAX_MESSAGE_BYTES = 256 * 2**20


class Orchestrator:
    """Everything one orchestrator runs, wired together; `start` serves, `stop` shuts down cleanly."""

    def __init__(self, state_dir: str | Path, heartbeat_interval: float = 30.0, step_timeout: float = 600.0,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, storage: str | None = None,
                 s3_endpoint_url: str | None = None, recovery_timeout: float = 600.0,
                 keep_checkpoints: int = KEEP_CHECKPOINTS) -> None:
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.store = SQLiteStore(self.state_dir / "state.sqlite")
        objects = open_store(storage or (self.state_dir / "storage").resolve().as_uri(), s3_endpoint_url)
        self.data = DataStore(objects)
        self.fleet = Fleet(self.store, GrpcConnector(max_message_bytes, timeout=step_timeout), heartbeat_interval)
        self.inbox = Inbox()
        self.driver = Driver(self.store, self.fleet, self.inbox, step_timeout, vocabularies=self._vocabularies)
        self.checkpoints = Checkpoints(BlobStore(objects), keep=keep_checkpoints)
        self.blob_access = BlobAccess(self.checkpoints, self.store)
        self.sessions = Sessions(self.store, self.driver, self.data, self.checkpoints, recovery_timeout)
        self.networks = Networks(self.store, self.driver, self.fleet, self.data, self.checkpoints)
        self.serving = Serving(self.store, self.driver, self.data, self.networks)
        self.max_message_bytes = max_message_bytes
        self.server: OrchestratorServer | None = None
        self.port = 0
        self._stop = threading.Event()
        self._monitor: threading.Thread | None = None

    def _vocabularies(self, spec: NetworkSpec) -> dict[str, str]:
        """The tokenizer JSON of every stored vocabulary the network's tokenizer nodes name (PNodes get them
        with the network's placement)."""
        names = {v for node in spec.nodes.values() if (v := getattr(node.impl.cfg, "vocabulary", None))}
        return {name: self.data.tokenizer(name).to_str() for name in sorted(names)}

    def start(self, address: str = "127.0.0.1:0", threads: int = 32) -> int:
        """Serve on `address` (port 0: any free port), watch heartbeats, resume interrupted sessions;
        returns the port."""
        self.server = OrchestratorServer(self, address, threads)
        self.port = self.server.port
        self._monitor = threading.Thread(target=self._watch, name="heartbeats", daemon=True)
        self._monitor.start()
        resumed = self.sessions.resume_interrupted()  # a crash left them running: back from their checkpoints
        if resumed:
            log.info("resuming %d interrupted session(s): %s", len(resumed), ", ".join(resumed))
        log.info("orchestrator serving on port %d (state in %s)", self.port, self.state_dir,
                 extra={"port": self.port})
        return self.port

    def _watch(self) -> None:
        interval = max(0.05, self.fleet.heartbeat_interval / 2)
        while not self._stop.wait(interval):
            try:
                self.fleet.sweep()
            except Exception:  # never let the monitor die
                log.exception("heartbeat sweep failed")

    def stop(self, grace: float = 2.0) -> None:
        self._stop.set()
        for rec in self.store.list_sessions():
            if rec.state == "running":
                self.sessions.suspend(rec.id)
        if self.server is not None:
            self.server.stop(grace)
        self.driver.close()
        self.fleet.close()
        self.store.close()
