"""Video decoding with PyAV: stream facts, the middle frame by timestamp, and streaming frame iteration.

All timestamps are seconds on the file's presentation timeline (``pts * time_base`` of the video
stream; 0 at the first frame for almost every file). A frame "at" a time ``t`` is the first decoded
frame whose timestamp is at or after ``t``: the decoder seeks to the keyframe before ``t`` and decodes
forward, so reading one frame of a long video costs one group of pictures, not the whole file.

Frames come out upright: a display rotation (the display matrix phones write instead of turning the
pixels) is applied to every decoded frame, and :class:`VideoInfo` reports the size as displayed.

``write_synthetic_video`` writes small test clips (moving shapes, a tone) for tests and benchmarks.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from ..errors import DataError

__all__ = [
    "VIDEO_SUFFIXES",
    "VideoDecodeError",
    "VideoInfo",
    "decode_frame_at",
    "decode_middle_frame",
    "iter_frames",
    "video_info",
    "write_synthetic_video",
]

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov")

log = logging.getLogger(__name__)

# Timestamps within this many seconds of a target count as "at" it (pts rounding in coarse time bases).
_TIME_EPS_SECONDS = 1e-6
# A file whose packets end this close to its declared duration is whole, not truncated.
_WHOLE_FILE_SLACK_SECONDS = 0.1
# Decoders whose packets each hold one frame stamped with that frame's own timestamp, so the
# non-reference frames of packets before a target can be skipped without changing any later frame.
_SKIP_NONREF_CODECS = frozenset({"h264", "hevc"})


class VideoDecodeError(DataError):
    """A file has no decodable video (not a container, no video stream, unknown codec, no frames)."""


@dataclass(frozen=True)
class VideoInfo:
    """Facts about a video file, read from the container (only the first frame is decoded, for its rotation).

    Attributes:
        duration: seconds of the video stream: as the stream declares it, else measured from its packet
            timestamps (Matroska / WebM declare none), else the container's duration.
        start: timestamp of the first video frame in seconds.
        fps: average frame rate (0 when unknown).
        width, height: frame size in pixels as displayed, i.e. after ``rotation``.
        video_codec: FFmpeg decoder name of the video stream.
        has_audio: whether the file has an audio stream.
        audio_codec: FFmpeg decoder name of the first audio stream ("" without audio, or when FFmpeg
            has no decoder for it).
        audio_rate: sample rate of the first audio stream in Hz (0 without audio or decoder).
        audio_start: timestamp of the first audio sample in seconds.
        audio_duration: seconds of audio declared by the container (0 when unknown or without audio).
        rotation: counter-clockwise degrees (0, 90, 180 or 270) the decoded pixels are turned to be shown
            upright, from the first frame's display matrix; every frame this module returns is turned.
    """

    duration: float
    start: float
    fps: float
    width: int
    height: int
    video_codec: str
    has_audio: bool
    audio_codec: str = ""
    audio_rate: int = 0
    audio_start: float = 0.0
    audio_duration: float = 0.0
    rotation: int = 0

    @property
    def middle(self) -> float:
        """Timestamp of the middle of the video stream: ``start + duration / 2``."""
        return self.start + self.duration / 2


def _open(path: Path) -> av.container.InputContainer:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: " + ("is a folder, not a video file" if path.is_dir() else "no such video file")
        )
    try:
        return av.open(str(path))
    except av.FFmpegError as e:
        raise VideoDecodeError(
            f"{path}: cannot open as a media container ({_reason(e)}; corrupt, truncated or not a video?)"
        ) from e


def _reason(error: av.FFmpegError) -> str:
    """FFmpeg's message without the errno and file name that PyAV adds (the caller names the file)."""
    return getattr(error, "strerror", None) or str(error)


def _video_stream(container: av.container.InputContainer, path: Path, threads: int) -> av.VideoStream:
    if not container.streams.video:
        raise VideoDecodeError(f"{path}: no video stream")
    stream = container.streams.video[0]
    ctx = stream.codec_context
    if ctx is None or ctx.codec is None:
        raise VideoDecodeError(f"{path}: unsupported video codec (FFmpeg has no decoder for it)")
    ctx.thread_count = threads
    return stream


_QUARTER_TURNS = {
    90: Image.Transpose.ROTATE_90,
    180: Image.Transpose.ROTATE_180,
    270: Image.Transpose.ROTATE_270,
}


