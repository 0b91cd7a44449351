"""SynthAV: a procedural audio-visual localization benchmark with exact ground truth.

Each scene is a 256 x 256 frame with a textured background (smooth noise, gradient or stripes, in muted
colours) and one to a few non-overlapping objects. Every object belongs to a category that fixes its shape,
colour, texture and sound (see :data:`CATEGORIES`). Exactly one object is sounding: the 3-s clip is that
category's signature (harmonic hum, whistle, hiss band, chirps, beeps, clicks, rumble, siren; frequencies
jittered per scene) mixed with pink background noise at a chosen SNR.

Everything is a function of ``(seed, stream, index)``: the scene's random generator is seeded from those
three numbers alone, so scenes are generated in any order, in parallel, and resumed after a kill with
byte-identical results. Layout, sound and noise draw from three independent child generators, so changing
the SNR changes only the noise level of otherwise identical scenes.

The output folder is in the prepared format of :mod:`sspl.data.manifest` (``kind = "synth"``), plus::

    annotations.json              VGG-SS format: [{"file": id, "class": category, "bbox": [[x1, y1, x2, y2]]}]
                                  the sounding object's tight box, normalised to [0, 1] in the 256 x 256
                                  frame, for every scene of every split; "bbox": [] (no box) for a scene
                                  whose sound has no visible source
    scenes.json                   {id: {"split", "kind", "sound", "sounding": k, "objects": [{"category",
                                  "bbox"}, ...]}}: the scene's kind (visible, silent, offscreen), the sound's
                                  category, the index of the sounding object (null when it is not in the
                                  frame) and the category and box of every object in the frame (for
                                  "negatives exclude same class"); an offscreen scene also holds
                                  "offscreen_object": {"category", "bbox"}, its box outside [0, 1]
    pretrain/ids.txt              the M ids of the "pretrain" split, one per line (the order of the arrays)
    pretrain/location_coverage.npy M x (1 + K) x 14 x 14 float32: share of each cell of the evaluation grid
                                  covered by background (channel 0) and by each of the K categories
    pretrain/location_labels.npy  M x 14 x 14 uint8 hard per-location labels derived from the coverage
    pretrain/sound_labels.npy     M int64 sound category (index into the categories of meta.json)

Location labels refer to the evaluation view: the frame is square, so ``Resize(224) + CenterCrop(224)`` keeps
all of it and cell ``(i, j)`` of the 14 x 14 grid covers frame rows ``[i, i + 1) * 256 / 14`` and columns
``[j, j + 1) * 256 / 14``. The coverage is exact (pixels count in proportion to their overlap with a cell).
The hard label of a cell is ``1 + category`` when one category covers at least half of it,
:data:`BACKGROUND_LABEL` (0) when objects cover less than a tenth of it, and :data:`IGNORE_LABEL` (255)
in between (edges of objects). Pretraining fits the coverage itself (soft targets), so features at an
object's edge are a proportional mix and cosine maps follow the object's extent.

Scenes without a visible source (``--no-source-fraction``, the ``extended`` preset; the rule is
:func:`~sspl.data.synth_scenes.scene_kinds`): in a ``silent`` scene the sound's category is nowhere in the
frame; in an ``offscreen`` scene the sounding object lies in a frame-sized square beside the frame (so it
is not drawn) and nothing of its category is in the frame. Their sound is rendered as in any scene. Such
scenes are the clips of Mo & Morgado's extended protocol that have no box; every other scene is
``visible``, rendered byte for byte as in a set without them.

Splits: the ``num`` main scenes (``synth_000000`` ...) are split into train / val / test by a seeded
permutation; the ``pretrain_num`` pretraining scenes (``synthpre_000000`` ...) come from a separate random
stream, so no pretraining scene is a main scene. Generation checks that no two frames are identical.
Pretraining scenes always hold 2-4 objects of distinct categories (:data:`PRETRAIN_OBJECTS`), whatever
the preset, with the set's categories, object sizes and SNR: like ImageNet for the paper's encoders, the
pretraining data does not follow the downstream difficulty, and encoders pretrained on an "easy" set still
learn to tell objects apart (oracle-query cIoU@0.5 on an easy train split 0.97 with them, 0.93 with
encoders pretrained on single-object scenes).

The parts: :mod:`sspl.data.synth_scenes` (categories, settings, rendering a scene and its ground truth),
:mod:`sspl.data.synth_sounds` (the sound signatures and noise) and this module (writing a set).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import signal
import time
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path

import numpy as np
from PIL import Image

from ..audio import CLIP_SECONDS, SAMPLE_RATE_HZ, encode_wav_float32, official_clip, waveform_to_examples
from ..errors import DataError
from ..io import atomic_save_json, atomic_save_npy, atomic_write_bytes, atomic_write_text, nearest_existing
from ..outputs import LOCK_NAME, check_output_folder, output_lock
from ..processes import init_worker
from .manifest import ANNOTATIONS_NAME, META_NAME, ManifestRow, read_meta, write_manifest, write_meta
from .synth_scenes import (
    BACKGROUND_KINDS,
    BACKGROUND_LABEL,
    BACKGROUND_MAX_COVERAGE,
    CATEGORIES,
    FRAME_SIZE,
    IGNORE_LABEL,
    LABEL_GRID,
    MAX_SCENES,
    OBJECT_LABEL_MIN_COVERAGE,
    PRESETS,
    PRETRAIN_OBJECTS,
    SCENE_KINDS,
    Category,
    RenderedScene,
    SynthConfig,
    cell_coverage,
    location_coverage,
    location_labels,
    render_background,
    render_scene,
    scene_id,
    scene_kinds,
    split_assignment,
    synth_config,
)

__all__ = [
    "BACKGROUND_KINDS",
    "BACKGROUND_LABEL",
    "CATEGORIES",
    "FRAME_SIZE",
    "GENERATOR_VERSION",
    "IGNORE_LABEL",
    "LABEL_GRID",
    "MAX_SCENES",
    "PRESETS",
    "PRETRAIN_IDS",
    "PRETRAIN_LOCATION_COVERAGE",
    "PRETRAIN_LOCATION_LABELS",
    "PRETRAIN_OBJECTS",
    "PRETRAIN_SOUND_LABELS",
    "SCENE_KINDS",
    "Category",
    "RenderedScene",
    "SynthConfig",
    "cell_coverage",
    "encode_jpeg",
    "encode_wav_float32",
    "generate_synth",
    "load_scenes",
    "location_coverage",
    "location_labels",
    "render_background",
    "render_scene",
    "scene_id",
    "scene_kinds",
    "settings_differences",
    "split_assignment",
    "synth_config",
]

log = logging.getLogger(__name__)

JPEG_QUALITY = 95
GENERATOR_VERSION = 1  # bump when a change alters the generated bytes

SCENES_NAME = "scenes.json"
PRETRAIN_DIR = "pretrain"
PRETRAIN_IDS = "pretrain/ids.txt"
PRETRAIN_LOCATION_LABELS = "pretrain/location_labels.npy"
PRETRAIN_LOCATION_COVERAGE = "pretrain/location_coverage.npy"
PRETRAIN_SOUND_LABELS = "pretrain/sound_labels.npy"


def encode_jpeg(image: np.ndarray) -> bytes:
    """The bytes of a SynthAV frame file: ``image`` (``H x W x 3`` uint8 RGB) as a quality-95 JPEG."""
    buf = io.BytesIO()
    Image.fromarray(image, mode="RGB").save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


@dataclass
class _SceneRecord:
    id: str
    stream: str
    index: int
    categories: list[int]
    sounding: int | None
    boxes: list[list[float]]
    frame_sha1: str
    location_coverage: np.ndarray | None
    kind: str = "visible"
    sound_category: int = -1
    offscreen_box: list[float] | None = None


def _rounded(box) -> list[float]:
    return [round(float(c), 6) for c in box]


def _make_scene(
    out_dir: str, config: SynthConfig, stream: str, index: int, kind: str = "visible"
) -> _SceneRecord:
    """Render one scene and write its frame, clip and log-mel unless all three exist (resume)."""
    sid = scene_id(stream, index)
    root = Path(out_dir)
    frame_path, audio_path, spect_path = (root / p for p in _relative_paths(sid))
    scene = render_scene(config, stream, index, kind)
    jpeg = encode_jpeg(scene.image)
    if not _scene_files_intact(frame_path, audio_path, spect_path, jpeg):
        clip = official_clip(scene.mix)
        spect = waveform_to_examples(clip).numpy()  # 3 x 96 x 64
        atomic_save_npy(spect_path, spect)
        atomic_write_bytes(audio_path, encode_wav_float32(clip))
        atomic_write_bytes(frame_path, jpeg)  # last: its presence marks the scene as done
    return _SceneRecord(
        id=sid,
        stream=stream,
        index=index,
        categories=scene.categories,
        sounding=scene.sounding,
        boxes=[_rounded(b) for b in scene.boxes],
        frame_sha1=hashlib.sha1(jpeg).hexdigest(),
        location_coverage=(
            location_coverage(scene.masks, scene.categories, config.num_categories)
            if stream == "pretrain"
            else None
        ),
        kind=scene.kind,
        sound_category=scene.sound_category,
        offscreen_box=None if scene.offscreen_box is None else _rounded(scene.offscreen_box),
    )


#: size of a SynthAV clip's WAV file
_WAV_BYTES = len(encode_wav_float32(np.zeros(int(round(CLIP_SECONDS * SAMPLE_RATE_HZ)), np.float32)))


def _scene_files_intact(frame: Path, audio: Path, spect: Path, jpeg: bytes) -> bool:
    """Whether a scene written before (resume) can be kept: its frame is the one rendered now, its clip
    has the right size and its log-mel reads as 3 x 96 x 64. A scene cut short by a kill (the only damage
    a run of ours can leave, every file being written atomically) is rewritten; the clip's and log-mel's
    values are not recomputed to compare, so a file edited in place keeps its edit."""
    try:
        if frame.read_bytes() != jpeg or audio.stat().st_size != _WAV_BYTES:
            return False
        array = np.load(spect, mmap_mode="r", allow_pickle=False)
        return array.shape == (3, 96, 64) and array.dtype == np.float32
    except (OSError, ValueError, EOFError):
        return False


def _make_scene_star(args: tuple) -> _SceneRecord:
    return _make_scene(*args)


def _stale_temp(path: Path) -> bool:
    """A temporary file of :func:`sspl.io.atomic_open` (``.<name>.<random>.tmp``), left by a killed run."""
    return path.name.startswith(".") and path.name.endswith(".tmp") and path.is_file()


def _relative_paths(sid: str) -> tuple[str, str, str]:
    return f"frames/{sid}.jpg", f"audio/{sid}.wav", f"spect/{sid}.npy"


def _check_output_dir(out_dir: Path, config: SynthConfig) -> None:
    """Refuse a non-empty folder unless it is a SynthAV set of the same settings (which is resumed)."""
    if not out_dir.exists():
        above = nearest_existing(out_dir)
        if not above.is_dir():
            raise DataError(f"{out_dir}: cannot be made, {above} is a file, not a folder")
        return
    if not out_dir.is_dir():
        raise DataError(f"{out_dir}: exists and is not a folder")
    if not any(p for p in out_dir.iterdir() if not _stale_temp(p) and p.name != LOCK_NAME):
        return
    if not (out_dir / META_NAME).is_file():
        raise DataError(f"{out_dir}: folder is not empty and holds no SynthAV set; choose a new folder")
    try:
        meta = read_meta(out_dir)
    except ValueError as e:
        raise DataError(str(e)) from e
    previous = meta.get("synth")
    if meta.get("kind") != "synth" or previous is None:
        raise DataError(f"{out_dir}: holds a prepared set of kind {meta.get('kind')!r}; choose a new folder")
    differ = settings_differences(previous, config)
    if meta.get("generator_version") != GENERATOR_VERSION:
        differ.append(f"generator version {meta.get('generator_version')!r} there, {GENERATOR_VERSION!r} now")
    if differ:
        raise DataError(
            f"{out_dir}: holds a SynthAV set made with other settings ({'; '.join(differ)}); "
            "choose a new folder, or repeat that set's settings to resume it"
        )


def settings_differences(previous: dict, config: SynthConfig) -> list[str]:
    """How a set's recorded settings (``meta.json``'s ``synth``) differ from ``config``, one phrase per
    option (empty when they make the same scenes). A setting added since that set was made counts as its
    default there: it made the same scenes."""
    wanted = config.to_json()
    defaults = {f.name: f.default for f in fields(SynthConfig) if f.default is not MISSING}
    return [
        f"{_option_name(k)} {previous.get(k, defaults.get(k))!r} there, {wanted[k]!r} now"
        for k in wanted
        if previous.get(k, defaults.get(k)) != wanted[k]
    ]


def _option_name(field_name: str) -> str:
    """The `sspl synth` option of a :class:`SynthConfig` field (``object_size`` -> ``--object-size``)."""
    return "--" + field_name.replace("_", "-")


def generate_synth(
    out_dir: str | os.PathLike,
    config: SynthConfig,
    *,
    workers: int | None = None,
    progress: bool = True,
) -> dict:
    """Generate a SynthAV set in the prepared format (layout in the module docstring).

    Rerunning with the same settings on the same folder resumes: finished scenes are kept.

    Args:
        out_dir: output folder (created; must be empty or an unfinished set of the same settings).
        config: the set's settings.
        workers: processes (default: all cores); results do not depend on it.
        progress: show a progress bar.

    Returns:
        A summary: ``{"out_dir", "scenes": {split: count}, "seconds"}``.

    Raises:
        DataError: the folder holds something else, or two generated frames are identical.
        OutputInUseError: another process is writing the folder.
        PermissionError: nothing can be written there.
    """
    out = Path(out_dir)
    _check_output_dir(out, config)
    check_output_folder(out, "OUT")
    with output_lock(out, "sspl synth"):  # one writer: two runs would mix their scenes and records
        _check_output_dir(out, config)  # again: a run that held the folder until now may have written it
        return _generate(out, config, workers, progress)


def _generate(out: Path, config: SynthConfig, workers: int | None, progress: bool) -> dict:
    """The work of :func:`generate_synth`, once ``out`` is checked and held."""
    start = time.perf_counter()
    _write_synth_meta(out, config)
    for sub in (".", "frames", "audio", "spect", PRETRAIN_DIR):
        (out / sub).mkdir(exist_ok=True)
        for stale in filter(_stale_temp, (out / sub).iterdir()):  # left by a killed run
            stale.unlink(missing_ok=True)

    tasks = [(str(out), config, "main", i, kind) for i, kind in enumerate(scene_kinds(config))]
    tasks += [(str(out), config, "pretrain", i, "visible") for i in range(config.pretrain_num)]
    workers = max(1, min(workers or os.cpu_count() or 1, len(tasks)))
    records = _run_tasks(tasks, workers, progress)

    splits = split_assignment(config)
    split_of = {r.id: (splits[r.index] if r.stream == "main" else "pretrain") for r in records}
    _check_unique_frames(records, split_of)
    rows = _write_scene_tables(out, config, records, split_of)
    _write_pretrain_targets(out, config, [r for r in records if r.stream == "pretrain"])
    write_manifest(out, rows)  # last: a set with a manifest is complete

    counts = {s: sum(1 for v in split_of.values() if v == s) for s in ("train", "val", "test", "pretrain")}
    _warn_empty_splits(out, config, counts)
    return {"out_dir": str(out), "scenes": counts, "seconds": round(time.perf_counter() - start, 2)}


def _write_synth_meta(out: Path, config: SynthConfig) -> None:
    """``meta.json``: the prepared-format fields, the set's settings, categories, label rules and files."""
    categories = [asdict(c) for c in config.categories]
    write_meta(
        out,
        "synth",
        audio_seconds=CLIP_SECONDS,
        sample_rate=SAMPLE_RATE_HZ,
        frame_size=FRAME_SIZE,
        generator_version=GENERATOR_VERSION,
        synth=config.to_json(),
        categories=categories,
        location_labels={
            "grid": LABEL_GRID,
            "background": BACKGROUND_LABEL,
            "ignore": IGNORE_LABEL,
            "object": "1 + category index",
            "object_min_coverage": OBJECT_LABEL_MIN_COVERAGE,
            "background_max_coverage": BACKGROUND_MAX_COVERAGE,
        },
        files={
            "annotations": ANNOTATIONS_NAME,
            "scenes": SCENES_NAME,
            "pretrain_ids": PRETRAIN_IDS,
            "pretrain_location_labels": PRETRAIN_LOCATION_LABELS,
            "pretrain_location_coverage": PRETRAIN_LOCATION_COVERAGE,
            "pretrain_sound_labels": PRETRAIN_SOUND_LABELS,
        },
    )


