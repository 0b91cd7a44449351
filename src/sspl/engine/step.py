"""One training step and what it updates the model with: the optimiser over a method's parameter groups,
the learning-rate schedule, the AMP gradient scaler and autocast dtype. The trainer runs
:func:`train_step` for every batch; the step benchmark times this same function."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from ..config import Config
from .distributed import DistEnv, all_true
from .run_dir import TrainingError
from .schedule import build_scheduler

__all__ = ["NonFiniteLossError", "Optimisation", "StepResult", "build_optimisation", "train_step"]


class NonFiniteLossError(TrainingError):
    """A training step's loss is NaN or infinite (on any process); nothing was updated."""


@dataclass
class Optimisation:
    """What a training step updates the model with."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None = None  # autocast's (None: full precision)


@dataclass
class StepResult:
    """What a training step computed: its loss (detached), the method's extra scalars, the gradient norm."""

    loss: torch.Tensor
    extra: dict
    grad_norm: float


def build_optimisation(
    method, model: torch.nn.Module, cfg: Config, steps_per_epoch: int, device: torch.device
) -> Optimisation:
    """AdamW (or Adam, ``optim.optimizer``) over the method's parameter groups of ``model``, the schedule of ``cfg`` over its epochs of
    ``steps_per_epoch`` steps, and ``train.amp``'s autocast dtype (on CUDA only) with a gradient scaler
    (on with float16 only)."""
    groups = method.param_groups(model, cfg.optim)
    adam = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}[cfg.optim.optimizer]
    optimizer = adam(
        groups, betas=tuple(cfg.optim.betas), eps=cfg.optim.eps, weight_decay=cfg.optim.weight_decay
    )
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.train.amp)
    use_amp = amp_dtype is not None and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    return Optimisation(optimizer, scheduler, scaler, amp_dtype if use_amp else None)


def train_step(
    model: torch.nn.Module,
    method,
    batch: dict,
    cfg: Config,
    opt: Optimisation,
    env: DistEnv | None = None,
) -> StepResult:
    """One optimisation step: the method's ``before_step(model)`` hook when it has one, the method's loss (under autocast when ``opt.amp_dtype`` is set), the check
    that it is finite on every process, backward through the AMP scaler, the gradient norm, then the
    optimiser and scheduler steps.

    Args:
        model: the model in training mode (in DistributedDataParallel under torchrun).
        method: the method plugin whose ``loss(model, batch, cfg)`` is minimised.
        batch: a collated batch on the model's device.
        cfg: the run's config (the method reads its options).
        opt: what the step updates the model with (see :func:`build_optimisation`).
        env: where this process stands (default: one process on the CPU); autocast runs on its device.

    Raises:
        NonFiniteLossError: the loss is NaN or infinite on a process; nothing was updated.
    """
    env = env if env is not None else DistEnv()
    before_step = getattr(method, "before_step", None)
    if before_step is not None:  # e.g. a momentum encoder's update (SLAVC), in the official order
        before_step(model)
    autocast = (
        torch.autocast(env.device.type, dtype=opt.amp_dtype)
        if opt.amp_dtype is not None
        else contextlib.nullcontext()
    )
    with autocast:
        loss, extra = method.loss(model, batch, cfg)
    if not all_true(torch.isfinite(loss.detach()).float(), env):
        raise NonFiniteLossError(f"non-finite loss ({loss.item()})")
    opt.optimizer.zero_grad(set_to_none=True)
    opt.scaler.scale(loss).backward()
    opt.scaler.unscale_(opt.optimizer)
    grad_norm = _grad_norm(opt.optimizer)
    opt.scaler.step(opt.optimizer)
    opt.scaler.update()
    opt.scheduler.step()
    return StepResult(loss.detach(), extra, grad_norm)


def _grad_norm(optimizer: torch.optim.Optimizer) -> float:
    """L2 norm of all gradients the optimiser applies (after DDP averaging)."""
    grads = [
        p.grad.detach().float().norm()
        for g in optimizer.param_groups
        for p in g["params"]
        if p.grad is not None
    ]
    return float(torch.stack(grads).norm()) if grads else 0.0
