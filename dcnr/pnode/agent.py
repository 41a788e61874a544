"""A PNode as a whole: hardware, registration, heartbeats, the gRPC server, shutdown.

Owns this PNode's membership in the fleet: it registers with the orchestrator
(id, protocol version, address, hardware), heartbeats with its load, registers
again if the orchestrator forgot it, and unregisters when it stops. It must not
decide where VNodes run: it asks.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
import uuid
from typing import Any

import torch

from dcnr.errors import DcnrError, NotFound, Unavailable
from dcnr.pnode.runtime import PNodeRuntime
from dcnr.proto.version import VERSION_TEXT
from dcnr.transport.grpc.link import GrpcOrchestratorLink
from dcnr.transport.grpc.pnode import DEFAULT_MAX_MESSAGE_BYTES, GrpcHopTransport, serve_pnode
from dcnr.transport.messages import Membership

log = logging.getLogger("dcnr.pnode")

REGISTER_WAIT = 60.0  # seconds to keep trying to reach the orchestrator at start-up


def detect_hardware(device: str, memory_budget: int | None, threads: int) -> dict[str, Any]:
    """CPU cores, physical memory and the torch device (refusing one this machine lacks)."""
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available to torch on this machine")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ValueError("--device mps: no MPS device is available to torch on this machine")
    if device not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device must be cpu, cuda or mps, got {device!r}")
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        memory = 0
    budget = memory_budget if memory_budget is not None else (memory // 2 if memory else 4 * 2**30)
    return {"cpu_cores": os.cpu_count() or 1, "memory_bytes": memory, "device": device,
            "memory_budget_bytes": budget, "threads": threads}


class PNode:
    """One PNode: `start` serves and joins the fleet; `stop` leaves it cleanly."""

    def __init__(self, orchestrator: str, pnode_id: str | None = None, bind: str = "127.0.0.1", port: int = 0,
                 advertise: str | None = None, memory_budget: int | None = None, threads: int | None = None,
                 device: str = "cpu", heartbeat_interval: float | None = None, task_timeout: float = 300.0,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, set_torch_threads: bool = True) -> None:
        self.orchestrator = orchestrator
        self.id = pnode_id or f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}"
        self.bind, self.port, self.advertise = bind, port, advertise
        self.threads = threads or max(1, torch.get_num_threads())
        if threads is not None and threads < 1:
            raise ValueError(f"--threads must be at least 1, got {threads}")
        self.hardware = detect_hardware(device, memory_budget, self.threads)
        self.heartbeat_interval = heartbeat_interval
        self.set_torch_threads = set_torch_threads
        self.link = GrpcOrchestratorLink(orchestrator, max_message_bytes)
        self.hops = GrpcHopTransport(max_message_bytes)
        self.runtime = PNodeRuntime(self.id, self.hops, self.link, device, int(self.hardware["memory_budget_bytes"]),
                                    task_timeout)
        self.max_message_bytes = max_message_bytes
        self.server: Any = None
        self.address = ""
        self._stop = threading.Event()
        self._beats: threading.Thread | None = None

    def start(self) -> None:
        if self.set_torch_threads:
            torch.set_num_threads(self.threads)
        # the first optimizer of a process imports a lot of torch: do it now, not in the first step
        torch.optim.Adam([torch.zeros(1, requires_grad=True)])
        self.runtime.start()
        self.server, port = serve_pnode(self.runtime, f"{self.bind}:{self.port}",
                                        max_message_bytes=self.max_message_bytes)
        self.address = f"{self.advertise or self.bind}:{port}"
        interval = self._register(deadline=time.monotonic() + REGISTER_WAIT)
        self.heartbeat_interval = self.heartbeat_interval or interval
        self._beats = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        self._beats.start()
        log.info("PNode %s serving at %s, joined %s", self.id, self.address, self.orchestrator,
                 extra={"pnode": self.id, "address": self.address})

    def _register(self, deadline: float) -> float:
        member = Membership(self.id, self.address, self.hardware, VERSION_TEXT)
        delay = 0.1
        while True:
            try:
                return self.link.register(member)
            except Unavailable as exc:
                if time.monotonic() > deadline:
                    raise ConnectionError(f"cannot register with the orchestrator at {self.orchestrator}: "
                                          f"{exc}") from None
            except DcnrError as exc:
                raise ConnectionError(f"the orchestrator at {self.orchestrator} refused this PNode: {exc}") from None
            if self._stop.wait(delay):
                raise ConnectionError("stopped before registering")
            delay = min(2.0, delay * 2)

    def _heartbeat_loop(self) -> None:
        """Beat every interval; while the orchestrator is away, back off exponentially with jitter (so a
        returning orchestrator is not stormed), and register again as soon as it answers that it forgot us."""
        assert self.heartbeat_interval is not None
        wait, failures = self.heartbeat_interval, 0
        while not self._stop.wait(wait):
            try:
                self.link.heartbeat(self.id, self.runtime.queued(), self.runtime.host.memory_used,
                                    [f"{net}/{v.id}" for net, v in self.runtime.host.local()],
                                    int(self.runtime.stats["refused"]))
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
            failures += 1
            cap = max(10 * self.heartbeat_interval, 1.0)
            wait = min(cap, self.heartbeat_interval * 2 ** min(failures, 16)) * random.uniform(0.5, 1.0)

    def stop(self) -> None:
        """Unregister, stop serving, stop computing (idempotent)."""
        if self._stop.is_set():
            return
        self._stop.set()
        try:
            self.link.unregister(self.id)
        except DcnrError as exc:
            log.warning("could not unregister: %s", exc)
        if self.server is not None:
            self.server.stop(1.0).wait()
        self.runtime.stop()
        self.hops.close()
        self.link.close()
        log.info("PNode %s stopped", self.id, extra={"pnode": self.id})
