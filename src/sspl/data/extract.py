"""Extraction of one clip for `sspl prepare`: its frame, audio and log-mel patches.

Per clip (:func:`prepare_clip`):

- ``frames/<id>.jpg``: the middle frame, 256 x 256 bicubic, JPEG quality 95. For a video it is the first
  frame at or after half the video stream's duration, found by timestamp (seek, then decode). For a
  SoundNet-Flickr frames folder it is file ``len // 2`` of the folder's images in natural name order
  (``f2.jpg`` before ``f10.jpg``), since those dumps carry no timestamps. For an image + audio pair it is
  the image itself.
- ``audio/<id>.wav``: 16 kHz mono float32. With ``audio_seconds == 3`` (the default) the official clip:
  3 s centred on the frame's timestamp (videos) or on the middle of the track (Flickr, pairs), tiled when
  the track is shorter, normalised to [-1, 1]. With any other ``audio_seconds``: that many seconds centred
  the same way, tiled when short, not normalised (``meta.json`` records which).
- ``spect/<id>.npy``: ``3 x 96 x 64`` float32 VGGish log-mel patches of the normalised 3-s clip.
- ``audio_native/<id>.wav`` (``native_audio=True`` only): the input of the released EZ-VSL / SLAVC / FNAC
  models, their 3 s from the centre of the audio track (not the frame) at the source's own rate through
  16-bit mono (:func:`sspl.spectrogram.load_centre_clip`), as 16-bit PCM: the samples they are, exactly.
- ``frames_native/<id>.jpg`` or ``.png`` (``native_frames=True`` only): the frame at its source size, as the
  released models' code reads a frame, ``Image.open(path).convert('RGB')``: a source JPEG is copied byte for
  byte (``.jpg``); any other source image is stored as the RGB pixels that conversion gives, and a frame
  decoded from a video as decoded, both as lossless PNG. That reading does not turn a photo by its EXIF
  orientation, so neither does this copy (``frames/<id>.jpg`` is turned upright).

Any failure (corrupt file, no audio or video stream, unknown codec, silent track, unreadable frame)
becomes a ``failed`` manifest row with the reason, never an exception; only a full or read-only output
(:data:`OUTPUT_FULL_ERRNOS`), which is no clip's fault, is raised. Files are written atomically.
"""

from __future__ import annotations

import errno
import logging
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ..audio import (
    CLIP_SECONDS,
    SAMPLE_RATE_HZ,
    AudioDecodeError,
    centre_window,
    clip_at,
    encode_wav_float32,
    encode_wav_pcm16,
    is_silent,
    load_audio,
    official_clip,
    resample,
    tile_to_length,
    too_short,
    waveform_to_examples,
)
from ..errors import DataError
from ..io import atomic_save_image, atomic_save_npy, atomic_write_bytes
from .images import to_rgb
from .manifest import NATIVE_AUDIO_DIR, NATIVE_FRAME_SUFFIXES, NATIVE_FRAMES_DIR, STATUS_FAILED, ManifestRow
from .sources import KIND_FRAMES, KIND_VIDEO, ClipSource, middle_frame_file
from .video import VideoInfo, decode_frame_at, video_info

__all__ = [
    "FRAME_SIZE",
    "JPEG_QUALITY",
    "OUTPUT_FULL_ERRNOS",
    "clip_relpaths",
    "native_audio_relpath",
    "prepare_clip",
]

log = logging.getLogger(__name__)

FRAME_SIZE = 256
JPEG_QUALITY = 95
SPECT_PATCHES = 3
_EXIF_ORIENTATION = 0x0112  # the EXIF tag of how a photo is turned for display
_JPEG_FORMATS = ("JPEG", "MPO")  # PIL's names of JPEG files (MPO: a phone's JPEG with a second picture)
# Audio decoded past the end of the window a video clip needs, so the resampler's filter never sees
# the cut and the kept samples equal those of the fully decoded track.
AUDIO_MARGIN_SECONDS = 0.25
#: errors of a full or read-only output, which stop the run (the finished clips are kept) instead of
#: failing every clip after them
OUTPUT_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})


def _check_long_enough(native: np.ndarray, rate: int, path: str) -> None:
    why = too_short(native.shape[0], rate)
    if why:
        raise AudioDecodeError(f"{path}: {why}")


def _check_not_silent(wave: np.ndarray, path: str) -> None:
    if not np.isfinite(wave).all():
        raise AudioDecodeError(f"{path}: audio holds non-finite samples (NaN or infinity)")
    if is_silent(wave):
        raise AudioDecodeError(f"{path}: silent audio (constant signal around the frame)")


