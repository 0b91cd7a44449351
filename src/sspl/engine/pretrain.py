"""Supervised pretraining of the SynthAV encoders.

SSPL learns on top of frozen encoders pretrained elsewhere (ImageNet VGG16, AudioSet VGGish). On SynthAV
the analogue is :class:`~sspl.models.small.SmallVisualCNN` trained to classify the object category at each
cell of its 14 x 14 map and :class:`~sspl.models.small.SmallAudioCNN` trained to classify the sound
category, both on SynthAV's "pretrain" split, which shares no scene with train / val / test.

Frames go through the shared evaluation transform (:mod:`sspl.engine.oracle`), the learning rate follows
the shared schedule (:func:`sspl.engine.schedule.lr_factor`); one loop (:func:`_fit`) trains both encoders.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.manifest import MANIFEST_NAME, read_manifest, read_meta
from ..data.synth import (
    BACKGROUND_KINDS,
    GENERATOR_VERSION,
    IGNORE_LABEL,
    LABEL_GRID,
    PRETRAIN_IDS,
    PRETRAIN_LOCATION_COVERAGE,
    PRETRAIN_LOCATION_LABELS,
    PRETRAIN_SOUND_LABELS,
    SynthConfig,
    render_scene,
    scene_id,
)
from ..errors import DataError, SSPLError
from ..io import atomic_save_json, atomic_save_torch, nearest_existing
from ..models.small import SmallAudioCNN, SmallVisualCNN
from ..outputs import LOCK_NAME, check_output_folder, output_lock, remove_stale_temps
from ..paths import path_inside
from .oracle import load_eval_frames, normalize_frames
from .schedule import lr_factor

__all__ = [
    "AUDIO_WEIGHTS_NAME",
    "ENCODERS_JSON_NAME",
    "VISUAL_WEIGHTS_NAME",
    "check_finite",
    "load_synth_encoders",
    "pretrain_synth_encoders",
    "split_background",
]

log = logging.getLogger(__name__)

VISUAL_WEIGHTS_NAME = "visual_encoder.pt"
AUDIO_WEIGHTS_NAME = "audio_encoder.pt"
ENCODERS_JSON_NAME = "encoders.json"
#: pretraining scenes a set needs: at least one to learn from and one held out
MIN_PRETRAIN_SCENES = 2


# --------------------------------------------------------------------------------------------------
# Pretraining
# --------------------------------------------------------------------------------------------------


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"{path}: cannot read ({e}); rerun `sspl synth` on the set to rewrite it") from e


def _spect(path: Path) -> np.ndarray:
    array = _load_npy(path)
    if array.shape != (3, 96, 64):
        raise DataError(
            f"{path}: log-mel patches of shape {array.shape}, expected (3, 96, 64); rerun `sspl synth`"
        )
    if array.dtype.kind not in "fiu" or not np.isfinite(array).all():
        raise DataError(
            f"{path}: log-mel patches hold NaN, infinite or non-numeric values; rerun `sspl synth`"
        )
    return array


def _load_pretrain_data(root: Path) -> dict:
    """Frames, log-mel patches and labels of the "pretrain" split (in ``pretrain/ids.txt`` order)."""
    meta = read_meta(root)
    if meta.get("kind") != "synth":
        raise DataError(f"{root}: kind {meta.get('kind')!r} is not a SynthAV set; make one with `sspl synth`")
    if not (root / MANIFEST_NAME).is_file():
        raise DataError(
            f"{root}: the SynthAV set is unfinished (no {MANIFEST_NAME}); rerun the `sspl synth` command that "
            "made it, with the same settings, to finish it"
        )
    made_with = int((meta.get("synth") or {}).get("pretrain_num", MIN_PRETRAIN_SCENES))
    if made_with < MIN_PRETRAIN_SCENES:
        raise DataError(
            f"{root}: made with --pretrain-num {made_with}; encoder pretraining needs at least "
            f"{MIN_PRETRAIN_SCENES} pretraining scenes. Make a set with --pretrain-num {MIN_PRETRAIN_SCENES} "
            "or more (default 1000)"
        )
    for rel in (PRETRAIN_IDS, PRETRAIN_LOCATION_COVERAGE, PRETRAIN_LOCATION_LABELS, PRETRAIN_SOUND_LABELS):
        if not (root / rel).is_file():
            raise DataError(
                f"{root / rel}: missing; rerun the `sspl synth` command that made the set to restore it"
            )
    ids = (root / PRETRAIN_IDS).read_text(encoding="utf-8").split()
    coverage = _load_npy(root / PRETRAIN_LOCATION_COVERAGE)
    locations = _load_npy(root / PRETRAIN_LOCATION_LABELS)
    sounds = _load_npy(root / PRETRAIN_SOUND_LABELS)
    grid = (LABEL_GRID, LABEL_GRID)
    if (
        len(ids) < MIN_PRETRAIN_SCENES
        or locations.shape != (len(ids), *grid)
        or coverage.ndim != 4
        or coverage.shape[0] != len(ids)
        or coverage.shape[-2:] != grid
        or sounds.shape != (len(ids),)
    ):
        raise DataError(
            f"{root / 'pretrain'}: expected at least {MIN_PRETRAIN_SCENES} scenes with {LABEL_GRID} x {LABEL_GRID} location "
            f"coverage and labels and one sound label each; got {len(ids)} ids, coverage "
            f"{coverage.shape}, labels {locations.shape}, sound labels {sounds.shape}"
        )
    categories = coverage.shape[1] - 1
    for path, labels, high in (  # sounds index the categories; locations are 0 (background) or 1 + category
        (PRETRAIN_SOUND_LABELS, sounds, categories - 1),
        (PRETRAIN_LOCATION_LABELS, locations[locations != IGNORE_LABEL], categories),
    ):
        if labels.size and (labels.min() < 0 or labels.max() > high):
            raise DataError(
                f"{root / path}: labels {labels.min()} .. {labels.max()} outside 0 .. {high} (the set has "
                f"{categories} categories); rerun `sspl synth` on the set to rewrite it"
            )
    rows = {r.id: r for r in read_manifest(root)}
    missing = [i for i in ids if i not in rows or not rows[i].ok]
    if missing:
        raise DataError(
            f"{root}: {len(missing)} pretraining scene(s) not done in the manifest, e.g. {missing[0]}"
        )
    spects = np.stack([_spect(root / rows[i].spect) for i in ids])  # M x 3 x 96 x 64
    return {
        "ids": ids,
        "frames": load_eval_frames([root / rows[i].frame for i in ids]),
        "locations": torch.from_numpy(locations.astype(np.int64)),
        "coverage": torch.from_numpy(coverage.astype(np.float32)),
        "spects": torch.from_numpy(spects.astype(np.float32)),
        "sounds": torch.from_numpy(sounds.astype(np.int64)),
        "num_categories": coverage.shape[1] - 1,
        "category_names": [c["name"] for c in meta.get("categories", [])],
    }


def _check_out_path(out: Path) -> None:
    """Refuse an output folder that cannot take the encoders before minutes of training, not after."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out}: exists and is not a folder")
    existing = nearest_existing(out)
    if not existing.is_dir():
        raise NotADirectoryError(f"{out}: cannot be made, {existing} is a file, not a folder")
    check_output_folder(out, "--out")


