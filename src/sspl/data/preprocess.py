"""The evaluation preprocessing of a model: frames and sound as the model was trained to see them.

:func:`sspl.load` returns it with the model, so the two never drift apart. Two audio front ends
(``model.audio_frontend``): ``vggish`` (SSPL: 16 kHz audio, the official SSPL clip, ``P x 96 x 64``
log-mel patches; :mod:`sspl.audio`) and ``stft`` (the released EZ-VSL / SLAVC / FNAC models: audio at
the file's own rate through 16-bit mono, the centre 3 s, a ``1 x 257 x T`` log-spectrogram;
:mod:`sspl.spectrogram`). Two image transforms (``data.test_transform``): ``crop`` and ``resize``
(:func:`~sspl.data.transforms.build_eval_transform`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ..audio import SAMPLE_RATE_HZ, clip_at, load_audio, official_clip, resample, waveform_to_examples
from ..config import AUDIO_FRONTENDS, TEST_TRANSFORMS, Config
from .images import to_rgb

__all__ = ["Preprocess"]


@dataclass(frozen=True)
class Preprocess:
    """The evaluation preprocessing of a model: frames and audio as the model was trained to see them.

    Attributes:
        image_size: the square network input (224).
        clip_seconds: audio window per frame (3 s, the official clip rule of both front ends).
        audio_frontend: ``vggish`` (``P x 96 x 64`` log-mel patches of 16 kHz audio) or ``stft``
            (``1 x 257 x T`` log-spectrogram at the audio's own rate).
        test_transform: ``crop`` (shorter side resized, bicubic, centre crop) or ``resize`` (whole frame to
            ``image_size x image_size``, bicubic); both with ImageNet normalisation.
    """

    image_size: int = 224
    clip_seconds: float = 3.0
    audio_frontend: str = "vggish"
    test_transform: str = "crop"

    def __post_init__(self) -> None:
        if self.audio_frontend not in AUDIO_FRONTENDS:
            raise ValueError(
                f"audio_frontend {self.audio_frontend!r}: choose from {', '.join(AUDIO_FRONTENDS)}"
            )
        if self.test_transform not in TEST_TRANSFORMS:
            raise ValueError(
                f"test_transform {self.test_transform!r}: choose from {', '.join(TEST_TRANSFORMS)}"
            )

    @classmethod
    def from_config(cls, cfg: Config) -> Preprocess:
        """The preprocessing a model trained with ``cfg`` is evaluated with."""
        return cls(
            image_size=cfg.data.image_size,
            audio_frontend=cfg.model.audio_frontend,
            test_transform=cfg.data.test_transform,
        )

    @property
    def stft(self) -> bool:
        """Whether the audio input is the released models' spectrogram (native-rate audio)."""
        return self.audio_frontend == "stft"

    def image(self, image: Image.Image) -> torch.Tensor:
        """PIL image of any mode and size -> ``3 x S x S`` normalised tensor."""
        from .transforms import build_eval_transform

        return build_eval_transform(size=self.image_size, mode=self.test_transform)(to_rgb(image))

    def load_audio(self, path: str | os.PathLike) -> tuple[np.ndarray, int]:
        """A sound file's whole waveform as this front end reads it: ``(wave, rate)``, 16 kHz float32
        mono (``vggish``) or the native rate through 16-bit mono (``stft``)."""
        if self.stft:
            from ..spectrogram import decode_s16_mono

            wave, rate, _ = decode_s16_mono(path)
            return wave, rate
        return load_audio(path, SAMPLE_RATE_HZ)

    def audio(self, wave: np.ndarray, sample_rate: int = SAMPLE_RATE_HZ) -> torch.Tensor:
        """A whole waveform -> the input of its official centred clip: ``P x 96 x 64`` log-mel patches
        (``vggish``) or a ``1 x 257 x T`` float32 log-spectrogram at ``sample_rate`` (``stft``)."""
        if self.stft:
            from ..spectrogram import centre_clip, log_spectrogram

            return log_spectrogram(centre_clip(wave, sample_rate, self.clip_seconds), sample_rate).float()
        wave = resample(np.asarray(wave, dtype=np.float32), sample_rate, SAMPLE_RATE_HZ)
        return waveform_to_examples(official_clip(wave, SAMPLE_RATE_HZ, self.clip_seconds))

    def audio_file(self, path: str | os.PathLike) -> torch.Tensor:
        """A sound file -> the input of its official clip; for ``stft`` exactly the official
        ``load_spectrogram`` (seek-based window, :func:`sspl.spectrogram.load_spectrogram`)."""
        if self.stft:
            from ..spectrogram import load_centre_clip, log_spectrogram

            wave, rate = load_centre_clip(path, self.clip_seconds)
            return log_spectrogram(wave, rate).float()
        return self.audio(*self.load_audio(path))

    def audio_at(
        self, wave: np.ndarray, centre_seconds: float, sample_rate: int = SAMPLE_RATE_HZ
    ) -> torch.Tensor:
        """The input of the clip centred on a time point of a waveform (ends tiled); ``vggish`` takes 16 kHz
        audio, ``stft`` audio at ``sample_rate`` (what :meth:`load_audio` returned)."""
        if self.stft:
            from ..spectrogram import clip_window, log_spectrogram

            window = clip_window(wave, sample_rate, centre_seconds, self.clip_seconds)
            return log_spectrogram(window, sample_rate).float()
        if sample_rate != SAMPLE_RATE_HZ:
            raise ValueError(f"the vggish front end takes {SAMPLE_RATE_HZ} Hz audio, got {sample_rate}")
        return waveform_to_examples(clip_at(wave, centre_seconds, SAMPLE_RATE_HZ, self.clip_seconds))

    def crop_mapping(self, width: int, height: int):
        """How the ``S x S`` input maps back onto the original ``width x height`` image."""
        from .transforms import eval_crop_to_original

        return eval_crop_to_original(width, height, size=self.image_size, mode=self.test_transform)
