"""The records of `sspl prepare`: manifest rows, the journal of finished clips, and shard parts.

A run records each finished clip in ``manifest.journal.jsonl`` at once (:class:`Journal`) and rewrites
``manifest.csv`` from all rows now and then (:func:`write_rows`), which empties the journal; so a killed
run loses only the clips it was working on. A plain run records in ``OUT``, shard ``i`` of ``n`` in
``OUT/shards/<i>-of-<n>`` (:func:`shard_dir`); :func:`all_rows` reads them all back, a done row never
replaced by a failed one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from ..errors import DataError
from ..paths import path_inside
from .manifest import JOURNAL_NAME, MANIFEST_NAME, ManifestRow, read_manifest, write_manifest

__all__ = [
    "SHARDS_DIR",
    "Journal",
    "all_rows",
    "files_present",
    "merge_rows",
    "parse_shard",
    "part_dirs",
    "read_rows",
    "shard_dir",
    "shard_slice",
    "write_rows",
]

SHARDS_DIR = "shards"


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


def shard_dir(out: Path, shard: tuple[int, int]) -> Path:
    """The folder shard ``(i, n)`` records its clips in: ``out/shards/<i>-of-<n>``."""
    return out / SHARDS_DIR / f"{shard[0]}-of-{shard[1]}"


def read_rows(folder: Path) -> dict[str, ManifestRow]:
    """The rows recorded in ``folder``: its manifest, then the journal of clips finished since."""
    rows: dict[str, ManifestRow] = {}
    if (folder / MANIFEST_NAME).is_file():
        try:
            rows = {row.id: row for row in read_manifest(folder)}
        except ValueError as e:
            raise DataError(str(e)) from e
    return merge_rows(rows, _read_journal(folder))


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


class Journal:
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


def files_present(out: Path, row: ManifestRow) -> bool:
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


def merge_rows(*tables: dict[str, ManifestRow]) -> dict[str, ManifestRow]:
    """Later tables win, except that a failed row never replaces a done one."""
    merged: dict[str, ManifestRow] = {}
    for table in tables:
        for clip_id, row in table.items():
            if clip_id in merged and merged[clip_id].ok and not row.ok:
                continue
            merged[clip_id] = row
    return merged


def part_dirs(out: Path) -> list[Path]:
    """The shard parts under ``out/shards`` that have recorded a clip, sorted."""
    root = out / SHARDS_DIR
    if not root.is_dir():
        return []
    return sorted(d for d in root.iterdir() if (d / MANIFEST_NAME).is_file() or (d / JOURNAL_NAME).is_file())


def all_rows(out: Path) -> dict[str, ManifestRow]:
    """Every clip recorded in ``out``: its manifest and journal, then those of each shard part."""
    return merge_rows(read_rows(out), *(read_rows(p) for p in part_dirs(out)))


def write_rows(folder: Path, rows: dict[str, ManifestRow], only: set[str] | None) -> None:
    """Write the manifest (a shard part keeps only the shard's own ids)."""
    kept = rows.values() if only is None else (r for r in rows.values() if r.id in only)
    write_manifest(folder, list(kept))
