"""Our errors cross a real gRPC server as statuses and come back as our classes.

A small in-process server whose handlers raise what the request names is wrapped once
with `guarded`, as the orchestrator's servicers are; a client maps each failure back
with `from_rpc_error`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

import dcnr.errors
from dcnr.errors import ERRORS_BY_STATUS, DcnrError, NetworkError, StorageFailed
from dcnr.transport.grpc.errors import MAX_DETAILS, from_rpc_error, guarded

TIMEOUT = 20  # seconds, on every call and every wait
SERVICE = "test.Errors"
PROBLEMS = ["nets/a.yaml: node 'x': config.dim: expected a positive integer, got -1",
            "nets/a.yaml: edge 3 (x -> y): slot 2 out of range: 'y' has 1 input"]


def hierarchy() -> list[type[DcnrError]]:
    """Every error class `dcnr.errors` defines."""
    return sorted((c for c in vars(dcnr.errors).values() if isinstance(c, type) and issubclass(c, DcnrError)),
                  key=lambda c: c.__name__)


def make(cls: type[DcnrError], message: str) -> DcnrError:
    return cls(PROBLEMS) if issubclass(cls, NetworkError) else cls(message)


class Raiser:
    """Handlers that fail as the request (a class name) says; `Echo` answers normally."""

    def __init__(self, port: list[int]) -> None:
        self.port = port  # this server's own port, known once it listens
        self.reading = threading.Event()  # `Upload` has read its first message
        self.finished = threading.Event()  # `Upload` has returned or raised

    def Raise(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        name = request.decode()
        if name == "ValueError":
            raise ValueError("a plain ValueError")
        if name == "RuntimeError":
            raise RuntimeError("a bug")
        raise make(getattr(dcnr.errors, name), f"{name} from the handler")

    def RaiseQuoting(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        """Refuses a name by quoting it, as the orchestrator's services do."""
        raise dcnr.errors.NotFound(f"unknown network {request.decode()!r}")

    def RaiseLater(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        yield b"first"
        raise make(getattr(dcnr.errors, request.decode()), "after the first message")

    def Upload(self, request_iterator: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        try:
            size = 0
            for chunk in request_iterator:
                self.reading.set()
                size += len(chunk)
            raise dcnr.errors.ResourceExhausted(f"{size} bytes is too much")
        finally:
            self.finished.set()

    def AbortItself(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, "the handler ended the call itself")
        raise AssertionError("abort raises")

    def CallPeer(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        """Calls this very server, as the orchestrator calls a PNode; the peer fails with NOT_FOUND."""
        with grpc.insecure_channel(f"127.0.0.1:{self.port[0]}") as channel:
            return bytes(channel.unary_unary(f"/{SERVICE}/Raise")(b"NotFound", timeout=TIMEOUT))

    def Echo(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        return request


def start(workers: int) -> tuple[grpc.Server, grpc.Channel, Raiser]:
    port: list[int] = []
    raiser = guarded(Raiser(port))
    handlers = {name: grpc.unary_unary_rpc_method_handler(getattr(raiser, name))
                for name in ("Raise", "RaiseQuoting", "AbortItself", "CallPeer", "Echo")}
    handlers["RaiseLater"] = grpc.unary_stream_rpc_method_handler(raiser.RaiseLater)
    handlers["Upload"] = grpc.stream_unary_rpc_method_handler(raiser.Upload)
    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
    srv.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port.append(srv.add_insecure_port("127.0.0.1:0"))
    srv.start()
    return srv, grpc.insecure_channel(f"127.0.0.1:{port[0]}"), raiser


@pytest.fixture()
def server() -> Iterator[tuple[grpc.Channel, Raiser]]:
    srv, channel, raiser = start(workers=4)
    yield channel, raiser
    channel.close()
    srv.stop(None)


def call(channel: grpc.Channel, method: str, request: bytes = b"") -> Any:
    return channel.unary_unary(f"/{SERVICE}/{method}")(request, timeout=TIMEOUT)


def failure(thunk: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        thunk()
    return info.value


def assert_serving(channel: grpc.Channel) -> None:
    assert call(channel, "Echo", b"still here") == b"still here"


def test_the_hierarchy_has_one_class_per_status_and_every_class_a_status() -> None:
    """What the round trips below rely on: each status names one class, the most general that answers with it."""
    for cls in hierarchy():
        assert cls.status in grpc.StatusCode.__members__, cls
        owner = ERRORS_BY_STATUS.get(cls.status, DcnrError)
        assert issubclass(cls, owner), f"{cls.__name__} answers {cls.status}, which names {owner.__name__}"
    assert {c.status for c in hierarchy()} == set(ERRORS_BY_STATUS) | {"INTERNAL"}


@pytest.mark.parametrize("cls", hierarchy(), ids=lambda c: c.__name__)
def test_every_error_class_crosses_grpc_as_its_status_and_comes_back_as_its_class(
        server: tuple[grpc.Channel, Raiser], cls: type[DcnrError]) -> None:
    channel, _ = server
    err = failure(lambda: call(channel, "Raise", cls.__name__.encode()))
    assert err.code() == grpc.StatusCode[cls.status]
    back = from_rpc_error(err)
    if cls is NetworkError:
        assert type(back) is NetworkError and back.problems == PROBLEMS
        assert err.details() == "\n".join(PROBLEMS)
    elif cls is StorageFailed:  # INTERNAL, like a bug, but marked: it comes back as itself
        assert type(back) is StorageFailed and str(back) == "StorageFailed from the handler"
    else:
        # a subclass that shares its parent's status (ShapeError, IncompatibleVersion) comes back as the parent
        assert type(back) is ERRORS_BY_STATUS.get(cls.status, DcnrError)
        assert isinstance(make(cls, ""), type(back))
        assert str(back) == f"{cls.__name__} from the handler"
    assert_serving(channel)


@pytest.mark.parametrize("cls", [dcnr.errors.NotFound, NetworkError, dcnr.errors.Aborted, StorageFailed],
                         ids=lambda c: c.__name__)
def test_a_streamed_answer_that_fails_midway_ends_with_the_status(
        server: tuple[grpc.Channel, Raiser], cls: type[DcnrError]) -> None:
    channel, _ = server
    received: list[bytes] = []
    stream = channel.unary_stream(f"/{SERVICE}/RaiseLater")(cls.__name__.encode(), timeout=TIMEOUT)
    err = failure(lambda: received.extend(stream))
    assert received == [b"first"]
    back = from_rpc_error(err)
    assert err.code() == grpc.StatusCode[cls.status] and type(back) is cls
    assert str(back) == ("\n".join(PROBLEMS) if cls is NetworkError else "after the first message")
    assert_serving(channel)


def test_a_streamed_request_handler_failing_answers_its_status(server: tuple[grpc.Channel, Raiser]) -> None:
    channel, _ = server
    err = failure(lambda: channel.stream_unary(f"/{SERVICE}/Upload")(iter([b"ab", b"cde"]), timeout=TIMEOUT))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert isinstance(from_rpc_error(err), dcnr.errors.ResourceExhausted)
    assert err.details() == "5 bytes is too much"
    assert_serving(channel)


@pytest.mark.parametrize("unit", ["A", "\x00", "é", "%"], ids=["ascii", "nul", "accented", "percent"])
def test_a_message_quoting_a_huge_request_is_cut_to_reach_the_caller(
        server: tuple[grpc.Channel, Raiser], unit: str) -> None:
    """A name a megabyte long comes back in the message; gRPC percent-encodes it (three bytes for most of
    these), and a client refuses trailers past 16 KiB: the caller would see RESOURCE_EXHAUSTED, not the status."""
    channel, _ = server
    err = failure(lambda: call(channel, "RaiseQuoting", (unit * 2**20).encode()))
    details = err.details() or ""
    assert err.code() == grpc.StatusCode.NOT_FOUND, details[:200]
    assert details.startswith(f"unknown network {(unit * 8)!r}"[:-1]) and details.endswith(" more characters)")
    encoded = sum(1 if " " <= c <= "~" and c != "%" else 3 * len(c.encode()) for c in details)
    assert encoded <= MAX_DETAILS
    assert_serving(channel)


def test_a_plain_value_error_is_invalid_argument(server: tuple[grpc.Channel, Raiser]) -> None:
    channel, _ = server
    err = failure(lambda: call(channel, "Raise", b"ValueError"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and err.details() == "a plain ValueError"
    assert type(from_rpc_error(err)) is dcnr.errors.InvalidArgument
    assert_serving(channel)


def test_an_unexpected_exception_is_internal_logged_and_the_server_goes_on(
        server: tuple[grpc.Channel, Raiser], caplog: pytest.LogCaptureFixture) -> None:
    channel, _ = server
    with caplog.at_level(logging.ERROR, logger="dcnr.transport"):
        err = failure(lambda: call(channel, "Raise", b"RuntimeError"))
    assert err.code() == grpc.StatusCode.INTERNAL
    assert err.details() == "internal error: RuntimeError: a bug"
    assert type(from_rpc_error(err)) is DcnrError
    logged = [r for r in caplog.records if r.name == "dcnr.transport"]
    assert len(logged) == 1 and logged[0].exc_info is not None, "a bug is logged once, with its traceback"
    assert_serving(channel)


def test_a_status_the_handler_set_itself_is_kept(server: tuple[grpc.Channel, Raiser]) -> None:
    channel, _ = server
    err = failure(lambda: call(channel, "AbortItself"))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED and err.details() == "the handler ended the call itself"
    assert_serving(channel)


def test_a_failed_call_to_a_peer_is_aborted_naming_the_peers_status(server: tuple[grpc.Channel, Raiser]) -> None:
    """The peer's NOT_FOUND is not the caller's: passing it on would tell the caller its own name is wrong."""
    channel, _ = server
    err = failure(lambda: call(channel, "CallPeer"))
    assert err.code() == grpc.StatusCode.ABORTED
    assert err.details() == "a call to a peer failed: NOT_FOUND: NotFound from the handler"
    assert_serving(channel)


def test_a_client_cancelling_an_upload_is_not_an_internal_error(caplog: pytest.LogCaptureFixture) -> None:
    """The handler's read of the cancelled stream raises; that is the client leaving, not a bug to log."""
    srv, channel, raiser = start(workers=1)  # one worker: the next call runs only once the handler is done
    release = threading.Event()

    def chunks() -> Iterator[bytes]:
        yield b"first"
        release.wait(TIMEOUT)  # hold the stream open until the call is cancelled

    try:
        with caplog.at_level(logging.ERROR, logger="dcnr.transport"):
            pending = channel.stream_unary(f"/{SERVICE}/Upload").future(chunks(), timeout=TIMEOUT)
            assert raiser.reading.wait(TIMEOUT), "the handler never got the first chunk"
            pending.cancel()  # while the client still holds its stream open: the handler's read raises
            assert raiser.finished.wait(TIMEOUT), "the handler is still reading a cancelled stream"
            release.set()
            assert_serving(channel)
        assert pending.cancelled()
        assert not [r for r in caplog.records if r.name == "dcnr.transport"], "a cancellation is not a bug"
    finally:
        release.set()
        channel.close()
        srv.stop(None)
