"""Where is the sound? Localize it in an image or through a video, and write the pictures.

The network sees the ``224 x 224`` centre crop of the frame after its shorter side was resized to 224
(:meth:`sspl.api.Preprocess.image`), and returns an ``h x w`` (14 x 14) raw cosine-similarity map over
that crop. To draw it on the ORIGINAL frame, every original pixel centre is taken into crop
coordinates through the crop mapping (:meth:`~sspl.api.Preprocess.crop_mapping`,
``crop = (original - offset) / scale`` per axis) and the map is sampled there bilinearly with
half-pixel centres, exactly as :func:`sspl.metrics.upsample_map` samples it for evaluation (a
224 x 224 frame gets the evaluated map itself). The result is min-max normalised over the crop. Pixels
outside the crop have no prediction: they are NaN in :attr:`ImageResult.heatmap` and drawn greyed
(desaturated and dimmed) in the overlays, so a wide video shows a coloured centre square between
grey bands.

A video is streamed: its audio track is decoded once (16 kHz), frames are decoded at the output rate
(default: the source rate capped at :data:`DEFAULT_MAX_FPS`), and each frame is paired with the 3-s
audio window centred on its timestamp (:meth:`~sspl.api.Preprocess.audio_at`; a window crossing an
end is shifted inside, the clip tiled when shorter than 3 s, as in training). Frames and their
spectrograms are batched, decoded in a background thread while the model runs, and each batch's
maps are handed on (``on_frame``) before the next is decoded, so memory holds a few batches of
frames, never the video; the raw maps (``T x 14 x 14``, 784 floats per frame) are kept.

Outputs (:func:`write_image_outputs`, :func:`write_video_outputs`) are written under temporary names
and renamed together at the end: a failed run leaves none of them.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import queue
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import av
import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import nn

from .api import Preprocess, load, to_rgb
from .audio import CLIP_SECONDS, SAMPLE_RATE_HZ, AudioDecodeError, is_silent, load_audio, too_short
from .data.transforms import CropMapping
from .data.video import VideoDecodeError, VideoInfo, iter_frames, video_info
from .errors import DataError
from .outputs import check_output_folder, remove_stale_temps
from .viz import DEFAULT_ALPHA, add_colorbar, contact_sheet, overlay_heatmap

__all__ = [
    "DEFAULT_MAX_FPS",
    "ImageResult",
    "VideoResult",
    "check_outputs_free",
    "image_output_paths",
    "localize_image",
    "localize_video",
    "output_fps",
    "project_map",
    "read_image",
    "video_output_paths",
    "write_image_outputs",
    "write_video_outputs",
]

log = logging.getLogger(__name__)

#: Default output rate: the source rate, capped here (frames per second).
DEFAULT_MAX_FPS = 10.0
#: Frames per model call when ``batch_size`` is not given.
DEFAULT_BATCH_SIZE = {"cpu": 8, "cuda": 32}
#: Frames shown in a video's contact sheet.
CONTACT_FRAMES = 8
#: Batches decoded ahead of the model.
PREFETCH_BATCHES = 2
#: A sound ending this much before the video's last frame is warned about (container slack is less).
AUDIO_SHORTFALL_WARN_SECONDS = 1.0
# Timestamps this close count as equal (pts rounding).
_TIME_EPS_SECONDS = 1e-6
#: Audio codecs the MP4 muxer takes as they are; anything else is re-encoded to AAC.
_COPY_AUDIO_CODECS = frozenset({"aac", "mp3"})
_AAC_RATES_HZ = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000)
# Fine enough that any source timestamp survives; the mp4 muxer re-expresses it in its own time base.
_VIDEO_TIME_BASE = Fraction(1, 90000)
_X264_OPTIONS = {"preset": "veryfast", "crf": "20"}

ModelArg = nn.Module | str | os.PathLike
ImageArg = Image.Image | str | os.PathLike
AudioArg = str | os.PathLike | tuple[np.ndarray, int]
FrameCallback = Callable[[int, float, Image.Image, np.ndarray], None]


# --------------------------------------------------------------------------------------------------
# The map on the original frame
# --------------------------------------------------------------------------------------------------


@lru_cache(maxsize=32)
def _axis_weights(
    n_out: int, scale: float, offset: float, size: int, n_in: int
) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear weights ``n_out x n_in`` from map cells to original pixels along one axis, and which
    original pixels lie inside the crop.

    Pixel ``i``'s centre sits at crop coordinate ``c = (i + 0.5 - offset) / scale``, i.e. at map
    coordinate ``c * n_in / size - 0.5`` (half-pixel centres, clamped to the border cells, as
    ``F.interpolate(..., align_corners=False)``).
    """
    crop = (np.arange(n_out, dtype=np.float64) + 0.5 - offset) / scale
    inside = (crop >= 0) & (crop < size)
    src = np.clip(crop * n_in / size - 0.5, 0, n_in - 1)
    i0 = np.floor(src).astype(np.intp)
    i1 = np.minimum(i0 + 1, n_in - 1)
    frac = src - i0
    weights = np.zeros((n_out, n_in), dtype=np.float64)
    rows = np.arange(n_out)
    np.add.at(weights, (rows, i0), 1 - frac)
    np.add.at(weights, (rows, i1), frac)
    return weights.astype(np.float32), inside


