"""Training methods as plugins: SSPL and the paper's baselines share encoders, data, trainer and evaluator.

A method is a small object that builds its model from a :class:`~sspl.config.Config`, computes its loss
on a training batch, and lists its optimiser parameter groups. Every model it builds has
``localize(frames, spect, *, audio_patch_embeddings=None) -> B x h x w``, which is what evaluation and
``sspl localize`` call, whatever the method.

Training batches are dicts with ``frame_view1``, ``frame_view2`` (``B x 3 x H x W``), ``spect``
(``B x P x 96 x 64``) or ``audio_emb`` (``B x P x D`` cached embeddings), ``id`` and, when the data has
labels, ``label`` (class index, -1 for unlabelled); in training, ``epoch`` (the 0-based epoch, an int).
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from ...config import Config, OptimConfig

__all__ = ["METHODS", "Method", "get_method", "register_method", "with_encoder_groups"]


class Method(Protocol):
    """What the trainer needs from a method."""

    name: str

    def build(self, config: Config, *, pretrained: bool = True) -> nn.Module:
        """The model, with its encoder weights when ``pretrained``."""

    def loss(self, model: nn.Module, batch: dict, config: Config) -> tuple[torch.Tensor, dict[str, float]]:
        """Scalar training loss of a batch, plus extra values to log."""

    def param_groups(self, model: nn.Module, optim: OptimConfig) -> list[dict]:
        """Optimiser parameter groups (each with ``name``, ``params``, ``lr`` and ``weight_decay``)."""

    # Optional: ``before_step(model)``, called by the training step before each loss (outside autocast,
    # on the model as trained, possibly wrapped in DistributedDataParallel), e.g. to update a momentum
    # encoder (SLAVC).


METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    """Add a method to the registry (by its ``name``)."""
    METHODS[method.name] = method
    return method


def with_encoder_groups(groups: list[dict], model: nn.Module, optim: OptimConfig) -> list[dict]:
    """A method's own parameter groups, then one per encoder the config trains (at ``optim.lr_encoder``,
    default ``optim.lr``); every group without its own ``weight_decay`` gets ``optim.weight_decay``."""
    encoder_lr = optim.lr_encoder if optim.lr_encoder is not None else optim.lr
    for name, params in model.trained_encoder_parameters().items():
        groups.append({"name": name, "params": params, "lr": encoder_lr})
    for g in groups:
        g.setdefault("weight_decay", optim.weight_decay)
    return groups


def get_method(name: str) -> Method:
    """The registered method called ``name``."""
    _load_builtin()
    if name not in METHODS:
        from ...config import ConfigError

        raise ConfigError(f"unknown method {name!r}; choose from {', '.join(sorted(METHODS))}")
    return METHODS[name]


def _load_builtin() -> None:
    import importlib

    for module in ("sspl_method", "attention", "hardway", "ezvsl", "slavc", "fnac"):
        try:
            importlib.import_module(f"{__name__}.{module}")
        except ModuleNotFoundError as e:  # a baseline not installed in this build
            if e.name != f"{__name__}.{module}":
                raise
