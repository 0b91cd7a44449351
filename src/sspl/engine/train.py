"""The training loop: one code path for every method, resumable bit-for-bit, distributed with torchrun.

Model selection uses a validation split held out of the training data (cIoU@0.5 when the prepared
folder carries boxes for it, else the validation loss); the test split is never read here.

It reads in layers: :func:`train` holds the run directory (:mod:`sspl.engine.run_dir`) and runs the
set-up (:func:`_set_up`: the checks, the data of :mod:`sspl.engine.train_data`, the model and its caches,
the loader, the optimiser and a resumed run's state, gathered in a :class:`Trainer`); then each epoch is
one :func:`train_one_epoch`, a series of :func:`train_step`, followed by :func:`_validate` and the
checkpoints (:func:`_end_epoch`). Where the run stands is a :class:`TrainState`, saved in each checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

from ..config import Config, save_config
from ..data.datasets import PreparedDataset
from ..data.feature_cache import check_cache_visual_config
from ..data.loader import collate_samples, to_device, worker_init
from ..io import atomic_save_json
from ..metrics import BENCHMARKS, evaluate_maps
from ..models.methods import get_method
from .checkpoint import BEST, CHECKPOINT_DIR, LAST, restore_rng, resumed_model, save_checkpoint
from .distributed import (
    DistEnv,
    all_reduce_mean,
    broadcast_flag,
    convert_sync_batchnorm,
    init_distributed,
    wrap_ddp,
)
from .run_dir import (
    CONFIG_NAME,
    HISTORY_NAME,
    RESUMABLE_KEYS,
    RunLog,
    TrainingError,
    check_new_run,
    clear_run_dir,
    fixed_changes,
    hold_run_dir,
    resume_checkpoint,
    saved_config,
)
from .schedule import build_scheduler  # re-exported: sspl.engine.train.build_scheduler
from .step import NonFiniteLossError, Optimisation, StepResult, build_optimisation, train_step
from .train_data import Splits, audio_cache, select_key, training_splits, visual_cache
from .train_state import TrainResult, TrainState

__all__ = [
    "RESUMABLE_KEYS",
    "NonFiniteLossError",
    "StepResult",
    "TrainResult",
    "TrainState",
    "Trainer",
    "TrainingError",
    "build_scheduler",
    "fixed_changes",
    "saved_config",
    "train",
    "train_one_epoch",
    "train_step",
]

log = logging.getLogger(__name__)

#: The loaders' collate function, looked up here when they are built (a test records batches through it).
_collate = collate_samples


@dataclass
class Trainer:
    """What the set-up built for a run; fixed while it trains (its progress is a :class:`TrainState`)."""

    cfg: Config
    env: DistEnv
    run_dir: Path
    method: Any
    model: torch.nn.Module  # what the steps run: ``core``, in DistributedDataParallel under torchrun
    core: torch.nn.Module  # the model itself: validated and saved
    splits: Splits
    fingerprint: str  # of the train / val ids, which a resumed run must be given again
    select_key: str
    select_mode: str  # "max" or "min"
    dataset: PreparedDataset
    sampler: DistributedSampler
    loader: DataLoader
    steps_per_epoch: int
    opt: Optimisation
    channels_last: bool
    audio_cache: dict[str, torch.Tensor] | None
    log: RunLog


# --------------------------------------------------------------------------------------------------
# the entry point
# --------------------------------------------------------------------------------------------------


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
        with hold_run_dir(run_dir, env, resume):
            trainer, state = _set_up(
                config, data_dir, run_dir, env, resume=resume, overwrite=overwrite, progress=progress
            )
            return _run(trainer, state, progress)
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


# --------------------------------------------------------------------------------------------------
# set-up
# --------------------------------------------------------------------------------------------------


def _set_up(
    config: Config,
    data_dir: Path,
    run_dir: Path,
    env: DistEnv,
    *,
    resume: bool,
    overwrite: bool,
    progress: bool,
) -> tuple[Trainer, TrainState]:
    """Check the run, then build everything it trains with and the state it starts from."""
    # Everything is checked before anything in the run dir changes: a mistake never costs a run.
    ckpt = None
    if resume:
        config, ckpt = resume_checkpoint(config, run_dir)
    else:
        check_new_run(run_dir, overwrite)
    cfg = config
    _check_options(cfg, env)
    splits, fingerprint = training_splits(cfg, data_dir, run_dir, ckpt)
    key, mode = select_key(cfg, splits)
    _seed_everything(cfg.train.seed)
    method = get_method(cfg.method)
    core = _build_model(method, cfg, ckpt, run_dir, env, clear=not resume)
    audio = audio_cache(core, splits.train + splits.val, run_dir, env, cfg) if cfg.data.cache_audio else None
    # Training views only: validation and evaluation encode exact frames.
    visual = visual_cache(core, splits.train, run_dir, env, cfg, progress) if cfg.data.cache_visual else None
    model = wrap_ddp(core, env, find_unused_parameters=getattr(method, "find_unused_parameters", False))
    dataset, sampler, loader, steps_per_epoch = _train_loader(cfg, splits, env, audio, visual)
    opt = build_optimisation(method, core, cfg, steps_per_epoch, env.device)
    state = TrainState()
    if ckpt is not None:
        state = _restore(ckpt, opt)
        _log_resumed(run_dir, state, cfg)
    trainer = Trainer(
        cfg=cfg,
        env=env,
        run_dir=run_dir,
        method=method,
        model=model,
        core=core,
        splits=splits,
        fingerprint=fingerprint,
        select_key=key,
        select_mode=mode,
        dataset=dataset,
        sampler=sampler,
        loader=loader,
        steps_per_epoch=steps_per_epoch,
        opt=opt,
        channels_last=cfg.train.channels_last,
        audio_cache=audio,
        log=RunLog(run_dir, env.is_main, resume_step=state.step if ckpt is not None else None),
    )
    if env.is_main:
        save_config(cfg, run_dir / CONFIG_NAME)
        _log_start(trainer)
    return trainer, state


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 -- third-party code may draw from the legacy global state
    torch.manual_seed(seed)


def _build_model(method, cfg: Config, ckpt: dict | None, run_dir: Path, env: DistEnv, *, clear: bool):
    """The model on its device, in its memory format (and synced batch norms under torchrun); the run
    dir is cleared (``clear``) only once it is built."""
    # Built before the run dir is cleared, so a missing weights file costs nothing. On resume only
    # published encoder weights are read; the checkpoint holds all others.
    model = resumed_model(method, cfg, ckpt) if ckpt is not None else method.build(cfg, pretrained=True)
    model = model.to(env.device)
    if env.is_main and clear:
        clear_run_dir(run_dir)
    if env.distributed:
        dist.barrier()
    # On every device: oneDNN's CPU convolutions gain as much as cuDNN's (a full-size step at batch 8 on
    # the 2-core CPU: 8.2 s contiguous, 6.3 s channels-last; the SynthAV small CNN 1.35x).
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if env.distributed and cfg.train.sync_bn:
        model = convert_sync_batchnorm(model, env.device)
    return model


def _train_loader(
    cfg: Config, splits: Splits, env: DistEnv, audio: dict | None, visual
) -> tuple[PreparedDataset, DistributedSampler, DataLoader, int]:
    """The training data (two augmented views per clip), this process's share of each epoch, its
    loader, and the steps an epoch takes."""
    dataset = PreparedDataset(
        splits.train,
        mode="train",
        augmentations=cfg.data.augmentations,
        image_size=cfg.data.image_size,
        seed=cfg.train.seed,
        labels=splits.labels,
        audio_embeddings=audio,
        visual_features=visual,
        audio_frontend=cfg.model.audio_frontend,
        audio_augmentations=cfg.data.audio_augmentations,
        test_transform=cfg.data.test_transform,  # which frame file the views come from
    )
    sampler = DistributedSampler(
        dataset, num_replicas=env.world_size, rank=env.rank, shuffle=True, seed=cfg.train.seed, drop_last=True
    )
    loader = DataLoader(
        dataset,
        batch_size=cfg.train.batch_size // env.world_size,
        sampler=sampler,
        num_workers=cfg.data.num_workers,
        pin_memory=env.device.type == "cuda",
        drop_last=True,
        collate_fn=_collate,
        worker_init_fn=worker_init,
    )
    steps_per_epoch = len(loader)
    if cfg.train.max_steps_per_epoch is not None:
        steps_per_epoch = min(steps_per_epoch, cfg.train.max_steps_per_epoch)
    return dataset, sampler, loader, steps_per_epoch


def _restore(ckpt: dict, opt: Optimisation) -> TrainState:
    """Put the optimiser, the schedule, the scaler and the random generators back where the last
    checkpoint left them; returns the run's state there."""
    opt.optimizer.load_state_dict(ckpt["optimizer"])
    opt.scheduler.load_state_dict(ckpt["scheduler"])
    if "scaler" in ckpt.get("trainer", {}):
        opt.scaler.load_state_dict(ckpt["trainer"]["scaler"])
    state = TrainState.restored(ckpt)
    restore_rng(ckpt["rng"])
    return state