def project_map(raw_map: np.ndarray | torch.Tensor, mapping: CropMapping) -> np.ndarray:
    """A raw map over the network's crop, drawn on the original frame and min-max normalised.

    Args:
        raw_map: ``h x w`` raw similarity map (or ``N x h x w``).
        mapping: :meth:`Preprocess.crop_mapping` of the original ``width x height``.

    Returns:
        ``height x width`` (or ``N x height x width``) float32 in [0, 1] inside the crop, NaN outside
        (no prediction). A map with zero range is all ones inside the crop, as in
        :func:`sspl.metrics.normalize_map`.
    """
    raw = raw_map.detach().cpu().numpy() if isinstance(raw_map, torch.Tensor) else np.asarray(raw_map)
    raw = raw.astype(np.float32, copy=False)
    if raw.ndim not in (2, 3):
        raise ValueError(f"raw_map must be h x w or N x h x w, got shape {raw.shape}")
    h, w = raw.shape[-2:]
    wy, in_y = _axis_weights(mapping.height, mapping.scale_y, mapping.offset_y, mapping.size, h)
    wx, in_x = _axis_weights(mapping.width, mapping.scale_x, mapping.offset_x, mapping.size, w)
    # The crop is a rectangle of whole rows and columns: interpolate only there.
    rows, cols = np.flatnonzero(in_y), np.flatnonzero(in_x)
    # Two single-axis contractions in NumPy's own loops: a BLAS call of this size costs more in
    # thread hand-offs than in arithmetic, badly so on a busy machine.
    up = np.einsum("nyj,xj->nyx", np.einsum("yi,nij->nyj", wy[rows], raw.reshape(-1, h, w)), wx[cols])
    up = up.reshape(*raw.shape[:-2], rows.size, cols.size)  # (N x) rows x cols
    lo = up.min(axis=(-2, -1), keepdims=True)
    span = up.max(axis=(-2, -1), keepdims=True) - lo
    # Constancy is judged on the raw map: interpolation weights that sum to 1 only up to rounding
    # would otherwise stretch a constant map's last-bit noise over [0, 1].
    varies = (raw.max(axis=(-2, -1)) > raw.min(axis=(-2, -1)))[..., None, None] & (span > 0)
    heat = np.full((*raw.shape[:-2], mapping.height, mapping.width), np.nan, dtype=np.float32)
    if rows.size and cols.size:
        inside = np.where(varies, (up - lo) / np.where(varies, span, 1), np.float32(1))
        heat[..., rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] = np.clip(inside, 0, 1)
    return heat


# --------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------


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


def _image(image: ImageArg) -> Image.Image:
    if isinstance(image, Image.Image):
        return to_rgb(image)
    return read_image(image)


def _audio(audio: AudioArg) -> tuple[np.ndarray, int]:
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
        _warn_if_no_sound(wave, rate, "the audio array")
        return wave, rate
    wave, rate = load_audio(audio, SAMPLE_RATE_HZ)
    _warn_if_no_sound(wave, rate, audio)
    return wave, rate


def _warn_if_no_sound(wave: np.ndarray, rate: int, source: object) -> None:
    """A map is still computed for silence or a few samples, but it cannot show where a sound is."""
    why = too_short(wave.shape[0], rate) or ("silent audio (constant signal)" if is_silent(wave) else None)
    if why:
        log.warning("%s: %s; the map cannot show where a sound comes from", source, why)


