"""The trainer's step function (``sspl.engine.train.train_step``): one optimisation step that the trainer
runs for every batch and the step benchmark times; and the data loader helpers they share."""

from __future__ import annotations

import ast
import copy
import json
from pathlib import Path

import pytest
import torch
from torch import nn

import sspl.engine.train as train_mod
from sspl.config import Config, apply_overrides
from sspl.data.loader import collate_samples
from sspl.engine.distributed import DistEnv
from sspl.engine.step import NonFiniteLossError, Optimisation, build_optimisation
from sspl.engine.train import train, train_step

ROOT = Path(__file__).resolve().parents[1]


class _Linear:
    """A method plugin on a linear model: mean squared error of ``x @ w`` to ``y``."""

    def param_groups(self, model, optim):
        return [{"name": "head", "params": list(model.parameters()), "lr": optim.lr_head}]

    def loss(self, model, batch, cfg):
        err = model(batch["x"]) - batch["y"]
        return (err**2).mean(), {"err": float(err.detach().abs().max())}


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Linear(3, 1)
    batch = {"x": torch.randn(8, 3), "y": torch.randn(8, 1)}
    cfg = apply_overrides(Config(), ["optim.schedule=cosine", "train.epochs=2", "optim.lr_head=0.1"])
    return model, batch, cfg


def test_train_step_is_one_adamw_step_then_one_schedule_step():
    method = _Linear()
    model, batch, cfg = _setup()
    reference = copy.deepcopy(model)
    opt = build_optimisation(method, model, cfg, steps_per_epoch=3, device=torch.device("cpu"))
    out = train_step(model, method, batch, cfg, opt)

    # the same step written out: loss, backward, gradient norm, AdamW with the trainer's settings
    ref_opt = torch.optim.AdamW(
        reference.parameters(),
        lr=cfg.optim.lr_head,
        betas=tuple(cfg.optim.betas),
        eps=cfg.optim.eps,
        weight_decay=cfg.optim.weight_decay,
    )
    loss = ((reference(batch["x"]) - batch["y"]) ** 2).mean()
    loss.backward()
    norm = torch.cat([p.grad.flatten() for p in reference.parameters()]).norm()
    ref_opt.step()
    assert float(out.loss) == float(loss.detach())
    assert out.grad_norm == pytest.approx(float(norm), rel=1e-6)
    assert set(out.extra) == {"err"}
    for p, q in zip(model.parameters(), reference.parameters()):
        assert torch.equal(p, q)
    assert opt.scheduler.last_epoch == 1  # the schedule moved on by one step (cosine: the rate changed)
    assert opt.optimizer.param_groups[0]["lr"] < cfg.optim.lr_head


def test_a_non_finite_loss_updates_nothing():
    method = _Linear()
    model, batch, cfg = _setup()
    before = copy.deepcopy(model.state_dict())
    opt = build_optimisation(method, model, cfg, steps_per_epoch=3, device=torch.device("cpu"))
    batch["y"][0, 0] = float("inf")
    with pytest.raises(NonFiniteLossError, match=r"^non-finite loss \(inf\)$"):
        train_step(model, method, batch, cfg, opt, DistEnv())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert opt.scheduler.last_epoch == 0 and not opt.optimizer.state
    assert all(p.grad is None for p in model.parameters())


def test_autocast_runs_on_the_env_device_when_asked():
    seen = []

    class Recording(_Linear):
        def loss(self, model, batch, cfg):
            seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
            return super().loss(model, batch, cfg)

    method = Recording()
    model, batch, cfg = _setup()
    opt = build_optimisation(method, model, cfg, steps_per_epoch=3, device=torch.device("cpu"))
    assert opt.amp_dtype is None  # train.amp applies on CUDA only
    train_step(model, method, batch, cfg, opt)
    bf16 = Optimisation(opt.optimizer, opt.scheduler, opt.scaler, torch.bfloat16)
    train_step(model, method, batch, cfg, bf16, DistEnv(device=torch.device("cpu")))
    assert seen[0][0] is False and seen[1] == (True, torch.bfloat16)


def test_the_trainer_runs_train_step_for_every_batch(tmp_path, monkeypatch):
    from sspl.data.synth import generate_synth, synth_config

    data = tmp_path / "set"
    generate_synth(
        data, synth_config("distractors", num=12, seed=3, pretrain_num=4), workers=1, progress=False
    )
    steps, original = [], train_mod.train_step

    def recording(*args, **kwargs):
        out = original(*args, **kwargs)
        steps.append(float(out.loss))
        return out

    monkeypatch.setattr(train_mod, "train_step", recording)
    config = apply_overrides(
        Config(),
        [
            "model.visual_encoder=small_cnn",
            "model.audio_encoder=small_cnn",
            "model.visual_channels=32",
            "model.visual_weights=null",
            "model.audio_weights=null",
            "model.proj_dim=32",
            "model.pred_hidden=16",
            "model.cycles=1",
            "train.batch_size=2",
            "train.max_steps_per_epoch=2",
            "train.epochs=1",
            "train.log_every=1",
            "data.num_workers=0",
        ],
    )
    train(config, data, tmp_path / "run", progress=False)
    logged = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in logged if r["type"] == "train"] == steps and len(steps) == 2


def test_collate_samples_stacks_tensors_and_numbers_and_lists_the_rest():
    items = [{"id": "a", "index": 0, "x": torch.zeros(2)}, {"id": "b", "index": 3, "x": torch.ones(2)}]
    batch = collate_samples(items)
    assert batch["id"] == ["a", "b"]
    assert torch.equal(batch["index"], torch.tensor([0, 3]))
    assert torch.equal(batch["x"], torch.tensor([[0.0, 0.0], [1.0, 1.0]]))


def _imports(path: Path) -> list[tuple[str, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        (node.module or "", alias.name)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    ]


def test_the_step_benchmark_times_the_trainers_own_step():
    bench = ROOT / "bench" / "bench_train_step.py"
    assert ("sspl.engine.train", "train_step") in _imports(bench)
    calls = [
        n.func.id
        for n in ast.walk(ast.parse(bench.read_text(encoding="utf-8")))
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
    ]
    assert "train_step" in calls
    for path in (bench, ROOT / "bench" / "bench_loader.py"):
        private = [(m, n) for m, n in _imports(path) if m.startswith("sspl") and n.startswith("_")]
        assert private == [], path
    experiment = _imports(ROOT / "experiments" / "synthav_view_control.py")
    assert ("sspl.data.datasets", "sample_seed") in experiment
