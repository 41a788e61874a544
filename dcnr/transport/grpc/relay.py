"""Relays over gRPC, both ends: PNodes that accept no connections still take part.

A PNode behind NAT opens one mutually authenticated `RelayService.Attach` stream to a relay
and keeps it (`RelayLink`, gRPC keepalives). The relay (`Relay`, served by `serve_relay`
inside a `dcnr relay` process or the orchestrator) then:
- answers calls addressed "relay-host:port/PNODE-ID" (any VNodeService / PNodeService method,
  as raw bytes) by sending them down that PNode's stream with the caller's verified
  certificate, and returning the PNode's reply, status and trailing metadata;
- delivers the hops the PNode sends up its stream: down another PNode's stream when that
  one is attached here, else by dialling the target in the sender's name (`ON_BEHALF_KEY`).
On the PNode, calls that come down run through the very servicers a listening PNode serves
(the same `secured` checks, with the caller the relay names), on a small thread pool.
A stream that breaks fails every call waiting on it with UNAVAILABLE, so the work in flight is
fenced like a dead PNode's; the PNode agent reconnects (see `dcnr.pnode.agent`).
Bytes through a relay are counted (payloads both ways).
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent import futures
from typing import Any

import grpc

from dcnr.errors import (
    DcnrError,
    DeadlineExceeded,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
    error_for_status,
)
from dcnr.proto.v2 import node_pb2, node_pb2_grpc
from dcnr.security.authorization import ORCHESTRATOR, PNODE
from dcnr.security.pki import RELAY_TLS_NAME
from dcnr.transport.grpc.errors import guarded
from dcnr.transport.grpc.pnode import GrpcHopTransport, InFlight, hop_to_bytes
from dcnr.transport.grpc.security import (
    ON_BEHALF_KEY,
    TO_KEY,
    Authority,
    ChannelPool,
    Identity,
    add_tls_port,
    caller_of,
    current_caller,
    route,
    secure_channel,
    secured,
)
from dcnr.transport.messages import Hop

log = logging.getLogger("dcnr.relay")

RELAY_SERVICE = node_pb2.DESCRIPTOR.services_by_name["RelayService"].full_name
FORWARDED = ("/dcnr.v2.VNodeService/", "/dcnr.v2.PNodeService/")  # what a relay forwards to its PNodes
HOPS = frozenset({"/dcnr.v2.VNodeService/ReceiveTrainRequest", "/dcnr.v2.VNodeService/ReceiveTrainResponse"})
ATTACH_WAIT = 10.0  # seconds a call waits for its PNode to (re)attach before UNAVAILABLE
UP_TIMEOUT = 120.0  # the longest a hop a PNode sends up may take to be delivered
KEEPALIVE = [("grpc.keepalive_time_ms", 20_000), ("grpc.keepalive_timeout_ms", 20_000),
             ("grpc.keepalive_permit_without_calls", 1), ("grpc.http2.max_pings_without_data", 0)]
SERVER_KEEPALIVE = [("grpc.http2.min_ping_interval_without_data_ms", 10_000),
                    ("grpc.keepalive_time_ms", 20_000), ("grpc.keepalive_timeout_ms", 20_000)]
_CODES = {code.value[0]: code for code in grpc.StatusCode}


def status_code(value: int) -> grpc.StatusCode:
    return _CODES.get(value, grpc.StatusCode.UNKNOWN)


class _Stream:
    """Calls going one way over an Attach stream and the replies that complete them."""

    def __init__(self, send: Callable[[node_pb2.RelayFrame], None]) -> None:
        self.send = send
        self._ids = itertools.count(1)
        self._waiting: dict[int, futures.Future[node_pb2.RelayFrame]] = {}
        self._lock = threading.Lock()
        self.closed = threading.Event()

    def call(self, frame: node_pb2.RelayFrame) -> futures.Future[node_pb2.RelayFrame]:
        """Send a call frame (its id is set here); the future completes with the reply frame."""
        done: futures.Future[node_pb2.RelayFrame] = futures.Future()
        with self._lock:
            if self.closed.is_set():
                done.set_exception(Unavailable("the relay stream is closed"))
                return done
            frame.id = next(self._ids)
            self._waiting[frame.id] = done
        self.send(frame)
        return done

    def resolve(self, reply: node_pb2.RelayFrame) -> None:
        with self._lock:
            done = self._waiting.pop(reply.id, None)
        if done is not None and not done.done():
            done.set_result(reply)

    def forget(self, frame_id: int) -> None:
        with self._lock:
            self._waiting.pop(frame_id, None)

    def close(self, why: str) -> None:
        with self._lock:
            self.closed.set()
            waiting, self._waiting = list(self._waiting.values()), {}
        for done in waiting:
            if not done.done():
                done.set_exception(Unavailable(why))


def _reply_error(reply: node_pb2.RelayFrame) -> DcnrError:
    return error_for_status(status_code(reply.code).name, reply.detail or status_code(reply.code).name)


# -- the relay's end --------------------------------------------------------------------------------
class _Attached:
    """One PNode's stream as the relay holds it."""

    def __init__(self, pnode: str, certificate: bytes) -> None:
        self.pnode, self.certificate = pnode, certificate
        self.outbox: queue.Queue[node_pb2.RelayFrame | None] = queue.Queue()
        self.down = _Stream(self.outbox.put)

    def close(self, why: str) -> None:
        self.down.close(why)
        self.outbox.put(None)