def _log_resumed(run_dir: Path, state: TrainState, cfg: Config) -> None:
    log.info("resumed %s at epoch %d (step %d)", run_dir, state.epoch, state.step)
    if state.epoch >= cfg.train.epochs:
        log.info(
            "%s: already trained %d of %d epochs, nothing to do (ask for more with --epochs)",
            run_dir,
            state.epoch,
            cfg.train.epochs,
        )


def _log_start(t: Trainer) -> None:
    log.info(
        "training %s on %d clips (%d val%s), %d steps/epoch of %d pairs, %s on %s",
        t.cfg.method,
        len(t.splits.train),
        len(t.splits.val),
        ", with boxes" if t.splits.val_annotations is not None else "",
        t.steps_per_epoch,
        t.cfg.train.batch_size,
        f"{t.env.world_size} processes" if t.env.distributed else "1 process",
        t.env.device,
    )


# --------------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------------


def _run(t: Trainer, state: TrainState, progress: bool) -> TrainResult:
    """Validate the start of a new run, then train the epochs left (fewer when early stopping ends it)."""
    if state.epoch == 0 and not state.history and t.env.is_main:
        record = {"type": "val", "epoch": 0, "step": 0, **_validate_trainer(t)}
        state.history.append(record)
        t.log.write(record)
    bar, console = None, contextlib.nullcontext()
    if progress and t.env.is_main:
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        total = t.cfg.train.epochs * t.steps_per_epoch
        bar = tqdm(total=total, initial=state.step, unit="step", dynamic_ncols=True)
        console = logging_redirect_tqdm()  # log lines (an epoch's end) print above the bar, not through it
    patience = t.cfg.train.patience
    # A run that stopped early stays stopped on resume, unless the patience was raised.
    stopped_early = state.out_of_patience(patience)
    if stopped_early:
        log.info("%s stopped early at epoch %d; raise train.patience to train on", t.run_dir, state.epoch)
    try:
        with console:
            for epoch in range(state.epoch, t.cfg.train.epochs if not stopped_early else 0):
                tic = time.perf_counter()
                state.step, train_loss = train_one_epoch(t, epoch, state.step, bar)
                state.epoch = epoch + 1
                stop = _end_epoch(t, state, train_loss) if t.env.is_main else False
                if t.env.is_main:
                    log.info(epoch_line(t, state, time.perf_counter() - tic))
                if broadcast_flag(stop, t.env):
                    stopped_early = True
                    log.info(
                        "early stopping after epoch %d: %s did not improve for %d evaluations",
                        epoch + 1,
                        t.select_key,
                        patience,
                    )
                    break
    finally:
        if bar is not None:
            bar.close()
        t.log.close()
    return TrainResult(
        t.run_dir,
        state.epoch,
        state.step,
        state.best_epoch,
        state.best_metric,
        t.select_key,
        stopped_early,
        state.history,
    )


