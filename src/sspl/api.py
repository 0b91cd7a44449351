"""Loading a trained localizer together with its preprocessing (so the two never drift apart)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from .audio import SAMPLE_RATE_HZ, clip_at, official_clip, resample, waveform_to_examples
from .config import Config, SSPLConfig
from .data.images import to_rgb  # re-exported: `sspl.api.to_rgb` is public
from .errors import WeightsError

__all__ = ["Preprocess", "load", "to_rgb"]


@dataclass(frozen=True)
class Preprocess:
    """The evaluation preprocessing of a model: frames and audio as the model was trained to see them.

    Attributes:
        image_size: the square network input (224): shorter side resized (bicubic), centre crop,
            ImageNet normalisation.
        clip_seconds: audio window per frame (3 s, the official clip rule).
    """

    image_size: int = 224
    clip_seconds: float = 3.0

    def image(self, image: Image.Image) -> torch.Tensor:
        """PIL image of any mode and size -> ``3 x S x S`` normalised tensor."""
        from .data.transforms import build_eval_transform

        return build_eval_transform(size=self.image_size)(to_rgb(image))

    def audio(self, wave: np.ndarray, sample_rate: int = SAMPLE_RATE_HZ) -> torch.Tensor:
        """A whole waveform -> the ``P x 96 x 64`` log-mel patches of its official centred clip."""
        wave = resample(np.asarray(wave, dtype=np.float32), sample_rate, SAMPLE_RATE_HZ)
        return waveform_to_examples(official_clip(wave, SAMPLE_RATE_HZ, self.clip_seconds))

    def audio_at(self, wave_16k: np.ndarray, centre_seconds: float) -> torch.Tensor:
        """The patches of the clip centred on a time point of a 16 kHz waveform (ends tiled)."""
        return waveform_to_examples(clip_at(wave_16k, centre_seconds, SAMPLE_RATE_HZ, self.clip_seconds))

    def crop_mapping(self, width: int, height: int):
        """How the ``S x S`` input maps back onto the original ``width x height`` image."""
        from .data.transforms import eval_crop_to_original

        return eval_crop_to_original(width, height, size=self.image_size)


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
    from .engine.checkpoint import BEST, LAST, find_checkpoint, load_checkpoint, restore_model
    from .models.sspl import OFFICIAL_FILES, SSPL

    path = Path(checkpoint)
    if not path.exists():
        raise WeightsError(f"{path}: no such checkpoint, run directory or official checkpoint folder")
    if path.is_dir() and any((path / name).is_file() for name in OFFICIAL_FILES.values()):
        # Any official file marks an official folder, so a missing one is named rather than missed.
        model: nn.Module = SSPL.from_official_checkpoint(path, config=config)
        image_size = 224
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
    dev = (
        torch.device(device)
        if device is not None
        else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    )
    return model.to(dev).eval(), Preprocess(image_size=image_size)
