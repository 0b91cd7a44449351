"""The training loop: one code path for every method, resumable bit-for-bit, distributed with torchrun.

Model selection uses a validation split held out of the training data (cIoU@0.5 when the prepared
folder carries boxes for it, else the validation loss); the test split is never read here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

from ..config import Config, save_config
from ..data.annotations import load_annotations
from ..data.datasets import PreparedDataset, Sample, label_index, load_samples
from ..data.feature_cache import (
    FEATURES_NAME,
    INDEX_NAME,
    VisualFeatureCache,
    build_visual_cache,
    check_cache_visual_config,
    visual_cache_dir,
)
from ..data.lists import check_overlap, load_list, sample_ids, train_val_split
from ..data.manifest import ANNOTATIONS_NAME, read_meta
from ..errors import DataError, SSPLError, WeightsError
from ..io import atomic_save_json, atomic_write_text
from ..metrics import BENCHMARKS, evaluate_maps
from ..models.methods import get_method
from ..outputs import check_output_folder, output_lock, remove_stale_temps, remove_written
from .checkpoint import (
    BEST,
    CHECKPOINT_DIR,
    LAST,
    load_checkpoint,
    load_published_encoders,
    restore_rng,
    save_checkpoint,
    stored_encoder_settings,
)
from .distributed import DistEnv, all_reduce_mean, convert_sync_batchnorm, init_distributed
from .schedule import build_scheduler  # re-exported: sspl.engine.train.build_scheduler

__all__ = [
    "RESUMABLE_KEYS",
    "TrainResult",
    "TrainingError",
    "build_scheduler",
    "fixed_changes",
    "saved_config",
    "train",
]

log = logging.getLogger(__name__)

CONFIG_NAME = "config.yaml"
LOG_NAME = "log.jsonl"
HISTORY_NAME = "history.json"
TB_DIR = "tb"
#: the event files TensorBoard's writer makes in ``tb/``
TB_EVENTS = "events.out.tfevents.*"
CACHE_DIR = "cache"
AUDIO_CACHE_NAME = "audio_embeddings.pt"
#: what holds the run directory, in the message a second writer gets
LOCK_COMMAND = "sspl train"


class TrainingError(SSPLError):
    """Training cannot go on (non-finite loss, unusable data or options)."""


@dataclass
class TrainResult:
    """What a training run did."""

    run_dir: Path
    epochs_completed: int
    steps: int
    best_epoch: int | None
    best_metric: float | None
    select_metric: str
    stopped_early: bool
    history: list[dict] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------------


@dataclass
class _Splits:
    train: list[Sample]
    val: list[Sample]
    labels: dict[str, int]
    val_annotations: dict | None
    protocol_name: str


def _split_data(cfg: Config, data_dir: Path) -> _Splits:
    samples = load_samples(data_dir)
    if not samples:
        raise DataError(f"{data_dir}: no finished clips in the manifest")
    candidates = [s for s in samples if s.split in ("train", "")]
    given_val = [s for s in samples if s.split == "val"]
    if cfg.data.train_list:
        wanted = set(load_list(cfg.data.train_list))
        candidates = [s for s in candidates if s.id in wanted]
        if not candidates:
            raise DataError(f"{data_dir}: no prepared clip is in the list {cfg.data.train_list!r}")
    if given_val:
        train, val = candidates, given_val
    else:
        train_ids, val_ids = train_val_split(
            [s.id for s in candidates], cfg.data.val_fraction, cfg.data.split_seed
        )
        by_id = {s.id: s for s in candidates}
        train, val = [by_id[i] for i in train_ids], [by_id[i] for i in val_ids]
    if cfg.data.max_train is not None and cfg.data.max_train < len(train):
        keep = set(sample_ids([s.id for s in train], cfg.data.max_train, cfg.data.split_seed))
        train = [s for s in train if s.id in keep]
    if not train:
        raise DataError(f"{data_dir}: no training clips (splits 'train' or unlabelled)")
    check_overlap([s.id for s in train + val], benchmark="all", allow_overlap=cfg.data.allow_overlap)

    meta = read_meta(data_dir)
    val_annotations = None
    if val and (data_dir / ANNOTATIONS_NAME).is_file():
        annotations = load_annotations(data_dir)
        if all(s.id in annotations for s in val):
            val_annotations = {s.id: annotations[s.id] for s in val}
    protocol = "synth" if meta.get("kind") == "synth" else "vggss"
    return _Splits(train, val, label_index(samples), val_annotations, protocol)


def _data_fingerprint(splits: _Splits) -> str:
    """SHA-1 of the train and val ids: what a resumed run must be given again."""
    ids = (
        "\n".join(sorted(s.id for s in splits.train)) + "\n--\n" + "\n".join(sorted(s.id for s in splits.val))
    )
    return hashlib.sha1(ids.encode()).hexdigest()


def _collate(items: list[dict]) -> dict:
    out: dict[str, Any] = {}
    for key in items[0]:
        values = [it[key] for it in items]
        if isinstance(values[0], torch.Tensor):
            out[key] = torch.stack(values)
        elif isinstance(values[0], int):
            out[key] = torch.tensor(values)
        else:
            out[key] = values
    return out


def _to_device(batch: dict, device: torch.device, channels_last: bool) -> dict:
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            v = v.to(device, non_blocking=True)
            if channels_last and v.dim() == 4 and k.startswith(("frame", "feat_view")):
                v = v.contiguous(memory_format=torch.channels_last)
        out[k] = v
    return out


def _worker_init(_: int) -> None:
    # One intra-op thread per loader worker: the workers are the parallelism.
    torch.set_num_threads(1)


# --------------------------------------------------------------------------------------------------
# optimisation
# --------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------
# run directory
# --------------------------------------------------------------------------------------------------


def _run_folders(run_dir: Path) -> dict[str, tuple[str, ...]]:
    """Each folder of a run (relative to ``run_dir``) and the files the run writes atomically in it."""
    folders = {
        ".": (CONFIG_NAME, LOG_NAME, HISTORY_NAME),
        CHECKPOINT_DIR: (LAST, BEST),
        CACHE_DIR: (AUDIO_CACHE_NAME,),
    }
    cache = run_dir / CACHE_DIR
    if cache.is_dir():  # the visual feature caches (see visual_cache_dir), one per encoder and size
        for sub in sorted(p for p in cache.glob("visual_*") if p.is_dir()):
            folders[f"{CACHE_DIR}/{sub.name}"] = (FEATURES_NAME, INDEX_NAME)
    return folders


def _run_outputs(run_dir: Path) -> list[str]:
    """The files a run wrote in ``run_dir`` (relative paths): its named outputs and TensorBoard's event
    files. Nothing else in the folder is the run's, whatever its name or place."""
    found = [
        (Path(folder) / name).as_posix()
        for folder, names in _run_folders(run_dir).items()
        for name in names
        if (run_dir / folder / name).is_file()
    ]
    tb = run_dir / TB_DIR
    if tb.is_dir():
        found += [f"{TB_DIR}/{p.name}" for p in sorted(tb.glob(TB_EVENTS)) if p.is_file()]
    return found