def _rotation(frame: av.VideoFrame) -> int:
    """The frame's display rotation, counter-clockwise, rounded to a quarter turn: 0, 90, 180 or 270."""
    return int(round(frame.rotation / 90)) % 4 * 90


def _upright(frame: av.VideoFrame) -> Image.Image:
    """The decoded frame as an RGB image turned as its display matrix says (phones record that way)."""
    image = frame.to_image()
    turn = _QUARTER_TURNS.get(_rotation(frame))
    return image.transpose(turn) if turn is not None else image


def _first_rotation(container: av.container.InputContainer, stream: av.VideoStream, path: Path) -> int:
    """Display rotation of the first decodable frame (0 when none decodes: the caller's decode says why)."""
    try:
        for frame in _decode(container, stream, path, 0.0):
            return _rotation(frame)
    except VideoDecodeError:
        pass
    return 0


def _seconds(value: int | None, time_base: Fraction | None) -> float | None:
    if value is None or time_base is None:
        return None
    return float(value * time_base)


def _stream_duration(container: av.container.InputContainer, stream: av.VideoStream) -> float | None:
    """The video stream's own duration: as declared, else measured from its packets, else the container's.

    Matroska / WebM declare no stream duration, and their container duration is the longest stream's, which
    is the audio's when the sound outlasts the picture: when the packets of the file reach the end the
    container declares, the file is whole and the video's packets give its length. When they stop short,
    the file is truncated and the declared length is kept, so the missing frames are found missing.
    """
    duration = _seconds(stream.duration, stream.time_base)
    if duration is not None and duration > 0:
        return duration
    declared = container.duration / av.time_base if container.duration is not None else None
    measured, file_end = _measure_duration(container, stream)
    whole = declared is None or (file_end is not None and file_end >= declared - _WHOLE_FILE_SLACK_SECONDS)
    duration = measured if whole and measured is not None and measured > 0 else declared
    return duration if duration is not None and duration > 0 else None


def _measure_duration(
    container: av.container.InputContainer, stream: av.VideoStream
) -> tuple[float | None, float | None]:
    """The video's duration from its packet timestamps, and where the last packet of any stream ends
    (seconds from the container's start), by demuxing only; then back to the start."""
    first = last = None
    last_dur = 0
    file_end = None
    origin = (container.start_time or 0) / av.time_base
    try:
        for packet in container.demux():
            if packet.pts is None or packet.stream.type not in ("video", "audio"):
                continue
            end = float((packet.pts + (packet.duration or 0)) * packet.time_base) - origin
            file_end = end if file_end is None else max(file_end, end)
            if packet.stream.index != stream.index:
                continue
            first = packet.pts if first is None else min(first, packet.pts)
            if last is None or packet.pts >= last:
                last, last_dur = packet.pts, packet.duration or 0
    except av.FFmpegError:
        pass  # a damaged tail: keep the timestamps read so far
    try:
        container.seek(0)
    except av.FFmpegError:
        pass  # an unseekable file: later reads decode from where they are, as for any such file
    if first is None:
        return None, file_end
    return float((last + last_dur - first) * stream.time_base), file_end


def video_info(path: str | os.PathLike) -> VideoInfo:
    """Read duration, frame rate, size and audio facts of a video file without decoding frames.

    Raises:
        FileNotFoundError: the file does not exist.
        VideoDecodeError: not a media container, no video stream, or an unsupported video codec.
    """
    path = Path(path)
    with _open(path) as container:
        stream = _video_stream(container, path, threads=1)
        return _info(container, stream, path)


def _info(container: av.container.InputContainer, stream: av.VideoStream, path: Path) -> VideoInfo:
    start = _seconds(stream.start_time, stream.time_base) or 0.0
    duration = _stream_duration(container, stream)
    if duration is None:
        raise VideoDecodeError(f"{path}: the video stream holds no frames")
    rotation = _first_rotation(container, stream, path)
    width, height = int(stream.codec_context.width), int(stream.codec_context.height)
    if rotation in (90, 270):
        width, height = height, width
    rate = stream.average_rate or stream.guessed_rate
    audio = container.streams.audio[0] if container.streams.audio else None
    audio_codec, audio_rate, audio_start, audio_duration = "", 0, 0.0, None
    if audio is not None:
        if audio.codec_context is not None:  # None when FFmpeg has no decoder for the codec
            audio_codec = audio.codec_context.name
            audio_rate = int(audio.codec_context.sample_rate or 0)
        audio_start = _seconds(audio.start_time, audio.time_base) or 0.0
        audio_duration = _seconds(audio.duration, audio.time_base)
        if audio_duration is None and container.duration is not None:
            audio_duration = container.duration / av.time_base
    return VideoInfo(
        duration=duration,
        start=start,
        fps=float(rate) if rate else 0.0,
        width=width,
        height=height,
        video_codec=stream.codec_context.name,
        has_audio=audio is not None,
        audio_codec=audio_codec,
        audio_rate=audio_rate,
        audio_start=float(audio_start),
        audio_duration=float(audio_duration or 0.0),
        rotation=rotation,
    )


