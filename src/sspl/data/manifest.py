"""The prepared-dataset format: one folder that `sspl prepare` and `sspl synth` write and every other
command reads.

Layout (paths in the manifest are relative to the folder)::

    DIR/
      meta.json          {"format": "sspl-prepared", "version": 1, "kind": "videos" | "flickr" |
                          "pairs" | "synth", "audio_seconds": 3.0, ...}
      manifest.csv       one row per clip (see ``ManifestRow``)
      frames/<id>.jpg    the middle frame, 256 x 256 RGB, bicubic, JPEG quality 95
      audio/<id>.wav     16 kHz mono float32: the official 3-s clip (tiled, centred, normalised), or
                         ``--audio-seconds`` of audio centred on the frame
      spect/<id>.npy     3 x 96 x 64 float32 VGGish log-mel patches of the 3-s clip
      audio_native/<id>.wav  only with ``sspl prepare --native-audio``: the released EZ-VSL / SLAVC / FNAC
                         models' clip, 16-bit PCM mono at the source's own rate: the 3 s from the centre of
                         the audio track, tiled when short (:func:`sspl.spectrogram.load_centre_clip`)
      frames_native/<id>.jpg | .png  only with ``sspl prepare --native-frames``: the frame at its source size,
                         as the released models' code reads it: a source JPEG copied byte for byte (``.jpg``),
                         any other frame stored losslessly (``.png``)
      annotations.json   optional: boxes in the VGG-SS json format (normalised [x1, y1, x2, y2])

A row with ``status == "done"`` has all three files in place; preparation writes each file atomically
and the manifest last, so a killed run never leaves a row that claims a half-written file.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections import Counter
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from ..errors import DataError
from ..io import atomic_save_json, atomic_write_text
from ..paths import path_inside, plain_name

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "JOURNAL_NAME",
    "MANIFEST_NAME",
    "META_NAME",
    "NATIVE_AUDIO_DIR",
    "NATIVE_FRAMES_DIR",
    "NATIVE_FRAME_SUFFIXES",
    "STATUS_DONE",
    "STATUS_FAILED",
    "ManifestRow",
    "read_manifest",
    "read_meta",
    "write_manifest",
    "write_meta",
]

log = logging.getLogger(__name__)

FORMAT_NAME = "sspl-prepared"
FORMAT_VERSION = 1
#: the folder of ``sspl prepare --native-audio``'s clips (see the layout above)
NATIVE_AUDIO_DIR = "audio_native"
#: the folder of ``sspl prepare --native-frames``'s frames, and their suffixes in the order they are looked
#: up: a source JPEG's own bytes, then a lossless PNG (see the layout above)
NATIVE_FRAMES_DIR = "frames_native"
NATIVE_FRAME_SUFFIXES = (".jpg", ".png")
MANIFEST_NAME = "manifest.csv"
#: rows of clips `sspl prepare` finished since it last wrote the manifest
JOURNAL_NAME = "manifest.journal.jsonl"
META_NAME = "meta.json"
ANNOTATIONS_NAME = "annotations.json"
STATUS_DONE = "done"
STATUS_FAILED = "failed"
SPLITS = ("train", "val", "test", "pretrain", "")


@dataclass
class ManifestRow:
    """One clip of a prepared dataset.

    Attributes:
        id: clip id (file stem, VGG-Sound ``<ytid>_<start>``, Flickr id, or SynthAV ``synth_000123``).
        frame, audio, spect: paths relative to the dataset folder ("" when the clip failed).
        duration: seconds of audio in the source file (0 when unknown).
        sample_rate: source audio sample rate in Hz (0 when unknown).
        label: class label or "" (VGG-Sound class, SynthAV sound category).
        split: "train", "val", "test", "pretrain" or "".
        status: "done" or "failed".
        error: why it failed ("" when done).
    """

    id: str
    frame: str = ""
    audio: str = ""
    spect: str = ""
    duration: float = 0.0
    sample_rate: int = 0
    label: str = ""
    split: str = ""
    status: str = STATUS_DONE
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == STATUS_DONE


MANIFEST_FIELDS = [f.name for f in fields(ManifestRow)]


def read_manifest(root: str | os.PathLike) -> list[ManifestRow]:
    """Read ``root/manifest.csv``.

    A done row whose id is not a plain file name, or whose frame, audio or spect path leads outside
    ``root`` (``..``, an absolute path, a link out of the folder), is refused: it comes back as a failed
    row whose ``error`` names the manifest line and the reason (logged once as a warning), so no command
    opens or writes such a path, and the commands that report failed clips report it.

    Raises:
        FileNotFoundError: with a hint when ``root`` is not a prepared folder.
        ValueError: when a column is missing, a row has too few or too many fields, a number does not
            parse (names the line), the file is not UTF-8 text, or an id is listed twice (names it).
    """
    path = Path(root) / MANIFEST_NAME
    if not path.is_file():
        if (Path(root) / JOURNAL_NAME).is_file():
            raise FileNotFoundError(
                f"{path}: no manifest yet: {root} is an unfinished `sspl prepare` output; rerun the command "
                "that made it (it resumes)"
            )
        raise FileNotFoundError(
            f"{path}: no manifest; is {root} a folder written by `sspl prepare` or `sspl synth`?"
        )
    try:
        rows = _read_rows(path)
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); the file is damaged") from e
    repeated = sorted(i for i, n in Counter(row.id for row in rows).items() if n > 1)
    if repeated:
        raise ValueError(f"{path}: id(s) listed more than once: {', '.join(repeated[:10])}")
    return rows


def _read_rows(path: Path) -> list[ManifestRow]:
    rows: list[ManifestRow] = []
    inside = _InsideCheck(path.parent)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        missing = [c for c in MANIFEST_FIELDS if c not in columns]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
        for rec in reader:
            line = reader.line_num
            # DictReader pads a short row with None and gathers a long row's extras under None
            given = len(columns) - sum(v is None for k, v in rec.items() if k is not None)
            given += len(rec.get(None) or [])
            if given != len(columns):
                raise ValueError(
                    f"{path}:{line}: row has {given} of {len(columns)} fields; the file is damaged "
                    "(cut short or edited by hand)"
                )
            try:
                rows.append(
                    ManifestRow(
                        id=rec["id"],
                        frame=rec["frame"],
                        audio=rec["audio"],
                        spect=rec["spect"],
                        duration=float(rec["duration"] or 0.0),
                        sample_rate=int(float(rec["sample_rate"] or 0)),
                        label=rec["label"],
                        split=rec["split"],
                        status=rec["status"],
                        error=rec["error"],
                    )
                )
            except ValueError as e:
                raise ValueError(f"{path}:{line}: {e}") from e
            empty = [name for name in ("frame", "spect") if not getattr(rows[-1], name)]
            if rows[-1].ok and empty:
                raise ValueError(
                    f"{path}:{line}: clip {rows[-1].id} is marked done but its {' and '.join(empty)} "
                    "column is empty; the file is damaged"
                )
            if rows[-1].ok:
                rows[-1] = _refused_if_unsafe(rows[-1], inside, f"{path}:{line}")
    return rows


def write_manifest(root: str | os.PathLike, rows: list[ManifestRow]) -> None:
    """Write ``root/manifest.csv`` atomically, rows sorted by id."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=MANIFEST_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in sorted(rows, key=lambda r: r.id):
        writer.writerow(asdict(row))
    atomic_write_text(Path(root) / MANIFEST_NAME, buf.getvalue())


