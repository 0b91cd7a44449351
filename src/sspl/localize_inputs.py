"""The inputs of :mod:`sspl.localize`, read and checked before any map is computed: an image (any mode,
upright), a sound (a file or a ``(wave, sample_rate)`` pair) and the sound of a video (its own track or a
separate file taken to start with its first frame). Each problem is said naming the file.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .audio import CLIP_SECONDS, SAMPLE_RATE_HZ, is_silent, load_audio, too_short
from .data.images import to_rgb
from .data.video import VideoInfo
from .errors import DataError

__all__ = [
    "AUDIO_SHORTFALL_WARN_SECONDS",
    "AudioArg",
    "ImageArg",
    "as_audio",
    "as_image",
    "check_audio_source",
    "load_video_audio",
    "read_image",
    "warn_if_no_sound",
]

log = logging.getLogger(__name__)

#: A sound ending this much before the video's last frame is warned about (container slack is less).
AUDIO_SHORTFALL_WARN_SECONDS = 1.0

ImageArg = Image.Image | str | os.PathLike
AudioArg = str | os.PathLike | tuple[np.ndarray, int]


def read_image(path: str | os.PathLike) -> Image.Image:
    """Read an image file of any mode, upright (EXIF orientation applied), as RGB.

    Raises:
        FileNotFoundError: no such file.
        DataError: the file is not a readable image.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: " + ("is a folder, not an image file" if path.is_dir() else "no such image file")
        )
    try:
        with Image.open(path) as img:
            img.load()
            upright = ImageOps.exif_transpose(img)
    except Image.DecompressionBombError as e:
        raise DataError(f"{path}: too large to read safely ({e}); downscale it first") from e
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DataError(f"{path}: cannot read as an image ({e})") from e
    return to_rgb(upright)


def as_image(image: ImageArg) -> Image.Image:
    """A PIL image (any mode) or an image file (:func:`read_image`), as RGB."""
    if isinstance(image, Image.Image):
        return to_rgb(image)
    return read_image(image)


def as_audio(audio: AudioArg) -> tuple[np.ndarray, int]:
    """A ``(wave, sample_rate)`` pair checked, or a sound file decoded at 16 kHz; warned about when it holds
    no sound to localize."""
    if isinstance(audio, tuple):
        if len(audio) != 2:
            raise ValueError("audio must be a file path or a (wave, sample_rate) pair")
        wave, rate = np.asarray(audio[0], dtype=np.float32), int(audio[1])
        if wave.ndim != 1 or wave.size == 0:
            raise ValueError(f"wave must be a non-empty 1-D array, got shape {wave.shape}")
        if not np.all(np.isfinite(wave)):
            raise ValueError(f"wave holds {int((~np.isfinite(wave)).sum())} NaN or infinite sample(s)")
        if rate <= 0:
            raise ValueError(f"sample rate must be positive, got {rate}")
        warn_if_no_sound(wave, rate, "the audio array")
        return wave, rate
    wave, rate = load_audio(audio, SAMPLE_RATE_HZ)
    warn_if_no_sound(wave, rate, audio)
    return wave, rate


def warn_if_no_sound(wave: np.ndarray, rate: int, source: object) -> None:
    """A map is still computed for silence or a few samples, but it cannot show where a sound is."""
    why = too_short(wave.shape[0], rate) or ("silent audio (constant signal)" if is_silent(wave) else None)
    if why:
        log.warning("%s: %s; the map cannot show where a sound comes from", source, why)


def check_audio_source(path: Path, info: VideoInfo, audio_path: str | os.PathLike | None) -> Path:
    """The file whose sound goes with the video ``path``: ``audio_path`` when given, else the video."""
    if audio_path is not None:
        audio_path = Path(audio_path)
        if not audio_path.is_file():
            raise FileNotFoundError(
                f"{audio_path}: "
                + ("is a folder, not an audio file" if audio_path.is_dir() else "no such audio file")
            )
        return audio_path
    if not info.has_audio:
        raise DataError(
            f"{path}: no audio stream; give the sound as a separate file (--audio FILE on the command "
            "line, audio_path= in Python)"
        )
    return path


def load_video_audio(path: Path, info: VideoInfo, audio: Path) -> tuple[np.ndarray, float]:
    """The 16 kHz waveform and the time (on the video's timeline) of its first sample."""
    wave, rate = load_audio(audio, SAMPLE_RATE_HZ)
    warn_if_no_sound(wave, rate, audio)
    # A separate sound file is taken to start with the video's first frame.
    t0 = info.audio_start if audio == path else info.start
    audio_end, video_end = t0 + wave.shape[0] / rate, info.start + info.duration
    if video_end - audio_end > AUDIO_SHORTFALL_WARN_SECONDS:
        log.warning(
            "%s: its sound ends at %.2f s of the %.2f s video %s; every later frame gets its last %g s",
            audio,
            audio_end - info.start,
            info.duration,
            path,
            CLIP_SECONDS,
        )
    return wave, t0