def _video_audio(path: str, centre: float, need_seconds: float, info: VideoInfo):
    """16 kHz audio of a video, decoded far enough to cut ``need_seconds`` centred on ``centre``.

    ``centre`` is in seconds from the first audio sample. When the declared track reaches past the
    window (plus a margin for the resampler's filter), decoding stops there: the samples are a prefix
    of the full track's, so every window cut from them equals the one ``clip_at`` cuts from the full
    track. Otherwise, or when the prefix comes out short (a truncated file), the whole track is decoded
    and the window is shifted inside it or tiled exactly as ``clip_at`` does.

    Returns:
        ``(wave, duration, native)``: 16 kHz mono audio (a prefix of the track or all of it), the source
        duration in seconds (as the container declares it, at most as decoded when the whole track is
        decoded), and the native-rate samples.
    """
    end = max(centre - need_seconds / 2, 0.0) + need_seconds + AUDIO_MARGIN_SECONDS
    if info.audio_rate > 0 and info.audio_duration >= end:
        native, rate = load_audio(path, None, start=0.0, duration=end)
        if native.shape[0] >= int(end * rate):
            return resample(native, rate, SAMPLE_RATE_HZ), info.audio_duration, native
    native, rate = load_audio(path, None)
    # Decoded in full: never longer than that (a container's duration can cover the video, not the audio);
    # a declared stream duration is kept when shorter (it excludes a codec's padding).
    decoded = native.shape[0] / rate
    duration = min(info.audio_duration, decoded) if info.audio_duration > 0 else decoded
    return resample(native, rate, SAMPLE_RATE_HZ), duration, native


def _kept_audio(wave: np.ndarray, centre: float | None, seconds: float) -> np.ndarray:
    """``seconds`` of un-normalised 16 kHz audio centred on ``centre`` (None: the middle), tiled if short."""
    length = int(round(seconds * SAMPLE_RATE_HZ))
    wave = tile_to_length(wave, length)
    centre_sample = None if centre is None else int(round(centre * SAMPLE_RATE_HZ))
    start = centre_window(wave.shape[0], length, centre_sample)
    return wave[start : start + length]


def _load_image(path: str) -> Image.Image:
    """The image as it is shown: turned by its EXIF orientation (then no longer a JPEG to copy)."""
    try:
        with Image.open(path) as image:
            image.load()
            if image.getexif().get(_EXIF_ORIENTATION, 1) != 1:
                return ImageOps.exif_transpose(image)
            return image
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: unreadable image ({e})") from e


def _save_wav(path: Path, wave: np.ndarray) -> None:
    atomic_write_bytes(path, encode_wav_float32(wave))


def _save_frame(path: Path, image: Image.Image, source: str | None = None) -> None:
    """Save a 256 x 256 RGB JPEG; a source JPEG that is already one is copied, not re-encoded."""
    if source is not None and image.format == "JPEG" and image.mode == "RGB":
        if image.size == (FRAME_SIZE, FRAME_SIZE):
            atomic_write_bytes(path, Path(source).read_bytes())
            return
    frame = to_rgb(image).resize((FRAME_SIZE, FRAME_SIZE), Image.Resampling.BICUBIC)
    atomic_save_image(path, frame, quality=JPEG_QUALITY)


def native_audio_relpath(clip_id: str) -> str:
    """Where ``native_audio=True`` keeps the released models' clip in the dataset folder."""
    return f"{NATIVE_AUDIO_DIR}/{clip_id}.wav"


def _save_native_audio(path: Path, source: ClipSource) -> None:
    """The released models' clip of the source's audio (see the module docstring), as 16-bit PCM."""
    from ..spectrogram import INT16_MAX, load_centre_clip

    wave, rate = load_centre_clip(source.visual if source.kind == KIND_VIDEO else source.audio)
    atomic_write_bytes(path, encode_wav_pcm16(np.round(wave * INT16_MAX).astype(np.int16), rate))


def _save_native_frame(out: Path, clip_id: str, image: Image.Image, source: str | None) -> None:
    """The frame at its source size under ``frames_native/`` (see the module docstring): ``image`` as
    decoded from a video (``source`` None), else the source image file as the released models read it."""
    jpg, png = (out / NATIVE_FRAMES_DIR / f"{clip_id}{suffix}" for suffix in NATIVE_FRAME_SUFFIXES)
    if source is not None:
        with Image.open(source) as raw:  # no EXIF turn, as ``Image.open(path).convert('RGB')``
            if raw.format in _JPEG_FORMATS:
                atomic_write_bytes(jpg, Path(source).read_bytes())
                return
            image = raw.convert("RGB")
    atomic_save_image(png, image)


def clip_relpaths(clip_id: str) -> tuple[str, str, str]:
    """The files of a clip in the dataset folder: its frame, audio and log-mel patches."""
    return f"frames/{clip_id}.jpg", f"audio/{clip_id}.wav", f"spect/{clip_id}.npy"