def _write_scene_tables(
    out: Path, config: SynthConfig, records: list[_SceneRecord], split_of: dict[str, str]
) -> list[ManifestRow]:
    """Write ``annotations.json`` and ``scenes.json``; returns the manifest rows (written last)."""
    names = [c.name for c in config.categories]
    rows, annotations, scenes = [], [], {}
    for r in records:
        frame, audio, spect = _relative_paths(r.id)
        label = names[r.sound_category]
        rows.append(
            ManifestRow(
                id=r.id,
                frame=frame,
                audio=audio,
                spect=spect,
                duration=CLIP_SECONDS,
                sample_rate=SAMPLE_RATE_HZ,
                label=label,
                split=split_of[r.id],
            )
        )
        visible = r.sounding is not None
        annotations.append({"file": r.id, "class": label, "bbox": [r.boxes[r.sounding]] if visible else []})
        scenes[r.id] = {
            "split": split_of[r.id],
            "kind": r.kind,
            "sound": label,
            "sounding": r.sounding,
            "objects": [{"category": names[c], "bbox": b} for c, b in zip(r.categories, r.boxes)],
        }
        if r.offscreen_box is not None:
            scenes[r.id]["offscreen_object"] = {"category": label, "bbox": r.offscreen_box}
    atomic_save_json(out / ANNOTATIONS_NAME, annotations, indent=0)
    atomic_save_json(out / SCENES_NAME, scenes, indent=0)
    return rows


