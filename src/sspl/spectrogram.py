"""The audio front end of the released EZ-VSL, SLAVC and FNAC models: a linear-frequency log-spectrogram.

Their ``load_spectrogram`` (identical in the three official repositories) takes 3 s from the centre of a
file at the file's own sample rate and returns a ``257 x T`` log power spectrogram, which their audio
transform turns into a ``1 x 257 x T`` tensor divided by 12. This module reproduces it in two parts:

- **Decoding** (NumPy + PyAV, per file): :func:`load_centre_clip`. The window starts at
  ``max(duration / 2 - 1.5, 0)`` seconds, ``duration`` being the audio stream's declared duration, and
  is cut from the frames decoded after a seek to it, as their ``load_audio_av`` does: frames ending
  before the start are skipped, the first kept frame's timestamp fixes the sample offset
  ``int((start - t_frame) * rate)``, ``int(min(3, end - start) * rate)`` samples are kept. Each frame
  goes through FFmpeg's resampler to signed 16-bit mono at the native rate (so stereo is mixed down by
  libswresample and rounded to 16 bits, exactly as theirs), the samples are divided by 32767, clipped to
  [-1, 1], tiled ``int(3 * rate / n) + 1`` times when short and cut to ``int(3 * rate)`` samples.
- **The spectrogram** (torch, batched, any device): :func:`log_spectrogram`. It is
  ``scipy.signal.spectrogram(x, rate, nperseg=512, noverlap=274)`` with scipy's defaults spelled out:
  segments of 512 samples every 238, the mean of each segment removed (``detrend='constant'``), a
  periodic Tukey window with ``alpha = 0.25``, a 512-point real FFT, the power scaled to a density
  (``1 / (rate * sum(window**2))``) and doubled in every bin but DC and Nyquist (one-sided), then
  ``log(x + 1e-7) / 12``. The sample rate only enters the density scale, so a batch mixes clips of one
  rate (``T = 1 + (3 * rate - 512) // 238``: 200 at 16 kHz, 276 at 22.05 kHz, 554 at 44.1 kHz, 603 at 48 kHz).

PyAV versions: the official EZ-VSL and SLAVC code was written for PyAV < 9, whose
``AudioResampler.resample`` returned one frame; from PyAV 9 it returns a list, which their code does not
expect (the ``AttributeError`` it raises ends their decoding loop with no audio), and FNAC indexes
``[0]``. At the file's own rate the resampler only converts the sample format and the channel layout, so
it holds nothing back: each call gives exactly the samples of its input frame, which is what the old
single frame held and what FNAC's ``[0]`` keeps. :func:`load_centre_clip` joins every frame a call
returns (one, at the native rate), never flushes (neither did they), and so gives what the released models
saw under the PyAV of their time. ``tests/data/released/`` holds their function's output on real files at
16, 22.05, 44.1 and 48 kHz, mono and stereo, long and short (tiled).

Where the official code would crash, this module says why instead: a stream without a declared duration
uses the container's, a file with no audio or no decodable samples is an :class:`~sspl.audio.AudioDecodeError`
naming it.
"""

from __future__ import annotations

import math
import os
from fractions import Fraction
from functools import lru_cache

import numpy as np
import torch

from .audio import AudioDecodeError, centre_window, readable_audio_file, tile_to_length

__all__ = [
    "CLIP_SECONDS",
    "FFT_SAMPLES",
    "HOP_SAMPLES",
    "INT16_MAX",
    "LOG_OFFSET",
    "NORMALIZE_STD",
    "NUM_FREQUENCY_BINS",
    "SEGMENT_SAMPLES",
    "TUKEY_ALPHA",
    "centre_clip",
    "clip_window",
    "decode_s16_mono",
    "load_centre_clip",
    "load_spectrogram",
    "log_spectrogram",
    "num_frames",
    "tukey_window",
]

