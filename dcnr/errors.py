"""Every error DCNR raises on purpose, in one hierarchy.

Each class carries the gRPC status a server answers with (`status`, the name of a
`grpc.StatusCode`, so this module needs no gRPC) and the exit code the CLI ends with
(`exit_code`). A server wraps its handlers once and maps by class; a client maps a
status back to the class; the CLI maps the class to its exit code and one line.

`assert` stays for internal invariants only: anything a user or a peer can get
wrong raises one of these.
"""

from __future__ import annotations

# Exit codes of `dcnr` commands (scripts may rely on them).
OK = 0  # the command did what was asked
RUNTIME_FAILURE = 1  # something broke while running (a bug, a resource problem); --verbose shows the traceback
USER_ERROR = 2  # bad input: a network file, an argument, a path; the message says what to change
INTERRUPTED = 130  # stopped with Ctrl-C; nothing half-written is left behind


class DcnrError(Exception):
    """Base of our errors: an unexpected failure unless a subclass says otherwise."""

    status = "INTERNAL"
    exit_code = RUNTIME_FAILURE


class InvalidArgument(DcnrError, ValueError):
    """A value the caller sent is wrong (a file, an argument, a tensor); the message says what to change."""

    status = "INVALID_ARGUMENT"
    exit_code = USER_ERROR


class NetworkError(InvalidArgument):
    """A network definition is invalid.

    `problems` holds every problem found, one line each, already prefixed with the
    file and the location (node, edge or key), so a CLI prints them as they are.
    """

    def __init__(self, problems: list[str]) -> None:
        assert problems, "NetworkError needs at least one problem"
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class ShapeError(InvalidArgument):
    """A node type cannot accept the shapes it is given; raised by shape rules."""


class NotFound(DcnrError, KeyError):
    """No such network, session, dataset, vocabulary, PNode, VNode or checkpoint."""

    status = "NOT_FOUND"
    exit_code = USER_ERROR

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class AlreadyExists(DcnrError):
    """A name or id is taken."""

    status = "ALREADY_EXISTS"
    exit_code = USER_ERROR


class Conflict(DcnrError):
    """The request is valid but the current state forbids it."""

    status = "FAILED_PRECONDITION"
    exit_code = USER_ERROR


class IncompatibleVersion(Conflict):
    """A peer speaks another major version of the protocol."""


class PermissionDenied(DcnrError):
    """The caller may not do this."""

    status = "PERMISSION_DENIED"
    exit_code = USER_ERROR


class Unauthenticated(DcnrError):
    """The call needs a credential (a token, or a certificate) that was missing, unknown or expired."""

    status = "UNAUTHENTICATED"
    exit_code = USER_ERROR


class ResourceExhausted(DcnrError):
    """No room: a memory budget, a message size limit, no PNode able to host a VNode."""

    status = "RESOURCE_EXHAUSTED"
    exit_code = RUNTIME_FAILURE


class Aborted(DcnrError):
    """Work could not finish (a step, an evaluation): a PNode failed, died or timed out."""

    status = "ABORTED"
    exit_code = RUNTIME_FAILURE


class Unavailable(DcnrError):
    """A peer cannot be reached (or is shutting down); trying again later may work."""

    status = "UNAVAILABLE"
    exit_code = RUNTIME_FAILURE


class Unreachable(Unavailable):
    """The orchestrator cannot reach the address a PNode advertised (it probes it at registration): the
    PNode is not registered and should join through a relay. Carried in the registration's answer."""


class DeadlineExceeded(DcnrError):
    """A call took longer than it was allowed."""

    status = "DEADLINE_EXCEEDED"
    exit_code = RUNTIME_FAILURE


class DataLoss(DcnrError, ValueError):
    """Stored bytes do not match their name or metadata (corrupt or forged)."""

    status = "DATA_LOSS"
    exit_code = RUNTIME_FAILURE


class StorageFailed(DcnrError):
    """The object store failed or refused to keep or hand back bytes: a full disk, no permission, an error
    answer from S3, an object that should be there and is not, a blob over the size limit. Retrying does
    not help until someone fixes the storage, so a training session fails with it instead of retrying.

    Its status is INTERNAL (the server could not do its part); gRPC carries the class itself in trailing
    metadata, so it stays a `StorageFailed` across every hop (orchestrator -> PNode -> orchestrator)."""


class Unimplemented(DcnrError):
    """The peer does not implement this call."""

    status = "UNIMPLEMENTED"
    exit_code = RUNTIME_FAILURE


ERRORS_BY_STATUS: dict[str, type[DcnrError]] = {
    cls.status: cls
    for cls in (InvalidArgument, NotFound, AlreadyExists, Conflict, PermissionDenied, Unauthenticated,
                ResourceExhausted, Aborted, Unavailable, DeadlineExceeded, DataLoss, Unimplemented)
}


def error_for_status(status: str, message: str) -> DcnrError:
    """The error a client raises for a status name it received (unknown statuses: `DcnrError`)."""
    return ERRORS_BY_STATUS.get(status, DcnrError)(message)