def _frame_time(frame: av.VideoFrame, stream: av.VideoStream, index: int, fps: float) -> float:
    if frame.pts is not None:
        return float(frame.pts * stream.time_base)
    # Some AVI/raw streams carry no pts: fall back to the frame count at the nominal rate.
    return index / fps if fps > 0 else float(index)


def _decode(
    container: av.container.InputContainer,
    stream: av.VideoStream,
    path: Path,
    at: float,
    skip_before: float | None = None,
) -> Iterator[av.VideoFrame]:
    """Decode frames of ``stream`` from the current position, mapping FFmpeg errors to VideoDecodeError.

    With ``skip_before``, non-reference frames of packets timestamped before it are not decoded (for
    codecs where that is safe): no frame at or after ``skip_before`` changes, and seeking to a frame in
    the middle of a long group of pictures gets about a third faster.
    """
    ctx = stream.codec_context
    skip = skip_before is not None and ctx.name in _SKIP_NONREF_CODECS
    try:
        for packet in container.demux(stream):
            if skip:
                early = packet.pts is not None and packet.pts * stream.time_base < skip_before
                ctx.skip_frame = "NONREF" if early else "DEFAULT"
            yield from packet.decode()
    except av.FFmpegError as e:
        raise VideoDecodeError(f"{path}: cannot decode the video near {at:.2f} s ({_reason(e)})") from e
    finally:
        if skip:
            ctx.skip_frame = "DEFAULT"


def _scan(
    container: av.container.InputContainer,
    stream: av.VideoStream,
    path: Path,
    seconds: float,
    fps: float,
    seek_to: float,
) -> tuple[av.VideoFrame, float] | None:
    """First frame at or after ``seconds``, decoding from the keyframe before ``seek_to``.

    Returns None when no frame reaches ``seconds`` or when the seek overshot (the first decoded frame is
    already past ``seconds``, which happens with containers whose index is coarse).
    """
    try:
        container.seek(max(0, int(seek_to / stream.time_base)), stream=stream, backward=True)
    except av.FFmpegError:
        if seek_to > 0:
            return None
        # Files without an index (or with an empty stream) refuse seeks: decode from where we are.
    frames = _decode(container, stream, path, seconds, skip_before=seconds - _TIME_EPS_SECONDS)
    for i, frame in enumerate(frames):
        t = _frame_time(frame, stream, i, fps)
        if i == 0 and seek_to > 0 and t > seconds + _TIME_EPS_SECONDS:
            return None
        if t >= seconds - _TIME_EPS_SECONDS:
            return frame, t
    return None


def _frame_at(
    container: av.container.InputContainer, stream: av.VideoStream, path: Path, seconds: float, fps: float
) -> tuple[av.VideoFrame, float]:
    found = _scan(container, stream, path, seconds, fps, seek_to=seconds)
    if found is None and seconds > 0:
        found = _scan(container, stream, path, seconds, fps, seek_to=0.0)
    if found is None:
        raise VideoDecodeError(
            f"{path}: no decodable video frame at or after {seconds:.2f} s (truncated or corrupt video?)"
        )
    return found


def decode_frame_at(
    path: str | os.PathLike, seconds: float, *, threads: int = 0
) -> tuple[Image.Image, float]:
    """Decode the first frame at or after ``seconds``.

    Args:
        path: video file.
        seconds: target timestamp.
        threads: FFmpeg decoding threads (0 lets FFmpeg choose; 1 for one process per core).

    Returns:
        ``(image, timestamp)``: the RGB frame at its native size and its timestamp in seconds.

    Raises:
        FileNotFoundError: the file does not exist.
        VideoDecodeError: the file cannot be opened or decoded, or no frame lies at or after ``seconds``.
    """
    path = Path(path)
    with _open(path) as container:
        stream = _video_stream(container, path, threads)
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        frame, t = _frame_at(container, stream, path, seconds, fps)
        return _upright(frame), t


