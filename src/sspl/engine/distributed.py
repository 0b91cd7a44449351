"""Distributed helpers: process-group set-up from torchrun's environment and a CPU-capable sync batch norm.

Launch multi-GPU / multi-node training with ``torchrun --nproc_per_node N -m sspl.cli train ...``;
torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` (nothing is
hard-coded here). NCCL is used with CUDA, gloo otherwise.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn

from ..config import ConfigError

__all__ = [
    "DistEnv",
    "GlobalBatchNorm",
    "all_reduce_mean",
    "all_true",
    "broadcast_flag",
    "convert_sync_batchnorm",
    "init_distributed",
    "shutdown",
    "wrap_ddp",
]


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands: rank, world size, local rank and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _pick_device(preference: str, local_rank: int) -> torch.device:
    if preference == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(preference)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"train.device={preference!r}: CUDA is not available on this machine (use cpu or auto)"
            )
        if device.index is None:
            device = torch.device(f"cuda:{local_rank}")
    return device


def init_distributed(device: str = "auto") -> DistEnv:
    """Join the process group described by torchrun's environment variables (a no-op without them)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = _pick_device(device, local_rank)
    if world_size <= 1:
        return DistEnv(device=dev)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo", init_method="env://")
    return DistEnv(dist.get_rank(), dist.get_world_size(), local_rank, dev)


def shutdown() -> None:
    """Leave the process group if one was joined."""
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(value: float, env: DistEnv) -> float:
    """Mean of a Python number over all processes (for logging)."""
    if not env.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=env.device)
    dist.all_reduce(t)
    return float(t.item()) / env.world_size


def all_true(flag: torch.Tensor, env: DistEnv) -> bool:
    """Whether a ``0.``/``1.`` flag tensor is ``1`` on every process (a minimum over them)."""
    if env.distributed:
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return flag.item() >= 1


def broadcast_flag(value: bool, env: DistEnv) -> bool:
    """The main process's ``value``, on every process."""
    if not env.distributed:
        return value
    flag = torch.tensor([1.0 if value else 0.0], device=env.device)
    dist.broadcast(flag, src=0)
    return bool(flag.item())


def wrap_ddp(model: nn.Module, env: DistEnv, *, find_unused_parameters: bool = False) -> nn.Module:
    """``model`` in DistributedDataParallel under torchrun (one device per process), else itself."""
    if not env.distributed:
        return model
    return nn.parallel.DistributedDataParallel(
        model,
        device_ids=[env.device] if env.device.type == "cuda" else None,
        find_unused_parameters=find_unused_parameters,
    )


class _AllReduceSum(torch.autograd.Function):
    """Differentiable sum over processes: the gradient of each input is the sum of the output gradients."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training statistics span the batches of all processes.

    torch's ``SyncBatchNorm`` runs only on accelerators; this one also runs on CPU (gloo), which is what
    lets the DDP test compare a 2-process CPU run with a single process on the same global batch. The
    statistics are gathered with differentiable all-reduces, so gradients flow across processes exactly
    as for one batch norm over the whole batch.
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input (N x C x ...), got {x.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, x.shape[1]] + [1] * (x.dim() - 2)
        count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype, device=x.device)
        dist.all_reduce(count)
        mean = _AllReduceSum.apply(x.sum(dims)) / count
        centred = x - mean.view(shape)
        var = _AllReduceSum.apply((centred * centred).sum(dims)) / count
        if self.track_running_stats:
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 0.1
                self.running_mean.mul_(1 - m).add_(m * mean.detach())
                self.running_var.mul_(1 - m).add_(m * var.detach() * count / (count - 1))
                self.num_batches_tracked.add_(1)
        y = centred / torch.sqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Make every batch norm synchronise across processes (torch's SyncBatchNorm on GPU, ours on CPU)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _convert_to_global(module)


def _convert_to_global(module: nn.Module) -> nn.Module:
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        out = GlobalBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        if module.affine:
            with torch.no_grad():
                out.weight.copy_(module.weight)
                out.bias.copy_(module.bias)
            out.weight.requires_grad_(module.weight.requires_grad)
            out.bias.requires_grad_(module.bias.requires_grad)
        if module.track_running_stats:
            out.running_mean.copy_(module.running_mean)
            out.running_var.copy_(module.running_var)
            out.num_batches_tracked.copy_(module.num_batches_tracked)
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, _convert_to_global(child))
    return out