def _remove_stale_temps(run_dir: Path) -> None:
    """Delete the temporary files of the atomic writes a killed run left (a checkpoint's: gigabytes)."""
    for folder, names in _run_folders(run_dir).items():
        for path in remove_stale_temps(run_dir / folder, names):
            log.info("%s: removed, left by a run that was stopped while writing it", path)


@contextlib.contextmanager
def _hold_run_dir(run_dir: Path, env: DistEnv, resume: bool) -> Iterator[None]:
    """Make ``run_dir`` this run's for the block, before anything in it is looked at.

    The main process checks that the folder takes files, locks it (a second run in it is refused, naming
    the process that holds it; a killed run releases it) and removes the temporary files a killed run
    left. Under torchrun the other processes learn whether it could, and stop with it if not.
    """
    failure: BaseException | None = None
    with contextlib.ExitStack() as held:
        if env.is_main:
            try:
                if resume and not run_dir.is_dir():
                    raise TrainingError(f"{run_dir}: nothing to resume (no such folder)")
                check_output_folder(run_dir, "--run-dir")
                held.enter_context(output_lock(run_dir, LOCK_COMMAND))
                _remove_stale_temps(run_dir)
            except (SSPLError, OSError) as e:
                failure = e
        if env.distributed:
            flag = torch.tensor([0.0 if failure is None else 1.0], device=env.device)
            dist.broadcast(flag, src=0)
            if flag.item() and failure is None:
                raise TrainingError(f"{run_dir}: the main process (rank 0) could not take the run directory")
        if failure is not None:
            raise failure
        yield