def decode_middle_frame(path: str | os.PathLike, *, threads: int = 0) -> tuple[Image.Image, float]:
    """Decode the middle frame of a video: the first frame at or after ``start + duration / 2``.

    The middle is found from the video stream's timestamps (see :class:`VideoInfo`), never by counting
    frames, so variable-frame-rate files and files with a late first frame get the frame that is shown
    half-way through.

    Returns:
        ``(image, timestamp)``: the RGB frame at its native size and its timestamp in seconds.

    Raises:
        FileNotFoundError, VideoDecodeError: as :func:`decode_frame_at`.
    """
    path = Path(path)
    with _open(path) as container:
        stream = _video_stream(container, path, threads)
        info = _info(container, stream, path)
        frame, t = _frame_at(container, stream, path, info.middle, info.fps)
        return _upright(frame), t


def iter_frames(
    path: str | os.PathLike, fps: float | None = None, *, threads: int = 0
) -> Iterator[tuple[float, Image.Image]]:
    """Stream the frames of a video, one decoded frame in memory at a time.

    Args:
        path: video file.
        fps: sampling rate; ``None`` yields every frame. Otherwise the sample times are
            ``t0 + k / fps`` (``t0`` = first frame) and each yields the first frame at or after it; a
            rate above the video's own yields each frame once.
        threads: FFmpeg decoding threads (0 lets FFmpeg choose).

    Yields:
        ``(timestamp, image)``: the frame's own timestamp in seconds and the RGB frame at native size.

    A file that cannot be decoded past some frame (truncated, damaged) ends there, with a logged
    warning; one that yields no frame at all raises.

    Raises:
        FileNotFoundError, VideoDecodeError: as :func:`decode_frame_at` (raised when reached).
    """
    if fps is not None and not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    path = Path(path)
    with _open(path) as container:
        stream = _video_stream(container, path, threads)
        native_fps = float(stream.average_rate or stream.guessed_rate or 0)
        next_time: float | None = None
        last: float | None = None  # time of the last decoded frame
        try:
            for i, frame in enumerate(_decode(container, stream, path, 0.0)):
                t = last = _frame_time(frame, stream, i, native_fps)
                if fps is None:
                    yield t, _upright(frame)
                    continue
                if next_time is None:
                    next_time = t
                if t >= next_time - _TIME_EPS_SECONDS:
                    yield t, _upright(frame)
                    # Skip sample times this frame already covers (fps above the native rate).
                    steps = math.floor((t - next_time) * fps + _TIME_EPS_SECONDS) + 1
                    next_time += steps / fps
        except VideoDecodeError as e:
            if last is None:
                raise
            # A truncated or damaged file: the frames before the damage are good, and callers that know
            # how many to expect (sspl localize) say how many came.
            log.warning(
                "%s: decoding stopped after the frame at %.2f s (%s); the frames before it are kept",
                path,
                last,
                _reason(e.__cause__) if isinstance(e.__cause__, av.FFmpegError) else e,
            )


# --------------------------------------------------------------------------------------------------
# Synthetic clips for tests and benchmarks
# --------------------------------------------------------------------------------------------------


