"""The evaluation preprocessing of a model: frames and sound as the model was trained to see them.

:func:`sspl.load` returns it with the model, so the two never drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ..audio import SAMPLE_RATE_HZ, clip_at, official_clip, resample, waveform_to_examples
from .images import to_rgb

__all__ = ["Preprocess"]


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
        from .transforms import build_eval_transform

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
        from .transforms import eval_crop_to_original

        return eval_crop_to_original(width, height, size=self.image_size)
