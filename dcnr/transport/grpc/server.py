"""The orchestrator's gRPC servers: its three services, each servicer wrapped once with `secured`
(who may call what) and `guarded` (errors as statuses), on two TLS ports, and its relay on a third.

- the public port: people's clients with a bearer token (or anonymous), and PNodes enrolling;
- the peer port: mutual TLS, PNodes with the certificate they were issued (membership, reports,
  checkpoint storage). It has a thread pool of its own, so heartbeats are answered however
  many streams the public port serves;
- the relay port: PNodes behind NAT attach there while no relay process serves them
  (`dcnr.transport.grpc.relay`).
Message sizes are capped at the orchestrator's limit; streams are bounded on both.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import TYPE_CHECKING, Any

import grpc

from dcnr.orchestrator.driver import Members
from dcnr.proto.v2 import (
    node_pb2,
    node_pb2_grpc,
    orchestrator_pb2,
    orchestrator_pb2_grpc,
    storage_pb2,
    storage_pb2_grpc,
)
from dcnr.security.ratelimit import RateLimiter
from dcnr.transport.grpc.errors import guarded
from dcnr.transport.grpc.node_management import NodeManagementServicer
from dcnr.transport.grpc.orchestrator_service import OrchestratorServicer
from dcnr.transport.grpc.relay import serve_relay
from dcnr.transport.grpc.security import Authority, add_tls_port, secured
from dcnr.transport.grpc.storage_service import StorageServicer

if TYPE_CHECKING:
    from dcnr.orchestrator.app import Orchestrator


RESERVED_THREADS = 8  # of each server's threads, never taken by streams: membership and short calls
PEER_THREADS = 16


class OrchestratorServer:
    """Serving `orch` on `address` (public), `peer_address` (mutual TLS) and, its relay, `relay_address`
    (mutual TLS; default: any free port) from construction until `stop`; `port`, `peer_port` and
    `relay_port` are the ports they listen on.

    A streaming call (listening to a session, chat, uploads and downloads) holds a server thread for
    as long as it lasts, so at most `threads - RESERVED_THREADS` run at once; more are refused with
    RESOURCE_EXHAUSTED.
    """

    def __init__(self, orch: Orchestrator, address: str, peer_address: str, threads: int = 32,
                 relay_address: str = "") -> None:
        if threads <= RESERVED_THREADS:
            raise ValueError(f"the orchestrator needs more than {RESERVED_THREADS} server threads, got {threads}")
        limit = orch.max_message_bytes
        options = [("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)]
        limiter = RateLimiter(orch.rate_limit, orch.rate_limit * 2)
        authority = Authority(orch.tokens, orch.public_reads, limiter)

        def serve(servicer: Any, service: Any) -> Any:  # checked first, then errors become statuses
            return guarded(secured(servicer, service.full_name, authority))

        self.nodes = NodeManagementServicer(Members(orch.fleet, orch.inbox, orch.ca, orch.certificate_lifetime,
                                                    relays=orch.relays, probe=True))
        nodes_service = node_pb2.DESCRIPTOR.services_by_name["NodeManagementService"]
        control = serve(OrchestratorServicer(orch), orchestrator_pb2.DESCRIPTOR.services_by_name["OrchestratorService"])
        limit_streams(control, "OrchestratorService", threading.BoundedSemaphore(threads - RESERVED_THREADS),
                      threads - RESERVED_THREADS)
        storage = serve(StorageServicer(orch.blob_access), storage_pb2.DESCRIPTOR.services_by_name["StorageService"])
        limit_streams(storage, "StorageService", threading.BoundedSemaphore(PEER_THREADS - RESERVED_THREADS),
                      PEER_THREADS - RESERVED_THREADS)
        nodes = serve(self.nodes, nodes_service)

        self._public = grpc.server(futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="orch-rpc"),
                                   options=options)
        orchestrator_pb2_grpc.add_OrchestratorServiceServicer_to_server(control, self._public)
        node_pb2_grpc.add_NodeManagementServiceServicer_to_server(nodes, self._public)  # enrolment
        self._peer = grpc.server(futures.ThreadPoolExecutor(max_workers=PEER_THREADS, thread_name_prefix="orch-peer"),
                                 options=options)
        node_pb2_grpc.add_NodeManagementServiceServicer_to_server(nodes, self._peer)
        storage_pb2_grpc.add_StorageServiceServicer_to_server(storage, self._peer)
        self.servicers: dict[str, Any] = {  # by service name
            "OrchestratorService": control, "NodeManagementService": nodes, "StorageService": storage}
        self.port = add_tls_port(self._public, address, orch.identity, mutual=False)
        if self.port == 0:
            raise OSError(f"cannot listen on {address}")
        self.peer_port = add_tls_port(self._peer, peer_address, orch.identity, mutual=True)
        if self.peer_port == 0:
            raise OSError(f"cannot listen on {peer_address}")
        self.nodes.peer_port = self.peer_port
        self._public.start()
        self._peer.start()
        self._relay, self.relay_port = serve_relay(orch.relay, orch.relay_identity,
                                                   relay_address or f"{address.rpartition(':')[0]}:0",
                                                   max_message_bytes=limit)

    def stop(self, grace: float | None) -> None:
        """Refuse new calls, give running ones `grace` seconds, then end them."""
        stopped = [self._public.stop(grace), self._peer.stop(grace), self._relay.stop(grace)]
        for done in stopped:
            done.wait()


def limit_streams(servicer: Any, name: str, slots: threading.BoundedSemaphore, count: int) -> None:
    """Wrap the streaming RPCs of service `name` so that at most `count` run at once (RESOURCE_EXHAUSTED beyond)."""
    files = {"OrchestratorService": orchestrator_pb2, "StorageService": storage_pb2}
    service = files[name].DESCRIPTOR.services_by_name[name]
    for method in service.methods:
        if not (method.client_streaming or method.server_streaming):
            continue
        handler = getattr(servicer, method.name)
        setattr(servicer, method.name, (_limited_stream if method.server_streaming else _limited_call)(
            handler, slots, count))


def _refuse(context: grpc.ServicerContext, count: int) -> None:
    context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                  f"this orchestrator serves at most {count} such streams at once; try again later")


def _limited_stream(handler: Callable[..., Iterator[Any]], slots: threading.BoundedSemaphore,
                    count: int) -> Callable[..., Iterator[Any]]:
    @functools.wraps(handler)
    def wrapper(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        if not slots.acquire(blocking=False):
            _refuse(context, count)
        try:
            yield from handler(request, context)
        finally:
            slots.release()
    return wrapper


def _limited_call(handler: Callable[..., Any], slots: threading.BoundedSemaphore, count: int) -> Callable[..., Any]:
    @functools.wraps(handler)
    def wrapper(request: Any, context: grpc.ServicerContext) -> Any:
        if not slots.acquire(blocking=False):
            _refuse(context, count)
        try:
            return handler(request, context)
        finally:
            slots.release()
    return wrapper