class Relay:
    """What a relay does, whichever server hosts it: PNodes attached by id, forwarding, byte counts."""

    def __init__(self, channels: ChannelPool, max_pnodes: int = 64) -> None:
        self.channels = channels  # dials targets in a PNode's name (presenting the relay's certificate)
        self.max_pnodes = max_pnodes
        self._attached: dict[str, _Attached] = {}
        self._changed = threading.Condition()
        self._bytes = self._hop_bytes = 0

    @property
    def attached(self) -> int:
        with self._changed:
            return len(self._attached)

    @property
    def bytes_forwarded(self) -> int:
        with self._changed:
            return self._bytes

    @property
    def hop_bytes(self) -> int:
        """Of `bytes_forwarded`, hops' (requests and acknowledgements)."""
        with self._changed:
            return self._hop_bytes

    def _count(self, method: str, *payloads: bytes) -> None:
        size = sum(len(p) for p in payloads)
        with self._changed:
            self._bytes += size
            if method in HOPS:
                self._hop_bytes += size

    def _find(self, pnode: str, wait: float) -> _Attached | None:
        """The attachment of `pnode`, waiting up to `wait` s for one (a PNode may be reconnecting)."""
        with self._changed:
            self._changed.wait_for(lambda: pnode in self._attached, timeout=max(0.0, wait))
            return self._attached.get(pnode)

    # -- Attach ---------------------------------------------------------------------------------
    def attach(self, frames: Iterator[node_pb2.RelayFrame], context: grpc.ServicerContext
               ) -> Iterator[node_pb2.RelayFrame]:
        """Serve one PNode's stream: its replies and calls come up `frames`; what this yields goes down."""
        caller = current_caller()
        att = _Attached(caller.name, caller.certificate)
        with self._changed:
            old = self._attached.get(att.pnode)
            if old is None and len(self._attached) >= self.max_pnodes:
                raise ResourceExhausted(f"this relay serves at most {self.max_pnodes} PNodes")
            self._attached[att.pnode] = att
            self._changed.notify_all()
        if old is not None:
            old.close(f"PNode {att.pnode} attached again")
        log.info("PNode %s attached", att.pnode, extra={"pnode": att.pnode})
        reader = threading.Thread(target=self._read, args=(att, frames), name=f"relay-up-{att.pnode}", daemon=True)
        reader.start()
        context.add_callback(lambda: att.close(f"PNode {att.pnode}'s relay stream ended"))
        try:
            yield node_pb2.RelayFrame(id=0, reply=True)  # attached: the PNode may register now
            while True:
                frame = att.outbox.get()
                if frame is None:
                    return
                yield frame
        finally:
            att.close(f"PNode {att.pnode}'s relay stream ended")
            with self._changed:
                if self._attached.get(att.pnode) is att:
                    del self._attached[att.pnode]
                self._changed.notify_all()
            log.info("PNode %s detached", att.pnode, extra={"pnode": att.pnode})

    def _read(self, att: _Attached, frames: Iterator[node_pb2.RelayFrame]) -> None:
        try:
            for frame in frames:
                if frame.reply:
                    att.down.resolve(frame)
                else:
                    self._up(att, frame)
        except grpc.RpcError:
            pass  # the stream ended: `attach` cleans up
        finally:
            att.close(f"PNode {att.pnode}'s relay stream ended")

    def _up(self, att: _Attached, frame: node_pb2.RelayFrame) -> None:
        """A call the PNode sends (a hop): delivered, and its outcome sent back down as the reply."""
        self._count(frame.method, frame.payload)

        def answer(code: int, detail: str = "", payload: bytes = b"") -> None:
            self._count(frame.method, payload)
            att.outbox.put(node_pb2.RelayFrame(id=frame.id, reply=True, code=code, detail=detail, payload=payload))

        if not frame.method.startswith(FORWARDED):
            answer(grpc.StatusCode.PERMISSION_DENIED.value[0], f"a relay forwards no {frame.method}")
            return
        pnode = route(frame.target)[1]
        with self._changed:
            here = self._attached.get(pnode) if pnode else None
        if here is not None:  # attached to this relay too: straight down its stream
            down = here.down.call(node_pb2.RelayFrame(method=frame.method, caller=att.certificate,
                                                      payload=frame.payload, timeout=min(frame.timeout, UP_TIMEOUT)))

            def delivered(f: futures.Future[node_pb2.RelayFrame]) -> None:
                exc = f.exception()
                if exc is not None:
                    answer(grpc.StatusCode.UNAVAILABLE.value[0], str(exc))
                else:
                    reply = f.result()
                    answer(reply.code, reply.detail, reply.payload)
            down.add_done_callback(delivered)
            return
        method = self.channels.get(frame.target).unary_unary(frame.method, request_serializer=None,
                                                             response_deserializer=None)
        timeout = min(frame.timeout, UP_TIMEOUT) if frame.timeout > 0 else UP_TIMEOUT
        call = method.future(frame.payload, timeout=timeout, metadata=[(ON_BEHALF_KEY, att.certificate)])

        def dialled(f: grpc.Future) -> None:
            exc = f.exception()
            if isinstance(exc, grpc.Call):
                answer(exc.code().value[0], exc.details() or "")
            elif exc is not None:
                answer(grpc.StatusCode.UNAVAILABLE.value[0], str(exc))
            else:
                answer(0, payload=f.result())
        call.add_done_callback(dialled)

    # -- calls for attached PNodes --------------------------------------------------------------
    def forward(self, method: str, payload: bytes, context: grpc.ServicerContext) -> bytes:
        """A call addressed to a PNode attached here: down its stream; its reply is this call's."""
        caller = caller_of(context, None, relayed=True)
        if caller.role not in (ORCHESTRATOR, PNODE):
            raise PermissionDenied(f"{caller} may not call PNodes through this relay")
        pnode = next((str(v) for k, v in context.invocation_metadata() if k == TO_KEY), "")
        left = context.time_remaining()
        timeout = left if left is not None else ATTACH_WAIT
        att = self._find(pnode, min(ATTACH_WAIT, timeout))
        if att is None:
            raise Unavailable(f"PNode {pnode or '(none named)'} is not attached to this relay")
        self._count(method, payload)
        frame = node_pb2.RelayFrame(method=method, caller=caller.certificate, payload=payload, timeout=timeout)
        pending = att.down.call(frame)
        try:
            reply = pending.result(timeout=context.time_remaining())
        except futures.TimeoutError:
            raise Unavailable(f"PNode {pnode} did not answer through this relay in time") from None
        finally:
            att.down.forget(frame.id)
        self._count(method, reply.payload)
        if reply.code:
            context.set_trailing_metadata(tuple(reply.trailing.items()))
            context.abort(status_code(reply.code), reply.detail)
        return bytes(reply.payload)

    def close(self) -> None:
        with self._changed:
            attached, self._attached = list(self._attached.values()), {}
        for att in attached:
            att.close("the relay is stopping")
        self.channels.close()


