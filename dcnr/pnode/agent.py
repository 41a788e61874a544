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

import grpc
import torch

from dcnr.pnode.blobs import BlobClient
from dcnr.pnode.host import UnknownTarget
from dcnr.pnode.runtime import PNodeRuntime
from dcnr.pnode.service import DEFAULT_MAX_MESSAGE_BYTES, serve
from dcnr.proto.v1 import node_pb2, node_pb2_grpc, orchestrator_pb2, orchestrator_pb2_grpc
from dcnr.proto.version import version_message

log = logging.getLogger("dcnr.pnode")

REGISTER_WAIT = 60.0  # seconds to keep trying to reach the orchestrator at start-up


class GrpcOrchestratorLink:
    """The PNode's client to the orchestrator."""

    def __init__(self, address: str, pnode_id: str, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 timeout: float = 30.0) -> None:
        options = [("grpc.max_send_message_length", max_message_bytes),
                   ("grpc.max_receive_message_length", max_message_bytes)]
        self.channel = grpc.insecure_channel(address, options=options)
        self.nodes = node_pb2_grpc.NodeManagementServiceStub(self.channel)
        self.control = orchestrator_pb2_grpc.OrchestratorServiceStub(self.channel)
        self.pnode_id = pnode_id
        self.timeout = timeout

    def network_yaml(self, name: str) -> str:
        try:
            return str(self.control.GetNetwork(orchestrator_pb2.NetworkRef(name=name), timeout=self.timeout).yaml)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise UnknownTarget(exc.details()) from None
            raise

    def locate(self, network: str, vnode: str, refresh: bool) -> tuple[str, str]:
        try:
            loc = self.nodes.GetVNodeLocation(node_pb2.VNodeLocationRequest(
                network=network, vnode=vnode, pnode=self.pnode_id, refresh=refresh), timeout=self.timeout)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise UnknownTarget(exc.details()) from None
            raise
        return loc.pnode, loc.address

    def vocabulary_json(self, name: str) -> str:
        """A stored vocabulary's tokenizer JSON (for tokenizer and detokenizer VNodes)."""
        try:
            reply = self.control.GetVocabulary(orchestrator_pb2.NameRef(name=name), timeout=self.timeout)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise ValueError(exc.details()) from None
            raise
        return str(reply.tokenizer_json)

    def report(self, events: list[node_pb2.ProgressEvent]) -> None:
        self.nodes.ReportProgress(node_pb2.ProgressReport(version=version_message(), pnode=self.pnode_id,
                                                          events=events), timeout=self.timeout)

    def close(self) -> None:
        self.channel.close()


def detect_hardware(device: str, memory_budget: int | None, threads: int) -> node_pb2.Hardware:
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
    return node_pb2.Hardware(cpu_cores=os.cpu_count() or 1, memory_bytes=memory, device=device,
                             memory_budget_bytes=budget, threads=threads)


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
        self.link = GrpcOrchestratorLink(orchestrator, self.id, max_message_bytes)
        self.runtime = PNodeRuntime(self.id, self.link, device, int(self.hardware.memory_budget_bytes),
                                    task_timeout, max_message_bytes=max_message_bytes)
        self.runtime.blobs = BlobClient(self.link.channel, self.id)
        self.max_message_bytes = max_message_bytes
        self.server: grpc.Server | None = None
        self.address = ""
        self._stop = threading.Event()
        self._beats: threading.Thread | None = None

    def start(self) -> None:
        if self.set_torch_threads:
            torch.set_num_threads(self.threads)
        # the first optimizer of a process imports a lot of torch: do it now, not in the first step
        torch.optim.Adam([torch.zeros(1, requires_grad=True)])
        self.runtime.start()
        self.server, port = serve(self.runtime, f"{self.bind}:{self.port}", max_message_bytes=self.max_message_bytes)
        self.address = f"{self.advertise or self.bind}:{port}"
        interval = self._register(deadline=time.monotonic() + REGISTER_WAIT)
        self.heartbeat_interval = self.heartbeat_interval or interval
        self._beats = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        self._beats.start()
        log.info("PNode %s serving at %s, joined %s", self.id, self.address, self.orchestrator,
                 extra={"pnode": self.id, "address": self.address})

    def _register(self, deadline: float) -> float:
        request = node_pb2.RegisterPNodeRequest(id=self.id, version=version_message(), address=self.address,
                                                hardware=self.hardware)
        delay = 0.1
        while True:
            try:
                reply = self.link.nodes.RegisterPNode(request, timeout=10)
                return reply.heartbeat_interval_ms / 1000.0 or 30.0
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                    raise ConnectionError(f"cannot register with the orchestrator at {self.orchestrator}: "
                                          f"{exc.code().name}: {exc.details()}") from None
            if self._stop.wait(delay):
                raise ConnectionError("stopped before registering")
            delay = min(2.0, delay * 2)

    def _heartbeat_loop(self) -> None:
        """Beat every interval; while the orchestrator is away, back off exponentially with jitter (so a
        returning orchestrator is not stormed), and register again as soon as it answers that it forgot us."""
        assert self.heartbeat_interval is not None
        wait, failures = self.heartbeat_interval, 0
        while not self._stop.wait(wait):
            beat = node_pb2.HeartbeatRequest(
                id=self.id, load=self.runtime.load(), memory_used_bytes=self.runtime.host.memory_used,
                vnodes=[f"{net}/{v.id}" for net, v in self.runtime.host.local()],
                refused_tasks=int(self.runtime.stats["refused"]))
            try:
                self.link.nodes.HeartbeatPNode(beat, timeout=max(1.0, self.heartbeat_interval))
                wait, failures = self.heartbeat_interval, 0
                continue
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.NOT_FOUND:  # forgotten (marked dead, or a fresh orchestrator)
                    log.warning("the orchestrator does not know this PNode any more: registering again")
                    self.runtime.call(self._forget_all)
                    try:
                        self._register(deadline=time.monotonic() + self.heartbeat_interval)
                        wait, failures = self.heartbeat_interval, 0
                        continue
                    except ConnectionError as err:
                        log.warning("%s", err)
                else:
                    log.warning("heartbeat failed: %s %s", exc.code().name, exc.details())
            failures += 1
            cap = max(10 * self.heartbeat_interval, 1.0)
            wait = min(cap, self.heartbeat_interval * 2 ** min(failures, 16)) * random.uniform(0.5, 1.0)

    def _forget_all(self) -> None:
        for net in self.runtime.host.networks():
            self.runtime.forget_network(net)

    def stop(self) -> None:
        """Unregister, stop serving, stop computing (idempotent)."""
        if self._stop.is_set():
            return
        self._stop.set()
        try:
            self.link.nodes.UnregisterPNode(node_pb2.PNodeRef(id=self.id), timeout=5)
        except grpc.RpcError as exc:
            log.warning("could not unregister: %s", exc.code().name)
        if self.server is not None:
            self.server.stop(1.0).wait()
        self.runtime.stop()
        self.link.close()
        log.info("PNode %s stopped", self.id, extra={"pnode": self.id})

    def describe(self) -> dict[str, Any]:
        hw = self.hardware
        return {"id": self.id, "address": self.address, "orchestrator": self.orchestrator,
                "hardware": {"cpu_cores": hw.cpu_cores, "memory_bytes": hw.memory_bytes, "device": hw.device,
                             "memory_budget_bytes": hw.memory_budget_bytes, "threads": hw.threads}}