def train_one_epoch(t: Trainer, epoch: int, step: int, bar=None) -> tuple[int, float]:
    """Train epoch ``epoch`` (0-based) from global step ``step``: its views and order drawn afresh, one
    :func:`train_step` per batch, a log record every ``train.log_every`` steps and at its end.

    Returns:
        The global step after it and its mean training loss (on this process).

    Raises:
        NonFiniteLossError: a step's loss is not finite; it names the epoch and step.
    """
    t.dataset.set_epoch(epoch)
    t.sampler.set_epoch(epoch)
    t.model.train()
    tic = time.perf_counter()
    running, seen = 0.0, 0
    for i, batch in enumerate(t.loader):
        if i >= t.steps_per_epoch:
            break
        batch = to_device(batch, t.env.device, t.channels_last)
        batch["epoch"] = epoch  # 0-based; methods with an epoch-dependent loss read it (FNAC's warm-up)
        try:
            out = train_step(t.model, t.method, batch, t.cfg, t.opt, t.env)
        except NonFiniteLossError as e:
            raise NonFiniteLossError(
                f"{e} at epoch {epoch + 1}, step {step + 1}; stopped. Train again with lower learning rates "
                f"(optim.lr_head={t.cfg.optim.lr_head}, optim.lr={t.cfg.optim.lr}; --overwrite or another "
                f"--run-dir); the checkpoints of the epochs before are kept in {t.run_dir / CHECKPOINT_DIR}"
            ) from None
        step += 1
        running += float(out.loss)
        seen += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{running / seen:.4f}")
        if step % t.cfg.train.log_every == 0 or i + 1 == t.steps_per_epoch:
            t.log.write(
                {
                    "type": "train",
                    "epoch": epoch + 1,
                    "step": step,
                    "loss": all_reduce_mean(float(out.loss), t.env),
                    "pairs_per_s": seen * t.cfg.train.batch_size / max(time.perf_counter() - tic, 1e-9),
                    "grad_norm": out.grad_norm,
                    **{f"lr_{g['name']}": g["lr"] for g in t.opt.optimizer.param_groups},
                    **out.extra,
                }
            )
    return step, running / max(seen, 1)


