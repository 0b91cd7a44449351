"""SynthAV experiments: the training config on SynthAV-pretrained encoders, the untrained model and the
oracle query, the reference points every SynthAV result is read against.

The real encoders' pretrained weights (ImageNet VGG16, AudioSet VGGish) are the heart of the paper's
setting: without them SSPL has nothing to localize with (the training issue's measurements). On SynthAV
their faithful analogue is a pair of small encoders pretrained with supervision on SynthAV's separate
"pretrain" split (:func:`sspl.engine.pretrain.pretrain_synth_encoders`), frozen while SSPL trains.

Three reference points come with every SynthAV result:

- the *untrained* model: the same architecture and frozen encoders, ``g``, PCM and head at their seeded
  initialisation, evaluated by the same evaluator (what training adds);
- the *oracle query*: the cosine map of the visual feature at the sounding object's own centre with every
  location (:func:`~sspl.engine.oracle.oracle_query_maps`): the best a single query vector on these
  frozen features does, i.e. what the encoders allow;
- the trivial maps (whole image, centre box, random) that :func:`~sspl.engine.evaluate.evaluate` reports.

And two diagnostics. The first, the audio-swap test (:mod:`sspl.engine.swap`, ``sspl evaluate --swap``):
does the map follow the *sound*? In a scene with distractors, play the sound of one of the silent objects
instead (another scene's clip of that category) and score the map against that object's box. A model that
localizes the sounding object moves with the sound; one that found "an object" without listening stays
where it was.

The second, :func:`map_placement`, says where the evaluated mask goes when it misses: on the
sounding object, on a silent object, or on the background, overall and per sounding category (a query
that settles on the background for some sounds and on the object for others shows up there).

**The pipeline.** ``sspl demo`` and the SynthAV experiments run the same steps, through
these functions: :func:`prepare_synthav` (generate the set, pretrain its encoders), :func:`synthav_config`,
:func:`train_synthav`, then :func:`evaluate_synthav` (the trained model on the test split, the untrained
one, the oracle query). Rerunning any of them picks up where a killed or finished run stopped, by one
resume rule:

- the set: :func:`~sspl.data.synth.generate_synth` finishes an unfinished set and leaves a finished one
  as it is (a set of other settings is refused);
- the encoders: kept once ``encoders.json`` marks a finished pair, else pretrained again from scratch;
- the training: resumed from ``run/checkpoints/last.pt`` when that run has the same settings as the one
  asked for (up to the ones :data:`~sspl.engine.train.RESUMABLE_KEYS` lets a resume change, and the paths
  of the encoders the checkpoint holds itself) and has not trained past the epochs asked for; any other
  run in the folder is started over. A finished run is resumed too, and trains no further;
- the evaluations: rewritten every time (seconds), so they always score the run now in the folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import Config, apply_overrides
from ..data.annotations import load_annotations, subset_annotations
from ..data.datasets import PreparedDataset, load_samples
from ..data.synth import SynthConfig, generate_synth
from ..errors import DataError
from ..metrics import (
    BENCHMARKS,
    EvalResult,
    Protocol,
    evaluate_maps,
    gt_map_from_boxes,
)
from ..models.methods import get_method
from .checkpoint import CHECKPOINT_DIR, LAST, load_checkpoint, save_checkpoint, stored_encoder_settings
from .evaluate import EvaluationReport, compute_maps, evaluate
from .loading import load
from .oracle import load_synth_split, oracle_query_maps
from .pretrain import ENCODERS_JSON_NAME, load_synth_encoders, pretrain_synth_encoders
from .train import TrainResult, fixed_changes, saved_config, train

__all__ = [
    "SynthAVEvaluation",
    "evaluate_synthav",
    "evaluate_untrained",
    "map_placement",
    "oracle_result",
    "prepare_synthav",
    "resumable",
    "save_untrained",
    "synthav_config",
    "train_synthav",
]


def prepare_synthav(
    data_dir: str | os.PathLike,
    encoders_dir: str | os.PathLike,
    synth: SynthConfig,
    *,
    pretrain_epochs: int = 5,
    pretrain_seed: int = 0,
    workers: int | None = None,
    progress: bool = False,
    **pretrain_options,
) -> dict:
    """Generate (or finish) a SynthAV set and pretrain its small encoders unless a finished pair is there.

    Args:
        data_dir: the set's folder (``sspl synth``'s ``--out``).
        encoders_dir: the encoders' folder (``sspl synth-pretrain``'s ``--out``).
        synth: the set's settings.
        pretrain_epochs, pretrain_seed: ``epochs`` and ``seed`` of
            :func:`~sspl.engine.pretrain.pretrain_synth_encoders`.
        workers: processes generating the scenes (default: all cores).
        progress: progress bars.
        pretrain_options: further options of ``pretrain_synth_encoders`` (e.g. ``background_kinds``).

    Returns:
        The content of ``encoders.json``.
    """
    generate_synth(data_dir, synth, workers=workers, progress=progress)
    record = Path(encoders_dir) / ENCODERS_JSON_NAME
    if not record.is_file():
        pretrain_synth_encoders(
            data_dir,
            encoders_dir,
            epochs=pretrain_epochs,
            seed=pretrain_seed,
            overwrite=True,
            progress=progress,
            **pretrain_options,
        )
    return json.loads(record.read_text(encoding="utf-8"))


def resumable(config: Config, run_dir: str | os.PathLike) -> bool:
    """Whether :func:`train_synthav` resumes the run in ``run_dir`` (the module's resume rule): its last
    checkpoint exists, was made with the settings of ``config`` (up to the resumable ones and the paths of
    the encoders it stores itself, which may have moved with the folder) and has trained no more than
    ``config.train.epochs`` epochs."""
    last = Path(run_dir) / CHECKPOINT_DIR / LAST
    if not last.is_file():
        return False
    ckpt = load_checkpoint(last)
    changed = set(fixed_changes(saved_config(run_dir), config)) - stored_encoder_settings(ckpt)
    return not changed and ckpt["epoch"] <= config.train.epochs


def train_synthav(
    config: Config, data_dir: str | os.PathLike, run_dir: str | os.PathLike, *, progress: bool = False
) -> TrainResult:
    """Train ``config`` on a SynthAV set into ``run_dir``: resumed when :func:`resumable`, else started over
    (a previous run's files in ``run_dir`` are replaced)."""
    resume = resumable(config, run_dir)
    return train(config, data_dir, run_dir, resume=resume, overwrite=not resume, progress=progress)


@dataclass(frozen=True)
class SynthAVEvaluation:
    """A SynthAV run scored on the test split beside its reference points."""

    #: the trained run (with the trivial maps as its ``baselines``)
    trained: EvaluationReport
    #: the same model at its seeded initialisation
    untrained: EvaluationReport
    #: the oracle query on the frozen visual features
    oracle: EvalResult


def evaluate_untrained(
    config: Config,
    data_dir: str | os.PathLike,
    checkpoint: str | os.PathLike,
    eval_dir: str | os.PathLike,
    *,
    progress: bool = False,
) -> EvaluationReport:
    """Save the model of ``config`` at its seeded initialisation to ``checkpoint`` (:func:`save_untrained`)
    and evaluate it on the test split into ``eval_dir`` (rewritten)."""
    ckpt = save_untrained(config, checkpoint)
    return evaluate(ckpt, data_dir, "synth", eval_dir, overwrite=True, progress=progress)


def evaluate_synthav(
    config: Config,
    data_dir: str | os.PathLike,
    encoders_dir: str | os.PathLike,
    run_dir: str | os.PathLike,
    *,
    eval_dir: str | os.PathLike,
    untrained_checkpoint: str | os.PathLike,
    untrained_eval_dir: str | os.PathLike,
    save_overlays: int = 0,
    progress: bool = False,
) -> SynthAVEvaluation:
    """Evaluate the run of ``config`` on the test split (into ``eval_dir``, rewritten), the untrained model
    (:func:`evaluate_untrained`) and the oracle query (:func:`oracle_result`).

    Args:
        config: the run's training config (it gives the untrained model).
        data_dir: the SynthAV set.
        encoders_dir: its pretrained encoders (for the oracle query).
        run_dir: the trained run (its selected checkpoint is evaluated).
        eval_dir, untrained_checkpoint, untrained_eval_dir: where the evaluations and the untrained
            checkpoint go.
        save_overlays: overlays of the trained run's evaluation.
        progress: a progress bar for the trained run's evaluation.
    """
    trained = evaluate(
        run_dir, data_dir, "synth", eval_dir, save_overlays=save_overlays, overwrite=True, progress=progress
    )
    untrained = evaluate_untrained(config, data_dir, untrained_checkpoint, untrained_eval_dir)
    return SynthAVEvaluation(trained, untrained, oracle_result(encoders_dir, data_dir, "test"))


def synthav_config(
    encoders_dir: str | os.PathLike,
    *,
    method: str = "sspl",
    pcm: bool = True,
    epochs: int = 20,
    batch_size: int = 32,
    seed: int = 1234,
    lr_scale: float = 1.0,
    overrides: Sequence[str] = (),
) -> Config:
    """The training configuration on a SynthAV set with the small pretrained encoders of ``encoders_dir``.

    The shipped ``configs/synthav_{pcm,nopcm}.yaml`` hold the same settings; the encoder paths are the only
    machine-specific values, hence this function.

    Args:
        encoders_dir: output folder of ``sspl synth-pretrain`` (``encoders.json`` and the two weight files).
        method: ``sspl``, ``attention`` or ``hardway``.
        pcm: SSPL with the predictive coding module (paper T = 5) or without.
        epochs, batch_size, seed: ``train.*``.
        lr_scale: multiplies both of Table S1's rates (``optim.lr`` and ``optim.lr_head``); 10 is what the
            validation sweep of docs/results.md picked for SSPL w/o PCM.
        overrides: further ``key=value`` overrides, applied last.

    Raises:
        sspl.errors.WeightsError: ``encoders_dir`` holds no pretrained encoders.
    """
    enc = Path(encoders_dir)
    visual, audio = load_synth_encoders(enc)  # checks the folder now, not at the first training step
    return apply_overrides(
        Config(),
        [
            f"method={method}",
            "model.visual_encoder=small_cnn",
            "model.audio_encoder=small_cnn",
            f"model.visual_channels={visual.out_channels}",
            f"model.audio_dim={audio.embed_dim}",
            f"model.visual_weights={(enc / 'visual_encoder.pt').resolve()}",
            f"model.audio_weights={(enc / 'audio_encoder.pt').resolve()}",
            f"model.pcm={str(pcm).lower()}",
            # Table S1's SoundNet-Flickr rates: the PCM variant trains 40x slower
            f"optim.lr_head={(5.0e-5 if pcm else 2.0e-3) * lr_scale}",
            f"optim.lr={(2.0e-5 if pcm else 5.0e-4) * lr_scale}",
            f"train.epochs={epochs}",
            f"train.batch_size={batch_size}",
            f"train.seed={seed}",
            "data.num_workers=1",
            *overrides,
        ],
    )


def save_untrained(config: Config, path: str | os.PathLike) -> Path:
    """Save the model of ``config`` at its seeded initialisation (pretrained encoders loaded) as a checkpoint.

    The initialisation is the one :func:`sspl.engine.train.train` starts from (``torch.manual_seed(
    config.train.seed)`` before building), so evaluating it gives the epoch-0 point of the run.

    Returns:
        ``path`` as a Path.
    """
    path = Path(path)
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(config.train.seed)
        model = get_method(config.method).build(config)
    finally:
        torch.random.set_rng_state(state)
    save_checkpoint(path, model=model.eval(), config=config, epoch=0, step=0, rng=False)
    return path


def oracle_result(
    encoders_dir: str | os.PathLike, data_dir: str | os.PathLike, split: str = "test"
) -> EvalResult:
    """Score the oracle query's maps on a split of a SynthAV set (the ``synth`` protocol, fixed threshold).

    Args:
        encoders_dir: output folder of ``sspl synth-pretrain``.
        data_dir: folder written by ``sspl synth``.
        split: the split to score.
    """
    visual, _ = load_synth_encoders(encoders_dir)
    ids, frames, boxes = load_synth_split(data_dir, split)
    maps = oracle_query_maps(visual, frames, boxes)
    gt = subset_annotations(load_annotations(Path(data_dir)), ids)
    return evaluate_maps(dict(zip(ids, maps.numpy())), gt, BENCHMARKS["synth"], expected_count=len(ids))


def _box_region(boxes: list, protocol: Protocol, sample_id: str) -> np.ndarray:
    """Pixels of the evaluation frame inside any of ``boxes`` (none: an empty region)."""
    if not boxes:
        return np.zeros((protocol.size, protocol.size), dtype=bool)
    gt = gt_map_from_boxes(
        boxes, rule="union", box_format=protocol.box_format, size=protocol.size, sample_id=sample_id
    )
    return gt > 0


def map_placement(
    model: str | os.PathLike | torch.nn.Module,
    data_dir: str | os.PathLike,
    split: str = "val",
    *,
    image_size: int = 224,
) -> dict:
    """Where each scene's evaluated mask lies: on the sounding object, on silent objects, on the background.

    The mask is the one cIoU scores (the ``synth`` protocol: bilinear upsampling, min-max normalisation,
    ``>= 0.5``). Scenes whose sound has no visible source (an extended set) are left out. Each pixel of it
    counts for the sounding object when it falls in that object's box, for
    the silent objects when it falls in one of theirs and not in the sounding one's, and for the
    background otherwise.

    Args:
        model: a localizer (``localize(frames, spect) -> B x h x w``) or anything :func:`sspl.load` accepts.
        data_dir: a SynthAV folder (``scenes.json`` gives every object's box and category).
        split: the split to use (model analysis belongs on ``val``; the test split is for the final number).
        image_size: evaluation frame size of a ``model`` given as a module (a checkpoint brings its own).

    Returns:
        ``{"scenes", "on_sounding", "on_silent", "on_background", "mask_area", "by_category"}``: the
        shares of the mask (each scene's shares sum to 1) and its share of the frame, averaged over
        scenes; ``by_category`` holds the same averages (and ``scenes``) per sounding category.

    Raises:
        DataError: the split has no scene.
    """
    root = Path(data_dir)
    scenes = json.loads((root / "scenes.json").read_text(encoding="utf-8"))
    samples = load_samples(root, splits=[split])
    samples = [s for s in samples if scenes[s.id]["sounding"] is not None]  # a visible source to be on
    if not samples:
        raise DataError(f"{root}: no {split} scene with a visible source")
    if not isinstance(model, torch.nn.Module):
        model, preprocess = load(model)
        image_size = preprocess.image_size
    maps = compute_maps(model, PreparedDataset(samples, mode="eval", image_size=image_size))
    protocol = BENCHMARKS["synth"]
    rows: dict[str, list[dict[str, float]]] = {}
    for sample in samples:
        scene = scenes[sample.id]
        target = scene["objects"][scene["sounding"]]
        silent = [o["bbox"] for k, o in enumerate(scene["objects"]) if k != scene["sounding"]]
        mask = protocol.mask(maps[sample.id])
        on_sounding = _box_region([target["bbox"]], protocol, sample.id)
        on_silent = _box_region(silent, protocol, sample.id) & ~on_sounding
        area = mask.sum()  # >= 1: the map's maximum always passes the threshold
        share_sounding = (mask & on_sounding).sum() / area
        share_silent = (mask & on_silent).sum() / area
        rows.setdefault(target["category"], []).append(
            {
                "on_sounding": float(share_sounding),
                "on_silent": float(share_silent),
                "on_background": float(1.0 - share_sounding - share_silent),
                "mask_area": float(area / mask.size),
            }
        )

    def mean(group: list[dict[str, float]]) -> dict:
        return {"scenes": len(group), **{k: float(np.mean([r[k] for r in group])) for k in group[0]}}

    return {
        **mean([r for group in rows.values() for r in group]),
        "by_category": {category: mean(group) for category, group in sorted(rows.items())},
    }
