"""The learning-rate schedule every training loop of sspl uses (SSPL and its baselines, and the SynthAV
encoders' pretraining): constant, as the paper, or linear warm-up then cosine decay."""

from __future__ import annotations

import math

import torch

from ..config import Config

__all__ = ["build_scheduler", "lr_factor"]


def lr_factor(step: int, total: int, *, warmup: int = 0, schedule: str = "cosine") -> float:
    """The factor on the base learning rate at ``step`` (0-based) of ``total`` steps.

    ``"constant"`` is 1 throughout; ``"cosine"`` rises linearly over ``warmup`` steps, then decays as
    ``0.5 (1 + cos(pi p))`` with ``p`` the share of the steps after the warm-up done so far.
    """
    if schedule == "constant":
        return 1.0
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: Config, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """The per-step schedule of a training config (``optim.schedule``, ``optim.warmup_epochs``)."""
    total = max(1, cfg.train.epochs * steps_per_epoch)
    warmup = int(cfg.optim.warmup_epochs * steps_per_epoch)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total, warmup=warmup, schedule=cfg.optim.schedule)
    )