# --------------------------------------------------------------------------------------------------
# validation and checkpoints
# --------------------------------------------------------------------------------------------------


def _end_epoch(t: Trainer, state: TrainState, train_loss: float) -> bool:
    """After an epoch, on the main process: validate when due (keeping the best model), log, save the
    last checkpoint and the history; returns whether early stopping ends the run."""
    record = {"type": "val", "epoch": state.epoch, "step": state.step, "train_loss": train_loss}
    stop = False
    if state.epoch % t.cfg.train.eval_every == 0 or state.epoch == t.cfg.train.epochs:
        record.update(_validate_trainer(t))
        if state.evaluated(record.get(t.select_key), t.select_mode):
            _save_best(t, state, record)
        stop = state.out_of_patience(t.cfg.train.patience)
    state.history.append(record)
    t.log.write(record)
    _save_last(t, state, record)
    atomic_save_json(t.run_dir / HISTORY_NAME, state.history)
    return stop


def epoch_line(t: Trainer, state: TrainState, seconds: float) -> str:
    """The console's line for the epoch just ended: its training loss, the selection metric (when it was
    evaluated), the best so far and the epoch's wall time (training and validation)."""
    record = state.history[-1]
    value = record.get(t.select_key)
    metric = f"{t.select_key} {value:.4f}" if value is not None else f"{t.select_key} -"
    best = "-" if state.best_metric is None else f"{state.best_metric:.4f} (epoch {state.best_epoch})"
    return (
        f"epoch {state.epoch}/{t.cfg.train.epochs}  loss {record['train_loss']:.4f}  {metric}  "
        f"best {best}  {seconds:.1f} s"
    )


def _save_best(t: Trainer, state: TrainState, record: dict) -> None:
    """The model as the run's best so far: its weights, config and metrics (no state to resume from)."""
    save_checkpoint(
        t.run_dir / CHECKPOINT_DIR / BEST,
        model=t.core,
        config=t.cfg,
        epoch=state.epoch,
        step=state.step,
        metrics=record,
        rng=False,
        trained_on=t.splits.kind,
    )


def _save_last(t: Trainer, state: TrainState, record: dict) -> None:
    """The run's last checkpoint: all a resume needs to go on bit for bit."""
    save_checkpoint(
        t.run_dir / CHECKPOINT_DIR / LAST,
        model=t.core,
        config=t.cfg,
        epoch=state.epoch,
        step=state.step,
        optimizer=t.opt.optimizer,
        scheduler=t.opt.scheduler,
        trainer_state=state.saved(t.fingerprint, t.opt.scaler),
        metrics=record,
        trained_on=t.splits.kind,
    )


def _validate_trainer(t: Trainer) -> dict:
    return _validate(t.core, t.method, t.cfg, t.splits, t.env.device, t.audio_cache, t.channels_last)


@torch.no_grad()
def _validate(
    model, method, cfg: Config, splits: Splits, device: torch.device, audio_cache, channels_last: bool
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
        audio_frontend=cfg.model.audio_frontend,
        test_transform=cfg.data.test_transform,
    )
    total, count = 0.0, 0
    loader = DataLoader(
        loss_ds,
        batch_size=batch_size,
        num_workers=cfg.data.num_workers,
        collate_fn=_collate,
        worker_init_fn=worker_init,
    )
    for batch in loader:
        batch = to_device(batch, device, channels_last)
        loss, _ = method.loss(model, batch, cfg)
        total += float(loss) * len(batch["id"])
        count += len(batch["id"])
    metrics["val_loss"] = total / max(count, 1)
    if splits.val_annotations is not None:
        boxed = [s for s in splits.val if s.id in splits.val_annotations]  # clips with a visible source
        map_ds = PreparedDataset(
            boxed,
            mode="eval",
            image_size=cfg.data.image_size,
            audio_embeddings=audio_cache,
            audio_frontend=cfg.model.audio_frontend,
            test_transform=cfg.data.test_transform,
        )
        maps = {}
        for batch in DataLoader(
            map_ds,
            batch_size=batch_size,
            num_workers=cfg.data.num_workers,
            collate_fn=_collate,
            worker_init_fn=worker_init,
        ):
            batch = to_device(batch, device, channels_last)
            out = model.localize(
                batch["frame"], batch.get("spect"), audio_patch_embeddings=batch.get("audio_emb")
            )
            maps.update({i: m for i, m in zip(batch["id"], out.float().cpu().numpy())})
        result = evaluate_maps(
            maps, splits.val_annotations, BENCHMARKS[splits.protocol_name], expected_count=len(boxed)
        )
        metrics["val_ciou@0.5"] = result.ciou_success_rate
        metrics["val_auc"] = result.auc
    return metrics
