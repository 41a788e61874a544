"""The PNode's runtime, made when the first VNode arrives.

Owns the moment a PNode loads torch and the node catalog (~300 MB, seconds of CPU): not at
start, but when something first needs them: a network placed here, work of another PNode
to re-execute, any call about VNodes. Until then `LazyRuntime` answers what a PNode that
hosts nothing is asked (heartbeat figures, listings, drops), and stands in for the
`PNodeRuntime` it makes in every other respect: any other attribute read or set is the
runtime's, which is made (and started) by the first such use. Imports nothing heavy: the
function that makes the runtime is the boundary.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dcnr.pnode.runtime import PNodeRuntime, Usage
    from dcnr.transport.messages import LocalVNode

log = logging.getLogger("dcnr.pnode")


class LazyRuntime:
    """A `PNodeRuntime` made by `make()` on first use, with the answers of an empty one until then."""

    _made: PNodeRuntime | None = None  # a class default: never looked up through `__getattr__`

    def __init__(self, make: Callable[[], PNodeRuntime]) -> None:
        object.__setattr__(self, "_make", make)
        object.__setattr__(self, "_lock", threading.Lock())
        object.__setattr__(self, "_created", time.monotonic())

    def get(self) -> PNodeRuntime:
        """The runtime: made and started by the first caller (the others wait for it)."""
        made = self._made
        if made is not None:
            return made
        with self._lock:
            if self._made is None:
                started = time.monotonic()
                runtime = self._make()
                runtime.start()
                object.__setattr__(self, "_made", runtime)
                log.info("runtime ready: torch and the node catalog loaded in %.1f s", time.monotonic() - started)
            assert self._made is not None
            return self._made

    @property
    def made(self) -> PNodeRuntime | None:
        """The runtime if it was made, else None (asking makes nothing)."""
        return self._made

    def __getattr__(self, name: str) -> Any:
        return getattr(self.get(), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.get(), name, value)

    # -- what a PNode that hosts nothing answers without making anything -----------------------
    def usage(self) -> Usage:
        return self._made.usage() if self._made is not None else (0.0, 0, [], 0)

    @property
    def stats(self) -> dict[str, float]:
        return self._made.stats if self._made is not None else {}

    @property
    def started_at(self) -> float:
        return self._made.started_at if self._made is not None else self._created

    def queues(self) -> dict[str, int]:
        return self._made.queues() if self._made is not None else {}

    def list_vnodes(self, network: str = "") -> list[LocalVNode]:
        return self._made.list_vnodes(network) if self._made is not None else []

    def drop(self, network: str, vnode: str = "") -> bool:
        return self._made.drop(network, vnode) if self._made is not None else False

    def forget_all(self) -> None:
        if self._made is not None:
            self._made.forget_all()

    def stop(self) -> None:
        with self._lock:  # a runtime being made now is stopped once it is made
            made = self._made
        if made is not None:
            made.stop()
