"""Audio front end: waveform I/O, the official SSPL clip rule, and the VGGish log-mel in torch.

The log-mel follows the VGGish reference (``mel_features.py`` of the AudioSet release, used unchanged by
torchvggish and by the SSPL code): 16 kHz mono, 25 ms periodic Hann window, 10 ms hop, 512-point FFT
magnitude, 64 HTK mel bands between 125 and 7500 Hz (DC bin dropped), ``log(mel + 0.01)``, and
non-overlapping 96-frame (0.96 s) examples. It is written in torch so it batches and runs on the GPU.

The clip rule is the one the SSPL code applies both when it builds its training files and at test time:
load mono, resample to 16 kHz (librosa's default ``soxr_hq``), tile the waveform if it is shorter than
3 s, take the 3 s centred on the middle sample, then ``normalize_audio`` (map to [-1, 1] by min/max).
"""

from __future__ import annotations

import math
import os
import struct
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from .errors import DataError

__all__ = [
    "CLIP_SECONDS",
    "EXAMPLE_FRAMES",
    "LOG_OFFSET",
    "MEL_MAX_HZ",
    "MEL_MIN_HZ",
    "MIN_AUDIO_SECONDS",
    "NUM_MEL_BINS",
    "SAMPLE_RATE_HZ",
    "SILENT_PEAK_TO_PEAK",
    "AudioDecodeError",
    "centre_window",
    "clip_at",
    "encode_wav_float32",
    "encode_wav_pcm16",
    "is_silent",
    "load_audio",
    "load_clip",
    "log_mel_spectrogram",
    "mel_matrix",
    "normalize_audio",
    "official_clip",
    "readable_audio_file",
    "resample",
    "tile_to_length",
    "too_short",
    "waveform_to_examples",
]

SAMPLE_RATE_HZ = 16000
STFT_WINDOW_LENGTH_SECONDS = 0.025
STFT_HOP_LENGTH_SECONDS = 0.010
NUM_MEL_BINS = 64
MEL_MIN_HZ = 125.0
MEL_MAX_HZ = 7500.0
LOG_OFFSET = 0.01
EXAMPLE_WINDOW_SECONDS = 0.96
EXAMPLE_HOP_SECONDS = 0.96
MEL_BREAK_FREQUENCY_HERTZ = 700.0
MEL_HIGH_FREQUENCY_Q = 1127.0

CLIP_SECONDS = 3.0
NORMALIZE_EPS = 1e-3  # the official ``normalize_audio`` divides by max + 1e-3
# A track whose peak-to-peak amplitude is below this (about 3 steps of 16-bit audio) is silence: its
# normalised clip would be a constant and teach nothing.
SILENT_PEAK_TO_PEAK = 1e-4
# Less audio than this is a damaged file, not a clip: tiled to 3 s it would be a buzz of one period.
MIN_AUDIO_SECONDS = 0.1

STFT_WINDOW_SAMPLES = int(round(SAMPLE_RATE_HZ * STFT_WINDOW_LENGTH_SECONDS))  # 400
STFT_HOP_SAMPLES = int(round(SAMPLE_RATE_HZ * STFT_HOP_LENGTH_SECONDS))  # 160
FFT_LENGTH = 2 ** int(math.ceil(math.log2(STFT_WINDOW_SAMPLES)))  # 512
EXAMPLE_FRAMES = int(round(EXAMPLE_WINDOW_SECONDS / STFT_HOP_LENGTH_SECONDS))  # 96
EXAMPLE_HOP_FRAMES = int(round(EXAMPLE_HOP_SECONDS / STFT_HOP_LENGTH_SECONDS))  # 96


class AudioDecodeError(DataError):
    """Raised when a file has no decodable audio; the message names the file and the problem."""


# --------------------------------------------------------------------------------------------------
# Waveform I/O
# --------------------------------------------------------------------------------------------------

_SOUNDFILE_SUFFIXES = {".wav", ".flac", ".ogg", ".aiff", ".aif"}


