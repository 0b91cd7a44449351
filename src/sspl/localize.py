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
grey bands. A model evaluated with the ``resize`` test transform (the released EZ-VSL / SLAVC / FNAC
models) sees the whole frame squeezed to 224 x 224 instead, and its map covers the whole frame.

A video is streamed: its audio track is decoded once (16 kHz; for the ``stft`` front end of the released
models, once more at its own rate through 16-bit mono), frames are decoded at the output rate
(default: the source rate capped at :data:`DEFAULT_MAX_FPS`), and each frame is paired with the 3-s
audio window centred on its timestamp (:meth:`~sspl.api.Preprocess.audio_at`; a window crossing an
end is shifted inside, the clip tiled when shorter than 3 s, as in training). Frames and their
spectrograms are batched, decoded in a background thread while the model runs, and each batch's
maps are handed on (``on_frame``) before the next is decoded, so memory holds a few batches of
frames, never the video; the raw maps (``T x 14 x 14``, 784 floats per frame) are kept.

Outputs (:func:`write_image_outputs`, :func:`write_video_outputs`) are written under temporary names
and renamed together at the end: a failed run leaves none of them.

This module is the API; its parts live beside it: reading and checking the inputs in
:mod:`sspl.localize_inputs`, the map on the original frame in :mod:`sspl.data.projection`, the
background decoding in :mod:`sspl.data.prefetch`, the MP4 encoding in :mod:`sspl.data.video_writer`
and the atomic output set in :mod:`sspl.localize_outputs`.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from torch import nn

from .api import Preprocess
from .audio import SAMPLE_RATE_HZ
from .data.prefetch import prefetch
from .data.projection import project_map
from .data.video import VideoDecodeError, VideoInfo, iter_frames, video_info
from .engine.loading import load_with_origin
from .localize_inputs import (
    AUDIO_SHORTFALL_WARN_SECONDS,
    AudioArg,
    ImageArg,
    as_audio,
    as_image,
    check_audio_source,
    load_video_audio,
    read_image,
)
from .localize_outputs import (
    OutputSet,
    check_outputs_free,
    image_output_paths,
    save_npy,
    save_png,
    video_output_paths,
)
from .viz import DEFAULT_ALPHA, add_colorbar, contact_sheet, overlay_heatmap, stamp_time

if TYPE_CHECKING:
    from .data.transforms import CropMapping
    from .data.video_writer import VideoWriter

