"""Link shaping: any `HopTransport` as if its links were slower (benchmarks and tests).

Each destination is one link with a one-way latency (half the round trip), a bandwidth and
a jitter. Hops on a link leave in order: a hop waits until the link has finished sending
the previous ones (its bytes / bandwidth), then arrives after the latency plus a jitter
drawn from a generator seeded by (seed, destination), so a run can be repeated exactly.
The hop is then handed to the wrapped transport.
"""

from __future__ import annotations

import heapq
import itertools
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from dcnr.transport.interfaces import HopTransport
from dcnr.transport.messages import Hop

HEADER_BYTES = 64  # what a hop costs besides its tensor, roughly (ids, names, shapes)


@dataclass(frozen=True)
class LinkShape:
    round_trip: float = 0.0  # seconds
    bandwidth: float = float("inf")  # bits per second
    jitter: float = 0.0  # seconds, uniform in [0, jitter)


def hop_bytes(hop: Hop) -> int:
    value = hop.value
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size() + HEADER_BYTES
    return sum(len(str(v).encode()) for v in value or ()) + HEADER_BYTES  # text, or no gradient


class ShapedHopTransport:
    """Wraps a `HopTransport`; every destination address is a link shaped by `shape_of(address)`."""

    def __init__(self, inner: HopTransport, shape: LinkShape | Callable[[str], LinkShape], seed: int = 0) -> None:
        self.inner = inner
        self.shape_of = shape if callable(shape) else (lambda _address, s=shape: s)
        self.seed = seed
        self.bytes_sent = 0
        self._busy_until: dict[str, float] = {}  # when each link has sent everything queued on it
        self._last_arrival: dict[str, float] = {}
        self._rngs: dict[str, random.Random] = {}
        self._queue: list[tuple[float, int, str, Hop, Callable[[Exception], None]]] = []  # (arrival, order, ...)
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._deliver_loop, name="link-shaper", daemon=True)
        self._thread.start()

    def arrival(self, address: str, hop: Hop, now: float) -> float:
        """When a hop handed over at `now` reaches `address` (and the link is busy until it has left)."""
        shape = self.shape_of(address)
        size = hop_bytes(hop)
        self.bytes_sent += size
        start = max(now, self._busy_until.get(address, now))
        sent = start + size * 8 / shape.bandwidth  # an unlimited link (inf) adds nothing
        self._busy_until[address] = sent
        rng = self._rngs.setdefault(address, random.Random(f"{self.seed}:{address}"))
        jitter = rng.uniform(0.0, shape.jitter) if shape.jitter else 0.0
        # one link delivers in order (as TCP does): never before the hop sent ahead of it
        arrival = max(sent + shape.round_trip / 2 + jitter, self._last_arrival.get(address, 0.0))
        self._last_arrival[address] = arrival
        return arrival

    def send(self, address: str, hop: Hop, on_error: Callable[[Exception], None]) -> None:
        with self._cond:
            arrival = self.arrival(address, hop, time.monotonic())
            heapq.heappush(self._queue, (arrival, next(self._order), address, hop, on_error))
            self._cond.notify()

    def send_now(self, address: str, hop: Hop, timeout: float) -> None:
        with self._cond:
            arrival = self.arrival(address, hop, time.monotonic())
        time.sleep(max(0.0, arrival - time.monotonic()))
        self.inner.send_now(address, hop, timeout)

    def _deliver_loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (not self._queue or self._queue[0][0] > time.monotonic()):
                    self._cond.wait(None if not self._queue else max(0.0, self._queue[0][0] - time.monotonic()))
                if self._closed:
                    return
                _, _, address, hop, on_error = heapq.heappop(self._queue)
            self.inner.send(address, hop, on_error)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=5)
        self.inner.close()
