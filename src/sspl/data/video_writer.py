"""Video encoding with PyAV: an H.264 MP4 of still images at given timestamps, with a sound track muxed
beside it (the heat-map videos of :func:`sspl.localize.write_video_outputs`). Decoding is in
:mod:`sspl.data.video`.

The sound is copied when MP4 takes its codec (AAC, MP3) and re-encoded to AAC otherwise; its packets are
interleaved with the video's in time order. Frames keep their source timestamps, each shown until the
next one or the end of the source video, and nothing plays past that end.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
from PIL import Image

from ..audio import AudioDecodeError

__all__ = ["AAC_RATES_HZ", "COPY_AUDIO_CODECS", "AudioTrack", "VideoWriter", "even_sides"]

log = logging.getLogger(__name__)

#: Audio codecs the MP4 muxer takes as they are; anything else is re-encoded to AAC.
COPY_AUDIO_CODECS = frozenset({"aac", "mp3"})
#: Sample rates AAC encodes; another source rate is encoded at 48 kHz.
AAC_RATES_HZ = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000)
#: Fine enough that any source timestamp survives; the mp4 muxer re-expresses it in its own time base.
VIDEO_TIME_BASE = Fraction(1, 90000)
X264_OPTIONS = {"preset": "veryfast", "crf": "20"}


class AudioTrack:
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
        self._copy = stream.codec_context.codec.canonical_name in COPY_AUDIO_CODECS
        if self._copy:
            self.stream = out.add_stream_from_template(stream)
        else:
            rate = stream.rate or stream.codec_context.sample_rate
            channels = stream.codec_context.channels
            self.stream = out.add_stream(
                "aac",
                rate=rate if rate in AAC_RATES_HZ else 48000,
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


class VideoWriter:
    """H.264 MP4 of overlays at the source resolution (trimmed to even sides, as yuv420p needs), one
    frame per output frame at its source timestamp, with an audio track; nothing plays past ``end``
    (the source video's end): a frame lasts until the next sample time or ``end``, and a longer sound
    file is cut there."""

    def __init__(self, path: Path, rate: float, audio: Path, align_to: float | None, end: float) -> None:
        self._container = av.open(str(path), "w", format="mp4")
        try:
            self._stream = self._container.add_stream(
                "libx264", rate=Fraction(rate).limit_denominator(1001), options=dict(X264_OPTIONS)
            )
            self._stream.pix_fmt = "yuv420p"
            self._stream.codec_context.time_base = VIDEO_TIME_BASE
            self._audio = AudioTrack(audio, self._container, align_to)
        except BaseException:
            self._container.close()
            raise
        self._period = 1 / rate
        self._end = end
        self._last_pts = -1
        self._last_end = 0.0
        self._durations: dict[int, int] = {}  # pts -> how long that frame shows, in VIDEO_TIME_BASE
        self._opened = False

    def write(self, overlay: Image.Image, seconds: float) -> None:
        image = even_sides(overlay)
        if not self._opened:
            self._stream.width, self._stream.height = image.size
            self._opened = True
        frame = av.VideoFrame.from_image(image)
        frame.time_base = VIDEO_TIME_BASE
        frame.pts = max(round(seconds / VIDEO_TIME_BASE), self._last_pts + 1)
        shown = min(self._period, self._end - seconds) if self._end > seconds else self._period
        self._durations[frame.pts] = max(1, round(shown / VIDEO_TIME_BASE))
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


def even_sides(image: Image.Image) -> Image.Image:
    """The image trimmed to even sides (yuv420p), or stretched to 2 pixels where a side is 1."""
    if image.width < 2 or image.height < 2:
        return image.resize((max(2, image.width), max(2, image.height)), Image.Resampling.NEAREST)
    return image.crop((0, 0, image.width // 2 * 2, image.height // 2 * 2))
