"""`sspl prepare`: raw videos, SoundNet-Flickr dumps or image + audio pairs to a prepared dataset.

The output follows the contract of :mod:`sspl.data.manifest`. Per clip:

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

Robustness: each clip is prepared independently and any failure (corrupt file, no audio or video
stream, unknown codec, silent track, unreadable frame) becomes a ``failed`` manifest row with the
reason, never an abort. Files are written atomically and recorded in the manifest only after all three
exist. Each finished clip's row is appended to ``manifest.journal.jsonl`` at once, and the manifest is
rewritten atomically from all rows every ``MANIFEST_FLUSH_SECONDS`` and at the end (also on Ctrl-C),
which empties the journal: a killed run (even SIGKILL) loses only the clips it was working on. A rerun
reads the manifest and the journal, skips clips whose row is ``done`` and whose files are all present,
and retries failed ones.

Sharding: ``shard=(i, n)`` with ``0 <= i < n`` takes every n-th id of the sorted selection starting at
``i`` and records its rows in ``shards/<i>-of-<n>/manifest.csv``; ``manifest.csv`` is merged from the
parts automatically by the shard that finds every selected id recorded, or on demand by
:func:`merge_shards`.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import errno
import json
import logging
import multiprocessing
import os
import re
import signal
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from tqdm.auto import tqdm

from ..audio import (
    CLIP_SECONDS,
    MIN_AUDIO_SECONDS,
    SAMPLE_RATE_HZ,
    SILENT_PEAK_TO_PEAK,
    AudioDecodeError,
    centre_window,
    clip_at,
    encode_wav_float32,
    is_silent,
    load_audio,
    official_clip,
    resample,
    tile_to_length,
    too_short,
    waveform_to_examples,
)
from ..errors import DataError, SSPLError
from ..io import atomic_save_image, atomic_save_npy, atomic_write_bytes
from ..outputs import OutputInUseError, check_output_folder, output_lock, remove_stale_temps
from ..paths import path_inside, plain_name
from ..processes import end_with
from .images import to_rgb
from .lists import check_overlap, find_overlap, parse_rows, read_list_text, vggsound_clip
from .manifest import (
    JOURNAL_NAME,
    MANIFEST_NAME,
    META_NAME,
    SPLITS,
    STATUS_FAILED,
    ManifestRow,
    read_manifest,
    read_meta,
    write_manifest,
    write_meta,
)
from .video import VIDEO_SUFFIXES, VideoInfo, decode_frame_at, video_info

__all__ = [
    "FRAME_SIZE",
    "JPEG_QUALITY",
    "LAYOUTS",
    "MIN_AUDIO_SECONDS",
    "SILENT_PEAK_TO_PEAK",
    "ClipSource",
    "ListEntry",
    "PrepareSummary",
    "find_sources",
    "merge_shards",
    "parse_shard",
    "prepare",
    "prepare_clip",
    "read_clip_list",
    "select_sources",
    "shard_slice",
]

log = logging.getLogger(__name__)

FRAME_SIZE = 256
JPEG_QUALITY = 95
SPECT_PATCHES = 3
_EXIF_ORIENTATION = 0x0112  # the EXIF tag of how a photo is turned for display
# Audio decoded past the end of the window a video clip needs, so the resampler's filter never sees
# the cut and the kept samples equal those of the fully decoded track.
AUDIO_MARGIN_SECONDS = 0.25
MANIFEST_FLUSH_SECONDS = 10.0
#: most audio a clip may keep (``--audio-seconds``): ten minutes of 16 kHz float32 is 38 MB per clip
MAX_AUDIO_SECONDS = 600.0
#: errors of a full or read-only output, which stop the run (the finished clips are kept) instead of
#: failing every clip after them
OUTPUT_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})
# Jobs queued per worker: enough to keep processes busy, few enough that a crash has few suspects.
JOBS_PER_WORKER = 4

LAYOUTS = ("auto", "videos", "flickr", "pairs")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
AUDIO_SUFFIXES = (".wav", ".mp3", ".flac", ".ogg", ".m4a")
FLICKR_AUDIO_DIRS = ("audio", "mp3")
SHARDS_DIR = "shards"

_KIND_VIDEO, _KIND_FRAMES, _KIND_IMAGE = "video", "frames", "image"
_FRAME_OF_VIDEO = re.compile(r"(.+)_(\d+)")  # `<video>_<k>`: frame k of a video
#: Folders the pairs layout leaves out: AVSBench's ground-truth masks are images named like its frames.
PAIRS_SKIPPED_FOLDERS = frozenset({"gt_masks"})
#: A pair under a folder of one of these names gets it as its split (AVSBench's visual_frames/test/...).
PAIRS_SPLIT_FOLDERS = ("train", "val", "test")


@dataclass(frozen=True)
class ClipSource:
    """Where one clip comes from.

    Attributes:
        id: clip id (file stem, Flickr id, or the id given by the ``--list`` file).
        kind: ``"video"`` (audio and frame from one file), ``"frames"`` (a Flickr frames folder plus an
            audio file) or ``"image"`` (an image plus an audio file).
        visual: the video file, frames folder or image file.
        audio: the audio file ("" for videos; "" when a Flickr id or an image has no audio file).
        label, split: from the ``--list`` CSV, "" otherwise.
        error: why the clip cannot be prepared, when that is known before decoding (a missing audio
            file or image, two files with the same id, a listed id with no file); "" otherwise.
    """

    id: str
    kind: str
    visual: str
    audio: str = ""
    label: str = ""
    split: str = ""
    error: str = ""


@dataclass(frozen=True)
class ListEntry:
    """One row of a ``--list`` file: the clip id and, for VGG-Sound CSV rows, its label and split."""

    id: str
    label: str = ""
    split: str = ""


@dataclass(frozen=True)
class PrepareSummary:
    """What a `prepare` run did.

    Attributes:
        out: the dataset folder.
        done: clips prepared by this run.
        skipped: clips already finished by an earlier run.
        failed: clips that could not be prepared (their reason is in the manifest).
        merged: whether ``manifest.csv`` was (re)written from shard parts.
    """

    out: Path
    done: int
    skipped: int
    failed: int
    merged: bool = False

    def __str__(self) -> str:
        return f"done {self.done} / skipped {self.skipped} / failed {self.failed}"


# --------------------------------------------------------------------------------------------------
# Finding the clips
# --------------------------------------------------------------------------------------------------


def _natural_key(name: str) -> list[object]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _walk(root: Path, exclude: Path | None, skip: frozenset[str] = frozenset()) -> Iterator[Path]:
    """Files under ``root`` in sorted order, skipping hidden entries, the ``exclude`` folder and
    folders named in ``skip``."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        here = Path(dirpath)
        dirnames[:] = sorted(
            d
            for d in dirnames
            if not d.startswith(".") and d not in skip and (exclude is None or here / d != exclude)
        )
        for name in sorted(filenames):
            if not name.startswith("."):
                yield here / name