def _write_pretrain_targets(out: Path, config: SynthConfig, pre: list[_SceneRecord]) -> None:
    """The pretrain split's ids, location coverage and labels, and sound labels (layout in the docstring)."""
    atomic_write_text(out / PRETRAIN_IDS, "".join(f"{r.id}\n" for r in pre))
    coverage = np.zeros((len(pre), 1 + config.num_categories, LABEL_GRID, LABEL_GRID), np.float32)
    for k, r in enumerate(pre):
        coverage[k] = r.location_coverage
    atomic_save_npy(out / PRETRAIN_LOCATION_COVERAGE, coverage)
    labels = np.stack([location_labels(c) for c in coverage]) if pre else coverage[:, 0].astype(np.uint8)
    atomic_save_npy(out / PRETRAIN_LOCATION_LABELS, labels)
    atomic_save_npy(out / PRETRAIN_SOUND_LABELS, np.array([r.sound_category for r in pre], dtype=np.int64))


def _warn_empty_splits(out: Path, config: SynthConfig, counts: dict[str, int]) -> None:
    fractions = {"train": 1.0, "val": config.val_fraction, "test": config.test_fraction}
    for split, fraction in fractions.items():
        if fraction > 0 and counts[split] == 0:
            log.warning(
                "SynthAV %s: the %s split is empty (%d scenes are too few for its share %g); use a larger --num",
                out,
                split,
                config.num,
                fraction if split != "train" else 1 - config.val_fraction - config.test_fraction,
            )


