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
            checkpoint file of ours, a folder of official SSPL files (``frame_best.pth`` ...), or a
            released checkpoint of another method (EZ-VSL's ``best.pth`` ...,
            :data:`sspl.models.released.RELEASED_FORMATS`), which brings its own preprocessing.
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
    from ..models.released import load_released
    from ..models.sspl import OFFICIAL_FILES, SSPL
    from .checkpoint import (
        BEST,
        LAST,
        NotAnSSPLCheckpoint,
        find_checkpoint,
        load_checkpoint,
        restore_model,
        trained_on,
    )

    path = _released_by_name(checkpoint) or Path(checkpoint)
    if not path.exists():
        raise WeightsError(f"{path}: no such checkpoint, run directory or official checkpoint folder")
    if path.is_dir() and any((path / name).is_file() for name in OFFICIAL_FILES.values()):
        # Any official file marks an official folder, so a missing one is named rather than missed.
        model: nn.Module = SSPL.from_official_checkpoint(path, config=config)
        preprocess, origin = Preprocess(), None
    else:
        file = find_checkpoint(path)
        try:
            ckpt = load_checkpoint(file)
        except NotAnSSPLCheckpoint:
            # a released checkpoint of EZ-VSL & co. (told apart by its keys), or a one-line error naming them
            model, cfg = load_released(file, download=download)
            return _placed(model, device), Preprocess.from_config(cfg), None
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
        preprocess = Preprocess.from_config(cfg) if isinstance(cfg, Config) else Preprocess()
        origin = trained_on(ckpt)
    return _placed(model, device), preprocess, origin


def _released_by_name(checkpoint: str | os.PathLike) -> Path | None:
    """The file of a released model named like ``ezvsl-flickr10k`` (``sspl weights --released``), when
    ``checkpoint`` is such a name and no file of that name exists here."""
    from ..released_models import RELEASED_MODELS

    model = RELEASED_MODELS.get(str(checkpoint))
    if model is None or Path(checkpoint).exists():
        return None
    if not model.path().is_file():
        raise WeightsError(
            f"{checkpoint}: the released model is not downloaded; get {model.file} from {model.page} and put it "
            f"at {model.path()}"
        )
    return model.path()


def _placed(model: nn.Module, device: str | torch.device | None) -> nn.Module:
    """The model on ``device`` (default: CUDA when available, else CPU), in eval mode."""
    dev = (
        torch.device(device)
        if device is not None
        else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    )
    return model.to(dev).eval()