def _check_run_dir(run_dir: Path, overwrite: bool) -> None:
    """Refuse a run dir that holds a run, unless it is to be overwritten (nothing is deleted here)."""
    if _run_outputs(run_dir) and not overwrite:
        if not (run_dir / CHECKPOINT_DIR / LAST).is_file():
            raise TrainingError(
                f"{run_dir}: holds the start of a training run that stopped before its first checkpoint "
                "(nothing to resume); pass --overwrite to start it over"
            )
        raise TrainingError(
            f"{run_dir}: already holds a training run; pass --resume to continue it or --overwrite to start over"
        )


def _clear_run_dir(run_dir: Path) -> None:
    """Delete the previous run's files, one by one: a user's file beside them (in ``checkpoints/`` or
    ``tb/`` too) stays, and so do the folders that hold one."""
    remove_written(run_dir, _run_outputs(run_dir))


#: Settings a resumed run may change: how long it trains, how it reports and how fast it computes, not
#: what it computes (the audio cache is exact). With the cosine schedule, more epochs stretch its decay.
RESUMABLE_KEYS = (
    "train.epochs",
    "train.patience",
    "train.log_every",
    "train.eval_every",
    "train.device",
    "data.num_workers",
    "data.cache_audio",
)


def saved_config(run_dir: str | os.PathLike) -> Config:
    """The config of the run in ``run_dir`` (from its last checkpoint), to resume it with changes.

    Raises:
        TrainingError: the folder holds no checkpoint to resume.
    """
    _check_resumable(Path(run_dir))
    return _config_of(_load_last(Path(run_dir)))


def _check_resumable(run_dir: Path) -> None:
    if not (run_dir / CHECKPOINT_DIR / LAST).is_file():
        if _run_outputs(run_dir):
            raise TrainingError(
                f"{run_dir}: nothing to resume ({CHECKPOINT_DIR}/{LAST} not found: the run stopped before its "
                "first epoch ended); pass --overwrite instead of --resume to start it over"
            )
        raise TrainingError(f"{run_dir}: nothing to resume ({CHECKPOINT_DIR}/{LAST} not found)")


def _load_last(run_dir: Path) -> dict:
    try:
        return load_checkpoint(run_dir / CHECKPOINT_DIR / LAST)
    except WeightsError as e:
        raise TrainingError(
            f"{e}; the run cannot continue from it: start it over with --overwrite (its {BEST}, when intact, "
            "can still be evaluated)"
        ) from e


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "method_options":
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def fixed_changes(saved: Config, requested: Config) -> dict[str, tuple[Any, Any]]:
    """``{key: (saved, requested)}`` for the settings outside :data:`RESUMABLE_KEYS` that differ."""
    from ..config import config_to_dict

    old, new = _flat(config_to_dict(saved)), _flat(config_to_dict(requested))
    keys = sorted(set(old) | set(new))
    return {k: (old.get(k), new.get(k)) for k in keys if old.get(k) != new.get(k) and k not in RESUMABLE_KEYS}


def _resumed_config(
    saved: Config, requested: Config, run_dir: Path, epochs_done: int, movable: set[str] = frozenset()
) -> Config:
    """The requested config, if it differs from the saved one only in :data:`RESUMABLE_KEYS` (and in
    ``movable``: the weight files of encoders the checkpoint stores)."""
    changed = {k: v for k, v in fixed_changes(saved, requested).items() if k not in movable}
    if changed:
        listed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in list(changed.items())[:8])
        raise TrainingError(
            f"{run_dir}: --resume continues the saved run, and the requested config changes what it "
            f"computes ({listed}); only {', '.join(RESUMABLE_KEYS)} may change on resume. Start a new "
            "run (another --run-dir, or --overwrite) to change the rest"
        )
    if requested.train.epochs < epochs_done:
        raise TrainingError(
            f"{run_dir}: already trained {epochs_done} epochs, more than the {requested.train.epochs} asked "
            "for; ask for more epochs to train on"
        )
    return requested


def _logged_step(line: str) -> float:
    """The step of a JSONL record; infinite for a line cut short by a kill (so it is dropped)."""
    try:
        return json.loads(line).get("step", 0)
    except (json.JSONDecodeError, AttributeError):
        return math.inf


