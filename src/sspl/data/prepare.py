"""`sspl prepare`: raw videos, SoundNet-Flickr dumps or image + audio pairs to a prepared dataset.

The output follows the contract of :mod:`sspl.data.manifest`. The command takes its clips from a source
folder of one of three layouts, optionally picked and labelled by a ``--list`` file
(:mod:`sspl.data.sources`), and prepares each one into ``frames/<id>.jpg``, ``audio/<id>.wav`` and
``spect/<id>.npy`` (:mod:`sspl.data.extract`, which documents the files), in worker processes where a
decoder crash fails only its own clip (:mod:`sspl.data.pool`).

Robustness: each clip is prepared independently and any failure (corrupt file, no audio or video
stream, unknown codec, silent track, unreadable frame) becomes a ``failed`` manifest row with the
reason, never an abort. Files are written atomically and recorded in the manifest only after all three
exist. Each finished clip's row is appended to ``manifest.journal.jsonl`` at once, and the manifest is
rewritten atomically from all rows every ``MANIFEST_FLUSH_SECONDS`` and at the end (also on Ctrl-C),
which empties the journal: a killed run (even SIGKILL) loses only the clips it was working on
(:mod:`sspl.data.records`). A rerun reads the manifest and the journal, skips clips whose row is
``done`` and whose files are all present, and retries failed ones.

Sharding: ``shard=(i, n)`` with ``0 <= i < n`` takes every n-th id of the sorted selection starting at
``i`` and records its rows in ``shards/<i>-of-<n>/manifest.csv``; ``manifest.csv`` is merged from the
parts automatically by the shard that finds every selected id recorded, or on demand by
:func:`merge_shards`. One writer per output: a plain run holds ``OUT`` and every part, a shard run only
its own part (the shards of one ``OUT`` run side by side).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from tqdm.auto import tqdm

from ..audio import CLIP_SECONDS, MIN_AUDIO_SECONDS, SAMPLE_RATE_HZ, SILENT_PEAK_TO_PEAK
from ..errors import DataError, SSPLError
from ..outputs import OutputInUseError, check_output_folder, output_lock, remove_stale_temps
from .extract import FRAME_SIZE, JPEG_QUALITY, OUTPUT_FULL_ERRNOS, clip_relpaths, prepare_clip
from .manifest import JOURNAL_NAME as JOURNAL_NAME  # re-exported: where a run journals its clips
from .manifest import META_NAME, STATUS_FAILED, ManifestRow, read_meta, write_manifest, write_meta
from .pool import run_jobs
from .records import (
    SHARDS_DIR,
    Journal,
    all_rows,
    files_present,
    merge_rows,
    parse_shard,
    part_dirs,
    shard_dir,
    shard_slice,
    write_rows,
)
from .records import read_rows as _read_rows  # the name the fault tests read the records by
from .sources import (
    LAYOUTS,
    ClipSource,
    ListEntry,
    check_list_overlap,
    find_sources,
    read_clip_list,
    select_sources,
)

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

MANIFEST_FLUSH_SECONDS = 10.0
#: most audio a clip may keep (``--audio-seconds``): ten minutes of 16 kHz float32 is 38 MB per clip
MAX_AUDIO_SECONDS = 600.0
#: how long a shard run waits for ``OUT`` while another shard holds it for an instant (to check or merge)
SHARD_WAIT_SECONDS = 5.0


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
    native_audio: bool = False,
    native_frames: bool = False,
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
        native_audio: also keep each clip's input of the released EZ-VSL / SLAVC / FNAC models, 3 s from
            the centre of the track at the source's own rate, 16-bit mono (``audio_native/<id>.wav``;
            what ``model.audio_frontend=stft`` reads to reproduce their numbers).
        native_frames: also keep each clip's frame at its source size, as the released models read it (a
            source JPEG's own bytes, else lossless PNG: ``frames_native/<id>.jpg`` or ``.png``; what
            ``data.test_transform=resize`` reads, for evaluation and training views).
        layout: ``"auto"``, ``"videos"``, ``"flickr"`` or ``"pairs"``.
        allow_overlap: with a list, only warn when its ids overlap a benchmark test set.
        progress: show a progress bar on stderr.

    Returns:
        The counts of this run (only the clips it was asked for).

    Raises:
        DataError: bad source folder, list, shard or output folder, or test-set overlap in the list.
    """
    src, out = Path(src), Path(out)
    shard, workers = _check_options(src, out, audio_seconds, shard, workers)
    entries = read_clip_list(list_file) if list_file is not None else None
    if entries is not None:
        check_list_overlap(list_file, entries, allow_overlap)
    kind, sources = find_sources(src, layout, exclude=out)
    if entries is not None:
        sources = select_sources(sources, entries, src)
    meta = {
        "kind": kind,
        "audio_seconds": float(audio_seconds),
        "audio_normalized": audio_seconds == CLIP_SECONDS,
        "native_audio": bool(native_audio),
        "native_frames": bool(native_frames),
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
            job = _ClipJob(str(out), float(audio_seconds), bool(native_audio), bool(native_frames))
            return _prepare_sources(out, sources, shard, job, workers, progress)
        except OSError as e:
            if e.errno not in OUTPUT_FULL_ERRNOS:
                raise
            raise SSPLError(
                f"{out}: cannot write the prepared dataset: {e.strerror}; the clips finished so far are kept: "
                "make room and rerun the same command to resume"
            ) from e


def _check_options(
    src: Path, out: Path, audio_seconds: float, shard: tuple[int, int] | str | None, workers: int | None
) -> tuple[tuple[int, int] | None, int]:
    """Refuse bad options of :func:`prepare` before any work; returns the parsed shard and worker count."""
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
    return shard, workers


def _prepare_sources(
    out: Path,
    sources: Sequence[ClipSource],
    shard: tuple[int, int] | None,
    job: _ClipJob,
    workers: int,
    progress: bool,
) -> PrepareSummary:
    """The work of :func:`prepare`, once ``out`` is checked and held."""
    all_ids = [s.id for s in sources]
    ids = set(shard_slice(all_ids, shard)) if shard is not None else set(all_ids)
    record_dir = shard_dir(out, shard) if shard is not None else out
    _remove_stale_temps(out, ids)
    # Every clip recorded anywhere (the manifest, and the parts of sharded runs) counts as done.
    earlier = all_rows(out)
    rows = dict(earlier)
    mine = [source for source in sources if source.id in ids]
    todo, skipped, failed = _sort_out(out, mine, earlier, rows, job.audio_seconds)
    jobs = _Jobs(todo, job, min(workers, max(len(todo), 1)))
    done, failed_now = _record(record_dir, rows, jobs, ids if shard is not None else None, progress)
    merged = False
    if shard is not None:
        recorded = merge_rows(*(_read_rows(p) for p in part_dirs(out)))
        if all(clip_id in recorded for clip_id in all_ids):
            merge_shards(out)
            merged = True
    return PrepareSummary(out, done=done, skipped=skipped, failed=failed + failed_now, merged=merged)


def _sort_out(
    out: Path,
    sources: Sequence[ClipSource],
    earlier: dict[str, ManifestRow],
    rows: dict[str, ManifestRow],
    audio_seconds: float,
) -> tuple[list[ClipSource], int, int]:
    """Record in ``rows`` the clips finished earlier (skipped) and those that fail before decoding;
    returns the clips left to prepare, and the counts skipped and failed."""
    skipped = failed = 0
    todo: list[ClipSource] = []
    for source in sources:
        old = earlier.get(source.id)
        if old is not None and files_present(out, old):
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
    return todo, skipped, failed


@dataclass(frozen=True)
class _Jobs:
    """The clips a run prepares, the function that prepares one, and the processes to use."""

    clips: list[ClipSource]
    fn: Callable[[ClipSource], ManifestRow]
    workers: int


def _record(
    record_dir: Path, rows: dict[str, ManifestRow], jobs: _Jobs, only: set[str] | None, progress: bool
) -> tuple[int, int]:
    """Prepare the clips, journalling each row at once and rewriting the manifest of ``record_dir``
    (only the ids ``only`` of a shard) every ``MANIFEST_FLUSH_SECONDS`` and at the end, also when
    stopped; returns the counts done and failed."""
    done = failed = 0
    bar = tqdm(total=len(jobs.clips), disable=not progress, unit="clip", desc="prepare", dynamic_ncols=True)
    last_flush = time.monotonic()
    record_dir.mkdir(parents=True, exist_ok=True)
    journal = Journal(record_dir)
    try:
        for row in _run_jobs(jobs.clips, jobs.fn, jobs.workers):
            rows[row.id] = row
            journal.add(row)
            done += row.ok
            failed += not row.ok
            bar.update(1)
            if time.monotonic() - last_flush >= MANIFEST_FLUSH_SECONDS:
                write_rows(record_dir, rows, only)
                journal.clear()
                last_flush = time.monotonic()
    finally:
        bar.close()
        write_rows(record_dir, rows, only)
        journal.clear()
        journal.close()
    return done, failed


@dataclass(frozen=True)
class _ClipJob:
    """A picklable ``prepare_clip`` with its settings bound, for the worker processes."""

    out: str
    audio_seconds: float
    native_audio: bool = False
    native_frames: bool = False

    def __call__(self, source: ClipSource) -> ManifestRow:
        return prepare_clip(
            source, self.out, self.audio_seconds, self.native_audio, native_frames=self.native_frames
        )


def _run_jobs(
    jobs: Sequence[ClipSource], fn: Callable[[ClipSource], ManifestRow], workers: int
) -> Iterator[ManifestRow]:
    """``fn`` over the clips in ``workers`` processes (:func:`sspl.data.pool.run_jobs`), whose server
    imports this module once; a clip whose process crashed on it gets a failed row."""
    return run_jobs(jobs, fn, workers, on_crash=_crashed_row, preload=[__name__])


def _crashed_row(source: ClipSource) -> ManifestRow:
    return ManifestRow(
        id=source.id,
        label=source.label,
        split=source.split,
        status=STATUS_FAILED,
        error=f"{source.visual}: the decoder crashed the worker process on this file",
    )


def merge_shards(out: str | os.PathLike) -> PrepareSummary:
    """Merge every shard part under ``out/shards`` (and an existing ``manifest.csv``) into ``manifest.csv``.

    Returns:
        Counts of the merged manifest (``done`` and ``failed`` rows; ``skipped`` is 0).

    Raises:
        DataError: ``out`` holds no shard parts.
        OutputInUseError: a plain (unsharded) run is writing ``out``.
    """
    out = Path(out)
    if not part_dirs(out):
        raise DataError(f"{out}: no shard manifests under {out / SHARDS_DIR} to merge")
    check_output_folder(out, "OUT")
    with _hold_briefly(out):
        rows = all_rows(out)
        write_manifest(out, list(rows.values()))
    done = sum(r.ok for r in rows.values())
    return PrepareSummary(out, done=done, skipped=0, failed=len(rows) - done, merged=True)


# --------------------------------------------------------------------------------------------------
# The output folder: its checks, one writer at a time, a killed run's leftovers
# --------------------------------------------------------------------------------------------------


def _check_out(out: Path, meta: dict) -> None:
    """Refuse an output folder prepared with other settings, or a non-empty folder of something else."""
    if (out / META_NAME).is_file():
        try:
            existing = read_meta(out)
        except ValueError as e:
            raise DataError(str(e)) from e
        for key in ("kind", "audio_seconds", "source", "native_audio", "native_frames"):
            # a folder from before a native_* option was kept without it
            if existing.get(key, False if key.startswith("native_") else meta[key]) != meta[key]:
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
            stack.enter_context(output_lock(shard_dir(out, shard), command))
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
    wanted = {name for clip_id in ids for name in clip_relpaths(clip_id)}
    for sub in ("frames", "audio", "spect"):
        folder = out / sub
        if not folder.is_dir():
            continue
        # `.<name>.<random>.tmp`: only hidden files are looked at, then only names of this run's clips
        names = {f"{sub}/{p.name[1:].rsplit('.', 2)[0]}" for p in folder.iterdir() if p.name.startswith(".")}
        stale = [name.split("/", 1)[1] for name in names & wanted]
        if stale:
            remove_stale_temps(folder, stale)