def resample(wave: np.ndarray, orig_sr: int, target_sr: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """Resample a 1-D waveform with soxr's high-quality filter (librosa's ``soxr_hq`` default).

    The output length is ``ceil(len * target / orig)``, as librosa fixes it.
    """
    if orig_sr == target_sr:
        return np.asarray(wave, dtype=np.float32)
    import soxr

    out = soxr.resample(np.asarray(wave, dtype=np.float32), orig_sr, target_sr, quality="HQ")
    n = int(math.ceil(wave.shape[-1] * target_sr / orig_sr))
    if out.shape[-1] > n:
        out = out[:n]
    elif out.shape[-1] < n:
        out = np.pad(out, (0, n - out.shape[-1]))
    return out.astype(np.float32, copy=False)


def _decode_with_av(path: Path, start: float | None = None, duration: float | None = None):
    """Decode the first audio stream of any FFmpeg-readable file into (channels x samples, rate)."""
    import av

    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as e:
        raise AudioDecodeError(f"{path}: cannot open container ({e})") from e
    with container:
        streams = container.streams.audio
        if not streams:
            raise AudioDecodeError(f"{path}: no audio stream")
        stream = streams[0]
        rate = stream.rate or stream.codec_context.sample_rate
        chunks: list[np.ndarray] = []
        t0 = 0.0
        if start is not None and start > 0:
            container.seek(int(start / stream.time_base), stream=stream, backward=True, any_frame=False)
        first_pts: float | None = None
        try:
            for frame in container.decode(stream):
                arr = frame.to_ndarray()
                if arr.dtype.kind == "i":
                    arr = arr.astype(np.float32) / float(np.iinfo(arr.dtype).max + 1)
                elif arr.dtype.kind == "u":
                    arr = (arr.astype(np.float32) - 128.0) / 128.0
                else:
                    arr = arr.astype(np.float32, copy=False)
                if frame.format.is_planar:
                    arr = arr.reshape(-1, arr.shape[-1])
                else:  # packed: 1 x (samples * channels)
                    arr = arr.reshape(-1, len(frame.layout.channels)).T
                if first_pts is None:
                    first_pts = float(frame.pts * frame.time_base) if frame.pts is not None else 0.0
                chunks.append(arr)
                if duration is not None and start is not None:
                    got = sum(c.shape[1] for c in chunks) / rate
                    if first_pts + got >= start + duration:
                        break
        except av.FFmpegError as e:
            if not chunks:
                raise AudioDecodeError(f"{path}: cannot decode audio ({e})") from e
            # A truncated file: keep what decoded. Callers see the shorter duration.
        if not chunks:
            raise AudioDecodeError(f"{path}: audio stream holds no samples")
        data = np.concatenate(chunks, axis=1)
        if start is not None:
            t0 = first_pts or 0.0
            lo = max(0, int(round((start - t0) * rate)))
            hi = None if duration is None else lo + int(round(duration * rate))
            data = data[:, lo:hi]
        return data, int(rate)


def readable_audio_file(path: str | os.PathLike) -> Path:
    """``path`` as a Path once it is known to be a file this process may open.

    Raises:
        FileNotFoundError: no such file, or a folder.
        AudioDecodeError: the file cannot be opened (the decoders would call that a "System error").
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: " + ("is a folder, not an audio file" if path.is_dir() else "no such audio file")
        )
    try:
        with path.open("rb"):
            pass
    except OSError as e:
        raise AudioDecodeError(f"{path}: cannot open the file ({e.strerror or e})") from e
    return path


def load_audio(
    path: str | os.PathLike,
    sample_rate: int | None = SAMPLE_RATE_HZ,
    *,
    start: float | None = None,
    duration: float | None = None,
) -> tuple[np.ndarray, int]:
    """Load a file as a mono float32 waveform, resampled to ``sample_rate`` (``None`` keeps the native rate).

    WAV/FLAC/OGG go through soundfile; everything else (mp3, m4a, video containers) through PyAV.
    Channels are averaged (librosa's ``to_mono``).

    Args:
        path: audio or video file.
        sample_rate: target rate in Hz, or ``None``.
        start, duration: optional window in seconds (decoding stops early for long files).

    Returns:
        ``(wave, rate)`` with ``wave`` of shape ``N``.

    Raises:
        FileNotFoundError: the file does not exist.
        AudioDecodeError: the file holds no decodable audio, or samples that are NaN or infinite.
    """
    path = readable_audio_file(path)
    data: np.ndarray
    if path.suffix.lower() in _SOUNDFILE_SUFFIXES:
        import soundfile as sf

        try:
            info = sf.info(str(path))
            lo = 0 if start is None else int(round(start * info.samplerate))
            frames = -1 if duration is None else int(round(duration * info.samplerate))
            raw, rate = sf.read(str(path), dtype="float32", always_2d=True, start=lo, frames=frames)
            data = raw.T
        except (RuntimeError, sf.LibsndfileError) as e:  # fall back to FFmpeg for odd WAV codecs
            try:
                data, rate = _decode_with_av(path, start, duration)
            except AudioDecodeError:
                raise AudioDecodeError(f"{path}: cannot decode audio ({e})") from e
    else:
        data, rate = _decode_with_av(path, start, duration)
    wave = data.mean(axis=0) if data.shape[0] > 1 else data[0]
    if wave.size == 0:
        raise AudioDecodeError(f"{path}: audio stream holds no samples")
    if not np.isfinite(wave).all():
        raise AudioDecodeError(f"{path}: audio holds non-finite samples (NaN or infinity)")
    if sample_rate is not None and rate != sample_rate:
        wave = resample(wave, rate, sample_rate)
        rate = sample_rate
    return np.ascontiguousarray(wave, dtype=np.float32), int(rate)


def too_short(num_samples: int, rate: int) -> str | None:
    """Why ``num_samples`` at ``rate`` Hz are too little audio to stand for a sound, or None."""
    if num_samples >= MIN_AUDIO_SECONDS * rate:
        return None
    return (
        f"only {num_samples} audio samples ({1000 * num_samples / rate:.0f} ms at {rate} Hz); "
        f"at least {MIN_AUDIO_SECONDS:g} s are needed (a truncated file?)"
    )


def is_silent(wave: np.ndarray) -> bool:
    """Whether a waveform is silence: peak-to-peak below :data:`SILENT_PEAK_TO_PEAK`."""
    return float(np.ptp(wave)) < SILENT_PEAK_TO_PEAK


# --------------------------------------------------------------------------------------------------
# The official clip rule
# --------------------------------------------------------------------------------------------------


def tile_to_length(wave: np.ndarray, length: int) -> np.ndarray:
    """Tile a waveform shorter than ``length`` as the official code does (``n = int(L / len) + 1`` copies)."""
    if wave.shape[-1] == 0:
        raise ValueError("cannot tile an empty waveform")
    if wave.shape[-1] < length:
        n = int(length / wave.shape[-1]) + 1
        wave = np.tile(wave, n)
    return wave


def centre_window(num_samples: int, length: int, centre: int | None = None) -> int:
    """Start index of the ``length``-sample window centred on ``centre`` (default: the middle sample).

    The default reproduces ``int(n / 2) - int(L / 2)`` of the official code; an explicit centre is
    clamped so the window stays inside ``[0, num_samples)``.
    """
    if centre is None:
        return int(num_samples / 2) - int(length / 2)
    start = int(centre) - int(length / 2)
    return min(max(start, 0), max(num_samples - length, 0))


def normalize_audio(wave: np.ndarray) -> np.ndarray:
    """The official ``normalize_audio``: subtract the min, divide by (max + 1e-3), shift and scale to [-1, 1].

    Computed in float32 in the same order of operations as the official in-place code.
    """
    out = np.array(wave, dtype=np.float32, copy=True)
    out -= out.min()
    out /= out.max() + np.float32(NORMALIZE_EPS)
    out -= np.float32(0.5)
    out *= np.float32(2)
    return out


def official_clip(
    wave: np.ndarray, sample_rate: int = SAMPLE_RATE_HZ, seconds: float = CLIP_SECONDS
) -> np.ndarray:
    """Tile if short, take the centred ``seconds`` window, normalise: the SSPL clip of a 16 kHz waveform."""
    length = int(round(sample_rate * seconds))
    wave = tile_to_length(np.asarray(wave, dtype=np.float32), length)
    start = centre_window(wave.shape[-1], length)
    return normalize_audio(wave[start : start + length])


def clip_at(
    wave: np.ndarray, centre_seconds: float, sample_rate: int = SAMPLE_RATE_HZ, seconds: float = CLIP_SECONDS
) -> np.ndarray:
    """The clip of ``seconds`` centred on a time point (used per video frame); edges handled by tiling.

    The waveform is tiled to at least the clip length, and a window that would cross an end is shifted
    inside, so every frame of a clip gets a full-length, normalised window.
    """
    length = int(round(sample_rate * seconds))
    wave = tile_to_length(np.asarray(wave, dtype=np.float32), length)
    start = centre_window(wave.shape[-1], length, centre=int(round(centre_seconds * sample_rate)))
    return normalize_audio(wave[start : start + length])


def load_clip(path: str | os.PathLike, seconds: float = CLIP_SECONDS) -> np.ndarray:
    """Load a file and apply :func:`official_clip`: returns ``seconds * 16000`` float32 samples."""
    wave, _ = load_audio(path, SAMPLE_RATE_HZ)
    return official_clip(wave, SAMPLE_RATE_HZ, seconds)


# --------------------------------------------------------------------------------------------------
# VGGish log-mel in torch
# --------------------------------------------------------------------------------------------------


def _hertz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return MEL_HIGH_FREQUENCY_Q * np.log(1.0 + np.asarray(hz, dtype=np.float64) / MEL_BREAK_FREQUENCY_HERTZ)


@lru_cache(maxsize=8)
def _mel_matrix_np(
    num_mel_bins: int, num_spectrogram_bins: int, sample_rate: int, lower_hz: float, upper_hz: float
) -> np.ndarray:
    nyquist = sample_rate / 2.0
    if not 0.0 <= lower_hz < upper_hz <= nyquist:
        raise ValueError(f"mel band edges must satisfy 0 <= {lower_hz} < {upper_hz} <= {nyquist}")
    bins_mel = _hertz_to_mel(np.linspace(0.0, nyquist, num_spectrogram_bins))
    edges = np.linspace(_hertz_to_mel(lower_hz), _hertz_to_mel(upper_hz), num_mel_bins + 2)
    weights = np.empty((num_spectrogram_bins, num_mel_bins))
    for i in range(num_mel_bins):
        lower, centre, upper = edges[i : i + 3]
        lower_slope = (bins_mel - lower) / (centre - lower)
        upper_slope = (upper - bins_mel) / (upper - centre)
        weights[:, i] = np.maximum(0.0, np.minimum(lower_slope, upper_slope))
    weights[0, :] = 0.0  # HTK excludes the DC bin
    return weights


def mel_matrix(
    num_mel_bins: int = NUM_MEL_BINS,
    num_spectrogram_bins: int = FFT_LENGTH // 2 + 1,
    sample_rate: int = SAMPLE_RATE_HZ,
    lower_hz: float = MEL_MIN_HZ,
    upper_hz: float = MEL_MAX_HZ,
) -> np.ndarray:
    """HTK mel weight matrix, ``num_spectrogram_bins x num_mel_bins`` (float64), as in VGGish."""
    return _mel_matrix_np(num_mel_bins, num_spectrogram_bins, sample_rate, lower_hz, upper_hz).copy()


def log_mel_spectrogram(wave: torch.Tensor) -> torch.Tensor:
    """VGGish log-mel of 16 kHz waveforms.

    Args:
        wave: ``... x N`` samples (any float dtype and device).

    Returns:
        ``... x F x 64`` with ``F = 1 + (N - 400) // 160`` frames, in ``wave``'s dtype.
    """
    if wave.shape[-1] < STFT_WINDOW_SAMPLES:
        raise ValueError(f"need at least {STFT_WINDOW_SAMPLES} samples, got {wave.shape[-1]}")
    dtype = wave.dtype if wave.dtype in (torch.float32, torch.float64) else torch.float32
    wave = wave.to(dtype)
    frames = wave.unfold(-1, STFT_WINDOW_SAMPLES, STFT_HOP_SAMPLES)  # ... x F x 400
    n = torch.arange(STFT_WINDOW_SAMPLES, device=wave.device, dtype=torch.float64)
    window = (0.5 - 0.5 * torch.cos(2 * math.pi / STFT_WINDOW_SAMPLES * n)).to(dtype)  # periodic Hann
    magnitude = torch.fft.rfft(frames * window, n=FFT_LENGTH).abs()  # ... x F x 257
    weights = torch.from_numpy(mel_matrix()).to(device=wave.device, dtype=dtype)
    return torch.log(magnitude @ weights + LOG_OFFSET)


def waveform_to_examples(wave: torch.Tensor | np.ndarray, sample_rate: int = SAMPLE_RATE_HZ) -> torch.Tensor:
    """Waveform(s) to VGGish examples: non-overlapping 96 x 64 log-mel patches.

    NumPy input is computed in float64 and returned as float32, which reproduces the float64 NumPy
    reference exactly (what preparation stores); tensor input is computed in its own dtype and device
    (float32 on a GPU agrees with the reference to about 1e-4).

    Args:
        wave: ``N`` or ``B x N`` samples at ``sample_rate`` (resampled to 16 kHz with soxr if different;
            NumPy input only).

    Returns:
        ``P x 96 x 64`` or ``B x P x 96 x 64`` (a 3-s clip gives ``P = 3``).
    """
    if isinstance(wave, np.ndarray):
        if sample_rate != SAMPLE_RATE_HZ:
            if wave.ndim != 1:
                raise ValueError("resampling inside waveform_to_examples takes one 1-D waveform")
            wave = resample(wave, sample_rate, SAMPLE_RATE_HZ)
        return waveform_to_examples(torch.from_numpy(np.asarray(wave, dtype=np.float64))).float()
    elif sample_rate != SAMPLE_RATE_HZ:
        raise ValueError(f"tensor input must already be at {SAMPLE_RATE_HZ} Hz, got {sample_rate}")
    log_mel = log_mel_spectrogram(wave)  # ... x F x 64
    num_frames = log_mel.shape[-2]
    if num_frames < EXAMPLE_FRAMES:
        raise ValueError(
            f"audio too short for one VGGish example: {num_frames} frames < {EXAMPLE_FRAMES} (0.96 s)"
        )
    examples = log_mel.unfold(-2, EXAMPLE_FRAMES, EXAMPLE_HOP_FRAMES)  # ... x P x 64 x 96
    return examples.transpose(-1, -2).contiguous()  # ... x P x 96 x 64


def encode_wav_float32(wave: np.ndarray, sample_rate: int = SAMPLE_RATE_HZ) -> bytes:
    """A mono IEEE-float WAV file as bytes.

    Written by hand because libsndfile stamps float WAVs with the current time (PEAK chunk), which would
    break byte-identical regeneration (SynthAV) and reproducible preparation (``sspl prepare``).
    """
    data = np.ascontiguousarray(wave, dtype="<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, sample_rate, sample_rate * 4, 4, 32)
    body = (
        b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"fact"
        + struct.pack("<II", 4, len(wave))
        + b"data"
        + struct.pack("<I", len(data))
        + data
    )
    return b"RIFF" + struct.pack("<I", len(body)) + body


def encode_wav_pcm16(samples: np.ndarray, sample_rate: int) -> bytes:
    """A mono 16-bit PCM WAV file of integer ``samples`` as bytes (written by hand, like
    :func:`encode_wav_float32`, so the same samples give the same bytes)."""
    data = np.ascontiguousarray(samples, dtype="<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, 1, sample_rate, sample_rate * 2, 2, 16)
    body = (
        b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    )
    return b"RIFF" + struct.pack("<I", len(body)) + body