def write_synthetic_video(
    path: str | os.PathLike,
    *,
    seconds: float = 2.0,
    width: int = 64,
    height: int = 48,
    fps: int = 25,
    video_codec: str | None = "libx264",
    pix_fmt: str = "yuv420p",
    audio: str | None = "tone",
    audio_codec: str = "aac",
    audio_rate: int = 44100,
    audio_seconds: float | None = None,
    audio_channels: int = 2,
    options: dict[str, str] | None = None,
    container_options: dict[str, str] | None = None,
    rotation: int = 0,
    seed: int = 0,
    audio_start: float = 0.0,
) -> Path:
    """Write a small clip: a moving disc over a drifting gradient, with a tone, silence or no audio.

    Frame ``k`` has timestamp ``k / fps``. The frames carry a little noise so the encoder produces a
    realistic bit rate.

    Args:
        path: output file; the container follows the suffix (``.mp4``, ``.mkv``, ...).
        seconds: video length.
        width, height: frame size (even numbers for yuv420p).
        fps: frame rate.
        video_codec: FFmpeg encoder (``libx264``, ``mpeg4``, ``libvpx-vp9``, ...), or None for a file
            without a video stream. ``seconds=0`` gives a video stream without frames.
        pix_fmt: the video stream's pixel format (``yuv444p`` allows odd sides).
        audio: ``"tone"`` (440 Hz plus noise), ``"silent"`` (all zeros), ``"constant"`` (a DC offset of
            0.25) or ``None`` (no audio stream).
        audio_codec: FFmpeg encoder (``aac``, ``pcm_s16le``, ``libopus``, ...).
        audio_rate: audio sample rate in Hz.
        audio_seconds: audio length (default: ``seconds``).
        audio_channels: 1 or 2.
        options: encoder options of the video stream (e.g. ``{"preset": "veryfast", "g": "250"}``).
        container_options: muxer options (e.g. ``{"movflags": "faststart"}`` for mp4, ``{"live": "1"}``
            for a Matroska file that declares no duration).
        rotation: display rotation written to the container, counter-clockwise degrees (a phone held
            upright writes 270 on landscape-coded pixels); the pixels are not turned.
        seed: noise seed.
        audio_start: timestamp of the first audio sample in seconds (audio that starts after the video).

    Returns:
        ``path`` as a Path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    layout = "stereo" if audio_channels == 2 else "mono"
    with av.open(str(path), "w", options=container_options or {}) as container:
        video = None
        if video_codec is not None:
            video = container.add_stream(video_codec, rate=fps)
            video.width, video.height, video.pix_fmt = width, height, pix_fmt
            if options:
                video.options = dict(options)
            if rotation:
                video.set_display_rotation(rotation)
        astream = None
        if audio is not None:
            astream = container.add_stream(audio_codec, rate=audio_rate, layout=layout)
        yy, xx = np.mgrid[0:height, 0:width]
        radius = max(2, min(width, height) // 8)
        for k in range(int(round(seconds * fps)) if video is not None else 0):
            image = np.empty((height, width, 3), np.int16)  # H x W x 3
            image[..., 0] = (xx * 255 // max(width - 1, 1) + 3 * k) % 256
            image[..., 1] = (yy * 255 // max(height - 1, 1) + 2 * k) % 256
            image[..., 2] = 128
            cx = width / 2 + width / 3 * math.sin(k / 20)
            cy = height / 2 + height / 3 * math.cos(k / 15)
            image[(xx - cx) ** 2 + (yy - cy) ** 2 < radius**2] = (255, 40, 40)
            image += rng.integers(-3, 4, image.shape, dtype=np.int16)
            frame = av.VideoFrame.from_ndarray(np.clip(image, 0, 255).astype(np.uint8), format="rgb24")
            frame.pts = k
            frame.time_base = Fraction(1, fps)
            container.mux(video.encode(frame))
        if video is not None:
            container.mux(video.encode())
        if astream is not None:
            n = int(round((seconds if audio_seconds is None else audio_seconds) * audio_rate))
            t = np.arange(n) / audio_rate
            if audio == "tone":
                wave = 0.3 * np.sin(2 * np.pi * 440.0 * t) + 0.05 * rng.standard_normal(n)
            elif audio == "silent":
                wave = np.zeros(n)
            elif audio == "constant":
                wave = np.full(n, 0.25)
            else:
                raise ValueError(f"audio must be 'tone', 'silent', 'constant' or None, got {audio!r}")
            planes = np.repeat(wave[None].astype(np.float32), audio_channels, axis=0)  # C x N
            fmt = astream.codec_context.format.name if astream.codec_context.format else "fltp"
            chunk = astream.codec_context.frame_size or 1024
            for s in range(0, n, chunk):
                block = planes[:, s : s + chunk]
                frame = _audio_frame(block, fmt, layout)
                frame.sample_rate = audio_rate
                frame.pts = s + int(round(audio_start * audio_rate))
                frame.time_base = Fraction(1, audio_rate)
                container.mux(astream.encode(frame))
            container.mux(astream.encode())
    return path


def _audio_frame(block: np.ndarray, fmt: str, layout: str) -> av.AudioFrame:
    """An AudioFrame in the encoder's sample format from a float ``C x N`` block in [-1, 1]."""
    planar = fmt.endswith("p")
    base = fmt.rstrip("p")
    if base == "s16":
        data = np.clip(np.round(block * 32767), -32768, 32767).astype(np.int16)
    elif base == "s32":
        data = np.clip(np.round(block * 2147483647), -(2**31), 2**31 - 1).astype(np.int32)
    else:
        data = block.astype(np.float32)
    if not planar:
        data = data.T.reshape(1, -1)  # packed: 1 x (N * C), channels interleaved
    return av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=fmt, layout=layout)
