"""SLAVC and FNAC train on this engine like every method (SynthAV, small encoders): SLAVC's momentum copy
travels in its checkpoints, and FNAC's loss follows the epoch the trainer puts in each batch (its warm-up)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from sspl.config import Config, apply_overrides
from sspl.engine.checkpoint import load_checkpoint, restore_model
from sspl.engine.train import train
from test_ezvsl_engine import SMALL_STREAMS, synth_dir  # noqa: F401  (synth_dir: the SynthAV fixture)


def _records(run) -> list[dict]:
    lines = (run / "log.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == "train"]


def test_slavc_trains_and_its_checkpoint_holds_the_momentum_copy(synth_dir, tmp_path):  # noqa: F811
    overrides = ["method=slavc", *SMALL_STREAMS, "train.epochs=1", "train.max_steps_per_epoch=3"]
    cfg = apply_overrides(
        Config(), [*overrides, "method_options.momentum_img=0.5", "method_options.momentum_aud=0.5"]
    )
    run = tmp_path / "run"
    assert train(cfg, synth_dir, run, progress=False).steps == 3
    assert all(math.isfinite(r["loss"]) for r in _records(run))
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    state = ckpt["model"]
    # three hooks: a copy at step 1, then averages with the online weights of steps 1 and 2
    assert not torch.equal(state["momentum_img_proj1.weight"], state["img_proj1.weight"])
    moved = [k for k in state if k.startswith("momentum_visual_encoder.") and k.endswith("weight")]
    assert moved and not torch.equal(state[moved[0]], state[moved[0].removeprefix("momentum_")])
    model, _ = restore_model(ckpt)
    torch.testing.assert_close(model.momentum_img_proj1.weight, state["momentum_img_proj1.weight"])


def test_fnac_trains_on_the_contrastive_term_alone_during_its_warm_up(synth_dir, tmp_path):  # noqa: F811
    overrides = ["method=fnac", *SMALL_STREAMS, "train.epochs=2", "train.max_steps_per_epoch=1"]
    cfg = apply_overrides(
        Config(), [*overrides, "method_options.warmup_epochs=1", "method_options.dropout_img=0"]
    )
    run = tmp_path / "run"
    assert train(cfg, synth_dir, run, progress=False).steps == 2
    warm, full = _records(run)
    assert (warm["epoch"], full["epoch"]) == (1, 2)
    assert warm["loss"] == pytest.approx(warm["contrastive"], rel=1e-6)
    weighted = full["contrastive"] + 100 * (full["fns_audio"] + full["tns"] + full["fns_visual"])
    assert full["loss"] == pytest.approx(weighted, rel=1e-5) and full["loss"] > full["contrastive"]
