"""Dtypes by name, and dynamic loss scaling for fp16 training (SPEC §5)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

DTYPES = {"float32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class LossScaler:
    """Scale the initial gradient; halve on overflow (skipping the step), grow after
    `growth_interval` good steps. Disabled (scale 1) when nothing runs in fp16."""

    enabled: bool
    scale: float = 2.0**15  # 2**16 does not fit in fp16
    growth_interval: int = 200
    good_steps: int = 0
    skipped_steps: int = 0

    def __post_init__(self) -> None:
        if not self.enabled:
            self.scale = 1.0

    def update(self, finite: bool) -> bool:
        """Record a step's outcome; returns True when the update must be applied."""
        if not self.enabled:
            return finite
        if not finite:
            self.scale = max(self.scale / 2.0, 1.0)
            self.good_steps = 0
            self.skipped_steps += 1
            return False
        self.good_steps += 1
        if self.good_steps >= self.growth_interval:
            self.scale = min(self.scale * 2.0, 2.0**24)
            self.good_steps = 0
        return True
