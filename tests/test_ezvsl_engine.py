"""EZ-VSL trains on this engine like every method: two steps on SynthAV with the small encoders, a resumable
checkpoint of ours, evaluation at its median threshold by default, and ``sspl.load`` giving the same maps.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from sspl.cli import main as cli_main
from sspl.config import Config, apply_overrides
from sspl.engine.checkpoint import load_checkpoint, restore_model
from sspl.engine.train import train
from sspl.models.ezvsl import EZVSL
from sspl.models.methods import get_method

#: the released methods' networks on SynthAV's small encoders, for a few fast steps (OGL off: it needs
#: torchvision's ImageNet ResNet-18 file)
SMALL_STREAMS = [
    "model.visual_encoder=small_cnn",
    "model.audio_encoder=small_cnn",
    "model.visual_channels=128",
    "model.visual_weights=null",
    "model.audio_weights=null",
    "model.train_visual=true",
    "model.train_audio=true",
    "train.batch_size=4",
    "train.log_every=1",
    "data.num_workers=0",
    "optim.lr=1e-3",
    "optim.weight_decay=0",
    "method_options.ogl=false",
    "method_options.dim=32",
]
SMALL = ["method=ezvsl", *SMALL_STREAMS, "train.max_steps_per_epoch=2", "train.epochs=1"]


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> Path:
    from sspl.data.synth import generate_synth, synth_config

    out = tmp_path_factory.mktemp("synth") / "set"
    generate_synth(out, synth_config("easy", num=28, seed=5, pretrain_num=4), workers=1, progress=False)
    return out


def test_param_groups_cover_every_trained_tensor():
    cfg = apply_overrides(Config(), SMALL)
    model = get_method("ezvsl").build(cfg, pretrained=False)
    groups = {g["name"]: g for g in get_method("ezvsl").param_groups(model, cfg.optim)}
    assert list(groups) == ["img_proj", "aud_proj", "visual_encoder", "audio_encoder"]
    assert sum(len(g["params"]) for g in groups.values()) == sum(p.requires_grad for p in model.parameters())
    assert all(g["lr"] == 1e-3 and g["weight_decay"] == 0 for g in groups.values())


def test_two_steps_then_evaluate_and_load(synth_dir, tmp_path):
    from sspl.api import load

    run = tmp_path / "run"
    result = train(apply_overrides(Config(), SMALL), synth_dir, run, progress=False)
    assert result.steps == 2
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["type"] == "train"]
    assert len(steps) == 2 and all(math.isfinite(r["loss"]) and "lr_img_proj" in r for r in steps)
    ckpt = load_checkpoint(run / "checkpoints" / "best.pt")
    assert ckpt["method"] == "ezvsl"

    out = tmp_path / "eval"
    args = ["evaluate", "--checkpoint", str(run), "--data", str(synth_dir), "--benchmark", "synth"]
    assert cli_main([*args, "--out", str(out), "--no-progress"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["protocol"]["threshold"] == "median"  # EZ-VSL's own, without --protocol
    assert 0.0 <= report["ciou@0.5"] <= 1.0

    model, _ = load(run, device="cpu")
    reference, _ = restore_model(ckpt)
    assert isinstance(model, EZVSL) and model.saliency_encoder is None
    frames, spect = torch.randn(2, 3, 224, 224), torch.randn(2, 3, 96, 64)
    with torch.no_grad():
        maps = model.localize(frames, spect)
        assert maps.shape == (2, 224, 224)
        assert torch.equal(maps, reference.localize(frames, spect))