CLIP_SECONDS = 3.0
SEGMENT_SAMPLES = 512  # scipy's nperseg
OVERLAP_SAMPLES = 274  # scipy's noverlap
HOP_SAMPLES = SEGMENT_SAMPLES - OVERLAP_SAMPLES  # 238
FFT_SAMPLES = SEGMENT_SAMPLES
NUM_FREQUENCY_BINS = FFT_SAMPLES // 2 + 1  # 257
TUKEY_ALPHA = 0.25  # scipy.signal.spectrogram's default window ('tukey', 0.25)
LOG_OFFSET = 1e-7
NORMALIZE_STD = 12.0  # their audio transform: Normalize(mean=[0.0], std=[12.0])
INT16_MAX = 32767  # their np.iinfo(int16).max: full scale is 32767, not 32768


# --------------------------------------------------------------------------------------------------
# Decoding (NumPy + PyAV)
# --------------------------------------------------------------------------------------------------


def _open(path: str | os.PathLike):
    """The file's container and its first audio stream; problems are AudioDecodeErrors naming the file."""
    import av

    path = readable_audio_file(path)
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as e:
        raise AudioDecodeError(f"{path}: cannot open container ({e})") from e
    if not container.streams.audio:
        container.close()
        raise AudioDecodeError(f"{path}: no audio stream")
    return path, container, container.streams.audio[0]


def _stream_span(container, stream) -> tuple[Fraction, Fraction]:
    """(start, duration) of the audio stream in seconds, as their ``load_audio_av`` reads them; a stream
    without a declared duration falls back on the container's (theirs would fail)."""
    import av

    start = stream.start_time * stream.time_base if stream.start_time is not None else Fraction(0)
    if stream.duration is not None:
        return start, stream.duration * stream.time_base
    if container.duration is None:
        raise AudioDecodeError(f"{container.name}: neither the audio stream nor the file declares a duration")
    return start, Fraction(container.duration, av.time_base)


def _s16_mono(resampler, frame) -> np.ndarray:
    """One decoded frame as ``1 x n`` int16 mono samples (every frame the resampler returns, joined)."""
    frame.pts = None
    out = resampler.resample(frame)
    frames = out if isinstance(out, list) else [out]  # PyAV >= 9 returns a list, older PyAV one frame
    return np.concatenate([f.to_ndarray() for f in frames if f is not None], axis=1)


def _decode_window(path, container, stream, start: float, seconds: float) -> tuple[np.ndarray, int]:
    """``1 x n`` int16 samples of ``[start, start + seconds)`` cut the way their ``load_audio_av`` cuts."""
    import av

    rate = int(stream.rate)
    s0, dur = _stream_span(container, stream)
    end = s0 + dur
    duration = min(seconds, end - start)
    stop = start + duration
    resampler = av.AudioResampler(format="s16p", layout="mono", rate=rate)
    chunks: list[tuple[Fraction, np.ndarray]] = []
    container.seek(int(start * av.time_base))
    try:
        for frame in container.decode(audio=0):
            t = frame.pts * frame.time_base
            if t + Fraction(frame.samples, frame.rate) < start:
                continue
            if t > stop:
                break
            chunks.append((t, _s16_mono(resampler, frame)))
    except av.FFmpegError as e:
        if not chunks:
            raise AudioDecodeError(f"{path}: cannot decode audio ({e})") from e
    if not chunks or sum(c.shape[1] for _, c in chunks) == 0:
        raise AudioDecodeError(f"{path}: audio stream holds no samples")
    audio = np.concatenate([c for _, c in chunks], axis=1)
    offset = int((start - chunks[0][0]) * rate)
    if offset < 0:
        audio = np.pad(audio, ((0, 0), (-offset, 0)))
        offset = 0
    return audio[:, offset : offset + int(duration * rate)], rate