def _unique_by_id(sources: Iterable[ClipSource]) -> list[ClipSource]:
    """Sources sorted by id; files that share an id become one source that fails with both names."""
    by_id: dict[str, ClipSource] = {}
    for source in sources:
        first = by_id.get(source.id)
        if first is None:
            by_id[source.id] = source
        else:
            error = (
                f"{first.visual}: id {source.id!r} also given by {source.visual} (ids are file stems); "
                "rename or remove one"
            )
            by_id[source.id] = replace(first, error=first.error or error)
    return sorted(by_id.values(), key=lambda s: s.id)


def _flickr_sources(src: Path) -> list[ClipSource]:
    frames_dir = src / "frames"
    audio_dirs = [src / d for d in FLICKR_AUDIO_DIRS if (src / d).is_dir()]
    if not frames_dir.is_dir() or not audio_dirs:
        raise DataError(
            f"{src}: a SoundNet-Flickr layout needs frames/<id>/*.jpg (or frames/<id>.jpg, the test-set layout "
            "of LVS / EZ-VSL) and audio/<id>.mp3|.wav (or mp3/<id>.mp3)"
        )
    audio_files: dict[str, Path] = {}
    for audio_dir in audio_dirs:
        for path in sorted(audio_dir.iterdir()):
            if path.suffix.lower() in AUDIO_SUFFIXES and not path.name.startswith("."):
                audio_files.setdefault(path.stem, path)
    sources = []
    for entry in sorted(frames_dir.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():  # the dump: a folder of frames per clip
            clip_id, kind = entry.name, _KIND_FRAMES
        elif entry.suffix.lower() in IMAGE_SUFFIXES:  # one frame per clip
            clip_id, kind = entry.stem, _KIND_IMAGE
        else:
            continue
        audio = audio_files.get(clip_id)
        error = "" if audio else f"{entry}: no audio file {clip_id}.mp3|.wav in audio/ or mp3/"
        sources.append(ClipSource(clip_id, kind, str(entry), str(audio or ""), error=error))
    return _unique_by_id(sources)


def _video_sources(src: Path, exclude: Path | None) -> list[ClipSource]:
    files = [p for p in _walk(src, exclude) if p.suffix.lower() in VIDEO_SUFFIXES]
    return _unique_by_id(ClipSource(p.stem, _KIND_VIDEO, str(p)) for p in files)


def _pair_sources(src: Path, exclude: Path | None) -> list[ClipSource]:
    images: dict[tuple[Path, str], Path] = {}
    audios: dict[tuple[Path, str], Path] = {}
    doubles: dict[tuple[Path, str], list[Path]] = {}
    for path in _walk(src, exclude, PAIRS_SKIPPED_FOLDERS):
        key = (path.parent, path.stem)
        kind = images if path.suffix.lower() in IMAGE_SUFFIXES else audios
        if path.suffix.lower() not in IMAGE_SUFFIXES + AUDIO_SUFFIXES:
            continue
        if key in kind:
            doubles.setdefault(key, [kind[key]]).append(path)
        else:
            kind[key] = path
    # A video's frames share its audio: `<name>_<k>.png` without an audio file of its own takes the one
    # `<name>.wav` under SRC (AVSBench: visual_frames/.../<ytid>/<ytid>_<k>.png + audio_wav/.../<ytid>.wav).
    by_stem: dict[str, list[tuple[Path, str]]] = {}
    for key in audios:
        by_stem.setdefault(key[1], []).append(key)
    shared: dict[tuple[Path, str], tuple[Path, str]] = {}
    for key in images:
        frame = _FRAME_OF_VIDEO.fullmatch(key[1])
        if key not in audios and frame and len(by_stem.get(frame.group(1), [])) == 1:
            shared[key] = by_stem[frame.group(1)][0]
    used = set(shared.values()) - set(images)
    sources = []
    for key in sorted((set(images) | set(audios)) - used):
        image = images.get(key)
        audio = audios.get(key) or (audios[shared[key]] if key in shared else None)
        if key in doubles:
            names = ", ".join(p.name for p in doubles[key])
            error = f"{doubles[key][0]}: {names} share a stem; which one is this clip's? rename or remove one"
        elif image is None:
            error = f"{audio}: no image with the same stem for this audio file"
        elif audio is None:
            error = f"{image}: no audio file with the same stem for this image"
            frame = _FRAME_OF_VIDEO.fullmatch(key[1])
            if frame:
                error += (
                    f" (nor a single {frame.group(1)}.* audio file under the source, as for a video frame)"
                )
        else:
            error = ""
        split = _split_folder(key[0].relative_to(src))
        sources.append(
            ClipSource(key[1], _KIND_IMAGE, str(image or ""), str(audio or ""), split=split, error=error)
        )
    return _unique_by_id(sources)


def _split_folder(folder: Path) -> str:
    """The split a pair's folder names (its innermost ``train``/``val``/``test`` folder), else ""."""
    return next((part for part in reversed(folder.parts) if part in PAIRS_SPLIT_FOLDERS), "")


def find_sources(
    src: str | os.PathLike, layout: str = "auto", *, exclude: str | os.PathLike | None = None
) -> tuple[str, list[ClipSource]]:
    """List the clips of a source folder.

    Layouts: ``"flickr"`` when ``src/frames`` (a folder of frames per id, or one ``<id>.jpg`` per id) and
    ``src/audio`` (or ``src/mp3``) exist; ``"videos"`` when
    the folder (recursively) holds video files (``VIDEO_SUFFIXES``); ``"pairs"`` for images and audio
    files that share a stem in the same folder, where an image ``<name>_<k>`` without its own audio file
    is frame ``k`` of a video and takes the one ``<name>`` audio file anywhere under ``src`` (AVSBench's
    ``<ytid>_<k>.png`` frames and ``<ytid>.wav``); pairs leave out ``gt_masks`` folders (AVSBench's
    masks) and take their split from a ``train``/``val``/``test`` folder on their path. ``"auto"`` tries
    them in that order (a Flickr dump with video files beside it is prepared as flickr, with a warning
    that names the videos left out).

    Args:
        src: the source folder.
        layout: one of ``LAYOUTS``.
        exclude: a folder inside ``src`` to leave out (the output folder when it lies inside ``src``).

    Returns:
        ``(layout, sources)`` with the resolved layout and the sources sorted by id.

    Raises:
        DataError: ``src`` is not a folder, the layout is unknown or finds nothing, or two files share an id.
    """
    src = Path(src)
    if not src.is_dir():
        what = "is a file; SRC must be a folder" if src.exists() else "source folder not found"
        raise DataError(f"{src}: {what}")
    if layout not in LAYOUTS:
        raise DataError(f"unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    excluded = Path(exclude).resolve() if exclude is not None else None
    if excluded is not None:
        excluded = Path(os.path.relpath(excluded, src.resolve()))
        excluded = None if excluded.parts[:1] == ("..",) else src / excluded
    if layout == "auto":
        if (src / "frames").is_dir() and any((src / d).is_dir() for d in FLICKR_AUDIO_DIRS):
            layout = "flickr"
            # Only SRC's own files are looked at, not the dump's whole tree of frame folders.
            videos = sorted(
                p.name for p in src.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file()
            )
            if videos:
                log.warning(
                    "%s: prepared as a SoundNet-Flickr dump (frames/ + audio/); its %d video file(s) (%s) are "
                    "left out: prepare them in another run with --layout videos",
                    src,
                    len(videos),
                    ", ".join(videos[:3]) + (", ..." if len(videos) > 3 else ""),
                )
        elif any(p.suffix.lower() in VIDEO_SUFFIXES for p in _walk(src, excluded)):
            layout = "videos"
        else:
            layout = "pairs"
    if layout == "flickr":
        sources = _flickr_sources(src)
    elif layout == "videos":
        sources = _video_sources(src, excluded)
    else:
        sources = _pair_sources(src, excluded)
    if not sources:
        raise DataError(
            f"{src}: no clips found for layout {layout!r} (expected video files "
            f"{', '.join(VIDEO_SUFFIXES)}, a frames/ + audio/ SoundNet-Flickr dump, or image + audio pairs)"
        )
    return layout, sources


# --------------------------------------------------------------------------------------------------
# --list files
# --------------------------------------------------------------------------------------------------


def read_clip_list(path: str | os.PathLike) -> list[ListEntry]:
    """Read a ``--list`` file: plain ids (one per line) or VGG-Sound CSV rows; or a bundled list by name
    (``flickr_10k``, ``vggss_144k``, ...; see :data:`sspl.data.lists.BUNDLED_LISTS`).

    The rows are read by :func:`sspl.data.lists.parse_rows`, as ``data.train_list`` is, so the two give
    the same ids; ``.gz`` files are read too. An id repeated with the same label and split keeps its first
    row; one repeated with another label or split is an error (which row is right cannot be guessed).

    Raises:
        DataError: the file is missing, not UTF-8, holds no ids, names an unknown split, or gives one id
            two labels or splits.
    """
    text, source = read_list_text(path)
    entries: dict[str, ListEntry] = {}
    lines: dict[str, int] = {}
    for row in parse_rows(text, source):
        if row.split not in SPLITS:
            raise DataError(f"{source}:{row.line}: unknown split {row.split!r} (use one of {SPLITS[:-1]})")
        entry = ListEntry(plain_name(row.id, f"{source}:{row.line}"), row.label, row.split)
        first = entries.setdefault(row.id, entry)
        if first != entry:
            raise DataError(
                f"{source}:{row.line}: {row.id} is listed again with label {row.label!r} and split "
                f"{row.split!r}; line {lines[row.id]} gives {first.label!r} and {first.split!r}"
            )
        lines.setdefault(row.id, row.line)
    return list(entries.values())


def _check_list_overlap(
    list_file: str | os.PathLike, entries: Sequence[ListEntry], allow_overlap: bool
) -> None:
    """Rows the list itself marks ``test`` are its test split (the official VGG-Sound CSV holds the VGG-SS
    clips that way) and are not checked, as ``sspl train`` never trains on them. Of the other rows, a list
    that is a test set (every id a benchmark test id) is prepared as one; a list that holds some test ids
    among others is a training list that leaks them, refused unless allowed."""
    ids = [e.id for e in entries if e.split != "test"]
    if not ids:
        log.info("%s: every row is marked test: preparing a test set", list_file)
        return
    hits = set().union(*find_overlap(ids).values())
    if hits and hits >= set(ids):
        log.info("%s: every id is a benchmark test id: preparing a test set", list_file)
        return
    check_overlap(ids, allow_overlap=allow_overlap)


def select_sources(
    sources: Sequence[ClipSource], entries: Sequence[ListEntry], src: str | os.PathLike = "SRC"
) -> list[ClipSource]:
    """Pick and label the sources named by a list.

    A list id matches a source of the same id; VGG-Sound ids also match across zero-padding
    (``abc_30`` and ``abc_000030``) and a whole-video file ``<ytid>.mp4``. Matched sources take the
    list's id, label and split; a list id without a file gets a source whose ``error`` says so. A
    whole-video file serves one list clip only: the start second is not looked up in it, so several list
    clips of one video would all be its middle frame; each of them gets an ``error`` naming the others.

    Returns:
        One source per list entry, sorted by id.
    """
    exact = {s.id: s for s in sources}
    by_clip: dict[tuple[str, int | None], ClipSource] = {}
    for s in sources:
        by_clip.setdefault(vggsound_clip(s.id), s)
    selected = []
    for entry in entries:
        source = exact.get(entry.id)
        if source is None:
            ytid, start = vggsound_clip(entry.id)
            source = by_clip.get((ytid, start)) or (by_clip.get((ytid, None)) if start is not None else None)
        if source is None:
            source = ClipSource(entry.id, "", "", error=f"{src}: no source file for id {entry.id!r}")
        selected.append(replace(source, id=entry.id, label=entry.label, split=entry.split or source.split))
    sharing: dict[str, list[str]] = {}
    for s in selected:
        if s.visual and not s.error:
            sharing.setdefault(s.visual, []).append(s.id)
    shared = {visual: ids for visual, ids in sharing.items() if len(ids) > 1}
    selected = [
        replace(
            s,
            error=f"{s.visual}: one file for the list clips {', '.join(sorted(shared[s.visual]))}; name each "
            "clip's file <ytid>_<start> so that each is its own clip",
        )
        if s.visual in shared
        else s
        for s in selected
    ]
    return sorted(selected, key=lambda s: s.id)


# --------------------------------------------------------------------------------------------------
# One clip
# --------------------------------------------------------------------------------------------------


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


def _frames_folder_middle(folder: str) -> str:
    files = [p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise DataError(f"{folder}: no frame images (.jpg/.png) in the frames folder")
    files.sort(key=lambda p: _natural_key(p.name))
    return str(files[len(files) // 2])


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


def _relpaths(clip_id: str) -> tuple[str, str, str]:
    return f"frames/{clip_id}.jpg", f"audio/{clip_id}.wav", f"spect/{clip_id}.npy"


def prepare_clip(
    source: ClipSource, out: str | os.PathLike, audio_seconds: float = CLIP_SECONDS
) -> ManifestRow:
    """Prepare one clip into ``out`` and return its manifest row; failures become a ``failed`` row.

    Writes ``frames/<id>.jpg``, ``spect/<id>.npy`` and ``audio/<id>.wav`` (each atomically) as described
    in the module docstring.

    Args:
        source: the clip.
        out: the dataset folder.
        audio_seconds: seconds of audio kept in the WAV (3 = the official normalised clip).

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
        frame_rel, audio_rel, spect_rel = _relpaths(source.id)
        _save_frame(out / frame_rel, image, frame_source)
        atomic_save_npy(out / spect_rel, spect)
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
    if source.kind == _KIND_VIDEO:
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
    image_path = _frames_folder_middle(source.visual) if source.kind == _KIND_FRAMES else source.visual
    image = _load_image(image_path)
    native, rate = load_audio(source.audio, None)
    _check_long_enough(native, rate, source.audio)
    _check_not_silent(native, source.audio)
    wave = resample(native, rate, SAMPLE_RATE_HZ)
    _check_not_silent(_kept_audio(wave, None, CLIP_SECONDS), source.audio)  # the 3 s that are kept
    return image, image_path, wave, None, native.shape[0] / rate, rate


# --------------------------------------------------------------------------------------------------
# Running many clips
# --------------------------------------------------------------------------------------------------


def _init_worker(command_pid: int) -> None:
    # SIGKILL of the command runs no clean-up: the worker must see it die by itself (and then the
    # forkserver and resource tracker, which live as long as a worker does, end too).
    end_with(command_pid)
    # One process per core: keep torch's intra-op pool (and FFmpeg, via threads=1) to one thread.
    torch.set_num_threads(1)
    # Ctrl-C is the parent's to handle: it stops the pool (_close_pool) and keeps what was recorded.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _crashed_row(source: ClipSource) -> ManifestRow:
    return ManifestRow(
        id=source.id,
        label=source.label,
        split=source.split,
        status=STATUS_FAILED,
        error=f"{source.visual}: the decoder crashed the worker process on this file",
    )


def _mp_context() -> multiprocessing.context.BaseContext:
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        # Workers fork from a server that imported this module (and torch) once, rather than each
        # importing them again as spawned processes do: start-up falls from about 1.5 s per worker to
        # one import per session. Forking the caller itself is avoided: it may hold threads.
        context.set_forkserver_preload([__name__])
        return context
    return multiprocessing.get_context("spawn")


def _pool(workers: int) -> cf.ProcessPoolExecutor:
    return cf.ProcessPoolExecutor(
        max_workers=workers, mp_context=_mp_context(), initializer=_init_worker, initargs=(os.getpid(),)
    )


def _close_pool(pool: cf.ProcessPoolExecutor, completed: bool) -> None:
    """Shut a pool down; after a run that ended early (Ctrl-C, an error), at once: pending jobs are
    cancelled and the clips being decoded are abandoned, as waiting for a long video to finish decoding
    would make Ctrl-C seem to hang. An abandoned clip has no manifest row yet, so the next run redoes it.
    """
    if completed:
        pool.shutdown(cancel_futures=True)
        return
    terminate = getattr(pool, "terminate_workers", None)  # Python 3.14+
    if terminate is not None:
        terminate()
        return
    processes = list((pool._processes or {}).values())  # no public handle on the workers before 3.14
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=10)


def _run_isolated(
    jobs: Iterable[ClipSource], fn: Callable[[ClipSource], ManifestRow]
) -> Iterator[ManifestRow]:
    """Run jobs one at a time in a one-process pool, so a crash points at the file that caused it."""
    pool = _pool(1)
    completed = False
    try:
        for job in jobs:
            try:
                yield pool.submit(fn, job).result()
            except cf.process.BrokenProcessPool:
                yield _crashed_row(job)
                pool.shutdown(cancel_futures=True)
                pool = _pool(1)
        completed = True
    finally:
        _close_pool(pool, completed)


def _run_jobs(
    jobs: Sequence[ClipSource], fn: Callable[[ClipSource], ManifestRow], workers: int
) -> Iterator[ManifestRow]:
    """Yield ``fn(job)`` for every job, in completion order, using ``workers`` processes.

    A worker that dies (FFmpeg crashing on a damaged file) breaks the pool: the jobs then in flight are
    rerun one by one in isolation, the one that crashes again gets a failed row, and the rest continue.
    Closing the generator early (Ctrl-C, an error in the caller) stops the workers at once.
    """
    if workers <= 1:
        previous = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for job in jobs:
                yield fn(job)
        finally:
            torch.set_num_threads(previous)
        return
    pending = deque(jobs)
    while pending:
        pool = _pool(workers)
        in_flight: dict[cf.Future, ClipSource] = {}
        suspects: list[ClipSource] = []
        completed = False
        try:
            while pending or in_flight:
                while pending and len(in_flight) < workers * JOBS_PER_WORKER:
                    job = pending.popleft()
                    in_flight[pool.submit(fn, job)] = job
                finished, _ = cf.wait(in_flight, return_when=cf.FIRST_COMPLETED)
                for future in finished:
                    job = in_flight.pop(future)
                    try:
                        row = future.result()
                    except cf.process.BrokenProcessPool:
                        suspects.append(job)
                        continue
                    yield row
                if suspects:
                    suspects.extend(in_flight.values())
                    in_flight.clear()
                    break
            completed = True
        finally:
            _close_pool(pool, completed)  # left early (Ctrl-C in the caller's loop, an error): at once
        if suspects:
            log.warning("a worker process died; rerunning %d clip(s) one by one", len(suspects))
            yield from _run_isolated(suspects, fn)


# --------------------------------------------------------------------------------------------------
# Shards, manifests, meta
# --------------------------------------------------------------------------------------------------


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``"i/n"`` (``0 <= i < n``, zero-based like SLURM array indices) into ``(i, n)``.

    Raises:
        DataError: when the text is not of that form.
    """
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if match is None:
        raise DataError(f"--shard {text!r}: expected i/n, e.g. 0/4 (i counts from 0)")
    i, n = int(match[1]), int(match[2])
    if n < 1 or not 0 <= i < n:
        raise DataError(f"--shard {text!r}: need 0 <= i < n (shards are numbered 0 .. n-1)")
    return i, n


def shard_slice(ids: Sequence[str], shard: tuple[int, int]) -> list[str]:
    """The ids of shard ``(i, n)``: every n-th id of the sorted ids, starting at the i-th."""
    i, n = shard
    return sorted(ids)[i::n]


def _shard_dir(out: Path, shard: tuple[int, int]) -> Path:
    return out / SHARDS_DIR / f"{shard[0]}-of-{shard[1]}"


def _read_rows(folder: Path) -> dict[str, ManifestRow]:
    """The rows recorded in ``folder``: its manifest, then the journal of clips finished since."""
    rows: dict[str, ManifestRow] = {}
    if (folder / MANIFEST_NAME).is_file():
        try:
            rows = {row.id: row for row in read_manifest(folder)}
        except ValueError as e:
            raise DataError(str(e)) from e
    return _merge_rows(rows, _read_journal(folder))


def _read_journal(folder: Path) -> dict[str, ManifestRow]:
    path = folder / JOURNAL_NAME
    if not path.is_file():
        return {}
    rows: dict[str, ManifestRow] = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = ManifestRow(**json.loads(line))
        except (json.JSONDecodeError, TypeError):
            continue  # the last line of a run killed while writing it
        rows[row.id] = row
    return rows


class _Journal:
    """Append-only record of finished clips, so a run killed between manifest flushes loses none."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / JOURNAL_NAME
        self._file = open(self.path, "a", encoding="utf-8")  # closed by close()

    def add(self, row: ManifestRow) -> None:
        self._file.write(json.dumps(asdict(row)) + "\n")
        self._file.flush()  # in the OS's hands: survives the process being killed

    def clear(self) -> None:
        """After the manifest was rewritten with every row: the journal holds nothing new."""
        self._file.seek(0)
        self._file.truncate()

    def close(self) -> None:
        self._file.close()
        if self.path.is_file() and self.path.stat().st_size == 0:
            self.path.unlink()


def _files_present(out: Path, row: ManifestRow) -> bool:
    """Whether a recorded clip is finished: done, and its three files are in ``out`` (a path that leads
    out of ``out``, as a crafted manifest may hold, is not: the clip is prepared again)."""
    if not row.ok:
        return False
    try:
        paths = [
            path_inside(out, p, f"{out / MANIFEST_NAME}: {row.id}") for p in (row.frame, row.audio, row.spect)
        ]
    except DataError:
        return False
    return all(p.is_file() for p in paths)


def _merge_rows(*tables: dict[str, ManifestRow]) -> dict[str, ManifestRow]:
    """Later tables win, except that a failed row never replaces a done one."""
    merged: dict[str, ManifestRow] = {}
    for table in tables:
        for clip_id, row in table.items():
            if clip_id in merged and merged[clip_id].ok and not row.ok:
                continue
            merged[clip_id] = row
    return merged


def _part_dirs(out: Path) -> list[Path]:
    root = out / SHARDS_DIR
    if not root.is_dir():
        return []
    return sorted(d for d in root.iterdir() if (d / MANIFEST_NAME).is_file() or (d / JOURNAL_NAME).is_file())


def merge_shards(out: str | os.PathLike) -> PrepareSummary:
    """Merge every shard part under ``out/shards`` (and an existing ``manifest.csv``) into ``manifest.csv``.

    Returns:
        Counts of the merged manifest (``done`` and ``failed`` rows; ``skipped`` is 0).

    Raises:
        DataError: ``out`` holds no shard parts.
        OutputInUseError: a plain (unsharded) run is writing ``out``.
    """
    out = Path(out)
    if not _part_dirs(out):
        raise DataError(f"{out}: no shard manifests under {out / SHARDS_DIR} to merge")
    check_output_folder(out, "OUT")
    with _hold_briefly(out):
        rows = _merge_rows(_read_rows(out), *(_read_rows(p) for p in _part_dirs(out)))
        write_manifest(out, list(rows.values()))
    done = sum(r.ok for r in rows.values())
    return PrepareSummary(out, done=done, skipped=0, failed=len(rows) - done, merged=True)


def _check_out(out: Path, meta: dict) -> None:
    """Refuse an output folder prepared with other settings, or a non-empty folder of something else."""
    if (out / META_NAME).is_file():
        try:
            existing = read_meta(out)
        except ValueError as e:
            raise DataError(str(e)) from e
        for key in ("kind", "audio_seconds", "source"):
            if existing.get(key, meta[key]) != meta[key]:
                raise DataError(
                    f"{out}: already holds a dataset prepared with {key}={existing.get(key)!r}, not "
                    f"{meta[key]!r}; prepare into a new folder (or give the same settings to resume)"
                )
    elif out.exists() and not out.is_dir():
        raise DataError(f"{out}: is a file, not a folder for the prepared dataset")
    # shards/ alone is not "something else": a shard run started just before this one has made it, and
    # not yet its meta
    elif out.is_dir() and any(not p.name.startswith(".") and p.name != SHARDS_DIR for p in out.iterdir()):
        raise DataError(f"{out}: exists, is not empty and is not a prepared dataset (no {META_NAME})")


# --------------------------------------------------------------------------------------------------
# One writer per output
# --------------------------------------------------------------------------------------------------

#: how long a shard run waits for ``OUT`` while another shard holds it for an instant (to check or merge)
SHARD_WAIT_SECONDS = 5.0


@contextlib.contextmanager
def _hold(out: Path, shard: tuple[int, int] | None) -> Iterator[None]:
    """Hold the folders a run writes its records in, for the whole run (:func:`sspl.outputs.output_lock`).

    A plain run records every clip in ``OUT/manifest.csv``: it holds ``OUT`` and every shard part in it,
    so no other run (plain or sharded) writes there meanwhile; two lists prepared at once into one
    ``OUT`` would each rewrite the manifest from the rows it knows, losing the other's. A shard run
    records in its own part, so it holds only that part (the shards of one ``OUT`` run side by side),
    after checking that no plain run holds ``OUT``.
    """
    with contextlib.ExitStack() as stack:
        if shard is None:
            stack.enter_context(output_lock(out, "sspl prepare"))
            parts = out / SHARDS_DIR  # every part, also one a shard run has only just made
            for part in sorted(parts.iterdir()) if parts.is_dir() else ():
                if part.is_dir():
                    stack.enter_context(output_lock(part, "sspl prepare"))
        else:
            command = f"sspl prepare --shard {shard[0]}/{shard[1]}"
            stack.enter_context(output_lock(_shard_dir(out, shard), command))
            with _hold_briefly(out):
                pass
        yield


@contextlib.contextmanager
def _hold_briefly(out: Path) -> Iterator[None]:
    """Hold ``OUT`` for a short step (a shard's check, a merge), waiting a little for another shard
    doing the same; a plain run holds it for longer, and is reported."""
    deadline = time.monotonic() + SHARD_WAIT_SECONDS
    while True:
        held = contextlib.ExitStack()
        try:
            held.enter_context(output_lock(out, "sspl prepare --merge"))
        except OutputInUseError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)
            continue
        with held:
            yield
        return


def _remove_stale_temps(out: Path, ids: Iterable[str]) -> None:
    """Remove the temporary files a killed run left for the clips ``ids`` (only those: a shard run
    beside this one may be writing its own)."""
    wanted = {name for clip_id in ids for name in _relpaths(clip_id)}
    for sub in ("frames", "audio", "spect"):
        folder = out / sub
        if not folder.is_dir():
            continue
        # `.<name>.<random>.tmp`: only hidden files are looked at, then only names of this run's clips
        names = {f"{sub}/{p.name[1:].rsplit('.', 2)[0]}" for p in folder.iterdir() if p.name.startswith(".")}
        stale = [name.split("/", 1)[1] for name in names & wanted]
        if stale:
            remove_stale_temps(folder, stale)


# --------------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------------


def prepare(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    workers: int | None = None,
    list_file: str | os.PathLike | None = None,
    shard: tuple[int, int] | str | None = None,
    audio_seconds: float = CLIP_SECONDS,
    layout: str = "auto",
    allow_overlap: bool = False,
    progress: bool = True,
) -> PrepareSummary:
    """Prepare a dataset folder from videos, a SoundNet-Flickr dump or image + audio pairs.

    Args:
        src: source folder (see :func:`find_sources`).
        out: dataset folder (created; an existing one is resumed).
        workers: processes (default: all cores); 1 runs in this process.
        list_file: plain id list or VGG-Sound CSV selecting and labelling clips (see
            :func:`read_clip_list`); its ids, except rows marked ``test``, are checked against the
            benchmark test sets first.
        shard: ``(i, n)`` or ``"i/n"`` with ``0 <= i < n``: prepare only that slice (see module docstring).
        audio_seconds: seconds of audio kept per clip; 3 (default) stores the official normalised clip.
        layout: ``"auto"``, ``"videos"``, ``"flickr"`` or ``"pairs"``.
        allow_overlap: with a list, only warn when its ids overlap a benchmark test set.
        progress: show a progress bar on stderr.

    Returns:
        The counts of this run (only the clips it was asked for).

    Raises:
        DataError: bad source folder, list, shard or output folder, or test-set overlap in the list.
    """
    src, out = Path(src), Path(out)
    if out.resolve() == src.resolve():
        raise DataError(f"{out}: the output folder must differ from the source folder")
    if not 0 < audio_seconds <= MAX_AUDIO_SECONDS:  # also refuses nan and inf
        raise DataError(
            f"--audio-seconds must be more than 0 and at most {MAX_AUDIO_SECONDS:g}, got {audio_seconds}"
        )
    if isinstance(shard, str):
        shard = parse_shard(shard)
    elif shard is not None:
        shard = parse_shard(f"{shard[0]}/{shard[1]}")
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers < 1:
        raise DataError(f"--workers must be at least 1, got {workers}")

    entries = read_clip_list(list_file) if list_file is not None else None
    if entries is not None:
        _check_list_overlap(list_file, entries, allow_overlap)
    kind, sources = find_sources(src, layout, exclude=out)
    if entries is not None:
        sources = select_sources(sources, entries, src)
    meta = {
        "kind": kind,
        "audio_seconds": float(audio_seconds),
        "audio_normalized": audio_seconds == CLIP_SECONDS,
        "sample_rate": SAMPLE_RATE_HZ,
        "frame_size": FRAME_SIZE,
        "source": str(src.resolve()),
    }
    _check_out(out, meta)
    check_output_folder(out, "OUT")
    with _hold(out, shard):
        if (out / META_NAME).is_file():  # again: a run that held OUT until now may have written it
            _check_out(out, meta)
        try:
            write_meta(out, **meta)
            return _prepare_sources(out, sources, shard, audio_seconds, workers, progress)
        except OSError as e:
            if e.errno not in OUTPUT_FULL_ERRNOS:
                raise
            raise SSPLError(
                f"{out}: cannot write the prepared dataset: {e.strerror}; the clips finished so far are kept: "
                "make room and rerun the same command to resume"
            ) from e


def _prepare_sources(
    out: Path,
    sources: Sequence[ClipSource],
    shard: tuple[int, int] | None,
    audio_seconds: float,
    workers: int,
    progress: bool,
) -> PrepareSummary:
    """The work of :func:`prepare`, once ``out`` is checked and held."""
    all_ids = [s.id for s in sources]
    ids = set(shard_slice(all_ids, shard)) if shard is not None else set(all_ids)
    record_dir = _shard_dir(out, shard) if shard is not None else out
    _remove_stale_temps(out, ids)
    # Every clip recorded anywhere (the manifest, and the parts of sharded runs) counts as done.
    earlier = _merge_rows(_read_rows(out), *(_read_rows(p) for p in _part_dirs(out)))
    rows = dict(earlier)

    done = skipped = failed = 0
    todo: list[ClipSource] = []
    for source in sources:
        if source.id not in ids:
            continue
        old = earlier.get(source.id)
        if old is not None and _files_present(out, old):
            # A rerun without the --list keeps the labels an earlier run recorded.
            rows[source.id] = replace(old, label=source.label or old.label, split=source.split or old.split)
            skipped += 1
            if source.error:
                log.warning(
                    "%s: kept as prepared earlier; its source now fails (%s)", source.id, source.error
                )
        elif source.error:
            rows[source.id] = prepare_clip(source, out, audio_seconds)  # fails at once, nothing to decode
            failed += 1
        else:
            todo.append(source)

    bar = tqdm(total=len(todo), disable=not progress, unit="clip", desc="prepare", dynamic_ncols=True)
    fn = _ClipJob(str(out), float(audio_seconds))
    last_flush = time.monotonic()
    record_dir.mkdir(parents=True, exist_ok=True)
    journal = _Journal(record_dir)
    try:
        for row in _run_jobs(todo, fn, min(workers, max(len(todo), 1))):
            rows[row.id] = row
            journal.add(row)
            done += row.ok
            failed += not row.ok
            bar.update(1)
            if time.monotonic() - last_flush >= MANIFEST_FLUSH_SECONDS:
                _write_rows(record_dir, rows, ids if shard is not None else None)
                journal.clear()
                last_flush = time.monotonic()
    finally:
        bar.close()
        _write_rows(record_dir, rows, ids if shard is not None else None)
        journal.clear()
        journal.close()

    merged = False
    if shard is not None:
        recorded = _merge_rows(*(_read_rows(p) for p in _part_dirs(out)))
        if all(clip_id in recorded for clip_id in all_ids):
            merge_shards(out)
            merged = True
    return PrepareSummary(out, done=done, skipped=skipped, failed=failed, merged=merged)


def _write_rows(folder: Path, rows: dict[str, ManifestRow], only: set[str] | None) -> None:
    """Write the manifest (a shard part keeps only the shard's own ids)."""
    kept = rows.values() if only is None else (r for r in rows.values() if r.id in only)
    write_manifest(folder, list(kept))


@dataclass(frozen=True)
class _ClipJob:
    """A picklable ``prepare_clip`` with its settings bound, for the worker processes."""

    out: str
    audio_seconds: float

    def __call__(self, source: ClipSource) -> ManifestRow:
        return prepare_clip(source, self.out, self.audio_seconds)