def _resolve(
    model: ModelArg, preprocess: Preprocess | None, device: str | torch.device | None
) -> tuple[nn.Module, Preprocess, torch.device]:
    """The model (loaded when given a checkpoint), its preprocessing and the device inputs go to."""
    if isinstance(model, str | os.PathLike):
        if preprocess is not None:
            raise ValueError("a checkpoint brings its own preprocessing: pass preprocess=None")
        model, preprocess = load(model, device=device)
    elif preprocess is None:
        raise ValueError("pass the preprocessing that sspl.load returned with the model")
    if model.training:
        raise ValueError("the model is in training mode; call model.eval() first (maps are eval-mode maps)")
    param = next(model.parameters(), None)
    current = param.device if param is not None else torch.device("cpu")
    target = torch.device(device) if device is not None else current
    if target != current:
        model.to(target)
    if target.type == "cpu":
        # oneDNN runs these convolutions 2-3x faster with channels-last weights and inputs (measured
        # in bench/bench_localize.py); the values are unchanged, only their memory order.
        model.to(memory_format=torch.channels_last)
    return model, preprocess, target


def _prepare_frames(frames: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type == "cpu":
        frames = frames.contiguous(memory_format=torch.channels_last)
    return frames.to(device, non_blocking=True)


# --------------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------------


@dataclass
class ImageResult:
    """The localization of one image.

    Attributes:
        raw_map: ``h x w`` float32 raw cosine similarities over the network's centre crop (14 x 14).
        heatmap: ``H x W`` float32 on the original image, in [0, 1] inside the crop and NaN outside
            (see :func:`project_map`).
        crop_box: the network's crop as ``(x1, y1, x2, y2)`` in original pixels.
        image: the original image as RGB.
        step_maps: ``T x h x w`` maps after each PCM step (only when asked for, PCM models only).
    """

    raw_map: np.ndarray
    heatmap: np.ndarray
    crop_box: tuple[float, float, float, float]
    image: Image.Image
    step_maps: np.ndarray | None = None

    def overlay(self, *, colorbar: bool = False, alpha: float = DEFAULT_ALPHA) -> Image.Image:
        """The heat map on the original image (outside the crop greyed); see :func:`sspl.viz.overlay_heatmap`."""
        return overlay_heatmap(self.image, self.heatmap, alpha=alpha, colorbar=colorbar)


def localize_image(
    model: ModelArg,
    preprocess: Preprocess | None,
    image: ImageArg,
    audio: AudioArg,
    *,
    device: str | torch.device | None = None,
    pcm_steps: bool = False,
) -> ImageResult:
    """Localize a sound in one image.

    Args:
        model: a model from :func:`sspl.load`, or a checkpoint it accepts (run directory, ``.pt`` file,
            official SSPL folder).
        preprocess: the model's :class:`~sspl.api.Preprocess` (``None`` with a checkpoint).
        image: a PIL image (any mode and size) or an image file.
        audio: a sound file (any format :func:`sspl.audio.load_audio` reads, video files included) or
            a ``(wave, sample_rate)`` pair; its official centred 3-s clip is used.
        device: where to compute (default: the model's device). A model is moved there, and on CPU
            its weights are switched to channels-last memory order (same values, faster).
        pcm_steps: also return the map after every PCM step (paper Fig. 7).

    Returns:
        The :class:`ImageResult`.

    Raises:
        FileNotFoundError, DataError: an input file is missing or unreadable (named in the message).
    """
    rgb = _image(image)
    wave, rate = _audio(audio)
    model, preprocess, dev = _resolve(model, preprocess, device)
    if pcm_steps and getattr(model, "pcm", None) is None:
        raise ValueError("pcm_steps=True needs a model with a PCM")
    frames = _prepare_frames(preprocess.image(rgb)[None], dev)  # 1 x 3 x S x S
    spect = preprocess.audio(wave, rate)[None].to(dev)  # 1 x P x 96 x 64
    with torch.inference_mode():
        raw = model.localize(frames, spect)[0].float().cpu().numpy()  # h x w
        steps = model.pcm_step_maps(frames, spect)[:, 0].float().cpu().numpy() if pcm_steps else None
    mapping = preprocess.crop_mapping(*rgb.size)
    return ImageResult(
        raw_map=raw,
        heatmap=project_map(raw, mapping),
        crop_box=mapping.crop_box,
        image=rgb,
        step_maps=steps,
    )


# --------------------------------------------------------------------------------------------------
# Videos
# --------------------------------------------------------------------------------------------------


@dataclass
class VideoResult:
    """The localization of a video, one map per output frame.

    Attributes:
        maps: ``T x h x w`` float32 raw maps (14 x 14).
        timestamps: ``T`` float64 seconds of the frames on the file's timeline.
        fps: the output (sampling) rate.
        width, height: the source frame size.
        crop_box: the network's crop in source pixels ``(x1, y1, x2, y2)``.
        audio: the file whose sound was used.
    """

    maps: np.ndarray
    timestamps: np.ndarray
    fps: float
    width: int
    height: int
    crop_box: tuple[float, float, float, float]
    audio: Path


def output_fps(fps: float | None, source_fps: float) -> float:
    """The sampling rate: ``fps`` if given, else the source rate capped at :data:`DEFAULT_MAX_FPS`.

    Never above a known source rate: sampling faster yields each source frame once (see
    :func:`~sspl.data.video.iter_frames`), so the source rate is the rate actually produced.
    """
    if fps is not None:
        if not (math.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be a positive number, got {fps}")
        return min(float(fps), source_fps) if source_fps > 0 else float(fps)
    return min(source_fps, DEFAULT_MAX_FPS) if source_fps > 0 else DEFAULT_MAX_FPS


def _check_audio_source(path: Path, info: VideoInfo, audio_path: str | os.PathLike | None) -> Path:
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


def _load_video_audio(path: Path, info: VideoInfo, audio: Path) -> tuple[np.ndarray, float]:
    """The 16 kHz waveform and the time (on the video's timeline) of its first sample."""
    wave, rate = load_audio(audio, SAMPLE_RATE_HZ)
    _warn_if_no_sound(wave, rate, audio)
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


_T = TypeVar("_T")


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def _prefetch(items: Iterator[_T], depth: int) -> Iterator[_T]:
    """Iterate ``items`` in a background thread, at most ``depth`` items ahead of the consumer."""
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(end)
        except BaseException as e:  # handed to the consumer, raised there
            put(_Failure(e))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=work, name="sspl-localize-decode", daemon=True)
    thread.start()
    try:
        while True:
            item = slots.get()
            if item is end:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join()


@dataclass
class _Batch:
    timestamps: list[float]
    images: list[Image.Image]
    frames: torch.Tensor  # B x 3 x S x S
    spects: torch.Tensor  # B x P x 96 x 64


def _batches(
    path: Path, rate: float, preprocess: Preprocess, wave: np.ndarray, audio_t0: float, batch_size: int
) -> Iterator[_Batch]:
    items: list[tuple[float, Image.Image, torch.Tensor, torch.Tensor]] = []

    def batch() -> _Batch:
        return _Batch(
            [t for t, *_ in items],
            [img for _, img, *_ in items],
            torch.stack([f for *_, f, _ in items]),
            torch.stack([s for *_, s in items]),
        )

    for t, img in iter_frames(path, rate):
        items.append((t, img, preprocess.image(img), preprocess.audio_at(wave, t - audio_t0)))
        if len(items) == batch_size:
            yield batch()
            items = []
    if items:
        yield batch()


def localize_video(
    model: ModelArg,
    preprocess: Preprocess | None,
    video_path: str | os.PathLike,
    *,
    fps: float | None = None,
    audio_path: str | os.PathLike | None = None,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    on_frame: FrameCallback | None = None,
) -> VideoResult:
    """Localize the sound through a video, streaming (see the module docstring).

    Args:
        model: a model from :func:`sspl.load`, or a checkpoint it accepts.
        preprocess: the model's :class:`~sspl.api.Preprocess` (``None`` with a checkpoint).
        video_path: the video file.
        fps: output rate (default: the source rate capped at :data:`DEFAULT_MAX_FPS`; never above the
            source rate); each output frame is the first source frame at or after its sample time.
        audio_path: a sound file to use instead of the video's own audio track (needed when the video
            has none); it is taken to start with the video's first frame.
        batch_size: frames per model call (default 8 on CPU, 32 on CUDA).
        device: where to compute (default: the model's device). A model is moved there, and on CPU
            its weights are switched to channels-last memory order (same values, faster).
        progress: show a progress bar on stderr.
        on_frame: called as ``on_frame(index, timestamp, image, raw_map)`` for every output frame in
            order, with the decoded RGB frame at source size and its ``h x w`` raw map.

    Returns:
        The :class:`VideoResult`.

    Raises:
        FileNotFoundError: the video or the audio file does not exist.
        DataError: not a video, no video stream, no frames, no audio stream and no ``audio_path``,
            undecodable audio (each message names the file).
    """
    path = Path(video_path)
    info = video_info(path)
    audio = _check_audio_source(path, info, audio_path)
    rate = output_fps(fps, info.fps)
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    wave, audio_t0 = _load_video_audio(path, info, audio)
    model, preprocess, dev = _resolve(model, preprocess, device)
    batch_size = batch_size or DEFAULT_BATCH_SIZE.get(dev.type, DEFAULT_BATCH_SIZE["cpu"])

    from tqdm.auto import tqdm

    maps: list[np.ndarray] = []
    times: list[float] = []
    expected = max(1, math.floor(info.duration * rate + _TIME_EPS_SECONDS))
    with tqdm(total=expected, unit="frame", desc=path.name, disable=not progress) as bar:
        batches = _prefetch(_batches(path, rate, preprocess, wave, audio_t0, batch_size), PREFETCH_BATCHES)
        for batch in batches:
            with torch.inference_mode():
                out = model.localize(_prepare_frames(batch.frames, dev), batch.spects.to(dev))
            out = out.float().cpu().numpy()  # B x h x w
            for t, img, raw in zip(batch.timestamps, batch.images, out):
                if on_frame is not None:
                    on_frame(len(times), t, img, raw)
                maps.append(raw)
                times.append(t)
            bar.update(len(batch.timestamps))
    if not maps:
        raise VideoDecodeError(f"{path}: no decodable video frames (zero-length clip)")
    if len(maps) < 0.9 * expected - 1:
        log.warning(
            "%s: decoded %d frames where its declared %.2f s at %g fps promise about %d (truncated file?)",
            path,
            len(maps),
            info.duration,
            rate,
            expected,
        )
    mapping = preprocess.crop_mapping(info.width, info.height)
    return VideoResult(
        maps=np.stack(maps).astype(np.float32),
        timestamps=np.asarray(times, dtype=np.float64),
        fps=rate,
        width=info.width,
        height=info.height,
        crop_box=mapping.crop_box,
        audio=audio,
    )


# --------------------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------------------


class _Outputs:
    """Files written under hidden temporary names in one folder and renamed together on success.

    Each temporary file is held (``flock``) by this process until the run ends. So another run into the
    same folder, which first removes the temporary files of its outputs that a killed run left
    (:func:`sspl.outputs.remove_stale_temps`), leaves those of a live run alone; the OS releases the hold
    of a killed process. On failure (or an interrupt) the temporary files are removed, and the folder too
    when this run created it and it is empty, so nothing half-written is left looking finished.
    """

    def __init__(self, paths: dict[str, Path], *, overwrite: bool) -> None:
        folders = {p.parent for p in paths.values()}
        if len(folders) != 1:
            raise ValueError(f"outputs must share one folder, got {sorted(map(str, folders))}")
        check_output_folder(next(iter(folders)), "--out")
        if not overwrite:
            check_outputs_free(paths)
        for path in paths.values():  # checked now: a rename failing at the end would leave a mixed set
            if path.is_dir():
                raise IsADirectoryError(f"{path}: is a folder; --overwrite replaces output files only")
        self.folder = folders.pop()
        self.final = dict(paths)
        self._created = not self.folder.exists()
        self._temps: dict[str, Path] = {}
        self._held: list[int] = []

    def __enter__(self) -> _Outputs:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DataError(
                f"{self.folder}: cannot create the output folder (--out): {e.strerror or e}"
            ) from e
        remove_stale_temps(self.folder, [path.name for path in self.final.values()])
        return self

    def temp(self, key: str) -> Path:
        """A fresh temporary path for the output ``key``: created empty (with the permissions the
        user's umask gives) and held until the run ends; the writer opens it by name."""
        while True:
            tmp = self.folder / f".{self.final[key].name}.{uuid.uuid4().hex[:12]}.part"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            fcntl.flock(fd, fcntl.LOCK_EX)
            if _names(fd, tmp):  # not removed as stale between its creation and the hold
                break
            os.close(fd)
        self._held.append(fd)
        self._temps[key] = tmp
        return tmp

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if exc_type is None:
                missing = set(self.final) - set(self._temps)
                if missing:
                    raise RuntimeError(f"outputs never written: {sorted(missing)}")
                for key, tmp in self._temps.items():
                    os.replace(tmp, self.final[key])
                return
            for tmp in self._temps.values():
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
            if self._created:
                with contextlib.suppress(OSError):
                    self.folder.rmdir()
        finally:
            for fd in self._held:  # released once renamed or removed
                os.close(fd)


def _names(fd: int, path: Path) -> bool:
    """Whether ``path`` is still the file open as ``fd``."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would append ".npy" to a path
        np.save(f, np.ascontiguousarray(array), allow_pickle=False)


def _save_png(path: Path, image: Image.Image) -> None:
    image.save(path, format="PNG")


def image_output_paths(out_dir: str | os.PathLike, stem: str) -> dict[str, Path]:
    """The files :func:`write_image_outputs` writes: ``overlay`` and ``map``."""
    folder = Path(out_dir)
    return {"overlay": folder / f"{stem}_overlay.png", "map": folder / f"{stem}_map.npy"}


def video_output_paths(out_dir: str | os.PathLike, stem: str) -> dict[str, Path]:
    """The files :func:`write_video_outputs` writes: ``heatmap_video``, ``maps``, ``timestamps``,
    ``contact_sheet``."""
    folder = Path(out_dir)
    return {
        "heatmap_video": folder / f"{stem}_heatmap.mp4",
        "maps": folder / f"{stem}_maps.npy",
        "timestamps": folder / f"{stem}_timestamps.npy",
        "contact_sheet": folder / f"{stem}_contact.png",
    }


def check_outputs_free(paths: dict[str, Path]) -> None:
    """Refuse to replace existing outputs, or to write them under something that is not a folder.

    Raises:
        NotADirectoryError: an output's folder is an existing file.
        FileExistsError: naming the first output that exists.
    """
    for folder in sorted({p.parent for p in paths.values()}):
        check_output_folder(folder, "--out")
    for path in paths.values():
        if path.exists():
            raise FileExistsError(
                f"{path}: already exists (choose another output folder or pass --overwrite)"
            )


def write_image_outputs(
    result: ImageResult,
    out_dir: str | os.PathLike,
    stem: str,
    *,
    colorbar: bool = False,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write ``<stem>_overlay.png`` (the overlay on the original image) and ``<stem>_map.npy`` (the
    ``h x w`` float32 raw map).

    Returns:
        :func:`image_output_paths`.

    Raises:
        FileExistsError: an output exists and ``overwrite`` is False.
    """
    paths = image_output_paths(out_dir, stem)
    with _Outputs(paths, overwrite=overwrite) as outs:
        _save_png(outs.temp("overlay"), result.overlay(colorbar=colorbar))
        _save_npy(outs.temp("map"), result.raw_map.astype(np.float32))
    return paths


class _AudioTrack:
    """An audio stream muxed beside the heat-map video: copied when MP4 takes its codec, else
    re-encoded to AAC; packets are released in time order as the video advances.

    Args:
        source: the file holding the audio (the video itself or a separate sound file).
        out: the output container.
        align_to: ``None`` keeps the source's timestamps (the video's own track); a time in seconds
            shifts the track so its first sample plays then (a separate file, aligned with the
            video's first frame).
    """

    def __init__(self, source: Path, out: av.container.OutputContainer, align_to: float | None) -> None:
        try:
            self._container = av.open(str(source))
        except (av.FFmpegError, OSError) as e:
            raise AudioDecodeError(f"{source}: cannot open container ({e})") from e
        if not self._container.streams.audio:
            self._container.close()
            raise AudioDecodeError(f"{source}: no audio stream")
        self.source = source
        stream = self._container.streams.audio[0]
        start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        self._shift = 0.0 if align_to is None else align_to - start
        # The codec's own name: the decoder's (``mp3float`` for MP3) is not what the muxer knows.
        self._copy = stream.codec_context.codec.canonical_name in _COPY_AUDIO_CODECS
        if self._copy:
            self.stream = out.add_stream_from_template(stream)
        else:
            rate = stream.rate or stream.codec_context.sample_rate
            channels = stream.codec_context.channels
            self.stream = out.add_stream(
                "aac",
                rate=rate if rate in _AAC_RATES_HZ else 48000,
                layout="mono" if channels == 1 else "stereo",
            )
        self._out = out
        self._packets = self._generate(stream)
        self._pending = next(self._packets, None)

    def _generate(self, stream: av.AudioStream) -> Iterator[av.Packet]:
        try:
            if self._copy:
                for packet in self._container.demux(stream):
                    if packet.dts is None:  # the demuxer's end-of-stream marker
                        continue
                    if self._shift:
                        delta = round(self._shift / packet.time_base)
                        packet.pts = None if packet.pts is None else packet.pts + delta
                        packet.dts += delta
                    packet.stream = self.stream
                    yield packet
                return
            for frame in self._container.decode(stream):
                if self._shift and frame.pts is not None:
                    frame.pts += round(self._shift / frame.time_base)
                yield from self.stream.encode(frame)
            yield from self.stream.encode(None)
        except av.FFmpegError as e:
            # The maps were computed from what load_audio could decode; keep the sound up to here.
            log.warning("%s: audio ends early in the heat-map video (%s)", self.source, e)

    def mux_until(self, seconds: float | None) -> None:
        """Mux the packets that start at or before ``seconds`` (``None``: all that remain)."""
        while self._pending is not None:
            p = self._pending
            when = p.pts if p.pts is not None else p.dts
            if seconds is not None and when is not None and float(when * p.time_base) > seconds:
                return
            self._out.mux(p)
            self._pending = next(self._packets, None)

    def close(self) -> None:
        self._container.close()


class _HeatmapVideo:
    """H.264 MP4 of overlays at the source resolution (trimmed to even sides, as yuv420p needs), one
    frame per output frame at its source timestamp, with an audio track; nothing plays past ``end``
    (the source video's end): a frame lasts until the next sample time or ``end``, and a longer sound
    file is cut there."""

    def __init__(self, path: Path, rate: float, audio: Path, align_to: float | None, end: float) -> None:
        self._container = av.open(str(path), "w", format="mp4")
        try:
            self._stream = self._container.add_stream(
                "libx264", rate=Fraction(rate).limit_denominator(1001), options=dict(_X264_OPTIONS)
            )
            self._stream.pix_fmt = "yuv420p"
            self._stream.codec_context.time_base = _VIDEO_TIME_BASE
            self._audio = _AudioTrack(audio, self._container, align_to)
        except BaseException:
            self._container.close()
            raise
        self._period = 1 / rate
        self._end = end
        self._last_pts = -1
        self._last_end = 0.0
        self._durations: dict[int, int] = {}  # pts -> how long that frame shows, in _VIDEO_TIME_BASE
        self._opened = False

    def write(self, overlay: Image.Image, seconds: float) -> None:
        image = _even_sides(overlay)
        if not self._opened:
            self._stream.width, self._stream.height = image.size
            self._opened = True
        frame = av.VideoFrame.from_image(image)
        frame.time_base = _VIDEO_TIME_BASE
        frame.pts = max(round(seconds / _VIDEO_TIME_BASE), self._last_pts + 1)
        shown = min(self._period, self._end - seconds) if self._end > seconds else self._period
        self._durations[frame.pts] = max(1, round(shown / _VIDEO_TIME_BASE))
        self._last_pts = frame.pts
        self._last_end = max(self._last_end, seconds + shown)
        self._mux(self._stream.encode(frame))
        self._audio.mux_until(seconds)

    def _mux(self, packets: list[av.Packet]) -> None:
        # The encoder does not carry frame durations; the muxer takes the last frame's from its packet.
        for packet in packets:
            if packet.pts in self._durations:
                packet.duration = self._durations.pop(packet.pts)
            self._container.mux(packet)

    def close(self) -> None:
        try:
            self._mux(self._stream.encode(None))
            self._audio.mux_until(max(self._end, self._last_end))
        finally:
            self._audio.close()
            self._container.close()

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._audio.close()
        with contextlib.suppress(Exception):
            self._container.close()


def _even_sides(image: Image.Image) -> Image.Image:
    """The image trimmed to even sides (yuv420p), or stretched to 2 pixels where a side is 1."""
    if image.width < 2 or image.height < 2:
        return image.resize((max(2, image.width), max(2, image.height)), Image.Resampling.NEAREST)
    return image.crop((0, 0, image.width // 2 * 2, image.height // 2 * 2))


def _contact_times(info: VideoInfo, count: int) -> list[float]:
    """Times spread evenly over the video (the middles of ``count`` equal spans)."""
    return [info.start + (k + 0.5) * info.duration / count for k in range(count)]


def write_video_outputs(
    model: ModelArg,
    preprocess: Preprocess | None,
    video_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    fps: float | None = None,
    audio_path: str | os.PathLike | None = None,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    colorbar: bool = False,
    contact_frames: int = CONTACT_FRAMES,
    overwrite: bool = False,
) -> tuple[VideoResult, dict[str, Path]]:
    """Localize through a video and write its outputs in ``out_dir`` (``<stem>`` = the video's name):

    - ``<stem>_heatmap.mp4``: the overlays at the source resolution (H.264; with ``colorbar`` a bar
      is appended on the right), one frame per output frame shown from its source timestamp, with
      the sound muxed back in (the video's own track, copied when MP4 takes its codec, else
      re-encoded to AAC; or the ``audio_path`` file, aligned with the first frame);
    - ``<stem>_maps.npy``: ``T x h x w`` float32 raw maps;
    - ``<stem>_timestamps.npy``: ``T`` float64 seconds of those frames on the video's timeline;
    - ``<stem>_contact.png``: a contact sheet of ``contact_frames`` overlays spread over the video.

    Inputs are checked before anything is computed; the outputs appear together at the end.

    Args:
        model, preprocess, video_path, fps, audio_path, batch_size, device, progress: as
            :func:`localize_video`.
        out_dir: output folder (created if needed).
        colorbar: draw a colour bar beside the overlays.
        contact_frames: frames in the contact sheet.
        overwrite: replace existing outputs of the same names.

    Returns:
        ``(result, paths)`` with paths under the keys ``heatmap_video``, ``maps``, ``timestamps``,
        ``contact_sheet``.

    Raises:
        FileExistsError: an output exists and ``overwrite`` is False.
        FileNotFoundError, DataError: as :func:`localize_video`.
    """
    path = Path(video_path)
    info = video_info(path)
    audio = _check_audio_source(path, info, audio_path)
    rate = output_fps(fps, info.fps)
    if contact_frames < 1:
        raise ValueError(f"contact_frames must be >= 1, got {contact_frames}")
    paths = video_output_paths(out_dir, path.stem)
    with _Outputs(paths, overwrite=overwrite) as outs:
        model, preprocess, dev = _resolve(model, preprocess, device)
        align_to = None if audio == path else info.start
        # Opened at the first map: by then localize_video has read and checked the sound the writer muxes.
        writer: _HeatmapVideo | None = None
        targets = _contact_times(info, contact_frames)
        thumbs: list[tuple[float, Image.Image]] = []
        last: list[tuple[float, Image.Image]] = []
        mappings: dict[tuple[int, int], CropMapping] = {}

        def on_frame(index: int, t: float, image: Image.Image, raw: np.ndarray) -> None:
            nonlocal writer
            if writer is None:
                end = info.start + info.duration
                writer = _HeatmapVideo(outs.temp("heatmap_video"), rate, audio, align_to, end)
            if image.size not in mappings:
                mappings[image.size] = preprocess.crop_mapping(*image.size)
            overlay = overlay_heatmap(image, project_map(raw, mappings[image.size]))
            writer.write(add_colorbar(overlay) if colorbar else overlay, t)
            last[:] = [(t, overlay)]
            if targets and targets[0] <= t + _TIME_EPS_SECONDS:
                while targets and targets[0] <= t + _TIME_EPS_SECONDS:
                    targets.pop(0)
                thumbs.append((t, overlay))

        try:
            result = localize_video(
                model,
                preprocess,
                path,
                fps=rate,
                audio_path=None if audio == path else audio,
                batch_size=batch_size,
                device=dev,
                progress=progress,
                on_frame=on_frame,
            )
            writer.close()  # localize_video returns only after at least one frame
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        if targets and last and (not thumbs or thumbs[-1][0] != last[0][0]):
            thumbs += last  # the video ended before its declared duration: show its last frame
        _save_npy(outs.temp("maps"), result.maps)
        _save_npy(outs.temp("timestamps"), result.timestamps)
        sheet = contact_sheet([img for _, img in thumbs], labels=[f"{t:.2f} s" for t, _ in thumbs])
        if colorbar:
            sheet = add_colorbar(sheet)
        _save_png(outs.temp("contact_sheet"), sheet)
    return result, paths