def _check_out_empty(out: Path, overwrite: bool) -> None:
    """Refuse a folder holding files (other than the lock this command holds) unless ``overwrite``."""
    if any(p.name != LOCK_NAME for p in out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out}: folder is not empty; choose a new one or pass overwrite (--overwrite)")


def _background_kinds(root: Path, ids: Sequence[str]) -> torch.Tensor:
    """Each pretraining scene's background kind (index into ``BACKGROUND_KINDS``), rendered again from the
    set's settings: the files do not record it, and the generator is deterministic."""
    meta = read_meta(root)
    if meta.get("generator_version") != GENERATOR_VERSION:
        raise DataError(
            f"{root}: made by SynthAV generator version {meta.get('generator_version')!r}, this one is "
            f"{GENERATOR_VERSION}: its background kinds cannot be rendered again; regenerate the set with `sspl synth`"
        )
    config = SynthConfig.from_json(meta["synth"])
    kinds = []
    for sid in ids:
        number = sid.rsplit("_", 1)[-1]
        index = int(number) if number.isdigit() else -1
        if index < 0 or scene_id("pretrain", index) != sid:
            raise DataError(f"{root / PRETRAIN_IDS}: {sid!r} is not a pretraining scene id")
        kinds.append(BACKGROUND_KINDS.index(render_scene(config, "pretrain", index).background))
    return torch.tensor(kinds, dtype=torch.int64)


