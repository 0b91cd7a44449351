"""Build models with their weights: the one place where weight files go into models.

Every method's ``build`` (:mod:`sspl.models.methods`) and :func:`create_model` load the encoder weights a
config names through :func:`load_encoder_weights`; one encoder at a time (a checkpoint that names
published weights instead of storing them) goes through :func:`load_encoder`; a module saved whole by
sspl itself (the encoders of ``sspl synth-pretrain``) through :func:`load_module_file`, which takes
exactly its keys; the official SSPL files through :func:`load_official_checkpoint`.
"""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from ..config import SSPLConfig
from ..errors import WeightsError
from ..weights import load_audio_encoder_weights, load_visual_encoder_weights, read_state_dict
from .official import official_config, official_to_state_dict, read_official_parts
from .sspl import SSPL
from .streams import ENCODERS

__all__ = [
    "create_model",
    "load_encoder",
    "load_encoder_weights",
    "load_module_file",
    "load_official_checkpoint",
]


def load_encoder(encoder: nn.Module, kind: str, weights: str, *, download: bool = True) -> Path:
    """Load weights into one encoder module.

    Args:
        encoder: the module (a model's ``visual_encoder`` or ``audio_encoder``).
        kind: ``"visual_encoder"`` or ``"audio_encoder"`` (see :data:`~sspl.models.streams.ENCODERS`).
        weights: ``"imagenet"`` (visual) / ``"audioset"`` (audio), or a file path.
        download: allow downloading known weights that are not cached.

    Returns:
        The file the weights came from.

    Raises:
        sspl.errors.WeightsError: weights missing (offline), corrupt, or of another architecture.
    """
    if kind not in ENCODERS:
        raise ValueError(f"unknown encoder {kind!r}; choose from {', '.join(ENCODERS)}")
    loader = load_visual_encoder_weights if kind == "visual_encoder" else load_audio_encoder_weights
    return loader(encoder, weights, download=download)


def load_module_file(module: nn.Module, path: Path, mismatch: str) -> nn.Module:
    """Load a state dict file that holds exactly ``module``'s keys and shapes; returns the module.

    Raises:
        sspl.errors.WeightsError: the file is unreadable (named by :func:`~sspl.weights.read_state_dict`),
            or holds other keys or shapes (``"{path}: {mismatch} ({why})"``).
    """
    state = read_state_dict(path)
    try:
        module.load_state_dict(state)
    except RuntimeError as e:  # keys or shapes of another architecture
        raise WeightsError(f"{path}: {mismatch} ({e})") from e
    return module


def load_encoder_weights(model: nn.Module, config: SSPLConfig, *, download: bool = True) -> nn.Module:
    """Load into ``model``'s encoders the weights ``config.visual_weights`` / ``config.audio_weights``
    name (each skipped when ``None``); returns the model."""
    for kind, weights in zip(ENCODERS, (config.visual_weights, config.audio_weights)):
        if weights:
            load_encoder(getattr(model, kind), kind, weights, download=download)
    return model


def create_model(config: SSPLConfig | None = None, *, pretrained: bool = True, download: bool = True) -> SSPL:
    """An SSPL model with the encoder weights its config names.

    Args:
        config: model configuration; ``visual_weights`` / ``audio_weights`` name ``"imagenet"`` /
            ``"audioset"``, a file path, or ``None`` (random initialisation).
        pretrained: load those weights (``False``: random encoders, e.g. for smoke tests).
        download: allow downloading known weights that are not cached.

    Raises:
        sspl.errors.WeightsError: weights missing (offline), corrupt, or of another architecture.
    """
    cfg = config or SSPLConfig()
    model = SSPL(cfg)
    if pretrained:
        load_encoder_weights(model, cfg, download=download)
    return model


def load_official_checkpoint(
    path: str | os.PathLike, *, config: SSPLConfig | None = None, model_class: type[SSPL] = SSPL
) -> SSPL:
    """Load a model trained by the official SSPL code (what :meth:`SSPL.from_official_checkpoint` calls).

    Args:
        path: folder holding ``frame_best.pth``, ``sound_best.pth``, ``ssl_head_best.pth`` and, for
            SSPL w/ PCM, ``pcm_best.pth`` (keys with or without a ``module.`` prefix).
        config: base config for the non-inferred options; PCM on/off and the number of cycles are
            inferred from the files.
        model_class: :class:`SSPL` or a subclass.

    Returns:
        The model in eval mode.

    Raises:
        sspl.errors.WeightsError: a file missing or unreadable, or keys or shapes of another architecture.
    """
    folder = Path(path)
    parts = read_official_parts(folder)
    model = model_class(official_config(parts, config or SSPLConfig()))
    try:
        state = official_to_state_dict(parts)
    except WeightsError as e:
        raise WeightsError(f"{folder}: {e}") from e
    own = model.state_dict()
    wrong = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if wrong:
        raise WeightsError(
            f"{folder}: checkpoint does not match the SSPL architecture (shape of {wrong[0]}: "
            f"{tuple(state[wrong[0]].shape)} in the file, {tuple(own[wrong[0]].shape)} in the model)"
        )
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise WeightsError(
            f"{folder}: checkpoint does not match the SSPL architecture "
            f"(missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]})"
        )
    return model.eval()
