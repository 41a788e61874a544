"""A session's validation policy: `off`, `sample:P` or `full`."""

from __future__ import annotations

from dataclasses import dataclass

TRUSTED_FACTOR = 0.1  # trusted PNodes are sampled at a tenth of the rate (never zero)
DEFAULT = "sample:0.05"


@dataclass(frozen=True)
class Policy:
    """How much of a session's work is re-executed by a verifier.

    - `off`: nothing (commitments are still cross-checked: that costs no re-execution);
    - `sample:P`: each work unit with probability P (0 < P <= 1), P/10 for trusted PNodes;
    - `full`: every unit once (a quorum of two: its host and one verifier), a referee on mismatch.
    """

    mode: str  # "off" | "sample" | "full"
    rate: float = 0.0

    @classmethod
    def parse(cls, text: str) -> Policy:
        """`off`, `full` or `sample:P`; ValueError naming what is expected otherwise."""
        value = text.strip().lower()
        if value in ("off", "full"):
            return cls(value, 0.0 if value == "off" else 1.0)
        if value.startswith("sample:"):
            try:
                rate = float(value.split(":", 1)[1])
            except ValueError:
                rate = -1.0
            if 0.0 < rate <= 1.0:
                return cls("sample", rate)
        raise ValueError(f"validation must be off, full or sample:P with 0 < P <= 1 (e.g. sample:0.05), got {text!r}")

    def rate_for(self, trusted: bool) -> float:
        """The probability that one unit of a PNode is re-executed."""
        if self.mode == "off":
            return 0.0
        if self.mode == "full":
            return 1.0
        return self.rate * TRUSTED_FACTOR if trusted else self.rate

    def __str__(self) -> str:
        return f"sample:{self.rate}" if self.mode == "sample" else self.mode  # shortest text that reads back