def split_background(coverage: torch.Tensor, kinds: torch.Tensor) -> torch.Tensor:
    """Coverage targets with the background split by kind: ``M x (1 + K) x h x w`` (background first) to
    ``M x (len(BACKGROUND_KINDS) + K) x h x w`` (one channel per background kind, then the K categories);
    a scene's background coverage goes to its own kind's channel, the others are 0."""
    onehot = F.one_hot(kinds, len(BACKGROUND_KINDS)).to(coverage.dtype)[:, :, None, None]
    return torch.cat([onehot * coverage[:, :1], coverage[:, 1:]], 1)


def _object_cell_loss(logits: torch.Tensor, coverage: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the object categories only, each cell weighted by its object coverage.

    Args:
        logits: ``b x K x h x w`` (no background class).
        coverage: ``b x (1 + K) x h x w`` soft targets, background first.

    Returns:
        The mean over object pixels: a cell half covered by an object counts half, background counts
        nothing, so the features of the background are never trained towards any class (0 when the
        batch holds no object).
    """
    objects = coverage[:, 1:]
    weight = objects.sum(1)  # b x h x w
    target = objects / weight.clamp_min(1e-8).unsqueeze(1)
    per_cell = -(target * F.log_softmax(logits, 1)).sum(1)
    return (weight * per_cell).sum() / weight.sum().clamp_min(1e-8)


@dataclass(frozen=True)
class _Schedule:
    """How both encoders train: epochs, batch size, peak learning rate, the seeded generator of every
    shuffle and flip, and whether a progress bar shows."""

    epochs: int
    batch_size: int
    lr: float
    generator: torch.Generator
    progress: bool


def check_finite(loss: torch.Tensor, what: str, epoch: int) -> torch.Tensor:
    """``loss``, or an SSPLError naming the encoder (``what``) and the 1-based epoch when it is NaN or
    infinite."""
    if not torch.isfinite(loss):
        raise SSPLError(
            f"{what} pretraining loss became {loss.item()} in epoch {epoch + 1}; lower the learning rate"
        )
    return loss


def _fit(
    encoder: nn.Module,
    head: nn.Module,
    count: int,
    loss_of: Callable[[torch.Tensor], torch.Tensor],
    schedule: _Schedule,
    what: str,
) -> None:
    """The training loop of both encoders: AdamW (weight decay 1e-4) on the encoder and its head, the
    learning rate on the shared cosine schedule (:func:`sspl.engine.schedule.lr_factor`), each epoch a
    seeded shuffle of ``count`` items in batches whose indices ``loss_of`` maps to a loss. Leaves the
    encoder in eval mode."""
    from tqdm import tqdm

    optimizer = torch.optim.AdamW(
        [*encoder.parameters(), *head.parameters()], lr=schedule.lr, weight_decay=1e-4
    )
    steps = schedule.epochs * math.ceil(count / schedule.batch_size)
    step = 0
    encoder.train()
    with tqdm(total=steps, desc=what, unit="step", disable=not schedule.progress) as bar:
        for epoch in range(schedule.epochs):
            for batch in torch.randperm(count, generator=schedule.generator).split(schedule.batch_size):
                loss = check_finite(loss_of(batch), what, epoch)
                for group in optimizer.param_groups:
                    group["lr"] = schedule.lr * lr_factor(step, steps)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                bar.set_postfix(loss=f"{loss.item():.3f}")
                bar.update()
    encoder.eval()


def _train_visual(
    data: dict, train_idx: torch.Tensor, channels: int, schedule: _Schedule, background_outputs: int = 1
) -> tuple[SmallVisualCNN, nn.Conv2d]:
    """``background_outputs``: 1 (the background is one class), ``len(BACKGROUND_KINDS)`` (one class per
    kind; ``data["coverage"]`` then comes from :func:`split_background`) or 0 (no background class)."""
    num_classes = data["num_categories"] + background_outputs
    encoder, head = SmallVisualCNN(channels), nn.Conv2d(channels, num_classes, 1)

    def loss_of(batch: torch.Tensor) -> torch.Tensor:
        idx = train_idx[batch]
        frames = data["frames"][idx]  # b x 3 x 224 x 224
        target = data["coverage"][idx]  # b x (1 or kinds) + K x 14 x 14, sums to 1 over the classes
        flip = (torch.rand(len(idx), generator=schedule.generator) < 0.5).view(-1, 1, 1, 1)
        frames = torch.where(flip, frames.flip(-1), frames)
        target = torch.where(flip, target.flip(-1), target)
        logits = head(encoder(normalize_frames(frames)))  # b x K + background outputs x 14 x 14
        if background_outputs:
            return F.cross_entropy(logits, target)
        return _object_cell_loss(logits, target)

    _fit(encoder, head, len(train_idx), loss_of, schedule, "visual")
    return encoder, head


def _train_audio(
    data: dict, train_idx: torch.Tensor, dim: int, schedule: _Schedule
) -> tuple[SmallAudioCNN, nn.Linear]:
    encoder, head = SmallAudioCNN(dim), nn.Linear(dim, data["num_categories"])
    patches = data["spects"][train_idx].flatten(0, 1).unsqueeze(1)  # (M * P) x 1 x 96 x 64
    labels = data["sounds"][train_idx].repeat_interleave(data["spects"].shape[1])  # M * P

    def loss_of(batch: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(head(encoder(patches[batch])), labels[batch])

    _fit(encoder, head, len(labels), loss_of, schedule, "audio")
    return encoder, head


@torch.no_grad()
def _visual_metrics(
    encoder: nn.Module,
    head: nn.Module,
    frames: torch.Tensor,
    labels: torch.Tensor,
    background_outputs: int = 1,
) -> dict:
    """Held-out per-location accuracy (all labelled cells) and on object cells; without a background class
    only the latter exists (``visual_location_accuracy`` is ``None``). With the background split by kind,
    any background kind counts as background."""
    preds = torch.cat([head(encoder(normalize_frames(f))).argmax(1) for f in frames.split(64)])  # N x 14 x 14
    # to the labels' numbering: 0 background, 1 + k category k
    preds = torch.where(preds < background_outputs, 0, preds - background_outputs + 1)
    valid = labels != IGNORE_LABEL
    objects = valid & (labels != 0)
    correct = preds == labels

    def share(cells: torch.Tensor) -> float | None:  # None (valid JSON) rather than NaN when no cell counts
        return round(float(correct[cells].float().mean()), 4) if bool(cells.any()) else None

    return {
        "visual_location_accuracy": share(valid) if background_outputs else None,
        "visual_object_location_accuracy": share(objects),
        "visual_object_location_cells": int(objects.sum()),
    }


@torch.no_grad()
def _audio_accuracy(encoder: nn.Module, head: nn.Module, spects: torch.Tensor, labels: torch.Tensor) -> float:
    n, p = spects.shape[:2]
    clip = encoder(spects.flatten(0, 1).unsqueeze(1)).view(n, p, -1).mean(1)  # N x D, as SSPL pools patches
    return round(float((head(clip).argmax(1) == labels).float().mean()), 4)


def pretrain_synth_encoders(
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    epochs: int = 5,
    batch_size: int = 32,
    seed: int = 0,
    visual_channels: int = 128,
    audio_dim: int = 128,
    lr: float = 2e-3,
    heldout_fraction: float = 0.1,
    background_class: bool = True,
    background_kinds: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Train the small encoders with supervision on a SynthAV set's "pretrain" split and save them.

    The visual CNN gets a 1 x 1 convolution head over its 14 x 14 map, trained with cross-entropy against
    each cell's coverage by background and categories (soft targets) with random horizontal flips; the audio CNN gets a linear
    head, trained on single log-mel patches labelled with their clip's sound category. AdamW with a
    cosine-decayed learning rate. A seeded ``heldout_fraction`` of the pretraining scenes is kept out of
    training to measure accuracy. Only the encoders are saved (heads dropped).

    Args:
        data_dir: folder written by ``sspl synth``.
        out_dir: output folder; must be empty or absent unless ``overwrite``.
        epochs: passes over the training scenes, for each encoder.
        batch_size: frames (visual) or log-mel patches (audio) per step.
        seed: seeds initialisation, held-out choice, shuffling and flips (the global RNG is left as it was).
        visual_channels: ``C`` of :class:`SmallVisualCNN`.
        audio_dim: ``D`` of :class:`SmallAudioCNN`.
        lr: peak learning rate of both encoders.
        heldout_fraction: share of pretraining scenes used only for the reported accuracies.
        background_class: train the visual CNN to label background cells as one more class (default). Without
            it only object pixels carry a loss, over the object categories alone, as ImageNet classification
            has no background class: the background's features are then whatever the object training makes
            of them, not one learned cluster.
        background_kinds: label background cells by their kind (noise, gradient, stripes: three classes
            instead of one), as ImageNet features tell grass from sky: the background is then not one
            feature cluster that a single query finds in every scene. Needs ``background_class``.
        overwrite: write into a non-empty ``out_dir`` (replacing the three output files only).
        progress: show progress bars.

    Returns:
        The content written to ``encoders.json`` (architectures, dims, data folder, metrics, settings).

    Raises:
        FileExistsError: ``out_dir`` is not empty and ``overwrite`` is false.
        sspl.outputs.OutputInUseError: another process writes into ``out_dir``.
        PermissionError: nothing can be written in ``out_dir`` (checked before any work).
        DataError: ``data_dir`` is not a complete SynthAV set.
        SSPLError: a loss became non-finite.
    """
    _check_options(epochs, batch_size, visual_channels, audio_dim, seed, heldout_fraction)
    if background_kinds and not background_class:
        raise ValueError(
            "--background-kinds splits the background class: it cannot go with --no-background-class"
        )
    root, out = Path(data_dir), Path(out_dir)
    _check_out_path(out)
    start = time.perf_counter()
    data = _load_pretrain_data(root)  # unusable data leaves no output folder behind
    with output_lock(out, "sspl synth-pretrain"):  # one writer; the folder is looked at only once held
        # a killed run's temporary files are this command's own: gone before the folder is judged empty
        remove_stale_temps(out, (VISUAL_WEIGHTS_NAME, AUDIO_WEIGHTS_NAME, ENCODERS_JSON_NAME))
        _check_out_empty(out, overwrite)
        background_outputs = (len(BACKGROUND_KINDS) if background_kinds else 1) if background_class else 0
        if background_kinds:
            data["coverage"] = split_background(data["coverage"], _background_kinds(root, data["ids"]))
        m = len(data["ids"])
        generator = torch.Generator().manual_seed(seed)
        order = torch.randperm(m, generator=generator)
        n_held = min(max(1, int(round(m * heldout_fraction))), m - 1)
        held_idx, train_idx = order[:n_held], order[n_held:]
        schedule = _Schedule(epochs, batch_size, lr, generator, progress)
        # parameter initialisation is seeded without touching global state
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            visual, visual_head = _train_visual(
                data, train_idx, visual_channels, schedule, background_outputs
            )
            visual_seconds = time.perf_counter() - start
            audio, audio_head = _train_audio(data, train_idx, audio_dim, schedule)
        metrics = _visual_metrics(
            visual, visual_head, data["frames"][held_idx], data["locations"][held_idx], background_outputs
        )
        metrics["audio_accuracy"] = _audio_accuracy(
            audio, audio_head, data["spects"][held_idx], data["sounds"][held_idx]
        )
        seconds = time.perf_counter() - start
        info = {
            **_architectures(visual_channels, audio_dim),
            "data_dir": str(root.resolve()),
            "categories": data["category_names"],
            "num_pretrain_scenes": m,
            "num_heldout_scenes": n_held,
            "metrics": metrics,
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "seed": seed,
            "background_class": background_class,
            "background_kinds": list(BACKGROUND_KINDS) if background_kinds else None,
            "seconds": {"visual": round(visual_seconds, 1), "total": round(seconds, 1)},
            "torch_threads": torch.get_num_threads(),
        }
        _save_encoders(out, visual, audio, info)
        log.info(
            "pretrained encoders in %.0f s: per-location accuracy %s (object cells %s), audio accuracy %.3f",
            seconds,
            _rate(metrics["visual_location_accuracy"]),
            _rate(metrics["visual_object_location_accuracy"]),
            metrics["audio_accuracy"],
        )
        return info


def _check_options(
    epochs: int, batch_size: int, visual_channels: int, audio_dim: int, seed: int, heldout_fraction: float
) -> None:
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be positive, got {epochs} and {batch_size}")
    if visual_channels < 1 or audio_dim < 1:
        raise ValueError(
            f"--visual-channels and --audio-dim must be positive, got {visual_channels} and {audio_dim}"
        )
    if not 0 <= seed < 2**63:
        raise ValueError(f"--seed must be in [0, 2**63), got {seed}")
    if not 0 < heldout_fraction < 1:
        raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")


def _architectures(visual_channels: int, audio_dim: int) -> dict:
    """What ``encoders.json`` records of the two encoders, for :func:`load_synth_encoders` to rebuild them."""
    return {
        "visual": {
            "name": "small_cnn",
            "class": "SmallVisualCNN",
            "out_channels": visual_channels,
            "stride": SmallVisualCNN.stride,
            "weights": VISUAL_WEIGHTS_NAME,
            "input": "B x 3 x 224 x 224 ImageNet-normalised",
        },
        "audio": {
            "name": "small_cnn",
            "class": "SmallAudioCNN",
            "embed_dim": audio_dim,
            "weights": AUDIO_WEIGHTS_NAME,
            "input": "B x 1 x 96 x 64 VGGish log-mel patch",
        },
    }


def _save_encoders(out: Path, visual: nn.Module, audio: nn.Module, info: dict) -> None:
    """Write the pair, then ``encoders.json``: it marks a finished pair, so it is gone while the weights
    change, and a kill between the two files never leaves one generation's visual encoder beside another's
    audio encoder."""
    (out / ENCODERS_JSON_NAME).unlink(missing_ok=True)
    atomic_save_torch(out / VISUAL_WEIGHTS_NAME, visual.state_dict())
    atomic_save_torch(out / AUDIO_WEIGHTS_NAME, audio.state_dict())
    atomic_save_json(out / ENCODERS_JSON_NAME, info)


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _weights_path(root: Path, record: dict, info_path: Path) -> Path:
    """The weights file an ``encoders.json`` record names: a path inside its folder, else a WeightsError."""
    from ..errors import WeightsError

    relative = record["weights"]
    if not isinstance(relative, str):
        raise TypeError(f"a weights file name is text, not {type(relative).__name__}")
    try:
        return path_inside(root, relative, str(info_path))
    except DataError as e:
        raise WeightsError(str(e)) from None


def load_synth_encoders(
    directory: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[SmallVisualCNN, SmallAudioCNN]:
    """Load the encoders written by :func:`pretrain_synth_encoders`, frozen and in eval mode.

    Args:
        directory: the ``--out`` folder of ``sspl synth-pretrain`` (holds ``encoders.json``).
        device: where to put the modules.

    Returns:
        ``(visual, audio)``: ``B x 3 x 224 x 224 -> B x C x 14 x 14`` and ``B x 1 x 96 x 64 -> B x D``.

    Raises:
        WeightsError: a file is missing or does not match the recorded architecture.
    """
    from ..errors import WeightsError
    from ..models.encoders import freeze
    from ..models.factory import load_module_file

    root = Path(directory)
    info_path = root / ENCODERS_JSON_NAME
    if not info_path.is_file():
        raise WeightsError(f"{info_path}: missing; create the encoders with `sspl synth-pretrain`")
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
        pairs = (
            (
                SmallVisualCNN(int(info["visual"]["out_channels"])),
                _weights_path(root, info["visual"], info_path),
            ),
            (SmallAudioCNN(int(info["audio"]["embed_dim"])), _weights_path(root, info["audio"], info_path)),
        )
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as e:
        raise WeightsError(f"{info_path}: not an encoders record of `sspl synth-pretrain` ({e})") from e
    for module, path in pairs:
        if not path.is_file():
            raise WeightsError(f"{path}: missing; create the encoders with `sspl synth-pretrain`")
        load_module_file(module, path, f"does not match the encoder {info_path} records")
        freeze(module).to(device)
    return pairs[0][0], pairs[1][0]
