"""Calls per second per identity: a token bucket for each caller, refilled continuously."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from dcnr.errors import ResourceExhausted

MAX_CALLERS = 65536  # buckets remembered (least recently used forgotten: they start full again)


class RateLimiter:
    """At most `rate` calls per second per key on average, `burst` at once."""

    def __init__(self, rate: float, burst: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"a rate limit needs rate > 0 and burst >= 1, got {rate} and {burst}")
        self.rate, self.burst = rate, burst
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, key: str) -> None:
        """Spend one call of `key`'s allowance; ResourceExhausted when it is used up."""
        now = time.monotonic()
        with self._lock:
            tokens, at = self._buckets.pop(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            if tokens < 1:
                self._buckets[key] = (tokens, now)
                raise ResourceExhausted(f"too many calls from {key}: at most {self.rate:g} per second "
                                        f"(bursts of {self.burst:g}); slow down")
            self._buckets[key] = (tokens - 1, now)
            while len(self._buckets) > MAX_CALLERS:
                self._buckets.popitem(last=False)
