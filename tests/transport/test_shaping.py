"""Link shaping: latency, bandwidth and seeded jitter per link, order kept on each link."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable

import torch

from dcnr.transport.messages import Hop
from dcnr.transport.shaping import HEADER_BYTES, LinkShape, ShapedHopTransport


class Recorder:
    """A transport that records when each hop reaches it."""

    def __init__(self) -> None:
        self.got: list[tuple[str, int, float]] = []  # (address, micro-batch, arrival time)
        self.lock = threading.Lock()

    def send(self, address: str, hop: Hop, on_error: Callable[[Exception], None]) -> None:
        with self.lock:
            self.got.append((address, hop.micro_batch, time.monotonic()))

    def send_now(self, address: str, hop: Hop, timeout: float) -> None:
        self.send(address, hop, lambda e: None)

    def close(self) -> None:
        pass

    def wait(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.got) < count:
            assert time.monotonic() < deadline, f"only {len(self.got)} of {count} hops arrived"
            time.sleep(0.005)


def hop(mb: int, floats: int) -> Hop:
    return Hop("n", "r", mb, "fwd", "v", 0, torch.zeros(floats))


def test_latency_and_bandwidth_delay_each_hop_and_a_link_keeps_its_order() -> None:
    inner = Recorder()
    shape = LinkShape(round_trip=0.2, bandwidth=8e6)  # 100 ms one way, 1 MB/s
    shaped = ShapedHopTransport(inner, shape, seed=1)
    try:
        start = time.monotonic()
        for mb in range(3):
            shaped.send("a:1", hop(mb, 25_000), lambda e: None)  # 100 kB each: 0.1 s on the wire
        inner.wait(3)
    finally:
        shaped.close()
    arrivals = [t - start for _, _, t in inner.got]
    assert [mb for _, mb, _ in inner.got] == [0, 1, 2]
    size = 25_000 * 4 + HEADER_BYTES
    for i, t in enumerate(arrivals):  # the i-th hop waits for the ones before it on the link
        assert t >= 0.1 + (i + 1) * size * 8 / 8e6 - 1e-3
    assert shaped.bytes_sent == 3 * size


def test_links_are_independent() -> None:
    """A slow transfer on one link does not hold back another link's hop."""
    inner = Recorder()
    shaped = ShapedHopTransport(inner, LinkShape(round_trip=0.0, bandwidth=8e6), seed=0)
    try:
        shaped.send("slow:1", hop(0, 250_000), lambda e: None)  # 1 MB: a second on its link
        shaped.send("fast:1", hop(1, 10), lambda e: None)
        inner.wait(2)
    finally:
        shaped.close()
    assert [a for a, _, _ in inner.got] == ["fast:1", "slow:1"]


def planned_arrivals(seed: int) -> list[float]:
    """Arrivals of 20 hops handed over 1 ms apart, on a link with 50 ms of jitter."""
    shaped = ShapedHopTransport(Recorder(), LinkShape(round_trip=0.01, jitter=0.05), seed=seed)
    try:
        return [shaped.arrival("a:1", hop(i, 1), now=100.0 + i / 1000) for i in range(20)]
    finally:
        shaped.close()


def test_jitter_is_seeded_and_never_reorders_a_link() -> None:
    first, again, other = planned_arrivals(7), planned_arrivals(7), planned_arrivals(8)
    assert first == again and first != other  # the same seed draws the same jitter
    assert all(b >= a for a, b in itertools.pairwise(first))  # in order on the link
    assert all(100.005 <= t <= 100.0 + 0.019 + 0.005 + 0.05 for t in first)  # latency + at most the jitter
    assert len({round(t - i / 1000, 6) for i, t in enumerate(first)}) > 1  # jitter was applied
