"""The training and evaluation engine on a tiny SynthAV set with small random encoders.

Covers the run directory rules, bit-for-bit resumption, the non-finite-loss stop, the leakage check,
DDP on CPU (2 gloo processes equal one process on the same global batch), the official optimiser groups,
the learning-rate schedule and ``sspl evaluate``'s outputs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from sspl.cli import main as cli_main
from sspl.config import Config, apply_overrides
from sspl.data.manifest import read_manifest, write_manifest
from sspl.engine.checkpoint import load_checkpoint
from sspl.engine.train import TrainingError, build_scheduler, train
from sspl.errors import DataError, WeightsError
from sspl.models.methods import get_method

SMALL = [
    "model.visual_encoder=small_cnn",
    "model.audio_encoder=small_cnn",
    "model.visual_channels=128",
    "model.visual_weights=null",
    "model.audio_weights=null",
    "model.proj_dim=256",
    "model.pred_hidden=64",
    "model.cycles=1",
    "train.batch_size=4",
    "train.max_steps_per_epoch=2",
    "train.log_every=1",
    "data.num_workers=0",
    "optim.lr_head=1e-3",
    "optim.lr=1e-3",
]


def small_config(*extra: str) -> Config:
    return apply_overrides(Config(), [*SMALL, *extra])


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> Path:
    from sspl.data.synth import generate_synth, synth_config

    out = tmp_path_factory.mktemp("synth") / "set"
    generate_synth(
        out, synth_config("distractors", num=28, seed=3, pretrain_num=4), workers=1, progress=False
    )
    return out


def params(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


# --------------------------------------------------------------------------------------------------
# run directory, resumption, failures
# --------------------------------------------------------------------------------------------------


def test_train_writes_a_complete_run(synth_dir, tmp_path):
    run = tmp_path / "run"
    result = train(small_config("train.epochs=2"), synth_dir, run, progress=False)
    assert result.epochs_completed == 2 and result.steps == 4
    for name in ("config.yaml", "log.jsonl", "history.json", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (run / name).is_file(), name
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    kinds = [r["type"] for r in records]
    assert kinds.count("val") == 3  # before training and after each epoch
    train_records = [r for r in records if r["type"] == "train"]
    assert all(math.isfinite(r["loss"]) and r["pairs_per_s"] > 0 and "lr_head" in r for r in train_records)
    val = [r for r in records if r["type"] == "val"]
    assert all("val_ciou@0.5" in r and "val_loss" in r for r in val)  # SynthAV val clips carry boxes
    assert result.select_metric == "val_ciou@0.5"
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    assert last["epoch"] == 2 and "optimizer" in last and "rng" in last
    assert (run / "config.yaml").read_text().count("small_cnn") == 2


def test_existing_run_dir_is_refused_unless_asked(synth_dir, tmp_path):
    run = tmp_path / "run"
    train(small_config("train.epochs=1"), synth_dir, run, progress=False)
    with pytest.raises(TrainingError, match="--resume .* --overwrite"):
        train(small_config("train.epochs=1"), synth_dir, run, progress=False)
    (run / "notes.txt").write_text("mine")
    train(small_config("train.epochs=1"), synth_dir, run, overwrite=True, progress=False)
    assert (run / "notes.txt").read_text() == "mine"  # overwrite only replaces what a run writes
    with pytest.raises(TrainingError, match="nothing to resume"):
        train(small_config(), synth_dir, tmp_path / "fresh", resume=True, progress=False)


def _logged_lrs(run: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return [(r["step"], r["lr_head"]) for r in rows if "lr_head" in r]


def test_resume_is_bit_for_bit(synth_dir, tmp_path, monkeypatch):
    import sspl.engine.train as train_mod

    # A cosine schedule with warm-up, so the scheduler's position must survive the resume too.
    config = small_config("train.epochs=2", "optim.schedule=cosine", "optim.warmup_epochs=1")
    full = tmp_path / "full"
    train(config, synth_dir, full, progress=False)
    part = tmp_path / "part"
    calls, validate = [], train_mod._validate

    def killed_in_epoch_2(*args, **kwargs):  # epoch 0, epoch 1, then the kill before epoch 2's checkpoint
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return validate(*args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(train_mod, "_validate", killed_in_epoch_2)
        with pytest.raises(KeyboardInterrupt):
            train(config, synth_dir, part, progress=False)
    assert load_checkpoint(part / "checkpoints/last.pt")["epoch"] == 1
    train(config, synth_dir, part, resume=True, progress=False)
    a, b = load_checkpoint(full / "checkpoints/last.pt"), load_checkpoint(part / "checkpoints/last.pt")
    assert a["step"] == b["step"] == 4
    assert a["scheduler"] == b["scheduler"]
    lrs = _logged_lrs(full)
    assert lrs == _logged_lrs(part)
    # logged after each step: the rate of the next one (warm-up over epoch 1's 2 steps, cosine over epoch 2's)
    assert lrs == [(1, 1e-3), (2, 1e-3), (3, pytest.approx(5e-4)), (4, pytest.approx(0.0, abs=1e-12))]
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["exp_avg"], sb["exp_avg"]) and torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])
    assert a["trainer"]["history"] == b["trainer"]["history"]


@pytest.mark.slow
def test_a_killed_run_resumes_bit_for_bit(synth_dir, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    def cli(run: Path, *extra: str) -> list[str]:
        args = ["train", "--data", str(synth_dir), "--run-dir", str(run), "--epochs", "2", "--no-progress"]
        return [sys.executable, "-m", "sspl.cli", *args, *extra, *SMALL, "train.max_steps_per_epoch=6"]

    full, part = tmp_path / "full", tmp_path / "part"
    subprocess.run(cli(full), check=True, capture_output=True)
    # SIGKILL as soon as epoch 1's checkpoint is on disk, i.e. in the middle of epoch 2.
    proc = subprocess.Popen(cli(part), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = part / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 300
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert load_checkpoint(last)["epoch"] == 1, "the run finished before it could be killed"
    subprocess.run(cli(part, "--resume"), check=True, capture_output=True)
    a, b = load_checkpoint(full / "checkpoints/last.pt"), load_checkpoint(last)
    assert a["epoch"] == b["epoch"] == 2 and a["step"] == b["step"] == 8
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["exp_avg"], sb["exp_avg"]) and torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])
    assert a["trainer"]["history"] == b["trainer"]["history"]


def _without(synth_dir: Path, dest: Path, drop) -> Path:
    """A copy of the set whose manifest lacks the rows ``drop(row)`` selects."""
    shutil.copytree(synth_dir, dest)
    write_manifest(dest, [r for r in read_manifest(dest) if not drop(r)])
    return dest


def test_resume_refuses_changes_to_what_the_run_computes(synth_dir, tmp_path):
    run = tmp_path / "run"
    train(small_config("train.epochs=2"), synth_dir, run, progress=False)
    before = load_checkpoint(run / "checkpoints/last.pt")
    with pytest.raises(TrainingError, match=r"\(model\.cycles: 1 -> 3; optim\.lr: 0\.001 -> 0\.1\)"):
        train(small_config("train.epochs=3", "optim.lr=0.1", "model.cycles=3"), synth_dir, run, resume=True)
    with pytest.raises(TrainingError, match="already trained 2 epochs, more than the 1 asked for"):
        train(small_config("train.epochs=1"), synth_dir, run, resume=True, progress=False)
    other = _without(synth_dir, tmp_path / "other", lambda r: r.split == "train" and r.id.endswith("1"))
    with pytest.raises(TrainingError, match="other clips"):
        train(small_config("train.epochs=3"), other, run, resume=True, progress=False)
    # Nothing of the run changed; what may change on resume does.
    after = load_checkpoint(run / "checkpoints/last.pt")
    assert after["step"] == before["step"] and after["trainer"] == before["trainer"]
    result = train(
        small_config("train.epochs=3", "train.log_every=2"), synth_dir, run, resume=True, progress=False
    )
    assert result.epochs_completed == 3


def test_overwrite_keeps_the_old_run_until_the_new_one_is_checked(synth_dir, tmp_path):
    run = tmp_path / "run"
    train(small_config("train.epochs=1"), synth_dir, run, progress=False)
    with pytest.raises(TrainingError, match="fewer than one batch"):
        train(small_config("train.batch_size=512"), synth_dir, run, overwrite=True, progress=False)
    with pytest.raises(DataError, match="no_data: no such folder"):
        train(small_config(), tmp_path / "no_data", run, overwrite=True, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no meta.json"):
        train(small_config(), tmp_path / "empty", run, overwrite=True, progress=False)
    assert load_checkpoint(run / "checkpoints/last.pt")["epoch"] == 1


def test_early_stopping_stays_stopped_on_resume(synth_dir, tmp_path, monkeypatch):
    import sspl.engine.train as train_mod

    monkeypatch.setattr(train_mod, "_validate", lambda *a, **k: {"val_ciou@0.5": 0.5, "val_loss": -0.5})
    run = tmp_path / "run"
    result = train(small_config("train.epochs=6", "train.patience=1"), synth_dir, run, progress=False)
    assert result.stopped_early and result.epochs_completed == 2 and result.best_epoch == 1
    again = train(
        small_config("train.epochs=6", "train.patience=1"), synth_dir, run, resume=True, progress=False
    )
    assert again.stopped_early and again.epochs_completed == 2
    # A larger patience lets it go on until that runs out too.
    longer = train(
        small_config("train.epochs=6", "train.patience=3"), synth_dir, run, resume=True, progress=False
    )
    assert longer.stopped_early and longer.epochs_completed == 4


@pytest.mark.parametrize(
    ("select", "values", "best"),
    [
        ("ciou", [0.1, 0.2, 0.5, 0.3], 2),  # epochs 0-3: the highest cIoU@0.5 wins
        ("loss", [0.0, -0.3, -0.1, -0.2], 1),  # the lowest loss wins
    ],
)
def test_the_best_checkpoint_is_the_best_validation_epoch(
    synth_dir, tmp_path, monkeypatch, select, values, best
):
    import sspl.engine.train as train_mod

    key = "val_ciou@0.5" if select == "ciou" else "val_loss"
    queue = iter(values)
    monkeypatch.setattr(train_mod, "_validate", lambda *a, **k: {key: next(queue)})
    run = tmp_path / "run"
    result = train(
        small_config("train.epochs=3", f"train.select_metric={select}"), synth_dir, run, progress=False
    )
    assert result.best_epoch == best and result.best_metric == values[best]
    saved = load_checkpoint(run / "checkpoints" / "best.pt")
    assert saved["epoch"] == best and saved["metrics"][key] == values[best]


def test_each_epoch_draws_a_new_order_and_new_views(synth_dir, tmp_path, monkeypatch):
    import sspl.engine.train as train_mod
    from sspl.data.datasets import load_samples

    train_ids = {s.id for s in load_samples(synth_dir, splits=["train"])}
    batches, collate = [], train_mod._collate

    def recording(items):
        if items[0]["id"] in train_ids:
            batches.append([(item["id"], item["frame_view1"]) for item in items])
        return collate(items)

    monkeypatch.setattr(train_mod, "_collate", recording)
    train(
        small_config("train.epochs=2", "train.max_steps_per_epoch=4"),
        synth_dir,
        tmp_path / "run",
        progress=False,
    )
    assert len(batches) == 8  # 4 steps of 4 pairs per epoch
    first, second = ([pair for batch in batches[e * 4 : e * 4 + 4] for pair in batch] for e in (0, 1))
    assert [i for i, _ in first] != [i for i, _ in second]  # reshuffled
    views = dict(first)
    both = [i for i, _ in second if i in views]
    assert len(both) >= 8  # 16 of the 19 training clips each epoch
    redrawn = sum(not torch.equal(views[i], v) for i, v in second if i in views)
    assert redrawn >= len(both) // 2  # crop + flip drawn again (a draw repeats with probability < 0.01)


def test_early_stopping_needs_validation_clips(synth_dir, tmp_path):
    no_val = _without(synth_dir, tmp_path / "no_val", lambda r: r.split == "val")
    with pytest.raises(TrainingError, match="patience=2 needs validation clips"):
        train(
            small_config("train.patience=2", "data.val_fraction=0"), no_val, tmp_path / "run", progress=False
        )


def test_tensorboard_gets_every_logged_scalar_once_across_a_resume(synth_dir, tmp_path):
    pytest.importorskip("tensorboard")  # in the test extras; optional for users
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    train(small_config("train.epochs=1"), synth_dir, run, progress=False)
    train(small_config("train.epochs=2"), synth_dir, run, resume=True, progress=False)
    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/pairs_per_s", "val/val_loss", "val/val_ciou@0.5"} <= tags
    assert any(t.startswith("train/lr") for t in tags)
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4]
    assert [e.step for e in events.Scalars("val/val_loss")] == [0, 2, 4]
    records = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["type"] == "train"]
    assert [e.value for e in events.Scalars("train/loss")] == pytest.approx(losses, rel=1e-6)


def test_a_resumed_run_logs_each_step_once(synth_dir, tmp_path, monkeypatch):
    method = get_method("sspl")
    original = type(method).loss
    calls = {"n": 0}

    def dies_in_epoch_two(self, model, batch, cfg):
        calls["n"] += model.training  # training steps only, not validation
        if calls["n"] == 4:  # epoch 2, step 2: step 3 is logged, then the process "dies"
            raise KeyboardInterrupt
        return original(self, model, batch, cfg)

    run = tmp_path / "run"
    monkeypatch.setattr(type(method), "loss", dies_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train(small_config("train.epochs=2"), synth_dir, run, progress=False)
    monkeypatch.setattr(type(method), "loss", original)
    train(small_config("train.epochs=2"), synth_dir, run, resume=True, progress=False)
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["type"] == "train"] == [1, 2, 3, 4]
    assert [r["epoch"] for r in records if r["type"] == "val"] == [0, 1, 2]


def test_non_finite_loss_stops_training(synth_dir, tmp_path, monkeypatch):
    method = get_method("sspl")
    original = type(method).loss

    def nan_loss(self, model, batch, cfg):
        loss, extra = original(self, model, batch, cfg)
        return loss * float("nan"), extra

    monkeypatch.setattr(type(method), "loss", nan_loss)
    with pytest.raises(TrainingError, match=r"non-finite loss \(nan\) at epoch 1, step 1"):
        train(small_config("train.epochs=1"), synth_dir, tmp_path / "run", progress=False)


def test_a_validation_batch_of_one_has_no_collapse_statistic():
    import warnings

    cfg = small_config()
    method = get_method("sspl")
    model = method.build(cfg, pretrained=False).eval()
    size = cfg.data.image_size
    one = {
        "frame_view1": torch.randn(1, 3, size, size),
        "frame_view2": torch.randn(1, 3, size, size),
        "spect": torch.randn(1, 3, 96, 64),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns on the std of one sample
        loss, extra = method.loss(model, one, cfg)
    assert torch.isfinite(loss) and math.isnan(extra["z_std"])
    # two copies of one sample: identical projections, so no spread (up to float rounding)
    _, extra = method.loss(model, {k: torch.cat([v, v]) for k, v in one.items()}, cfg)
    assert extra["z_std"] == pytest.approx(0.0, abs=1e-6)


def test_batch_larger_than_the_data_is_refused(synth_dir, tmp_path):
    with pytest.raises(TrainingError, match="fewer than one batch"):
        train(small_config("train.batch_size=512"), synth_dir, tmp_path / "run", progress=False)


def test_training_ids_overlapping_a_test_set_are_refused(synth_dir, tmp_path):
    from sspl.data import lists

    leaky = tmp_path / "leaky"
    shutil.copytree(synth_dir, leaky)
    rows = read_manifest(leaky)
    flickr_test = lists.test_ids("flickr")
    train_rows = [r for r in rows if r.split == "train"]
    for row, new_id in zip(train_rows[:3], flickr_test):
        row.id = new_id  # the files keep their paths; only the ids collide with Flickr test ids
    write_manifest(leaky, rows)
    with pytest.raises(DataError, match=r"3 .*Flickr|flickr"):
        train(small_config("train.epochs=1", "model.pcm=false"), leaky, tmp_path / "run", progress=False)
    result = train(
        small_config("train.epochs=1", "data.allow_overlap=true", "model.pcm=false"),
        leaky,
        tmp_path / "run2",
        progress=False,
    )
    assert result.epochs_completed == 1


# --------------------------------------------------------------------------------------------------
# optimisation details
# --------------------------------------------------------------------------------------------------


def test_official_parameter_groups():
    cfg = small_config("optim.lr_head=2e-3", "optim.lr=5e-4")
    model = get_method("sspl").build(cfg, pretrained=False)
    groups = {g["name"]: g for g in get_method("sspl").param_groups(model, cfg.optim)}
    assert list(groups) == ["audio_transform", "pcm", "pcm_rates", "head"]
    assert groups["head"]["lr"] == 2e-3 and groups["pcm"]["lr"] == groups["audio_transform"]["lr"] == 5e-4
    assert groups["pcm_rates"]["weight_decay"] == 0.0 and groups["pcm"]["weight_decay"] == 1e-4
    assert len(groups["pcm_rates"]["params"]) == 6
    counted = sum(len(g["params"]) for g in groups.values())
    assert counted == sum(1 for p in model.parameters() if p.requires_grad)


def test_schedules():
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    constant = build_scheduler(opt, small_config("train.epochs=4"), steps_per_epoch=10)
    lrs = []
    for _ in range(40):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        constant.step()
    assert set(lrs) == {1.0}
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    cosine = build_scheduler(
        opt, small_config("train.epochs=4", "optim.schedule=cosine", "optim.warmup_epochs=1"), 10
    )
    lrs = []
    for _ in range(40):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        cosine.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)  # linear warm-up over 10 steps
    assert lrs[10] == pytest.approx(1.0) and lrs[25] == pytest.approx(0.5, abs=0.05) and lrs[-1] < 0.01


# --------------------------------------------------------------------------------------------------
# distributed: 2 gloo processes == 1 process on the same global batch
# --------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, data: str, run: str, overrides: list[str]) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    from sspl.engine.distributed import shutdown

    try:
        train(apply_overrides(Config(), overrides), data, run, progress=False)
    finally:
        shutdown()


@pytest.mark.slow
def test_the_cli_runs_as_a_module_as_torchrun_launches_it():
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "sspl.cli", "train", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0 and "--resume" in done.stdout


def test_ddp_two_processes_equal_one_process(synth_dir, tmp_path):
    # Adam's first steps are ~lr * sign(grad): float noise on near-zero gradients would flip them, so a
    # large epsilon makes the update proportional to the gradient and the comparison tight.
    overrides = [
        *SMALL,
        "train.epochs=1",
        "train.max_steps_per_epoch=3",
        "train.batch_size=8",
        "optim.eps=1e-2",
    ]
    single = tmp_path / "single"
    train(apply_overrides(Config(), overrides), synth_dir, single, progress=False)
    ddp = tmp_path / "ddp"
    mp.start_processes(
        _ddp_worker,
        args=(2, _free_port(), str(synth_dir), str(ddp), overrides),
        nprocs=2,
        start_method="spawn",
    )
    a, b = params(single / "checkpoints/last.pt"), params(ddp / "checkpoints/last.pt")
    assert set(a) == set(b)
    moved = 0
    initial = get_method("sspl").build(apply_overrides(Config(), overrides), pretrained=False).state_dict()
    # Two ranks sum the batch statistics in another order than one process: float noise of ~1e-5 relative
    # reaches the BN running stats after three steps, so the tolerance is 1e-4 (an untrained model is far off).
    # A running mean near 0 among channels of magnitude ~10 is a difference of large sums: its noise is
    # relative to the buffer's scale, not to the value (seen with one OpenMP thread: 0.037204 vs 0.037242).
    for key in a:
        x, y = a[key].float(), b[key].float()
        scale = max(1.0, float(x.abs().max())) if key.endswith(("running_mean", "running_var")) else 1.0
        assert torch.allclose(x, y, rtol=1e-4, atol=1e-5 * scale), key
        moved += int(not torch.equal(a[key], initial[key]))
    assert moved > 10  # the comparison is not between two untrained models
    la = [json.loads(x) for x in (single / "log.jsonl").read_text().splitlines() if '"train"' in x]
    lb = [json.loads(x) for x in (ddp / "log.jsonl").read_text().splitlines() if '"train"' in x]
    assert [r["step"] for r in la] == [r["step"] for r in lb]
    for ra, rb in zip(la, lb):
        assert ra["loss"] == pytest.approx(rb["loss"], abs=1e-6)
        assert ra["grad_norm"] == pytest.approx(rb["grad_norm"], rel=1e-4)


# --------------------------------------------------------------------------------------------------
# evaluation and the CLI
# --------------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize(("amp", "tolerance"), [("none", 1e-3), ("fp16", 2e-2), ("bf16", 5e-2)])
def test_gpu_training_with_mixed_precision_follows_the_cpu_run(synth_dir, tmp_path, amp, tolerance):
    # Same seed, data order and initialisation: the first step's loss is the CPU's up to the precision.
    cpu = train(
        small_config("train.epochs=1", "train.device=cpu"), synth_dir, tmp_path / "cpu", progress=False
    )
    cfg = small_config("train.epochs=1", "train.device=cuda", f"train.amp={amp}", "train.channels_last=true")
    gpu = train(cfg, synth_dir, tmp_path / "gpu", progress=False)
    assert gpu.steps == cpu.steps

    def losses(run: Path) -> list[float]:
        return [json.loads(x)["loss"] for x in (run / "log.jsonl").read_text().splitlines() if '"train"' in x]

    on_cpu, on_gpu = losses(tmp_path / "cpu"), losses(tmp_path / "gpu")
    assert all(math.isfinite(v) for v in on_gpu) and len(on_gpu) == len(on_cpu)
    assert on_gpu[0] == pytest.approx(on_cpu[0], abs=tolerance)
    final = params(tmp_path / "gpu" / "checkpoints" / "last.pt")
    assert all(torch.isfinite(t.float()).all() for t in final.values())


def _test_maps_one_by_one(checkpoint: Path, data: Path, **localize_options) -> dict[str, np.ndarray]:
    """The test split's maps made here, one frame at a time, without the evaluator's loader or batches."""
    import sspl
    from sspl.data.datasets import load_samples

    model, preprocess = sspl.load(checkpoint)
    maps = {}
    with torch.inference_mode():
        for sample in load_samples(data, splits=["test"]):
            frame, spect = preprocess.image(sample.load_frame())[None], sample.load_spect()[None]
            maps[sample.id] = model.localize(frame, spect, **localize_options)[0].numpy()
    return maps


def _per_sample_cious(eval_dir: Path) -> dict[str, float]:
    """``id -> cIoU`` from an evaluation's per-sample CSV (its first two columns)."""
    rows = (eval_dir / "per_sample.csv").read_text().splitlines()[1:]
    return {r.split(",")[0]: float(r.split(",")[1]) for r in rows}


