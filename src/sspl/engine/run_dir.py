"""A training run's folder: what the run writes there, who holds it, whether it may start, resume or be
cleared, the config a resumed run continues with, and its JSONL / TensorBoard log.

Everything here is checked before anything in the folder changes: a mistake never costs a run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from ..config import Config
from ..data.feature_cache import FEATURES_NAME, INDEX_NAME
from ..errors import SSPLError, WeightsError
from ..io import atomic_write_text
from ..outputs import check_output_folder, output_lock, remove_stale_temps, remove_written
from .checkpoint import BEST, CHECKPOINT_DIR, LAST, load_checkpoint, stored_encoder_settings
from .distributed import DistEnv

__all__ = [
    "AUDIO_CACHE_NAME",
    "CACHE_DIR",
    "CONFIG_NAME",
    "HISTORY_NAME",
    "LOG_NAME",
    "RESUMABLE_KEYS",
    "RunLog",
    "TrainingError",
    "check_new_run",
    "clear_run_dir",
    "fixed_changes",
    "hold_run_dir",
    "resume_checkpoint",
    "saved_config",
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
def hold_run_dir(run_dir: Path, env: DistEnv, resume: bool) -> Iterator[None]:
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


def check_new_run(run_dir: Path, overwrite: bool) -> None:
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


def clear_run_dir(run_dir: Path) -> None:
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


def resume_checkpoint(config: Config, run_dir: Path) -> tuple[Config, dict]:
    """The config a resumed run continues with (``config``, checked against the saved one) and the last
    checkpoint of the run in ``run_dir``.

    Raises:
        TrainingError: nothing to resume, a damaged or incomplete checkpoint, or a config that changes
            more than :data:`RESUMABLE_KEYS`.
    """
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
    return config, ckpt


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


def _config_of(ckpt: dict) -> Config:
    from ..config import config_from_dict

    return config_from_dict(ckpt["config"])


def _logged_step(line: str) -> float:
    """The step of a JSONL record; infinite for a line cut short by a kill (so it is dropped)."""
    try:
        return json.loads(line).get("step", 0)
    except (json.JSONDecodeError, AttributeError):
        return math.inf


class RunLog:
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
