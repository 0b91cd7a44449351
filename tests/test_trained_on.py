"""Checkpoints of `sspl train` record what they were trained on (the prepared folder's kind), and
:func:`sspl.engine.checkpoint.trained_on` reads the record first, inferring it only for checkpoints
without one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sspl.config import Config, SSPLConfig, apply_overrides
from sspl.engine.checkpoint import load_checkpoint, save_checkpoint, trained_on
from sspl.engine.train import train
from sspl.models.methods import get_method

SMALL = [
    "model.visual_encoder=small_cnn",
    "model.audio_encoder=small_cnn",
    "model.visual_channels=128",
    "model.visual_weights=null",
    "model.audio_weights=null",
    "model.proj_dim=64",
    "model.pred_hidden=32",
    "model.cycles=1",
    "train.batch_size=4",
    "train.max_steps_per_epoch=1",
    "train.epochs=1",
    "data.num_workers=0",
]


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> Path:
    from sspl.data.synth import generate_synth, synth_config

    out = tmp_path_factory.mktemp("synth") / "set"
    generate_synth(out, synth_config("easy", num=16, seed=1, pretrain_num=0), workers=1, progress=False)
    return out


def _as_kind(synth_dir: Path, dest: Path, kind: str) -> Path:
    """A copy of the set whose meta.json names another kind (as `sspl prepare` writes for real media)."""
    shutil.copytree(synth_dir, dest)
    meta = json.loads((dest / "meta.json").read_text())
    meta["kind"] = kind
    (dest / "meta.json").write_text(json.dumps(meta))
    return dest


@pytest.mark.parametrize("kind", ["synth", "videos"])
def test_train_records_the_kind_of_its_data(synth_dir, tmp_path, kind):
    data = synth_dir if kind == "synth" else _as_kind(synth_dir, tmp_path / "data", kind)
    run = tmp_path / "run"
    train(apply_overrides(Config(), SMALL), data, run, progress=False)
    for name in ("best.pt", "last.pt"):
        ckpt = load_checkpoint(run / "checkpoints" / name)
        assert ckpt["trained_on"] == kind
        # random small encoders: the config alone would not tell SynthAV (the inference answers None)
        assert trained_on(ckpt) == kind


def _synth_encoders_checkpoint(path: Path, recorded: str | None) -> dict:
    """A checkpoint whose small_cnn encoders name `sspl synth-pretrain`'s weight files."""
    folder = path.parent / "encoders"
    config = Config(
        model=SSPLConfig(
            visual_encoder="small_cnn",
            audio_encoder="small_cnn",
            visual_channels=128,
            visual_weights=str(folder / "visual_encoder.pt"),
            audio_weights=str(folder / "audio_encoder.pt"),
        )
    )
    model = get_method("sspl").build(config, pretrained=False)
    save_checkpoint(path, model=model, config=config, epoch=0, step=0, rng=False, trained_on=recorded)
    return load_checkpoint(path)


def test_the_record_wins_over_the_inference(tmp_path):
    ckpt = _synth_encoders_checkpoint(tmp_path / "a.pt", "videos")
    assert trained_on(ckpt) == "videos"  # fine-tuned on real videos from SynthAV-pretrained encoders


def test_a_checkpoint_without_the_record_is_inferred_as_before(tmp_path):
    ckpt = _synth_encoders_checkpoint(tmp_path / "b.pt", None)
    assert "trained_on" not in ckpt
    assert trained_on(ckpt) == "synth"
    del ckpt["config"]["model"]["visual_weights"], ckpt["config"]["model"]["audio_weights"]
    assert trained_on(ckpt) is None
