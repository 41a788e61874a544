"""Our errors as gRPC statuses: one table per server, one clear message per status."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import grpc

PROBLEMS_KEY = "dcnr-problems"  # trailing metadata: the details are a network file's problems, one per line
StatusTable = Sequence[tuple[type[BaseException], grpc.StatusCode]]


@contextmanager
def statuses(context: grpc.ServicerContext, table: StatusTable) -> Iterator[None]:
    """Abort the call with the status of the first matching error type; anything else propagates."""
    try:
        yield
    except Exception as exc:
        for kind, code in table:
            if isinstance(exc, kind):
                problems = getattr(exc, "problems", None)
                if problems:  # a network definition's problems: clients print them verbatim
                    context.set_trailing_metadata(((PROBLEMS_KEY, "network"),))
                context.abort(code, "\n".join(problems) if problems else str(exc))
        raise