def load_centre_clip(path: str | os.PathLike, seconds: float = CLIP_SECONDS) -> tuple[np.ndarray, int]:
    """The official clip of a file: ``seconds`` from the centre of its audio at the native rate, 16-bit mono.

    Returns:
        ``(wave, rate)``: ``int(seconds * rate)`` float64 samples in [-1, 1] (tiled when the file is
        shorter) and the file's sample rate.

    Raises:
        FileNotFoundError: no such file.
        AudioDecodeError: no audio stream, or nothing decodable in the window (names the file).
    """
    path, container, stream = _open(path)
    with container:
        _, dur = _stream_span(container, stream)
        start = max(float(dur) / 2 - seconds / 2, 0)
        audio, rate = _decode_window(path, container, stream, start, seconds)
    if audio.shape[1] == 0:
        raise AudioDecodeError(f"{path}: audio stream holds no samples")
    wave = np.clip(audio / INT16_MAX, -1.0, 1.0).mean(0)
    return _tile(wave, rate, seconds), rate


def _tile(wave: np.ndarray, rate: int, seconds: float) -> np.ndarray:
    """Their rule: ``int(rate * seconds / n) + 1`` copies when short, then the first ``int(rate * seconds)``."""
    length = rate * seconds  # a float, as theirs; int(length / n) below is their copy count
    if wave.shape[0] < length:
        wave = tile_to_length(wave, int(math.ceil(length)))
    return wave[: int(length)]


def decode_s16_mono(path: str | os.PathLike) -> tuple[np.ndarray, int, float]:
    """A whole file's audio through the same 16-bit mono conversion as :func:`load_centre_clip`.

    Returns:
        ``(wave, rate, t0)``: float64 samples in [-1, 1] at the native rate, the rate, and the time in
        seconds (on the file's timeline) of the first sample, for per-frame windows of a video
        (:func:`clip_window`).
    """
    import av

    path, container, stream = _open(path)
    with container:
        resampler = av.AudioResampler(format="s16p", layout="mono", rate=int(stream.rate))
        chunks: list[np.ndarray] = []
        t0 = 0.0
        try:
            for frame in container.decode(audio=0):
                if not chunks and frame.pts is not None:
                    t0 = float(frame.pts * frame.time_base)
                chunks.append(_s16_mono(resampler, frame))
        except av.FFmpegError as e:
            if not chunks:
                raise AudioDecodeError(f"{path}: cannot decode audio ({e})") from e
        rate = int(stream.rate)
    if not chunks or sum(c.shape[1] for c in chunks) == 0:
        raise AudioDecodeError(f"{path}: audio stream holds no samples")
    return np.clip(np.concatenate(chunks, axis=1)[0] / INT16_MAX, -1.0, 1.0), rate, t0


def centre_clip(wave: np.ndarray, rate: int, seconds: float = CLIP_SECONDS) -> np.ndarray:
    """The official window of an in-memory waveform: from ``max(n / rate / 2 - seconds / 2, 0)`` s,
    ``int(seconds * rate)`` samples, tiled when short (:func:`load_centre_clip` without the decoding;
    samples are clipped to [-1, 1], not quantised to 16 bits)."""
    wave = np.clip(np.asarray(wave, dtype=np.float64), -1.0, 1.0)
    if wave.ndim != 1 or wave.size == 0:
        raise ValueError(f"expected a non-empty 1-D waveform, got shape {wave.shape}")
    dur = wave.shape[0] / rate
    start = max(dur / 2 - seconds / 2, 0)
    offset, length = int(start * rate), int(min(seconds, dur - start) * rate)
    return _tile(wave[offset : offset + length], rate, seconds)


def clip_window(
    wave: np.ndarray, rate: int, centre_seconds: float, seconds: float = CLIP_SECONDS
) -> np.ndarray:
    """``int(seconds * rate)`` samples centred on a time point (a video frame's), tiled when the track is
    short and shifted inside it at the ends, as :func:`sspl.audio.clip_at` but not normalised."""
    length = int(seconds * rate)
    wave = tile_to_length(np.asarray(wave, dtype=np.float64), length)
    start = centre_window(wave.shape[0], length, centre=int(round(centre_seconds * rate)))
    return wave[start : start + length]