def test_cli_train_then_evaluate(synth_dir, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    code = cli_main(
        ["train", "--data", str(synth_dir), "--run-dir", str(run), "--epochs", "1", "--no-progress", *SMALL]
    )
    assert code == 0
    facts, wrote = capsys.readouterr().out.strip().splitlines()[-2:]
    assert (
        facts.startswith("sspl train: epochs 1, steps 2, best epoch 1, val_") and "stopped early no" in facts
    )
    assert wrote.startswith("Wrote ") and wrote.endswith(f" -- open {run / 'history.json'}")
    assert f" files to {run}/ in " in wrote
    # --resume without --config continues with the run's own config, not the defaults.
    resume = ["train", "--data", str(synth_dir), "--run-dir", str(run), "--resume", "--no-progress"]
    assert cli_main([*resume, "optim.lr=0.5"]) == 1
    assert "optim.lr: 0.001 -> 0.5" in capsys.readouterr().err
    assert cli_main([*resume, "--epochs", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (out["command"], out["epochs"], out["run_dir"], out["out"]) == ("train", 2, str(run), str(run))
    assert out["best_epoch"] in (1, 2) and out["stopped_early"] is False
    assert out["count"] == sum(1 for p in run.rglob("*") if p.is_file())
    monkeypatch.setenv("RANK", "1")  # under torchrun only rank 0 prints the summary
    assert cli_main([*resume, "--epochs", "3"]) == 0
    assert capsys.readouterr().out == ""
    monkeypatch.delenv("RANK")

    test_ids = [r.id for r in read_manifest(synth_dir) if r.split == "test" and r.ok]
    for protocol in ("fixed", "median"):
        out_dir = tmp_path / f"eval_{protocol}"
        code = cli_main(
            [
                "evaluate",
                "--checkpoint",
                str(run),
                "--data",
                str(synth_dir),
                "--benchmark",
                "synth",
                "--out",
                str(out_dir),
                "--protocol",
                protocol,
                "--no-progress",
                "--batch-size",
                "3",
            ]
        )
        assert code == 0
        report = json.loads((out_dir / "report.json").read_text())
        assert report["num_samples"] == len(test_ids)
        assert {"ciou@0.5", "auc", "success_curve", "protocol", "baselines"} <= set(report)
        assert report["protocol"]["threshold"] == protocol and len(report["success_curve"]) == 21
        assert set(report["baselines"]) == {"whole", "center", "random"}
        rows = (out_dir / "per_sample.csv").read_text().splitlines()
        assert rows[0].startswith("id,ciou") and sorted(r.split(",")[0] for r in rows[1:]) == sorted(test_ids)
        assert (out_dir / "success_curve.png").stat().st_size > 1000
        # the whole-image baseline predicts everything: cIoU = box area / image area, below 0.5 here
        assert report["baselines"]["whole"]["ciou@0.5"] == 0.0
        assert report["benchmark_coverage"] is None  # SynthAV has no published test set to cover
    # the report's numbers against maps made here, one test frame at a time, scored by the golden-checked metric
    from sspl.data.annotations import load_annotations
    from sspl.metrics import BENCHMARKS, evaluate_maps

    maps = _test_maps_one_by_one(run, synth_dir)
    gt = {i: a for i, a in load_annotations(synth_dir).items() if i in maps}
    expected = evaluate_maps(maps, gt, BENCHMARKS["synth"])
    report = json.loads((tmp_path / "eval_fixed" / "report.json").read_text())
    assert report["ciou@0.5"] == pytest.approx(expected.ciou_success_rate)
    assert report["auc"] == pytest.approx(expected.auc)
    # batched and single-frame maps may differ in the last float bits: a pixel at the threshold
    assert _per_sample_cious(tmp_path / "eval_fixed") == pytest.approx(expected.cious, abs=2e-3)
    ezvsl = ["--protocol", "median", "--upsample", "align-corners", "--out", str(tmp_path / "eval_ezvsl")]
    code = cli_main(
        ["evaluate", "--checkpoint", str(run), "--data", str(synth_dir), "--benchmark", "synth", *ezvsl]
    )
    assert code == 0
    protocol = json.loads((tmp_path / "eval_ezvsl" / "report.json").read_text())["protocol"]
    assert protocol["align_corners"] is True and protocol["threshold"] == "median"


def test_cli_val_fraction_sets_the_held_out_share(synth_dir, tmp_path, capsys, caplog):
    import yaml

    base = ["train", "--data", str(synth_dir), "--epochs", "1", "--no-progress", *SMALL]
    assert cli_main([*base, "--run-dir", str(tmp_path / "bad"), "--val-fraction", "1.5"]) == 1
    assert "data.val_fraction=1.5: must be in [0, 1)" in capsys.readouterr().err
    # SynthAV has its own val split, which wins; a folder without one holds out the given share.
    no_val = _without(synth_dir, tmp_path / "no_val", lambda r: r.split == "val")
    run = tmp_path / "run"
    with caplog.at_level("INFO", logger="sspl.engine.train"):
        assert cli_main([*base, "--data", str(no_val), "--run-dir", str(run), "--val-fraction", "0.25"]) == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["val_fraction"] == 0.25
    train_ids = [r.id for r in read_manifest(no_val) if r.split in ("train", "")]
    assert f"({round(len(train_ids) * 0.25)} val" in caplog.text


def test_evaluate_names_samples_without_ground_truth(synth_dir, tmp_path):
    run = tmp_path / "run"
    train(small_config("train.epochs=1"), synth_dir, run, progress=False)
    broken = tmp_path / "broken"
    shutil.copytree(synth_dir, broken)
    annotations = json.loads((broken / "annotations.json").read_text())
    test_id = next(r.id for r in read_manifest(broken) if r.split == "test")
    (broken / "annotations.json").write_text(json.dumps([a for a in annotations if a["file"] != test_id]))
    code = cli_main(
        [
            "evaluate",
            "--checkpoint",
            str(run),
            "--data",
            str(broken),
            "--benchmark",
            "synth",
            "--out",
            str(tmp_path / "ev"),
            "--no-progress",
        ]
    )
    assert code == 1 and not (tmp_path / "ev" / "report.json").exists()


def test_evaluate_refuses_what_would_not_be_the_benchmarks_number(synth_dir, tmp_path, capsys):
    from sspl.engine.evaluate import evaluate

    run = tmp_path / "run"
    train(small_config("train.epochs=1", "model.pcm=false"), synth_dir, run, progress=False)
    test_ids = sorted(r.id for r in read_manifest(synth_dir) if r.split == "test")
    # A test clip that failed to prepare: refused by name, or evaluated around when asked.
    failed = tmp_path / "failed"
    shutil.copytree(synth_dir, failed)
    rows = read_manifest(failed)
    next(r for r in rows if r.id == test_ids[0]).status = "failed"
    write_manifest(failed, rows)
    with pytest.raises(DataError, match=f"1 clip\\(s\\) of the split failed to prepare \\({test_ids[0]}\\)"):
        evaluate(run, failed, "synth", tmp_path / "ev", progress=False)
    report = evaluate(run, failed, "synth", tmp_path / "ev", allow_missing=True, progress=False).report
    assert report["not_evaluated"] == [test_ids[0]] and report["num_samples"] == len(test_ids) - 1
    # An id listed twice is named.
    doubled = tmp_path / "doubled"
    shutil.copytree(synth_dir, doubled)
    lines = (doubled / "manifest.csv").read_text().splitlines(keepends=True)
    (doubled / "manifest.csv").write_text("".join([*lines, next(ln for ln in lines if test_ids[1] in ln)]))
    with pytest.raises(DataError, match=f"listed more than once: {test_ids[1]}"):
        evaluate(run, doubled, "synth", tmp_path / "ev2", progress=False)
    # Test-time PCM cycles on a model without PCM.
    with pytest.raises(DataError, match="has no PCM"):
        evaluate(run, synth_dir, "synth", tmp_path / "ev3", cycles=2, progress=False)
    # A reused output folder keeps no page or overlays of an earlier evaluation.
    out = tmp_path / "ev4"
    evaluate(run, synth_dir, "synth", out, save_overlays=2, progress=False)
    assert (out / "index.html").is_file() and len(list((out / "overlays").iterdir())) == 2
    evaluate(run, synth_dir, "synth", out, overwrite=True, progress=False)
    assert not (out / "index.html").exists() and not (out / "overlays").exists()
    assert (out / "report.json").is_file()
    # ... but a page or overlays no evaluation wrote are the user's: refused, not deleted.
    theirs = tmp_path / "site"
    (theirs / "overlays").mkdir(parents=True)
    (theirs / "index.html").write_text("<html>mine</html>")
    with pytest.raises(FileExistsError, match=r"site: not empty \(holds index.html, overlays\)"):
        evaluate(run, synth_dir, "synth", theirs, progress=False)
    assert (theirs / "index.html").read_text() == "<html>mine</html>" and (theirs / "overlays").is_dir()
    # Options out of range fail on one line before anything is computed.
    base = ["evaluate", "--checkpoint", str(run), "--data", str(synth_dir), "--benchmark", "synth"]
    base += ["--out", str(tmp_path / "ev5"), "--no-progress"]
    for extra, words in (
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--workers", "-1"], "--workers must be at least 0"),
        (["--cycles", "-1"], "--cycles must be at least 0"),
        (["--device", "gpu"], "--device gpu: not a device name"),
        *([] if torch.backends.mps.is_available() else [(["--device", "mps"], "no Apple MPS device")]),
    ):
        assert cli_main([*base, *extra]) == 1
        assert words in capsys.readouterr().err
    assert not (tmp_path / "ev5").exists()


def test_evaluate_cycles_runs_the_pcm_that_many_cycles(synth_dir, tmp_path):
    # paper Fig. 6: fewer PCM cycles at test time than in training
    from sspl.data.annotations import load_annotations
    from sspl.engine.checkpoint import save_checkpoint
    from sspl.engine.evaluate import evaluate
    from sspl.metrics import BENCHMARKS, evaluate_maps

    config = small_config("model.pcm=true", "model.cycles=3")
    save_checkpoint(
        tmp_path / "pcm.pt",
        model=get_method("sspl").build(config, pretrained=False),
        config=config,
        epoch=0,
        step=0,
    )
    gt = load_annotations(synth_dir)
    expected = {}
    for cycles in (0, 3):
        maps = _test_maps_one_by_one(tmp_path / "pcm.pt", synth_dir, cycles=cycles)
        expected[cycles] = evaluate_maps(maps, {i: gt[i] for i in maps}, BENCHMARKS["synth"]).cious
        out = tmp_path / f"cycles{cycles}"
        evaluate(tmp_path / "pcm.pt", synth_dir, "synth", out, cycles=cycles, progress=False)
        # batched and single-frame maps may differ in the last float bits: a pixel at the threshold
        assert _per_sample_cious(out) == pytest.approx(expected[cycles], abs=2e-3)
    change = max(abs(expected[0][i] - expected[3][i]) for i in expected[0])
    assert change > 0.02  # the cycles change the scores
    with pytest.raises(DataError, match=r"--cycles 4: the checkpoint's model has 3 PCM cycles \(0\.\.3\)"):
        evaluate(tmp_path / "pcm.pt", synth_dir, "synth", tmp_path / "cycles4", cycles=4, progress=False)


def test_benchmark_coverage_counts_the_papers_test_clips():
    from sspl.data.lists import test_ids
    from sspl.engine.evaluate import benchmark_coverage

    flickr = test_ids("flickr", "full")
    assert benchmark_coverage("flickr", [*flickr[:3], "123"]) == {
        "test_ids": 250,
        "evaluated_test_ids": 3,
        "sspl_test_ids": 249,
        "evaluated_sspl_test_ids": len(set(flickr[:3]) & set(test_ids("flickr", "sspl"))),
    }
    assert benchmark_coverage("flickr", flickr)["evaluated_sspl_test_ids"] == 249
    # VGG-Sound ids count whether their start is padded or not.
    unpadded = [f"{t[:11]}_{int(t[12:])}" for t in test_ids("vggss", "sspl")]
    coverage = benchmark_coverage("vggss", unpadded)
    assert (coverage["evaluated_sspl_test_ids"], coverage["sspl_test_ids"]) == (4692, 4692)
    assert coverage["evaluated_test_ids"] == 4692 and coverage["test_ids"] == 5158
    assert benchmark_coverage("synth", ["a"]) is None


def test_find_checkpoint_reads_a_run_or_its_checkpoints_folder(synth_dir, tmp_path):
    from sspl.engine.checkpoint import find_checkpoint

    run = tmp_path / "run"
    train(small_config("train.epochs=1"), synth_dir, run, progress=False)
    best = run / "checkpoints" / "best.pt"
    assert find_checkpoint(run) == find_checkpoint(run / "checkpoints") == find_checkpoint(best) == best
    assert find_checkpoint(run, prefer="last.pt") == run / "checkpoints" / "last.pt"
    with pytest.raises(WeightsError, match=r"no checkpoint found \(expected .*empty/checkpoints/best\.pt"):
        find_checkpoint(tmp_path / "empty")


def test_loaded_run_localizes_like_the_trained_model(synth_dir, tmp_path):
    from sspl.api import load
    from sspl.engine.checkpoint import restore_model

    run = tmp_path / "run"
    train(small_config("train.epochs=1"), synth_dir, run, progress=False)
    model, preprocess = load(run, device="cpu")
    reference, _ = restore_model(load_checkpoint(run / "checkpoints/best.pt"))
    frames = torch.randn(2, 3, 224, 224)
    spect = torch.randn(2, 3, 96, 64)
    with torch.no_grad():
        assert torch.equal(model.localize(frames, spect), reference.localize(frames, spect))
    assert preprocess.image_size == 224
    with torch.no_grad():
        assert np.isfinite(model.localize(frames, spect).numpy()).all()


def test_rng_states_survive_a_checkpoint(tmp_path):
    import random

    from sspl.engine.checkpoint import capture_rng, restore_rng

    def draws():
        return random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist()  # noqa: NPY002

    torch.save({"rng": capture_rng()}, tmp_path / "rng.pt")
    first = draws()
    restore_rng(torch.load(tmp_path / "rng.pt", weights_only=True)["rng"])  # as a checkpoint is read
    assert draws() == first
    assert draws() != first


def test_an_unreadable_checkpoint_says_why(tmp_path):
    empty, text = tmp_path / "empty.pt", tmp_path / "notes.pt"
    empty.write_bytes(b"")
    text.write_text("not a checkpoint")
    with pytest.raises(WeightsError, match=r"empty\.pt: cannot read checkpoint \(empty file\)"):
        load_checkpoint(empty)
    with pytest.raises(
        WeightsError, match=r"notes\.pt: cannot read checkpoint \(not a PyTorch checkpoint"
    ) as err:
        load_checkpoint(text)
    # PyTorch's advice to retry unsafely is not passed on for a file that is no checkpoint at all
    assert "weights-only" in str(err.value) and "weights_only` set to `False`" not in str(err.value)
    foreign, newer = tmp_path / "foreign.pt", tmp_path / "newer.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, foreign)
    with pytest.raises(WeightsError, match=r"foreign\.pt: not an sspl checkpoint"):
        load_checkpoint(foreign)
    from sspl.engine.checkpoint import FORMAT, VERSION

    torch.save({"format": FORMAT, "version": VERSION + 1}, newer)
    with pytest.raises(
        WeightsError, match=rf"newer\.pt: checkpoint version {VERSION + 1} is newer than this sspl"
    ):
        load_checkpoint(newer)


# --------------------------------------------------------------------------------------------------
# bad input and interruptions (review findings)
# --------------------------------------------------------------------------------------------------


def test_overwrite_keeps_the_old_run_when_an_encoder_file_is_missing(synth_dir, tmp_path):
    run = tmp_path / "run"
    train(small_config("train.epochs=1"), synth_dir, run, progress=False)
    missing = tmp_path / "nope.pt"
    with pytest.raises(WeightsError, match="nope.pt"):
        train(small_config(f"model.visual_weights={missing}"), synth_dir, run, overwrite=True, progress=False)
    assert load_checkpoint(run / "checkpoints/last.pt")["epoch"] == 1 and (run / "history.json").is_file()


def test_a_run_stopped_before_its_first_checkpoint_says_to_overwrite(synth_dir, tmp_path):
    from sspl.config import save_config

    run = tmp_path / "run"
    run.mkdir()
    save_config(small_config(), run / "config.yaml")  # what a run killed during its first epoch leaves
    (run / "log.jsonl").write_text("")
    with pytest.raises(TrainingError, match="stopped before its first checkpoint .*pass --overwrite"):
        train(small_config("train.epochs=1"), synth_dir, run, progress=False)
    with pytest.raises(TrainingError, match="pass --overwrite instead of --resume"):
        train(small_config("train.epochs=1"), synth_dir, run, resume=True, progress=False)
    assert train(
        small_config("train.epochs=1"), synth_dir, run, overwrite=True, progress=False
    ).epochs_completed


def test_resume_reads_stored_encoders_from_the_checkpoint_not_their_files(synth_dir, tmp_path):
    from sspl.data.datasets import load_samples
    from sspl.engine.checkpoint import restore_model
    from sspl.engine.train import saved_config
    from sspl.models.small import SmallAudioCNN, SmallVisualCNN

    torch.manual_seed(0)
    enc = tmp_path / "enc"
    enc.mkdir()
    torch.save(SmallVisualCNN(128).state_dict(), enc / "v.pt")
    torch.save(SmallAudioCNN(128).state_dict(), enc / "a.pt")
    paths = [f"model.visual_weights={enc / 'v.pt'}", f"model.audio_weights={enc / 'a.pt'}"]
    full, part = tmp_path / "full", tmp_path / "part"
    train(small_config("train.epochs=2", *paths), synth_dir, full, progress=False)
    train(small_config("train.epochs=1", *paths), synth_dir, part, progress=False)
    enc.rename(tmp_path / "moved")  # the encoder files are gone from where the run found them
    config = apply_overrides(saved_config(part), ["train.epochs=2"])
    train(config, synth_dir, part, resume=True, progress=False)
    a, b = params(full / "checkpoints/last.pt"), params(part / "checkpoints/last.pt")
    for key, value in a.items():
        assert torch.equal(value, b[key]), key  # still bit for bit
    # an audio cache first made on resume holds the stored encoder's embeddings, not a fresh one's
    cached_run = tmp_path / "cached"
    shutil.copytree(part, cached_run)
    config3 = apply_overrides(saved_config(cached_run), ["train.epochs=3", "data.cache_audio=true"])
    before = restore_model(load_checkpoint(cached_run / "checkpoints/last.pt"))[0]
    train(config3, synth_dir, cached_run, resume=True, progress=False)
    cache = torch.load(cached_run / "cache/audio_embeddings.pt", weights_only=True)
    sample = load_samples(synth_dir, ids=[cache["ids"][0]])[0]
    with torch.no_grad():
        expected = before.encode_audio(sample.load_spect()[None])[0]
    torch.testing.assert_close(cache["embeddings"][0], expected)
    # naming their new place is not a change to what the run computes, and is saved for later resumes
    moved = [p.replace(str(enc), str(tmp_path / "moved")) for p in paths]
    train(small_config("train.epochs=3", *moved), synth_dir, part, resume=True, progress=False)
    assert str(tmp_path / "moved") in (part / "config.yaml").read_text()


def test_resume_from_a_checkpoint_without_training_state_is_refused(synth_dir, tmp_path):
    run = tmp_path / "run"
    train(small_config("train.epochs=1"), synth_dir, run, progress=False)
    shutil.copy(run / "checkpoints/best.pt", run / "checkpoints/last.pt")
    with pytest.raises(TrainingError, match=r"last.pt: has no optimizer state, .*a best.pt copied over it"):
        train(small_config("train.epochs=2"), synth_dir, run, resume=True, progress=False)


def test_a_damaged_audio_cache_says_to_delete_it(synth_dir, tmp_path):
    run = tmp_path / "run"
    train(small_config("train.epochs=1", "data.cache_audio=true"), synth_dir, run, progress=False)
    cache = run / "cache" / "audio_embeddings.pt"
    cache.write_bytes(cache.read_bytes()[:100])
    with pytest.raises(
        TrainingError, match="audio_embeddings.pt: damaged audio cache .*delete it to rebuild"
    ):
        train(
            small_config("train.epochs=2", "data.cache_audio=true"),
            synth_dir,
            run,
            resume=True,
            progress=False,
        )


def test_resuming_a_finished_run_says_there_is_nothing_to_do(synth_dir, tmp_path, caplog):
    run = tmp_path / "run"
    train(small_config("train.epochs=1"), synth_dir, run, progress=False)
    before = load_checkpoint(run / "checkpoints/last.pt")["step"]
    with caplog.at_level("INFO", logger="sspl.engine.train"):
        result = train(small_config("train.epochs=1"), synth_dir, run, resume=True, progress=False)
    assert "already trained 1 of 1 epochs, nothing to do" in caplog.text
    assert result.steps == before == load_checkpoint(run / "checkpoints/last.pt")["step"]


def test_a_damaged_manifest_row_is_named_not_dropped(synth_dir, tmp_path):
    from sspl.data.datasets import load_samples

    for name, damage, words in (
        ("short", lambda ln: ",".join(ln.split(",")[:2]), "row has 2 of 10 fields"),
        ("long", lambda ln: ln + ",extra", "row has 11 of 10 fields"),
        (
            "noframe",
            lambda ln: ",".join([ln.split(",")[0], "", *ln.split(",")[2:]]),
            "its frame column is empty",
        ),
    ):
        bad = tmp_path / name
        shutil.copytree(synth_dir, bad)
        lines = (bad / "manifest.csv").read_text().splitlines()
        lines[5] = damage(lines[5])
        (bad / "manifest.csv").write_text("\n".join(lines) + "\n")
        with pytest.raises(DataError, match=f"manifest.csv:6: .*{words}"):
            load_samples(bad)
    binary = tmp_path / "binary"
    shutil.copytree(synth_dir, binary)
    (binary / "manifest.csv").write_bytes((binary / "manifest.csv").read_bytes() + b"\xff\xfe,\n")
    with pytest.raises(DataError, match=r"binary/manifest.csv: not UTF-8 text"):
        load_samples(binary)


def test_cli_takes_overrides_between_options_and_rejects_other_strays(synth_dir, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "--data", str(synth_dir), "--run-dir", str(run), "train.epochs=1", "--no-progress"]
    assert cli_main([*argv, *SMALL]) == 0
    assert (
        "epochs: 1" in (run / "config.yaml").read_text()
        and "batch_size: 4" in (run / "config.yaml").read_text()
    )
    r2 = ["train", "--data", str(synth_dir), "--run-dir", str(tmp_path / "r2")]
    with pytest.raises(SystemExit):
        cli_main([*r2, "train.epochs=1", "--bogus", "--no-progress"])
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
    assert cli_main([*r2, "--no-progress", "stray"]) == 1
    assert "override 'stray' is not of the form section.key=value" in capsys.readouterr().err
    assert not (tmp_path / "r2").exists()


def test_device_names_are_checked():
    from sspl.cli import parse_device
    from sspl.errors import SSPLError

    assert parse_device(None) is None and parse_device("cpu") == torch.device("cpu")
    for name in ("meta", "xla", "hip"):  # torch parses them, sspl cannot run on them
        with pytest.raises(SSPLError, match=rf"--device {name}: choose cpu, cuda, cuda:N or mps"):
            parse_device(name)
    with pytest.raises(SSPLError, match="--device gpu0: not a device name"):
        parse_device("gpu0")
    if torch.cuda.is_available():
        with pytest.raises(SSPLError, match="CUDA device"):
            parse_device(f"cuda:{torch.cuda.device_count()}")


def test_damaged_log_mel_files_are_named(synth_dir, tmp_path):
    from sspl.data.datasets import load_samples

    sample = load_samples(synth_dir, splits=["train"])[0]
    for content, why in ((b"", "empty file"), (sample.spect.read_bytes()[:100], "")):
        bad = tmp_path / "bad.npy"
        bad.write_bytes(content)
        damaged = dataclasses.replace(sample, spect=bad)
        with pytest.raises(DataError, match=rf"bad\.npy: cannot read log-mel of clip {sample.id} \(.*{why}"):
            damaged.load_spect()


def test_cli_shows_a_data_loader_workers_error_without_its_traceback(synth_dir, tmp_path, capsys):
    from sspl.cli import error_message

    bad = tmp_path / "bad"
    shutil.copytree(synth_dir, bad)
    frame = next(r.frame for r in read_manifest(bad) if r.split == "train")
    (bad / frame).write_bytes((bad / frame).read_bytes()[:200])
    argv = ["train", "--data", str(bad), "--run-dir", str(tmp_path / "run"), "--epochs", "1", "--no-progress"]
    overrides = [*SMALL, "data.num_workers=1", "train.max_steps_per_epoch=null", "train.batch_size=2"]
    assert cli_main([*argv, *overrides]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and frame in err, err
    # the message of a worker's error is the original one
    wrapped = DataError(
        "Caught DataError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\n    raise DataError(msg)\nsspl.errors.DataError: frames/a.jpg: truncated\n'
    )
    assert error_message(wrapped) == "frames/a.jpg: truncated"
    assert error_message(DataError("plain: message")) == "plain: message"


def test_evaluate_checks_its_output_folder_and_options_before_the_model_pass(
    synth_dir, tmp_path, monkeypatch
):
    from sspl.engine import evaluate as evaluate_module

    run = tmp_path / "run"
    train(small_config("train.epochs=1"), synth_dir, run, progress=False)
    monkeypatch.setattr(evaluate_module, "compute_maps", lambda *a, **k: pytest.fail("model pass ran"))
    afile = tmp_path / "afile"
    afile.write_text("keep")
    with pytest.raises(DataError, match="afile: is a file, not a folder$"):
        evaluate_module.evaluate(run, synth_dir, "synth", afile, progress=False)
    with pytest.raises(
        DataError, match="afile: is a file, not a folder, so the output folder .*sub cannot be made"
    ):
        evaluate_module.evaluate(run, synth_dir, "synth", afile / "sub", progress=False)
    with pytest.raises(DataError, match="--save-overlays. must be at least 0, got -3"):
        evaluate_module.evaluate(run, synth_dir, "synth", tmp_path / "ev", save_overlays=-3, progress=False)
    with pytest.raises(
        DataError,
        match=r"annotations.json: boxes are 'normalized', but --benchmark flickr "
        r"expects 'pixels256'; evaluate with --benchmark vggss or synth",
    ):
        evaluate_module.evaluate(run, synth_dir, "flickr", tmp_path / "ev", progress=False)
    assert afile.read_text() == "keep" and not (tmp_path / "ev").exists()


def test_a_damaged_checkpoint_of_a_run_says_what_still_works(synth_dir, tmp_path):
    from sspl.api import load
    from sspl.engine.train import saved_config

    run = tmp_path / "run"
    train(small_config("train.epochs=1"), synth_dir, run, progress=False)
    last, best = run / "checkpoints/last.pt", run / "checkpoints/best.pt"
    good_last = last.read_bytes()
    last.write_bytes(good_last[:1000])
    for attempt in (
        lambda: saved_config(run),
        lambda: train(small_config("train.epochs=2"), synth_dir, run, resume=True, progress=False),
    ):
        with pytest.raises(TrainingError, match=r"last.pt: cannot read checkpoint .*--overwrite .*best.pt"):
            attempt()
    load(run)  # best.pt is intact: the run can still be evaluated
    last.write_bytes(good_last)
    best.write_bytes(b"")
    with pytest.raises(
        WeightsError,
        match=r"best.pt: cannot read checkpoint \(empty file\); try its other "
        r"checkpoint, --checkpoint .*last.pt",
    ):
        load(run)
    load(last)