def write_meta(root: str | os.PathLike, kind: str, **extra: object) -> None:
    """Write ``root/meta.json`` (format name, version, kind and any extra fields)."""
    atomic_save_json(
        Path(root) / META_NAME, {"format": FORMAT_NAME, "version": FORMAT_VERSION, "kind": kind, **extra}
    )


def read_meta(root: str | os.PathLike) -> dict:
    """Read ``root/meta.json``; raises with a hint if absent or of another format."""
    path = Path(root) / META_NAME
    if not Path(root).is_dir():
        what = "is a file, not a folder" if Path(root).exists() else "no such folder"
        raise FileNotFoundError(
            f"{root}: {what}; expected a folder written by `sspl prepare` or `sspl synth`"
        )
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no meta.json; is {root} a folder written by `sspl prepare` or `sspl synth`?"
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    if meta.get("format") != FORMAT_NAME:
        raise ValueError(f"{path}: format {meta.get('format')!r} is not {FORMAT_NAME!r}")
    version = meta.get("version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise ValueError(f"{path}: version {version!r} is not a whole number")
    if not isinstance(meta.get("synth") or {}, dict):  # the settings `sspl synth` made the set with
        raise ValueError(f"{path}: 'synth' holds {type(meta['synth']).__name__}, expected an object")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{path}: format version {meta['version']} is newer than this sspl "
            f"({FORMAT_VERSION}); upgrade sspl"
        )
    return meta


#: refusals already logged by this process (a command may read its manifest more than once)
_warned: set[str] = set()


def _refused_if_unsafe(row: ManifestRow, inside: _InsideCheck, where: str) -> ManifestRow:
    """``row``, or a failed copy of it naming ``where`` when its id or a path of it is unsafe."""
    try:
        plain_name(row.id, where)
        for name, relative in (("frame", row.frame), ("audio", row.audio), ("spect", row.spect)):
            if relative:
                inside(relative, f"{where}: {name} of clip {row.id}")
    except DataError as e:
        message = f"{e}; the clip is refused"
        if message not in _warned:
            _warned.add(message)
            log.warning("%s", message)
        return replace(row, status=STATUS_FAILED, error=message)
    return row


#: path components that :class:`_InsideCheck` leaves to the full check
_ODD_PARTS = frozenset(("", ".", ".."))


class _InsideCheck:
    """:func:`sspl.paths.path_inside` for the many paths of one manifest, at the cost of a few.

    A path of the usual form ``folder/name`` is inside when its folder resolves inside the root (checked
    once per folder) and its name is not a symbolic link (the links of a folder are listed once); the
    other paths, and the links, get the full check.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.links: dict[str, set[str]] = {}

    def __call__(self, relative: str, where: str) -> None:
        parts = relative.split("/")
        if relative.startswith("/") or "\0" in relative or not _ODD_PARTS.isdisjoint(parts):
            path_inside(self.root, relative, where)
            return
        folder = "/".join(parts[:-1])
        if folder not in self.links:
            try:
                path_inside(self.root, folder or ".", where)
            except DataError:  # the folder leads out: the whole path decides (and is named)
                path_inside(self.root, relative, where)
                return
            try:
                with os.scandir(self.root / folder) as entries:
                    self.links[folder] = {e.name for e in entries if e.is_symlink()}
            except OSError:  # no such folder (yet): its files are reported missing when read
                self.links[folder] = set()
        if parts[-1] in self.links[folder]:
            path_inside(self.root, relative, where)
