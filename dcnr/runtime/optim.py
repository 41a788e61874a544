"""Per-VNode optimizers and learning-rate schedules (torch.optim over fp32 masters)."""

from __future__ import annotations

import math

import torch

from dcnr.nodes.base import NodeConfig


def learning_rate(cfg: NodeConfig, step: int) -> float:
    """The learning rate at `step` (0-based) under the node's schedule."""
    lr = cfg.lr
    if cfg.lr_schedule in ("linear_warmup", "cosine") and step < cfg.warmup_steps:
        return lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "cosine":
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.decay_steps))
        return cfg.min_lr + (lr - cfg.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return lr


def make_optimizer(cfg: NodeConfig, params: list[torch.Tensor]) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