class _Logger:
    """JSONL log (always) and TensorBoard (when installed), written by the main process only."""

    def __init__(self, run_dir: Path, enabled: bool, resume_step: int | None = None) -> None:
        self.enabled = enabled
        self.path = run_dir / LOG_NAME
        self.tb = None
        if enabled and resume_step is not None and self.path.is_file():
            # Records past the checkpoint come from the interrupted epoch, which is trained again.
            lines = self.path.read_text(encoding="utf-8").splitlines(keepends=True)
            kept = [ln for ln in lines if _logged_step(ln) <= resume_step]
            atomic_write_text(self.path, "".join(kept))
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                purge = None if resume_step is None else resume_step + 1
                self.tb = SummaryWriter(str(run_dir / TB_DIR), purge_step=purge)
            except ImportError:
                log.info("TensorBoard logging off (pip install 'sspl[tensorboard]' to enable it)")

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            step = record.get("step", 0)
            prefix = record.get("type", "train")
            for k, v in record.items():
                if isinstance(v, int | float) and k not in ("step", "epoch"):
                    self.tb.add_scalar(f"{prefix}/{k}", v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


# --------------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------------


@torch.no_grad()
def _validate(
    model, method, cfg: Config, splits: _Splits, device: torch.device, audio_cache, channels_last: bool
) -> dict:
    """Validation loss (two seeded augmented views, eval mode) and, with boxes, cIoU@0.5 and AUC."""
    model.eval()
    metrics: dict[str, float] = {}
    if not splits.val:
        return metrics
    batch_size = min(cfg.train.batch_size, 64)
    loss_ds = PreparedDataset(
        splits.val,
        mode="train",
        augmentations=cfg.data.augmentations,
        image_size=cfg.data.image_size,
        seed=cfg.train.seed + 1,
        labels=splits.labels,
        audio_embeddings=audio_cache,
    )
    total, count = 0.0, 0
    loader = DataLoader(
        loss_ds,
        batch_size=batch_size,
        num_workers=cfg.data.num_workers,
        collate_fn=_collate,
        worker_init_fn=_worker_init,
    )
    for batch in loader:
        batch = _to_device(batch, device, channels_last)
        loss, _ = method.loss(model, batch, cfg)
        total += float(loss) * len(batch["id"])
        count += len(batch["id"])
    metrics["val_loss"] = total / max(count, 1)
    if splits.val_annotations is not None:
        map_ds = PreparedDataset(
            splits.val, mode="eval", image_size=cfg.data.image_size, audio_embeddings=audio_cache
        )
        maps = {}
        for batch in DataLoader(
            map_ds,
            batch_size=batch_size,
            num_workers=cfg.data.num_workers,
            collate_fn=_collate,
            worker_init_fn=_worker_init,
        ):
            batch = _to_device(batch, device, channels_last)
            out = model.localize(
                batch["frame"], batch.get("spect"), audio_patch_embeddings=batch.get("audio_emb")
            )
            maps.update({i: m for i, m in zip(batch["id"], out.float().cpu().numpy())})
        result = evaluate_maps(
            maps, splits.val_annotations, BENCHMARKS[splits.protocol_name], expected_count=len(splits.val)
        )
        metrics["val_ciou@0.5"] = result.ciou_success_rate
        metrics["val_auc"] = result.auc
    return metrics


# --------------------------------------------------------------------------------------------------
# audio embedding cache
# --------------------------------------------------------------------------------------------------


@torch.no_grad()
def _audio_cache(
    model, samples: list[Sample], run_dir: Path, env: DistEnv, cfg: Config
) -> dict[str, torch.Tensor]:
    """Exact cache of the frozen audio encoder's patch embeddings (computed once, stored in the run dir)."""
    if cfg.model.train_audio:
        raise TrainingError("data.cache_audio needs a frozen audio encoder (model.train_audio is true)")
    path = run_dir / CACHE_DIR / AUDIO_CACHE_NAME
    ids = [s.id for s in samples]
    if env.is_main and not path.is_file():
        from ..io import atomic_save_torch

        model.eval()
        embeddings = {}
        for start in range(0, len(samples), 64):
            chunk = samples[start : start + 64]
            spect = torch.stack([s.load_spect() for s in chunk]).to(env.device)
            out = model.encode_audio(spect).float().cpu()
            embeddings.update({s.id: e.clone() for s, e in zip(chunk, out)})
        atomic_save_torch(path, {"ids": ids, "embeddings": torch.stack([embeddings[i] for i in ids])})
    if env.distributed:
        dist.barrier()
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        table = dict(zip(saved["ids"], saved["embeddings"]))
    except Exception as e:  # several exception types for damaged files
        raise TrainingError(f"{path}: damaged audio cache ({e}); delete it to rebuild") from e
    missing = [i for i in ids if i not in table]
    if missing:
        raise TrainingError(
            f"{path}: audio cache lacks {len(missing)} clip(s) (e.g. {missing[:3]}); delete it to rebuild"
        )
    return table


def _visual_cache(
    model, samples: list[Sample], run_dir: Path, env: DistEnv, cfg: Config, progress: bool
) -> VisualFeatureCache:
    """Features of the frozen visual encoder on each training frame's crop resize (approximate views:
    see :mod:`sspl.data.feature_cache`), built once by the main process in the run dir."""
    folder = visual_cache_dir(run_dir / CACHE_DIR, model.visual_encoder, cfg.data.image_size)
    if env.is_main:
        tic = time.perf_counter()
        cache = build_visual_cache(
            model.visual_encoder,
            samples,
            folder,
            image_size=cfg.data.image_size,
            batch_size=min(cfg.train.batch_size, 64),
            num_workers=cfg.data.num_workers,
            device=env.device,
            progress=progress,
        )
        log.info("visual feature cache of %d frames ready in %.1f s", len(samples), time.perf_counter() - tic)
    if env.distributed:
        dist.barrier()
    if not env.is_main:
        cache = VisualFeatureCache(folder)
        cache.check(samples)
    return cache


# --------------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------------


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 -- third-party code may draw from the legacy global state
    torch.manual_seed(seed)


def _select_key(cfg: Config, splits: _Splits) -> tuple[str, str]:
    """(metric name, "max" or "min") used for model selection."""
    choice = cfg.train.select_metric
    if choice == "auto":
        choice = "ciou" if splits.val_annotations is not None else "loss"
    if choice == "ciou":
        if splits.val_annotations is None:
            raise TrainingError(
                "train.select_metric=ciou needs boxes for the validation clips (annotations.json)"
            )
        return "val_ciou@0.5", "max"
    return "val_loss", "min"


def train(
    config: Config,
    data_dir: str | os.PathLike,
    run_dir: str | os.PathLike,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train a model on a prepared folder.

    Args:
        config: the resolved configuration. On ``resume`` it must equal the run's saved config (see
            :func:`saved_config`) except in :data:`RESUMABLE_KEYS`: train longer, with other patience or
            logging, on another device.
        data_dir: folder written by ``sspl prepare`` or ``sspl synth`` (splits ``train``/``val`` or none).
        run_dir: where config, logs and checkpoints go; must not hold a run unless ``resume`` or ``overwrite``.
            It is held for the run (one writer at a time) from the start, before it is looked at.
        resume: continue from ``run_dir/checkpoints/last.pt``.
        overwrite: delete a previous run's files in ``run_dir`` one by one (other files are left alone).
        progress: show a progress bar.

    Returns:
        A :class:`TrainResult`.

    Raises:
        sspl.outputs.OutputInUseError: another process trains in ``run_dir``.
        PermissionError: nothing can be written in ``run_dir`` (checked before any work).
        TrainingError: on a non-finite loss, an existing run dir, or unusable options.
        sspl.errors.DataError: on unusable data (including train/test overlap unless allowed).
    """
    data_dir, run_dir = Path(data_dir), Path(run_dir)
    env = init_distributed(config.train.device)
    try:
        if not resume:  # a new run's options are checked before its folder is made (a resumed run's: in it)
            _check_options(config, env)
        with _hold_run_dir(run_dir, env, resume):
            return _train(
                config, data_dir, run_dir, env, resume=resume, overwrite=overwrite, progress=progress
            )
    finally:
        if env.distributed:
            dist.barrier()


def _check_options(cfg: Config, env: DistEnv) -> None:
    """The checks of a config alone (no data, no run dir)."""
    if cfg.data.cache_visual:
        check_cache_visual_config(cfg)
    if cfg.train.batch_size % env.world_size:
        raise TrainingError(
            f"train.batch_size={cfg.train.batch_size} does not divide over {env.world_size} processes"
        )


def _train(
    config: Config,
    data_dir: Path,
    run_dir: Path,
    env: DistEnv,
    *,
    resume: bool,
    overwrite: bool,
    progress: bool,
) -> TrainResult:
    # Everything is checked before anything in the run dir changes: a mistake never costs a run.
    ckpt = None
    if resume:
        _check_resumable(run_dir)  # a clear error when there is nothing to resume
        ckpt = _load_last(run_dir)
        for key in ("optimizer", "scheduler", "rng"):
            if key not in ckpt:
                raise TrainingError(
                    f"{run_dir / CHECKPOINT_DIR / LAST}: has no {key} state, so training cannot continue from "
                    f"it (a {BEST} copied over it?); evaluate it, or start a new run"
                )
        config = _resumed_config(
            _config_of(ckpt), config, run_dir, ckpt["epoch"], movable=stored_encoder_settings(ckpt)
        )
    else:
        _check_run_dir(run_dir, overwrite)
    cfg = config
    _check_options(cfg, env)
    local_batch = cfg.train.batch_size // env.world_size

    splits = _split_data(cfg, data_dir)
    if len(splits.train) < cfg.train.batch_size:
        raise TrainingError(
            f"{data_dir}: {len(splits.train)} training clips, fewer than one batch of {cfg.train.batch_size}; "
            "lower train.batch_size"
        )
    if cfg.train.patience is not None and not splits.val:
        raise TrainingError(
            f"{data_dir}: train.patience={cfg.train.patience} needs validation clips to watch, and there "
            "are none (a 'val' split, or data.val_fraction > 0)"
        )
    fingerprint = _data_fingerprint(splits)
    if ckpt is not None and ckpt["trainer"].get("data", fingerprint) != fingerprint:
        raise TrainingError(
            f"{run_dir}: was trained on other clips than {data_dir} gives (train/val ids differ); resume "
            "with the --data it was started with, or start a new run"
        )
    select_key, select_mode = _select_key(cfg, splits)
    _seed_everything(cfg.train.seed)
    method = get_method(cfg.method)
    # Built before the run dir is cleared, so a missing weights file costs nothing. On resume only
    # published encoder weights are read; the checkpoint holds all others.
    model = _resumed_model(method, cfg, ckpt) if ckpt is not None else method.build(cfg, pretrained=True)
    model = model.to(env.device)
    if env.is_main and not resume:
        _clear_run_dir(run_dir)
    if env.distributed:
        dist.barrier()
    # On every device: oneDNN's CPU convolutions gain as much as cuDNN's (a full-size step at batch 8 on
    # the 2-core CPU: 8.2 s contiguous, 6.3 s channels-last; the SynthAV small CNN 1.35x).
    channels_last = cfg.train.channels_last
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if env.distributed and cfg.train.sync_bn:
        model = convert_sync_batchnorm(model, env.device)
    core = model
    audio_cache = (
        _audio_cache(core, splits.train + splits.val, run_dir, env, cfg) if cfg.data.cache_audio else None
    )
    # Training views only: validation and evaluation encode exact frames.
    visual_cache = (
        _visual_cache(core, splits.train, run_dir, env, cfg, progress) if cfg.data.cache_visual else None
    )
    if env.distributed:
        model = torch.nn.parallel.DistributedDataParallel(
            model,
            device_ids=[env.device] if env.device.type == "cuda" else None,
            find_unused_parameters=getattr(method, "find_unused_parameters", False),
        )

    train_ds = PreparedDataset(
        splits.train,
        mode="train",
        augmentations=cfg.data.augmentations,
        image_size=cfg.data.image_size,
        seed=cfg.train.seed,
        labels=splits.labels,
        audio_embeddings=audio_cache,
        visual_features=visual_cache,
    )
    sampler = DistributedSampler(
        train_ds,
        num_replicas=env.world_size,
        rank=env.rank,
        shuffle=True,
        seed=cfg.train.seed,
        drop_last=True,
    )
    loader = DataLoader(
        train_ds,
        batch_size=local_batch,
        sampler=sampler,
        num_workers=cfg.data.num_workers,
        pin_memory=env.device.type == "cuda",
        drop_last=True,
        collate_fn=_collate,
        worker_init_fn=_worker_init,
    )
    steps_per_epoch = len(loader)
    if cfg.train.max_steps_per_epoch is not None:
        steps_per_epoch = min(steps_per_epoch, cfg.train.max_steps_per_epoch)

    groups = method.param_groups(core, cfg.optim)
    optimizer = torch.optim.AdamW(
        groups, betas=tuple(cfg.optim.betas), eps=cfg.optim.eps, weight_decay=cfg.optim.weight_decay
    )
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.train.amp)
    use_amp = amp_dtype is not None and env.device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)

    state = {"epoch": 0, "step": 0, "best_metric": None, "best_epoch": None, "bad_evals": 0, "history": []}
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if "scaler" in ckpt.get("trainer", {}):
            scaler.load_state_dict(ckpt["trainer"]["scaler"])
        state.update({k: v for k, v in ckpt["trainer"].items() if k in state})
        state["epoch"], state["step"] = ckpt["epoch"], ckpt["step"]
        restore_rng(ckpt["rng"])
        log.info("resumed %s at epoch %d (step %d)", run_dir, state["epoch"], state["step"])
        if state["epoch"] >= cfg.train.epochs:
            log.info(
                "%s: already trained %d of %d epochs, nothing to do (ask for more with --epochs)",
                run_dir,
                state["epoch"],
                cfg.train.epochs,
            )

    logger = _Logger(run_dir, env.is_main, resume_step=state["step"] if ckpt is not None else None)
    if env.is_main:
        save_config(cfg, run_dir / CONFIG_NAME)
        log.info(
            "training %s on %d clips (%d val%s), %d steps/epoch of %d pairs, %s on %s",
            cfg.method,
            len(splits.train),
            len(splits.val),
            ", with boxes" if splits.val_annotations is not None else "",
            steps_per_epoch,
            cfg.train.batch_size,
            f"{env.world_size} processes" if env.distributed else "1 process",
            env.device,
        )
    if state["epoch"] == 0 and not state["history"] and env.is_main:
        record = {
            "type": "val",
            "epoch": 0,
            "step": 0,
            **_validate(core, method, cfg, splits, env.device, audio_cache, channels_last),
        }
        state["history"].append(record)
        logger.write(record)

    bar = None
    if progress and env.is_main:
        from tqdm import tqdm

        bar = tqdm(
            total=cfg.train.epochs * steps_per_epoch, initial=state["step"], unit="step", dynamic_ncols=True
        )

    # A run that stopped early stays stopped on resume, unless the patience was raised.
    stopped_early = cfg.train.patience is not None and state["bad_evals"] >= cfg.train.patience
    if stopped_early:
        log.info("%s stopped early at epoch %d; raise train.patience to train on", run_dir, state["epoch"])
    try:
        for epoch in range(state["epoch"], cfg.train.epochs if not stopped_early else 0):
            train_ds.set_epoch(epoch)
            sampler.set_epoch(epoch)
            model.train()
            tic = time.perf_counter()
            running, seen = 0.0, 0
            for i, batch in enumerate(loader):
                if i >= steps_per_epoch:
                    break
                batch = _to_device(batch, env.device, channels_last)
                with (
                    torch.autocast(env.device.type, dtype=amp_dtype) if use_amp else contextlib.nullcontext()
                ):
                    loss, extra = method.loss(model, batch, cfg)
                finite = torch.isfinite(loss.detach()).float()
                if env.distributed:
                    dist.all_reduce(finite, op=dist.ReduceOp.MIN)
                if finite.item() < 1:
                    raise TrainingError(
                        f"non-finite loss ({loss.item()}) at epoch {epoch + 1}, step {state['step'] + 1}; stopped. "
                        f"Train again with lower learning rates (optim.lr_head={cfg.optim.lr_head}, "
                        f"optim.lr={cfg.optim.lr}; --overwrite or another --run-dir); the checkpoints of the "
                        f"epochs before are kept in {run_dir / CHECKPOINT_DIR}"
                    )
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                grad_norm = _grad_norm(optimizer)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                state["step"] += 1
                running += float(loss.detach())
                seen += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(epoch=epoch + 1, loss=f"{running / seen:.4f}")
                if state["step"] % cfg.train.log_every == 0 or i + 1 == steps_per_epoch:
                    elapsed = time.perf_counter() - tic
                    record = {
                        "type": "train",
                        "epoch": epoch + 1,
                        "step": state["step"],
                        "loss": all_reduce_mean(float(loss.detach()), env),
                        "pairs_per_s": seen * cfg.train.batch_size / max(elapsed, 1e-9),
                        "grad_norm": grad_norm,
                        **{f"lr_{g['name']}": g["lr"] for g in optimizer.param_groups},
                        **extra,
                    }
                    logger.write(record)
            state["epoch"] = epoch + 1
            stop = False
            if env.is_main:
                record = {
                    "type": "val",
                    "epoch": epoch + 1,
                    "step": state["step"],
                    "train_loss": running / max(seen, 1),
                }
                if (epoch + 1) % cfg.train.eval_every == 0 or epoch + 1 == cfg.train.epochs:
                    record.update(
                        _validate(core, method, cfg, splits, env.device, audio_cache, channels_last)
                    )
                    value = record.get(select_key)
                    better = value is not None and (
                        state["best_metric"] is None
                        or (
                            value > state["best_metric"]
                            if select_mode == "max"
                            else value < state["best_metric"]
                        )
                    )
                    if better:
                        state.update(best_metric=value, best_epoch=epoch + 1, bad_evals=0)
                        save_checkpoint(
                            run_dir / CHECKPOINT_DIR / BEST,
                            model=core,
                            config=cfg,
                            epoch=epoch + 1,
                            step=state["step"],
                            metrics=record,
                            rng=False,
                        )
                    else:
                        state["bad_evals"] += 1
                    stop = cfg.train.patience is not None and state["bad_evals"] >= cfg.train.patience
                state["history"].append(record)
                logger.write(record)
                trainer_state = {k: state[k] for k in ("best_metric", "best_epoch", "bad_evals", "history")}
                trainer_state["data"] = fingerprint
                if scaler.is_enabled():
                    trainer_state["scaler"] = scaler.state_dict()
                save_checkpoint(
                    run_dir / CHECKPOINT_DIR / LAST,
                    model=core,
                    config=cfg,
                    epoch=epoch + 1,
                    step=state["step"],
                    optimizer=optimizer,
                    scheduler=scheduler,
                    trainer_state=trainer_state,
                    metrics=record,
                )
                atomic_save_json(run_dir / HISTORY_NAME, state["history"])
            if env.distributed:
                flag = torch.tensor([1.0 if stop else 0.0], device=env.device)
                dist.broadcast(flag, src=0)
                stop = bool(flag.item())
            if stop:
                stopped_early = True
                log.info(
                    "early stopping after epoch %d: %s did not improve for %d evaluations",
                    epoch + 1,
                    select_key,
                    cfg.train.patience,
                )
                break
    finally:
        if bar is not None:
            bar.close()
        logger.close()
    return TrainResult(
        run_dir,
        state["epoch"],
        state["step"],
        state["best_epoch"],
        state["best_metric"],
        select_key,
        stopped_early,
        state["history"],
    )


def _grad_norm(optimizer: torch.optim.Optimizer) -> float:
    """L2 norm of all gradients the optimiser applies (after DDP averaging)."""
    grads = [
        p.grad.detach().float().norm()
        for g in optimizer.param_groups
        for p in g["params"]
        if p.grad is not None
    ]
    return float(torch.stack(grads).norm()) if grads else 0.0


def _config_of(ckpt: dict) -> Config:
    from ..config import config_from_dict

    return config_from_dict(ckpt["config"])


def _resumed_model(method, cfg: Config, ckpt: dict) -> torch.nn.Module:
    """The model of a run to resume in the checkpoint's state: published encoder weights from the
    weights cache, everything else from the checkpoint (before any cache is built from its encoders)."""
    model = method.build(cfg, pretrained=False)
    load_published_encoders(model, ckpt)
    model.load_state_dict(_full_state(model, ckpt["model"]), strict=True)
    return model


def _full_state(model: torch.nn.Module, saved: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Saved state completed with the model's own (published, frozen) encoder weights it omits."""
    state = model.state_dict()
    state.update(saved)
    return state
