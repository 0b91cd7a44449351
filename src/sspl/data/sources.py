"""Where the clips of `sspl prepare` come from: the three source layouts, and ``--list`` selection.

A source folder is one of three layouts (:func:`find_sources`): video files (recursively), a
SoundNet-Flickr dump (``frames/`` + ``audio/``), or image + audio pairs (AVSBench's frames and tracks
among them). Each clip becomes a :class:`ClipSource`; what is known to be wrong before decoding (a
missing audio file, two files with one id) travels with it as its ``error``, so that the clip fails
alone. A ``--list`` file (:func:`read_clip_list`) picks and labels clips (:func:`select_sources`).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import DataError
from ..paths import plain_name
from .lists import (
    EXTENDED_LISTS,
    check_overlap,
    find_overlap,
    parse_pairs,
    parse_rows,
    read_list_text,
    test_ids,
    vggsound_clip,
)
from .manifest import SPLITS
from .video import VIDEO_SUFFIXES

__all__ = [
    "AUDIO_SUFFIXES",
    "IMAGE_SUFFIXES",
    "KIND_FRAMES",
    "KIND_IMAGE",
    "KIND_VIDEO",
    "LAYOUTS",
    "ClipSource",
    "ListEntry",
    "check_list_overlap",
    "find_sources",
    "middle_frame_file",
    "read_clip_list",
    "select_sources",
]

log = logging.getLogger(__name__)

LAYOUTS = ("auto", "videos", "flickr", "pairs")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
AUDIO_SUFFIXES = (".wav", ".mp3", ".flac", ".ogg", ".m4a")
FLICKR_AUDIO_DIRS = ("audio", "mp3")

#: what a :class:`ClipSource` is: a video file, a Flickr frames folder, or one image
KIND_VIDEO, KIND_FRAMES, KIND_IMAGE = "video", "frames", "image"
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
        audio: the audio file ("" for videos; "" when a Flickr id or an image has no audio file); for a pair
            of an extended set (a frame with another clip's sound), that clip's audio or video file.
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
    """One row of a ``--list`` file: the clip id and, for VGG-Sound CSV rows, its label and split; for a
    pair of an extended set's list (:func:`sspl.data.lists.parse_pairs`), the clip whose frame it shows
    (``video``) and the clip whose sound it plays (``audio``), both "" for any other row."""

    id: str
    label: str = ""
    split: str = ""
    video: str = ""
    audio: str = ""


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
            clip_id, kind = entry.name, KIND_FRAMES
        elif entry.suffix.lower() in IMAGE_SUFFIXES:  # one frame per clip
            clip_id, kind = entry.stem, KIND_IMAGE
        else:
            continue
        audio = audio_files.get(clip_id)
        error = "" if audio else f"{entry}: no audio file {clip_id}.mp3|.wav in audio/ or mp3/"
        sources.append(ClipSource(clip_id, kind, str(entry), str(audio or ""), error=error))
    return _unique_by_id(sources)


def _video_sources(src: Path, exclude: Path | None) -> list[ClipSource]:
    files = [p for p in _walk(src, exclude) if p.suffix.lower() in VIDEO_SUFFIXES]
    return _unique_by_id(ClipSource(p.stem, KIND_VIDEO, str(p)) for p in files)


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
            ClipSource(key[1], KIND_IMAGE, str(image or ""), str(audio or ""), split=split, error=error)
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


def middle_frame_file(folder: str) -> str:
    """The frame of a SoundNet-Flickr frames folder: file ``len // 2`` of its images in natural name order
    (``f2.jpg`` before ``f10.jpg``), since those dumps carry no timestamps."""
    files = [p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise DataError(f"{folder}: no frame images (.jpg/.png) in the frames folder")
    files.sort(key=lambda p: _natural_key(p.name))
    return str(files[len(files) // 2])


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
    pairs = parse_pairs(text, source)
    if pairs is not None:
        return _extended_entries(path, pairs)
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


def _extended_entries(path: str | os.PathLike, pairs: Sequence) -> list[ListEntry]:
    """An extended set's list: its pairs (a clip with its own id when frame and sound are one clip's), all
    test clips; a bundled one (``flickr_test_plus_silent``, ``vggss_test_plus_silent``) also gives its
    benchmark's test clips, so that one ``--list`` prepares the whole extended set, as SLAVC reads it."""
    entries = {
        p.id: ListEntry(p.id, split="test", video=p.video, audio=p.audio) for p in pairs if p.id != p.video
    }
    entries.update({p.id: ListEntry(p.id, split="test") for p in pairs if p.id == p.video})
    benchmark = next((b for b, name in EXTENDED_LISTS.items() if str(path) == name), None)
    if benchmark is not None:
        entries.update(
            {i: ListEntry(i, split="test") for i in test_ids(benchmark, "full") if i not in entries}
        )
    return sorted(entries.values(), key=lambda e: e.id)


def check_list_overlap(
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

    def find(clip_id: str) -> ClipSource | None:
        source = exact.get(clip_id)
        if source is None:
            ytid, start = vggsound_clip(clip_id)
            source = by_clip.get((ytid, start)) or (by_clip.get((ytid, None)) if start is not None else None)
        return source

    selected = []
    for entry in entries:
        source = _paired(entry, find, src) if entry.audio else find(entry.id)
        if source is None:
            source = ClipSource(entry.id, "", "", error=f"{src}: no source file for id {entry.id!r}")
        selected.append(replace(source, id=entry.id, label=entry.label, split=entry.split or source.split))
    own_sound = {e.id for e in entries if not e.audio}  # a pair's frame is another list clip's, on purpose
    sharing: dict[str, list[str]] = {}
    for s in selected:
        if s.visual and not s.error and s.id in own_sound:
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


def _paired(entry: ListEntry, find, src: str | os.PathLike) -> ClipSource:
    """The source of a pair: the frame of clip ``entry.video`` with the sound of clip ``entry.audio``: that
    clip's audio file or video file, or an audio file of that name beside the frame clip's own (a
    SoundNet-Flickr dump's ``audio/`` holds sounds whose frames it does not have)."""
    video, audio = find(entry.video), find(entry.audio)
    if audio is not None:
        sound = audio.visual if audio.kind == KIND_VIDEO else audio.audio
    else:
        sound = _sibling_audio(video, entry.audio)
    missing = [
        f"{what} {clip_id!r}"
        for what, clip_id, found in (("frame", entry.video, video), ("sound", entry.audio, sound))
        if not found
    ]
    if missing:
        return ClipSource(
            entry.id, "", "", error=f"{src}: no source file for the {' and the '.join(missing)}"
        )
    return replace(
        video,
        audio=sound,
        error=video.error or (audio.error if audio is not None and audio.kind == KIND_VIDEO else ""),
    )


def _sibling_audio(source: ClipSource | None, clip_id: str) -> str:
    """An audio file named ``clip_id`` in the folder of ``source``'s own audio file, or ""."""
    if source is None or not source.audio or source.kind == KIND_VIDEO:
        return ""
    for suffix in AUDIO_SUFFIXES:
        candidate = Path(source.audio).with_name(clip_id + suffix)
        if candidate.is_file():
            return str(candidate)
    return ""
