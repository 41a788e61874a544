"""Our errors as gRPC statuses and back: servers wrap their handlers once, clients map
statuses to `dcnr.errors` classes.

A handler raising a `DcnrError` ends the call with that class's status and its message
(a `StorageFailed` is INTERNAL, marked in trailing metadata so that it comes back as
itself); a plain `ValueError` (the idiom for a bad value in the catalog and the spec) is
INVALID_ARGUMENT; a call the handler made to a peer that failed is ABORTED, naming the
peer's status; anything else is a bug: logged with its traceback and answered INTERNAL, and the
server keeps serving. A call the handler already ended (`context.abort`) or the client
cancelled (a streamed request then raises a bare `grpc.RpcError`) is left as it is. A message
is cut to `MAX_DETAILS` bytes on the wire: one that quotes a huge request must still reach the
caller, whose client refuses trailing metadata past 16 KiB (and, at random, past 8 KiB).
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc

from dcnr.errors import Aborted, DcnrError, NetworkError, StorageFailed, error_for_status

log = logging.getLogger("dcnr.transport")

PROBLEMS_KEY = "dcnr-problems"  # trailing metadata: the details are a network file's problems, one per line
STORAGE_KEY = "dcnr-storage"  # trailing metadata: the object store failed (the status alone says INTERNAL)
MAX_DETAILS = 4096  # bytes a status message may take on the wire (percent-encoded)
S = TypeVar("S")


def bounded(details: str) -> str:
    """`details` cut to take at most `MAX_DETAILS` bytes once gRPC percent-encodes it (a byte outside
    printable ASCII, or '%', takes three), saying how much was cut."""
    size = 0
    for i, ch in enumerate(details):
        size += 1 if " " <= ch <= "~" and ch != "%" else 3 * len(ch.encode("utf-8", "surrogatepass"))
        if size > MAX_DETAILS - 64:  # room for the note
            return f"{details[:i]}... ({len(details) - i} more characters)"
    return details


def _abort(context: grpc.ServicerContext, exc: Exception) -> None:
    if context.code() is not None:  # the handler already ended the call (context.abort)
        raise exc
    if isinstance(exc, grpc.RpcError) and not isinstance(exc, grpc.Call):
        raise exc  # the client cancelled while we read its stream: grpc ends the call itself
    if isinstance(exc, grpc.Call):  # a call this handler made to a peer failed: not the caller's mistake
        exc = Aborted(f"a call to a peer failed: {exc.code().name}: {exc.details()}")
    if isinstance(exc, NetworkError):
        context.set_trailing_metadata(((PROBLEMS_KEY, "network"),))
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, bounded("\n".join(exc.problems)))
    if isinstance(exc, StorageFailed):
        context.set_trailing_metadata(((STORAGE_KEY, "failed"),))
    if isinstance(exc, DcnrError):
        context.abort(grpc.StatusCode[exc.status], bounded(str(exc)))
    if isinstance(exc, ValueError):
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, bounded(str(exc)))
    log.exception("internal error in %s", type(exc).__name__)
    context.abort(grpc.StatusCode.INTERNAL, bounded(f"internal error: {type(exc).__name__}: {exc}"))


def _guard(method: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.isgeneratorfunction(method):
        @functools.wraps(method)
        def streaming(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            try:
                yield from method(request, context)
            except Exception as exc:
                _abort(context, exc)
        return streaming

    @functools.wraps(method)
    def unary(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(request, context)
        except Exception as exc:
            _abort(context, exc)
    return unary


def guarded(servicer: S) -> S:
    """Wrap every RPC handler of `servicer` (its public methods named like RPCs, CamelCase)
    so that our errors become statuses; returns the same object."""
    for name, method in inspect.getmembers(servicer, callable):
        if name[:1].isupper():
            setattr(servicer, name, _guard(method))
    return servicer


def from_rpc_error(exc: grpc.RpcError) -> DcnrError:
    """The `dcnr.errors` class for a failed call, with the server's message.

    A network definition's problems come back as a `NetworkError` holding each line; a storage failure as
    `StorageFailed`."""
    code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
    detail = (exc.details() if isinstance(exc, grpc.Call) else "") or code.name
    trailing = exc.trailing_metadata() if isinstance(exc, grpc.Call) else None
    keys = {k for k, _ in (trailing or ())}
    if PROBLEMS_KEY in keys:
        return NetworkError(detail.splitlines())
    if STORAGE_KEY in keys:
        return StorageFailed(detail)
    return error_for_status(code.name, detail)