def _run_tasks(tasks: list[tuple], workers: int, progress: bool) -> list[_SceneRecord]:
    from tqdm import tqdm

    bar = tqdm(total=len(tasks), desc="synth", unit="scene", disable=not progress)
    try:
        if workers == 1:
            records = []
            for t in tasks:
                records.append(_make_scene(*t))
                bar.update()
            return records
        import multiprocessing as mp

        # spawn, not fork: forking a process whose torch thread pool is running can deadlock.
        # The workers start with Ctrl-C ignored (the disposition passes to the new interpreters), so one
        # arriving while they still import torch does not print their tracebacks; the parent stops them.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            pool = mp.get_context("spawn").Pool(workers, initializer=init_worker, initargs=(os.getpid(),))
        finally:
            signal.signal(signal.SIGINT, previous)
        with pool:
            records = []
            for r in pool.imap(_make_scene_star, tasks, chunksize=8):
                records.append(r)
                bar.update()
            return records
    finally:
        bar.close()


def _check_unique_frames(records: list[_SceneRecord], split_of: dict[str, str]) -> None:
    seen: dict[str, str] = {}
    for r in records:
        other = seen.setdefault(r.frame_sha1, r.id)
        if other != r.id:
            raise DataError(
                f"SynthAV generated identical frames for {other} ({split_of[other]}) and {r.id} "
                f"({split_of[r.id]}); this is a bug, please report it"
            )


def load_scenes(data_dir: str | os.PathLike) -> dict:
    """Read ``scenes.json`` of a SynthAV set: ``{id: {"split", "kind", "sound", "sounding", "objects": [...]}}``
    (layout in the module docstring)."""
    path = Path(data_dir) / SCENES_NAME
    if not path.is_file():
        raise DataError(f"{path}: missing; is {data_dir} a SynthAV set written by `sspl synth`?")
    return json.loads(path.read_text(encoding="utf-8"))