class _RelayServicer(node_pb2_grpc.RelayServiceServicer):
    def __init__(self, relay: Relay) -> None:
        self.relay = relay

    def Attach(self, request_iterator: Iterator[node_pb2.RelayFrame],
               context: grpc.ServicerContext) -> Iterator[node_pb2.RelayFrame]:
        yield from self.relay.attach(request_iterator, context)


class _Forwarding(grpc.GenericRpcHandler):
    """Every VNodeService / PNodeService method, as bytes, to `Relay.forward` (errors become statuses)."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = details.method
        if not method.startswith(FORWARDED):
            return None

        return grpc.unary_unary_rpc_method_handler(guarded(_Forward(self.relay, method)).Forward)


class _Forward:
    """One forwarded call (a servicer of one method, so that `guarded` maps its errors)."""

    def __init__(self, relay: Relay, method: str) -> None:
        self.relay, self.method = relay, method

    def Forward(self, payload: bytes, context: grpc.ServicerContext) -> bytes:
        return self.relay.forward(self.method, payload, context)


def serve_relay(relay: Relay, identity: Identity, address: str, threads: int = 64,
                max_message_bytes: int = 256 * 2**20) -> tuple[grpc.Server, int]:
    """Serve `relay` on `address` behind mutual TLS (attachments hold a thread each: `threads` must exceed
    the PNodes it may carry); returns the server and its port."""
    options = [("grpc.max_receive_message_length", max_message_bytes),
               ("grpc.max_send_message_length", max_message_bytes), *SERVER_KEEPALIVE]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads + relay.max_pnodes,
                                                    thread_name_prefix="relay"), options=options)
    servicer = guarded(secured(_RelayServicer(relay), RELAY_SERVICE, Authority(relayed=True)))
    node_pb2_grpc.add_RelayServiceServicer_to_server(servicer, server)
    server.add_generic_rpc_handlers((_Forwarding(relay),))
    port = add_tls_port(server, address, identity, mutual=True)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    server.start()
    return server, port


# -- the PNode's end --------------------------------------------------------------------------------
class _Aborted(Exception):
    pass


class _RelayedContext:
    """The `grpc.ServicerContext` a relayed call runs with: the caller is the certificate the relay verified."""

    def __init__(self, caller: bytes, relay: str, timeout: float) -> None:
        self._auth = {"x509_pem_cert": [caller]} if caller else {}
        self._peer = f"relay:{relay}"
        self._timeout = timeout
        self._code: grpc.StatusCode | None = None
        self.details = ""
        self.trailing: dict[str, str] = {}

    def auth_context(self) -> Mapping[str, list[bytes]]:
        return self._auth

    def invocation_metadata(self) -> tuple[()]:
        return ()

    def peer(self) -> str:
        return self._peer

    def time_remaining(self) -> float | None:
        return self._timeout or None

    def is_active(self) -> bool:
        return True

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def set_trailing_metadata(self, metadata: Any) -> None:
        self.trailing.update({str(k): str(v) for k, v in metadata})

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self.details = code, details
        raise _Aborted(details)


class _Collector:
    """Stands in for a server to collect the method handlers generated code registers."""

    def __init__(self) -> None:
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        """Registered handlers (below) cover every method."""

    def add_registered_method_handlers(self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler]) -> None:
        self.handlers.update({f"/{service}/{name}": h for name, h in handlers.items()})


def method_handlers(register: Callable[[Any], None]) -> dict[str, grpc.RpcMethodHandler]:
    """The handlers `register(server)` would add to a server, by full method name."""
    collector = _Collector()
    register(collector)
    return collector.handlers


class RelayLink:
    """A PNode's stream to its relay: calls from the relay run through `handlers`; `call_up` sends a hop.

    `open` connects and waits until the relay confirms the attachment; `broken` is set when the stream
    ends for any reason (every call waiting on it then fails with UNAVAILABLE)."""

    def __init__(self, address: str, identity: Identity, handlers: Mapping[str, grpc.RpcMethodHandler],
                 max_message_bytes: int, workers: int = 8) -> None:
        self.address = address
        self.handlers = handlers
        options = [("grpc.max_receive_message_length", max_message_bytes),
                   ("grpc.max_send_message_length", max_message_bytes), *KEEPALIVE]
        self._channel = secure_channel(address, identity.creds.ca_pem, RELAY_TLS_NAME, options, identity)
        self._outbox: queue.Queue[node_pb2.RelayFrame | None] = queue.Queue()
        self.up = _Stream(self._outbox.put)
        self._pool = futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="relayed-rpc")
        self.attached = threading.Event()
        self.broken = threading.Event()
        self.why = ""
        self.bytes_in = self.bytes_out = 0
        self._reader: threading.Thread | None = None

    def open(self, timeout: float) -> None:
        """Attach; raises Unavailable when the relay does not confirm within `timeout` s."""
        stream = node_pb2_grpc.RelayServiceStub(self._channel).Attach(self._frames())
        self._reader = threading.Thread(target=self._read, args=(stream,), name="relay-down", daemon=True)
        self._reader.start()
        if not self.attached.wait(timeout) or self.broken.is_set():
            self.close()
            raise Unavailable(f"cannot attach to the relay at {self.address}: {self.why or 'no answer'}")

    def _frames(self) -> Iterator[node_pb2.RelayFrame]:
        while True:
            frame = self._outbox.get()
            if frame is None:
                return
            self.bytes_out += len(frame.payload)
            yield frame

    def _read(self, stream: Any) -> None:
        try:
            for frame in stream:
                self.bytes_in += len(frame.payload)
                if frame.reply and frame.id == 0:
                    self.attached.set()
                elif frame.reply:
                    self.up.resolve(frame)
                else:
                    self._pool.submit(self._serve, frame)
            self.why = "the relay ended the stream"
        except grpc.RpcError as exc:
            self.why = f"{exc.code().name}: {exc.details()}" if isinstance(exc, grpc.Call) else str(exc)
        finally:
            self.broken.set()
            self.up.close(f"the stream to the relay at {self.address} broke ({self.why})")
            self._outbox.put(None)

    def _serve(self, frame: node_pb2.RelayFrame) -> None:
        """Run one call from the relay and send its reply up."""
        reply = node_pb2.RelayFrame(id=frame.id, reply=True)
        handler = self.handlers.get(frame.method)
        context = _RelayedContext(bytes(frame.caller), self.address, frame.timeout)
        if handler is None or handler.unary_unary is None:
            reply.code, reply.detail = grpc.StatusCode.UNIMPLEMENTED.value[0], f"no method {frame.method}"
        else:
            try:
                response = handler.unary_unary(handler.request_deserializer(frame.payload), context)
                reply.payload = handler.response_serializer(response)
            except _Aborted:
                reply.code, reply.detail = (context.code() or grpc.StatusCode.UNKNOWN).value[0], context.details
                reply.trailing.update(context.trailing)
            except Exception as exc:  # a handler wrapped by `guarded` aborts instead; anything else is a bug
                log.exception("relayed call %s failed", frame.method)
                reply.code, reply.detail = grpc.StatusCode.INTERNAL.value[0], f"internal error: {exc}"
        if not self.broken.is_set():
            self._outbox.put(reply)

    def call_up(self, target: str, method: str, payload: bytes, timeout: float
                ) -> futures.Future[bytes]:
        """Send a call (a hop) for `target` through the relay; the future completes with the reply payload or
        fails with the status as a `dcnr.errors` class."""
        result: futures.Future[bytes] = futures.Future()
        pending = self.up.call(node_pb2.RelayFrame(method=method, target=target, payload=payload, timeout=timeout))

        def done(f: futures.Future[node_pb2.RelayFrame]) -> None:
            exc = f.exception()
            if exc is not None:
                result.set_exception(exc)
                return
            reply = f.result()
            if reply.code:
                result.set_exception(_reply_error(reply))
            else:
                result.set_result(bytes(reply.payload))
        pending.add_done_callback(done)
        return result

    def close(self) -> None:
        self.broken.set()
        self.up.close("the PNode closed its relay stream")
        self._outbox.put(None)
        self._channel.close()
        self._pool.shutdown(wait=False, cancel_futures=True)


class RelayedHopTransport:
    """The `HopTransport` of a PNode attached to a relay: every hop goes up its stream (`link()`, the current
    one: it changes when the PNode attaches again)."""

    def __init__(self, link: Callable[[], RelayLink | None], timeout: float = 60.0) -> None:
        self.link = link
        self.timeout = timeout
        self.bytes_sent = 0
        self.hops_sent = 0
        self.in_flight = InFlight()  # hops sent up the stream and not yet acknowledged

    def _send(self, address: str, hop: Hop, timeout: float) -> futures.Future[bytes]:
        link = self.link()
        if link is None:
            failed: futures.Future[bytes] = futures.Future()
            failed.set_exception(Unavailable("this PNode is not attached to a relay"))
            return failed
        data = hop_to_bytes(hop)
        self.bytes_sent += len(data)
        self.hops_sent += 1
        path = GrpcHopTransport.FORWARD if hop.op == "fwd" else GrpcHopTransport.BACKWARD
        return link.call_up(address, path, data, timeout)

    def send(self, address: str, hop: Hop, on_error: Callable[[Exception], None]) -> None:
        def done(f: futures.Future[bytes]) -> None:
            self.in_flight.add(-1)
            exc = f.exception()
            if exc is not None:
                on_error(exc if isinstance(exc, Exception) else Unavailable(str(exc)))
        self.in_flight.add(1)
        self._send(address, hop, self.timeout).add_done_callback(done)

    def send_now(self, address: str, hop: Hop, timeout: float) -> None:
        try:
            self._send(address, hop, timeout).result(timeout)
        except futures.TimeoutError:
            raise DeadlineExceeded(f"a hop to {address} through the relay was not acknowledged in {timeout:g} s"
                                   ) from None

    def close(self) -> None:
        """The link belongs to the PNode agent."""