# --------------------------------------------------------------------------------------------------
# The spectrogram (torch)
# --------------------------------------------------------------------------------------------------


@lru_cache(maxsize=4)
def _tukey_np(length: int, alpha: float) -> np.ndarray:
    m = (
        length + 1
    )  # periodic (scipy's get_window default, fftbins=True): the symmetric window of m, less its last
    n = np.arange(m, dtype=np.float64)
    width = int(np.floor(alpha * (m - 1) / 2.0))
    w = np.ones(m)
    rise, fall = n[: width + 1], n[m - width - 1 :]
    w[: width + 1] = 0.5 * (1 + np.cos(np.pi * (-1 + 2.0 * rise / alpha / (m - 1))))
    w[m - width - 1 :] = 0.5 * (1 + np.cos(np.pi * (-2.0 / alpha + 1 + 2.0 * fall / alpha / (m - 1))))
    return w[:length]


def tukey_window(length: int = SEGMENT_SAMPLES, alpha: float = TUKEY_ALPHA) -> np.ndarray:
    """scipy's periodic Tukey window (``get_window(('tukey', alpha), length)``), float64."""
    return _tukey_np(length, alpha).copy()


def num_frames(num_samples: int) -> int:
    """Spectrogram frames of ``num_samples`` samples: ``1 + (num_samples - 512) // 238``."""
    return 1 + (num_samples - SEGMENT_SAMPLES) // HOP_SAMPLES


def log_spectrogram(wave: torch.Tensor | np.ndarray, rate: int) -> torch.Tensor:
    """The released models' audio input: log power spectral density over 512-sample segments, divided by 12.

    Args:
        wave: ``N`` or ``B x N`` samples at ``rate`` (a tensor in its own dtype and device, float32 or
            float64; NumPy input is computed in float64).
        rate: their sample rate in Hz (it scales the density).

    Returns:
        ``1 x 257 x T`` or ``B x 1 x 257 x T`` with ``T = 1 + (N - 512) // 238``.
    """
    if isinstance(wave, np.ndarray):
        wave = torch.from_numpy(np.asarray(wave, dtype=np.float64))
    if wave.ndim not in (1, 2):
        raise ValueError(f"expected N or B x N samples, got shape {tuple(wave.shape)}")
    if wave.shape[-1] < SEGMENT_SAMPLES:
        raise ValueError(f"need at least {SEGMENT_SAMPLES} samples, got {wave.shape[-1]}")
    if rate <= 0:
        raise ValueError(f"sample rate must be positive, got {rate}")
    dtype = wave.dtype if wave.dtype in (torch.float32, torch.float64) else torch.float32
    wave = wave.to(dtype)
    segments = wave.unfold(-1, SEGMENT_SAMPLES, HOP_SAMPLES)  # ... x T x 512
    segments = segments - segments.mean(-1, keepdim=True)  # detrend='constant'
    window = torch.from_numpy(tukey_window()).to(device=wave.device, dtype=dtype)
    spectrum = torch.fft.rfft(segments * window, n=FFT_SAMPLES)  # ... x T x 257
    power = spectrum.real.square() + spectrum.imag.square()
    power = power * (1.0 / (rate * float((tukey_window() ** 2).sum())))  # scaling='density'
    power[..., 1:-1] *= 2  # one-sided: every bin but DC and Nyquist carries its negative twin
    log_power = torch.log(power + LOG_OFFSET) / NORMALIZE_STD
    return log_power.transpose(-1, -2).unsqueeze(-3)  # ... x 1 x 257 x T


def load_spectrogram(path: str | os.PathLike, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A file's ``1 x 257 x T`` input of the released models (:func:`load_centre_clip`, :func:`log_spectrogram`).

    Computed in float64 (as their NumPy code) and returned as ``dtype``.
    """
    wave, rate = load_centre_clip(path)
    return log_spectrogram(wave, rate).to(dtype)
