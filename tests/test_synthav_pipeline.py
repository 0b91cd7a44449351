"""The one SynthAV pipeline of ``sspl.engine.synthav`` (demo, experiments, benchmarks) and its resume rule
(issue 21): a run resumes when it has the settings asked for and has not trained past them, else it
starts over; the evaluations always score the run in the folder."""

from __future__ import annotations

import dataclasses
import json

import pytest

from sspl.data.synth import synth_config
from sspl.engine.checkpoint import CHECKPOINT_DIR, LAST
from sspl.engine.synthav import (
    evaluate_synthav,
    prepare_synthav,
    resumable,
    synthav_config,
    train_synthav,
)

TINY = ["model.proj_dim=256", "model.pred_hidden=64", "data.num_workers=0"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    data, enc, run = root / "data", root / "encoders", root / "run"
    synth = synth_config("easy", num=30, seed=2, pretrain_num=16)
    info = prepare_synthav(data, enc, synth, pretrain_epochs=1, workers=1)
    config = synthav_config(enc, pcm=False, epochs=1, batch_size=8, overrides=TINY)
    train_synthav(config, data, run)
    return root, info, config


def test_prepare_keeps_a_finished_pair_of_encoders(finished):
    root, info, _ = finished
    weights = (root / "encoders" / "visual_encoder.pt").read_bytes()
    again = prepare_synthav(
        root / "data", root / "encoders", synth_config("easy", num=30, seed=2, pretrain_num=16), workers=1
    )
    assert again == info == json.loads((root / "encoders" / "encoders.json").read_text())
    assert (root / "encoders" / "visual_encoder.pt").read_bytes() == weights


def test_the_resume_rule(finished, tmp_path):
    root, _, config = finished
    run = root / "run"
    assert not resumable(config, tmp_path / "nothing")
    assert resumable(config, run)  # the finished run itself
    longer = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=3))
    assert resumable(longer, run)  # train longer: a resumable setting
    faster = dataclasses.replace(config, optim=dataclasses.replace(config.optim, lr=config.optim.lr * 2))
    assert not resumable(faster, run)  # another run: started over


def test_a_run_of_other_settings_starts_over_and_the_evaluations_follow_it(finished, tmp_path):
    import shutil

    root, _, config = finished
    run = tmp_path / "run"
    shutil.copytree(root / "run", run)
    before = (run / CHECKPOINT_DIR / LAST).read_bytes()
    resumed = train_synthav(config, root / "data", run)  # finished: resumed, trains nothing
    assert (run / CHECKPOINT_DIR / LAST).read_bytes() == before and resumed.epochs_completed == 1

    other = dataclasses.replace(config, optim=dataclasses.replace(config.optim, lr=config.optim.lr * 2))
    train_synthav(other, root / "data", run)  # not refused: the old run is replaced by one of `other`
    assert resumable(other, run) and not resumable(config, run)

    kw = {"untrained_checkpoint": tmp_path / "u.pt", "untrained_eval_dir": tmp_path / "u_eval"}
    first = evaluate_synthav(other, root / "data", root / "encoders", run, eval_dir=tmp_path / "eval", **kw)
    again = evaluate_synthav(other, root / "data", root / "encoders", run, eval_dir=tmp_path / "eval", **kw)
    assert first.trained.report == again.trained.report  # rewritten, not refused
    assert first.oracle.num_samples == first.trained.result.num_samples
