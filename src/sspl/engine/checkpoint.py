"""Checkpoints: atomic, resumable, self-describing.

A run directory holds ``config.yaml`` (the resolved config), ``checkpoints/last.pt`` (everything needed
to resume: model, optimiser, scheduler, epoch, step, RNG states, trainer state) and
``checkpoints/best.pt`` (the model selected on the validation split). Both are written atomically.

Frozen encoders loaded from published weights (``"imagenet"`` VGG16, ``"audioset"`` VGGish) are not
copied into every checkpoint (hundreds of MB); the checkpoint records their name and they are restored
from the weights cache. Any other encoder weights (SynthAV-pretrained, trained encoders) are stored.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import Config, config_from_dict, config_to_dict
from ..errors import WeightsError
from ..io import atomic_save_torch
from ..models.factory import load_encoder
from ..weights import KNOWN_WEIGHTS, known_weights_name, unreadable

__all__ = [
    "BEST",
    "CHECKPOINT_DIR",
    "FORMAT",
    "LAST",
    "NotAnSSPLCheckpoint",
    "capture_rng",
    "find_checkpoint",
    "load_checkpoint",
    "load_published_encoders",
    "restore_model",
    "restore_rng",
    "resumed_model",
    "save_checkpoint",
    "stored_encoder_settings",
    "trained_on",
]

FORMAT = "sspl-checkpoint"
VERSION = 1
CHECKPOINT_DIR = "checkpoints"
LAST = "last.pt"
BEST = "best.pt"

_ENCODERS = (
    ("visual_encoder", "visual_weights", "train_visual"),
    ("audio_encoder", "audio_weights", "train_audio"),
)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def _model_state(model: nn.Module, config: Config) -> tuple[dict[str, torch.Tensor], dict[str, dict]]:
    model = _unwrap(model)
    state = model.state_dict()
    sources: dict[str, dict] = {}
    for attr, weights_field, train_field in _ENCODERS:
        weights = getattr(config.model, weights_field)
        name = known_weights_name(getattr(model, attr), weights) if hasattr(model, attr) else None
        if name and not getattr(config.model, train_field):
            state = {k: v for k, v in state.items() if not k.startswith(attr + ".")}
            known = KNOWN_WEIGHTS[name]
            sources[attr] = {"weights": weights, "file": known.filename, "sha256_prefix": known.sha256_prefix}
    return state, sources


def capture_rng() -> dict[str, Any]:
    """Every RNG state a training run consumes (Python, NumPy's legacy global, torch CPU and CUDA)."""
    np_state = np.random.get_state()  # noqa: NPY002 -- the legacy global state is what third-party code draws from
    return {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    random.setstate(_to_tuple(state["python"]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_tuple(x: Any) -> Any:
    return tuple(_to_tuple(v) for v in x) if isinstance(x, list | tuple) else x


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    config: Config,
    epoch: int,
    step: int,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    trainer_state: dict | None = None,
    metrics: dict | None = None,
    rng: bool = True,
    trained_on: str | None = None,
) -> None:
    """Write a checkpoint atomically (temporary file + rename).

    ``trained_on`` records the kind of the data the model was trained on (the prepared folder's
    ``meta.json`` ``"kind"``: ``"synth"`` for SynthAV, ``"videos"``, ``"flickr"``, ``"pairs"``);
    :func:`trained_on` reads it back. ``None`` (no training data: an untrained model) is not stored.
    """
    state, sources = _model_state(model, config)
    ckpt = {
        "format": FORMAT,
        "version": VERSION,
        "method": config.method,
        "config": config_to_dict(config),
        "model": state,
        "encoder_sources": sources,
        "epoch": epoch,
        "step": step,
        "metrics": metrics or {},
        "trainer": trainer_state or {},
    }
    if trained_on is not None:
        ckpt["trained_on"] = trained_on
    if optimizer is not None:
        ckpt["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        ckpt["scheduler"] = scheduler.state_dict()
    if rng:
        ckpt["rng"] = capture_rng()
    atomic_save_torch(path, ckpt)


class NotAnSSPLCheckpoint(WeightsError):
    """A readable PyTorch file that ``sspl train`` did not write (a released checkpoint of another method?)."""


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only`` loading)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # several exception types for corrupt files
        raise unreadable(path, e) from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise NotAnSSPLCheckpoint(
            f"{path}: not an sspl checkpoint (for official SSPL files, give their folder)"
        )
    if ckpt.get("version", 0) > VERSION:
        raise WeightsError(
            f"{path}: checkpoint version {ckpt['version']} is newer than this sspl; upgrade sspl"
        )
    return ckpt


def find_checkpoint(run_or_file: str | os.PathLike, prefer: str = BEST) -> Path:
    """The checkpoint file of a run directory (``best.pt``, else ``last.pt``) or the file itself; the
    run's ``checkpoints`` folder is read like the run directory."""
    p = Path(run_or_file)
    if p.is_file():
        return p
    folder = p if p.name == CHECKPOINT_DIR and not (p / CHECKPOINT_DIR).is_dir() else p / CHECKPOINT_DIR
    for name in (prefer, LAST if prefer == BEST else BEST):
        if (folder / name).is_file():
            return folder / name
    raise WeightsError(f"{p}: no checkpoint found (expected {folder / BEST} or {folder / LAST})")


def load_published_encoders(model: nn.Module, ckpt: dict, *, download: bool = True) -> list[str]:
    """Load into ``model`` the published encoder weights a checkpoint names instead of storing them
    (from the weights cache); returns the state-dict prefixes they fill."""
    dropped = []
    for attr, source in ckpt.get("encoder_sources", {}).items():
        load_encoder(getattr(_unwrap(model), attr), attr, source["weights"], download=download)
        dropped.append(attr + ".")
    return dropped


def resumed_model(method, config: Config, ckpt: dict, *, download: bool = True) -> nn.Module:
    """The model of a run to resume, in the state of its checkpoint ``ckpt``: built by ``method`` for
    ``config``, published encoder weights from the weights cache, everything else from the checkpoint."""
    model = method.build(config, pretrained=False)
    load_published_encoders(model, ckpt, download=download)
    model.load_state_dict(_full_state(model, ckpt["model"]), strict=True)
    return model


def _full_state(model: nn.Module, saved: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Saved state completed with the model's own (published, frozen) encoder weights it omits."""
    state = model.state_dict()
    state.update(saved)
    return state


def stored_encoder_settings(ckpt: dict) -> set[str]:
    """The ``model.*_weights`` settings whose encoders the checkpoint stores itself: their weight files are
    not needed to restore it, so they may have moved or gone."""
    sources = ckpt.get("encoder_sources", {})
    return {f"model.{setting}" for attr, setting, _ in _ENCODERS if attr not in sources}


def restore_model(ckpt: dict, *, download: bool = True) -> tuple[nn.Module, Config]:
    """Rebuild the model of a checkpoint (eval mode) and its config."""
    from ..models.methods import get_method

    config = config_from_dict(ckpt["config"])
    model = get_method(config.method).build(config, pretrained=False)
    dropped = load_published_encoders(model, ckpt, download=download)
    result = model.load_state_dict(ckpt["model"], strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(tuple(dropped))]
    if missing or result.unexpected_keys:
        raise WeightsError(
            f"checkpoint does not match the {config.method} model "
            f"(missing {missing[:5]}, unexpected {result.unexpected_keys[:5]})"
        )
    return model.eval(), config


def trained_on(ckpt: dict) -> str | None:
    """What data the checkpoint's model was trained on, as far as it records.

    A checkpoint of ``sspl train`` records it (the training folder's kind: ``"synth"`` for SynthAV,
    ``"videos"``, ``"flickr"`` or ``"pairs"``; see :func:`save_checkpoint`). For one that does not
    (written before the field existed, or by other code), it is inferred: ``"synth"`` when its
    ``small_cnn`` encoders start from the weights ``sspl synth-pretrain`` writes, else ``None``.
    """
    from .pretrain import AUDIO_WEIGHTS_NAME, VISUAL_WEIGHTS_NAME

    recorded = ckpt.get("trained_on")
    if isinstance(recorded, str) and recorded:
        return recorded
    model = ckpt.get("config", {}).get("model", {})
    pairs = (
        (model.get("visual_encoder"), model.get("visual_weights"), VISUAL_WEIGHTS_NAME),
        (model.get("audio_encoder"), model.get("audio_weights"), AUDIO_WEIGHTS_NAME),
    )
    synth = any(enc == "small_cnn" and w and Path(w).name == name for enc, w, name in pairs)
    return "synth" if synth else None