def prepare_clip(
    source: ClipSource,
    out: str | os.PathLike,
    audio_seconds: float = CLIP_SECONDS,
    native_audio: bool = False,
    native_frames: bool = False,
) -> ManifestRow:
    """Prepare one clip into ``out`` and return its manifest row; failures become a ``failed`` row.

    Writes ``frames/<id>.jpg``, ``spect/<id>.npy`` and ``audio/<id>.wav`` (each atomically) as described
    in the module docstring; a full or read-only output raises
    (:data:`OUTPUT_FULL_ERRNOS`).

    Args:
        source: the clip.
        out: the dataset folder.
        audio_seconds: seconds of audio kept in the WAV (3 = the official normalised clip).
        native_audio: also keep the released models' native-rate clip (``audio_native/<id>.wav``).
        native_frames: also keep the frame at its source size (``frames_native/<id>.jpg`` or ``.png``).

    Returns:
        The row; ``status == "failed"`` with the reason in ``error`` when anything went wrong.
    """
    out = Path(out)
    row = ManifestRow(id=source.id, label=source.label, split=source.split)
    try:
        image, frame_source, wave, centre, duration, rate = _read_clip(source, audio_seconds)
        clip = clip_at(wave, centre) if centre is not None else official_clip(wave)  # 3 s, normalised
        kept = clip if audio_seconds == CLIP_SECONDS else _kept_audio(wave, centre, audio_seconds)
        spect = waveform_to_examples(clip).numpy()  # 3 x 96 x 64
        if spect.shape != (SPECT_PATCHES, 96, 64):
            raise AssertionError(f"log-mel patches of shape {spect.shape}, expected (3, 96, 64)")
        frame_rel, audio_rel, spect_rel = clip_relpaths(source.id)
        _save_frame(out / frame_rel, image, frame_source)
        atomic_save_npy(out / spect_rel, spect)
        # before the float WAV, whose presence (with the others) marks the clip done
        if native_frames:
            _save_native_frame(out, source.id, image, frame_source)
        if native_audio:
            _save_native_audio(out / native_audio_relpath(source.id), source)
        _save_wav(out / audio_rel, kept)
    except (DataError, FileNotFoundError) as e:
        return replace(row, duration=0.0, status=STATUS_FAILED, error=str(e))
    except Exception as e:  # one bad clip must never stop a long run
        if isinstance(e, OSError) and e.errno in OUTPUT_FULL_ERRNOS:  # but a full disk is no clip's fault
            raise
        log.debug("unexpected error on %s", source.visual, exc_info=True)
        return replace(row, status=STATUS_FAILED, error=f"{source.visual}: {type(e).__name__}: {e}")
    return replace(
        row, frame=frame_rel, audio=audio_rel, spect=spect_rel, duration=round(duration, 6), sample_rate=rate
    )


def _read_clip(source: ClipSource, audio_seconds: float):
    """Decode a clip's frame and audio.

    Returns:
        ``(image, frame_file, wave, centre, duration, rate)``: the frame (native size), the JPEG it was
        read from (None when decoded from a video), 16 kHz audio, the frame's time in seconds relative to
        the audio's first sample (None: the middle of the track), the source audio duration and rate.
    """
    if source.error:
        raise DataError(source.error)
    need = max(audio_seconds, CLIP_SECONDS)
    if source.kind == KIND_VIDEO and source.audio:  # a pair: this video's middle frame, another clip's sound
        image, _ = decode_frame_at(source.visual, video_info(source.visual).middle, threads=1)
        wave, duration, rate = _file_audio(source.audio)
        return image, None, wave, None, duration, rate
    if source.kind == KIND_VIDEO:
        info = video_info(source.visual)
        if not info.has_audio:
            raise AudioDecodeError(f"{source.visual}: no audio stream")
        if not info.audio_codec:
            raise AudioDecodeError(f"{source.visual}: unsupported audio codec (FFmpeg has no decoder for it)")
        image, t = decode_frame_at(source.visual, info.middle, threads=1)
        centre = max(t - info.audio_start, 0.0)
        wave, duration, native = _video_audio(source.visual, centre, need, info)
        _check_long_enough(native, info.audio_rate or SAMPLE_RATE_HZ, source.visual)
        _check_not_silent(native, source.visual)
        _check_not_silent(_kept_audio(wave, centre, CLIP_SECONDS), source.visual)
        return image, None, wave, centre, duration, info.audio_rate
    image_path = middle_frame_file(source.visual) if source.kind == KIND_FRAMES else source.visual
    wave, duration, rate = _file_audio(source.audio)
    return _load_image(image_path), image_path, wave, None, duration, rate


def _file_audio(path: str):
    """``(wave, duration, rate)``: the 16 kHz audio of a whole track (of an audio or a video file), checked;
    the clip is its middle."""
    native, rate = load_audio(path, None)
    _check_long_enough(native, rate, path)
    _check_not_silent(native, path)
    wave = resample(native, rate, SAMPLE_RATE_HZ)
    _check_not_silent(_kept_audio(wave, None, CLIP_SECONDS), path)  # the 3 s that are kept
    return wave, native.shape[0] / rate, rate