__all__ = [
    "AUDIO_SHORTFALL_WARN_SECONDS",
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
# Timestamps this close count as equal (pts rounding).
_TIME_EPS_SECONDS = 1e-6

ModelArg = nn.Module | str | os.PathLike
FrameCallback = Callable[[int, float, Image.Image, np.ndarray], None]


# --------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------


def _resolve(
    model: ModelArg, preprocess: Preprocess | None, device: str | torch.device | None
) -> tuple[nn.Module, Preprocess, torch.device]:
    """The model (loaded when given a checkpoint), its preprocessing and the device inputs go to."""
    if isinstance(model, str | os.PathLike):
        if preprocess is not None:
            raise ValueError("a checkpoint brings its own preprocessing: pass preprocess=None")
        checkpoint = model
        model, preprocess, origin = load_with_origin(checkpoint, device=device)
        if origin == "synth":
            log.warning(
                f"{checkpoint}: this model was trained on SynthAV (synthetic scenes); "
                "its maps on real images and videos mean nothing"
            )
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
    rgb = as_image(image)
    wave, rate = as_audio(audio)
    model, preprocess, dev = _resolve(model, preprocess, device)
    if pcm_steps and getattr(model, "pcm", None) is None:
        raise ValueError("pcm_steps=True needs a model with a PCM")
    frames = _prepare_frames(preprocess.image(rgb)[None], dev)  # 1 x 3 x S x S
    if preprocess.stft and not isinstance(audio, tuple):  # the official load_spectrogram of the file
        spect = preprocess.audio_file(audio)[None].to(dev)  # 1 x 1 x 257 x T
    else:
        spect = preprocess.audio(wave, rate)[None].to(dev)  # 1 x P x 96 x 64 (vggish)
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


@dataclass
class _Batch:
    timestamps: list[float]
    images: list[Image.Image]
    frames: torch.Tensor  # B x 3 x S x S
    spects: torch.Tensor  # B x P x 96 x 64


def _batches(
    path: Path,
    rate: float,
    preprocess: Preprocess,
    audio: tuple[np.ndarray, int, float],
    batch_size: int,
) -> Iterator[_Batch]:
    wave, audio_rate, audio_t0 = audio
    items: list[tuple[float, Image.Image, torch.Tensor, torch.Tensor]] = []

    def batch() -> _Batch:
        return _Batch(
            [t for t, *_ in items],
            [img for _, img, *_ in items],
            torch.stack([f for *_, f, _ in items]),
            torch.stack([s for *_, s in items]),
        )

    for t, img in iter_frames(path, rate):
        items.append((t, img, preprocess.image(img), preprocess.audio_at(wave, t - audio_t0, audio_rate)))
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
    audio = check_audio_source(path, info, audio_path)
    rate = output_fps(fps, info.fps)
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    wave, audio_t0 = load_video_audio(path, info, audio)
    model, preprocess, dev = _resolve(model, preprocess, device)
    audio_rate = SAMPLE_RATE_HZ
    if preprocess.stft:  # the released models hear the native rate through 16-bit mono: decode again
        wave, audio_rate = preprocess.load_audio(audio)
    batch_size = batch_size or DEFAULT_BATCH_SIZE.get(dev.type, DEFAULT_BATCH_SIZE["cpu"])

    from tqdm.auto import tqdm

    maps: list[np.ndarray] = []
    times: list[float] = []
    expected = max(1, math.floor(info.duration * rate + _TIME_EPS_SECONDS))
    with tqdm(total=expected, unit="frame", desc=path.name, disable=not progress) as bar:
        decoded = _batches(path, rate, preprocess, (wave, audio_rate, audio_t0), batch_size)
        batches = prefetch(decoded, PREFETCH_BATCHES, name="sspl-localize-decode")
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


def write_image_outputs(
    result: ImageResult,
    out_dir: str | os.PathLike,
    stem: str,
    *,
    colorbar: bool = True,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write ``<stem>_overlay.png`` (the overlay on the original image, with a colour bar unless
    ``colorbar`` is False) and ``<stem>_map.npy`` (the ``h x w`` float32 raw map).

    Returns:
        :func:`image_output_paths`.

    Raises:
        FileExistsError: an output exists and ``overwrite`` is False.
    """
    paths = image_output_paths(out_dir, stem)
    with OutputSet(paths, overwrite=overwrite) as outs:
        save_png(outs.temp("overlay"), result.overlay(colorbar=colorbar))
        save_npy(outs.temp("map"), result.raw_map.astype(np.float32))
    return paths


class _OverlaySink:
    """The ``on_frame`` of :func:`write_video_outputs`: each frame's overlay into the heat-map video, and
    the overlays of the contact sheet (the first frame at or after each of ``count`` times spread evenly
    over the video, the middles of equal spans; the last frame when the video ends before its declared
    duration)."""

    def __init__(
        self,
        preprocess: Preprocess,
        open_video: Callable[[], VideoWriter],
        info: VideoInfo,
        count: int,
        colorbar: bool,
        timestamp: bool,
    ) -> None:
        self._preprocess = preprocess
        self._open_video = open_video
        self._colorbar = colorbar
        self._timestamp = timestamp
        self._targets = [info.start + (k + 0.5) * info.duration / count for k in range(count)]
        self._mappings: dict[tuple[int, int], CropMapping] = {}
        self._thumbs: list[tuple[float, Image.Image]] = []
        self._last: tuple[float, Image.Image] | None = None
        self.video: VideoWriter | None = None

    def __call__(self, index: int, t: float, image: Image.Image, raw: np.ndarray) -> None:
        if self.video is None:
            self.video = self._open_video()
        if image.size not in self._mappings:
            self._mappings[image.size] = self._preprocess.crop_mapping(*image.size)
        overlay = overlay_heatmap(image, project_map(raw, self._mappings[image.size]))
        frame = stamp_time(overlay, t) if self._timestamp else overlay
        self.video.write(add_colorbar(frame) if self._colorbar else frame, t)
        self._last = (t, overlay)
        targets = self._targets
        if targets and targets[0] <= t + _TIME_EPS_SECONDS:
            while targets and targets[0] <= t + _TIME_EPS_SECONDS:
                targets.pop(0)
            self._thumbs.append((t, overlay))

    def contact_sheet(self) -> Image.Image:
        thumbs, last = list(self._thumbs), self._last
        if self._targets and last and (not thumbs or thumbs[-1][0] != last[0]):
            thumbs.append(last)  # the video ended before its declared duration: show its last frame
        sheet = contact_sheet([img for _, img in thumbs], labels=[f"{t:.2f} s" for t, _ in thumbs])
        return add_colorbar(sheet) if self._colorbar else sheet


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
    colorbar: bool = True,
    timestamp: bool = True,
    contact_frames: int = CONTACT_FRAMES,
    overwrite: bool = False,
    on_frame: FrameCallback | None = None,
) -> tuple[VideoResult, dict[str, Path]]:
    """Localize through a video and write its outputs in ``out_dir`` (``<stem>`` = the video's name):

    - ``<stem>_heatmap.mp4``: the overlays at the source resolution (H.264; with ``colorbar`` a bar
      is appended on the right; with ``timestamp`` each frame shows its time, ``mm:ss.s``, top left),
      one frame per output frame shown from its source timestamp, with
      the sound muxed back in (the video's own track, copied when MP4 takes its codec, else
      re-encoded to AAC; or the ``audio_path`` file, aligned with the first frame);
    - ``<stem>_maps.npy``: ``T x h x w`` float32 raw maps;
    - ``<stem>_timestamps.npy``: ``T`` float64 seconds of those frames on the video's timeline;
    - ``<stem>_contact.png``: a contact sheet of ``contact_frames`` overlays spread over the video.

    Inputs are checked before anything is computed; the outputs appear together at the end.

    Args:
        model, preprocess, video_path, fps, audio_path, batch_size, device, progress, on_frame: as
            :func:`localize_video` (``on_frame`` is called after the frame's overlay is written).
        out_dir: output folder (created if needed).
        colorbar: draw a colour bar beside the overlays (video and contact sheet).
        timestamp: write each video frame's time on it (the contact sheet labels its frames instead).
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
    audio = check_audio_source(path, info, audio_path)
    rate = output_fps(fps, info.fps)
    if contact_frames < 1:
        raise ValueError(f"contact_frames must be >= 1, got {contact_frames}")
    paths = video_output_paths(out_dir, path.stem)
    with OutputSet(paths, overwrite=overwrite) as outs:
        model, preprocess, dev = _resolve(model, preprocess, device)
        from .data.video_writer import VideoWriter

        align_to = None if audio == path else info.start
        end = info.start + info.duration

        def open_video() -> VideoWriter:
            # At the first map: by then localize_video has read and checked the sound the writer muxes.
            return VideoWriter(outs.temp("heatmap_video"), rate, audio, align_to, end)

        sink = _OverlaySink(preprocess, open_video, info, contact_frames, colorbar, timestamp)

        def each_frame(index: int, t: float, image: Image.Image, raw: np.ndarray) -> None:
            sink(index, t, image, raw)
            if on_frame is not None:
                on_frame(index, t, image, raw)

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
                on_frame=each_frame,
            )
            sink.video.close()  # localize_video returns only after at least one frame
        except BaseException:
            if sink.video is not None:
                sink.video.abort()
            raise
        save_npy(outs.temp("maps"), result.maps)
        save_npy(outs.temp("timestamps"), result.timestamps)
        save_png(outs.temp("contact_sheet"), sink.contact_sheet())
    return result, paths
