"""Loading a trained localizer together with its preprocessing (so the two never drift apart)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ..config import Config, SSPLConfig
from ..data.preprocess import Preprocess
from ..errors import WeightsError

__all__ = ["load", "load_with_origin"]


def load(
    checkpoint: str | os.PathLike,
    *,
    device: str | torch.device | None = None,
    config: SSPLConfig | None = None,
    download: bool = True,
) -> tuple[nn.Module, Preprocess]:
    """Load a localizer and its preprocessing.

    Args:
        checkpoint: a run directory of ``sspl train`` (its best checkpoint, else the last), a ``.pt``
            checkpoint file of ours, or a folder of official SSPL files (``frame_best.pth`` ...).
        device: where to put the model (default: CUDA when available, else CPU).
        config: base model config for official checkpoints (PCM and cycles are inferred).
        download: allow fetching published encoder weights a checkpoint refers to.

    Returns:
        ``(model, preprocess)``; the model is in eval mode and has
        ``localize(frames, spect) -> B x h x w``.
    """
    model, preprocess, _ = load_with_origin(checkpoint, device=device, config=config, download=download)
    return model, preprocess


def load_with_origin(
    checkpoint: str | os.PathLike,
    *,
    device: str | torch.device | None = None,
    config: SSPLConfig | None = None,
    download: bool = True,
) -> tuple[nn.Module, Preprocess, str | None]:
    """:func:`load` (same arguments), and what the model was trained on as far as the checkpoint records
    (:func:`~sspl.engine.checkpoint.trained_on`: ``"synth"`` for SynthAV, the prepared folder's kind for
    other data, ``None`` when unknown).

    Returns:
        ``(model, preprocess, trained_on)``.
    """
    from ..models.sspl import OFFICIAL_FILES, SSPL
    from .checkpoint import BEST, LAST, find_checkpoint, load_checkpoint, restore_model, trained_on

    path = Path(checkpoint)
    if not path.exists():
        raise WeightsError(f"{path}: no such checkpoint, run directory or official checkpoint folder")
    if path.is_dir() and any((path / name).is_file() for name in OFFICIAL_FILES.values()):
        # Any official file marks an official folder, so a missing one is named rather than missed.
        model: nn.Module = SSPL.from_official_checkpoint(path, config=config)
        image_size, origin = 224, None
    else:
        file = find_checkpoint(path)
        try:
            ckpt = load_checkpoint(file)
        except WeightsError as e:
            other = file.with_name(LAST if file.name == BEST else BEST)
            if path.is_dir() and other.is_file():  # a run's best.pt is damaged: its last.pt may not be
                raise WeightsError(f"{e}; try its other checkpoint, --checkpoint {other}") from e
            raise
        try:
            model, cfg = restore_model(ckpt, download=download)
        except WeightsError as e:
            raise WeightsError(f"{file}: {e}") from e
        except (KeyError, TypeError, ValueError) as e:
            raise WeightsError(
                f"{file}: cannot rebuild the model it holds ({type(e).__name__}: {e}); "
                "was it written by a newer or modified sspl?"
            ) from e
        image_size = cfg.data.image_size if isinstance(cfg, Config) else 224
        origin = trained_on(ckpt)
    dev = (
        torch.device(device)
        if device is not None
        else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    )
    return model.to(dev).eval(), Preprocess(image_size=image_size), origin
