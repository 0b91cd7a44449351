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
  location (:func:`~sspl.engine.pretrain.oracle_query_maps`): the best a single query vector on these
  frozen features does, i.e. what the encoders allow;
- the trivial maps (whole image, centre box, random) that :func:`~sspl.engine.evaluate.evaluate` reports.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from ..config import Config, apply_overrides
from ..data.annotations import load_annotations, subset_annotations
from ..metrics import BENCHMARKS, EvalResult, evaluate_maps
from ..models.methods import get_method
from .checkpoint import save_checkpoint
from .pretrain import load_synth_encoders, load_synth_split, oracle_query_maps

__all__ = ["oracle_result", "save_untrained", "synthav_config"]


def synthav_config(
    encoders_dir: str | os.PathLike,
    *,
    method: str = "sspl",
    pcm: bool = True,
    epochs: int = 20,
    batch_size: int = 32,
    seed: int = 1234,
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
            "optim.lr_head=2.0e-3",
            "optim.lr=5.0e-4",
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
