"""SLAVC and FNAC on this engine equal their official code: forward, loss, gradient norms of every
trainable tensor, SLAVC's momentum update, in float64, on seeded weights read from official-format
checkpoints (tests/data/released/*/README.md says how the goldens were made)."""

from __future__ import annotations

import copy
import functools
import json

import numpy as np
import pytest
import torch
from torch import nn

from slavc_fnac_recipe import RELEASED, inputs, our_state_dict
from sspl.config import Config, SSPLConfig
from sspl.models.methods import get_method

RTOL = 1e-8  # float64: the official code and ours agree to rounding


class MaskSequence(nn.Module):
    """The goldens' dropout: the k-th call multiplies by ``masks[k] / (1 - p)``."""

    def __init__(self, masks, p):
        super().__init__()
        self.masks, self.p, self.calls = list(masks), p, 0

    def forward(self, x):
        if not self.training:
            return x
        m = self.masks[self.calls]
        self.calls += 1
        return x * m.to(x.dtype) / (1 - self.p)


def config(method: str, **options) -> Config:
    model = SSPLConfig(
        visual_encoder="resnet18",
        audio_encoder="resnet18",
        visual_channels=512,
        audio_dim=512,
        visual_weights=None,
        audio_weights=None,
        train_visual=True,
        train_audio=True,
        audio_frontend="stft",
    )
    return Config(model=model, method=method, method_options=options)


def released_model(method: str):
    """A fresh float64 copy of ``method``'s model with the seeded released weights, and its config."""
    model, cfg = _released_model(method)
    return copy.deepcopy(model), cfg


@functools.cache
def _released_model(method: str):
    cfg = config(method)
    model = get_method(method).build(cfg, pretrained=False)
    model.load_state_dict(our_state_dict(method))
    return model.double(), cfg


def batch(method: str, kind: str = "train") -> dict:
    x = {k: torch.from_numpy(v) for k, v in inputs(method, kind).items()}
    return {
        "frame_view1": x["image"],
        "spect": x["spec"],
        **{k: v for k, v in x.items() if k.startswith("mask")},
    }


def official_name(ours: str) -> str:
    for theirs, mine in (
        ("momentum_imgnet.", "momentum_visual_encoder."),
        ("momentum_audnet.", "momentum_audio_encoder."),
        ("imgnet.", "visual_encoder."),
        ("audnet.", "audio_encoder."),
    ):
        if ours.startswith(mine):
            return theirs + ours.removeprefix(mine)
    return ours


def assert_grad_norms(model: nn.Module, golden: str) -> None:
    gold = json.loads((RELEASED / golden).read_text())
    ours = {official_name(n): p.grad.norm().item() for n, p in model.named_parameters() if p.requires_grad}
    assert sorted(ours) == sorted(gold)
    for name, value in gold.items():
        assert ours[name] == pytest.approx(value, rel=RTOL, abs=1e-12), name


def test_slavc_training_step_equals_official_forward_loss_gradients_and_momentum_update():
    gold = np.load(RELEASED / "slavc" / "train.npz")
    model, cfg = released_model("slavc")
    method = get_method("slavc")
    b = batch("slavc")
    model.img_dropout = MaskSequence([b["mask0"], b["mask1"]], 0.9)
    model.train()
    method.before_step(model)  # what train_step does before the loss
    loss, _ = method.loss(model, b, cfg)
    loss.backward()
    assert model.img_dropout.calls == 2
    assert loss.item() == pytest.approx(float(gold["loss"]), rel=RTOL)
    assert_grad_norms(model, "slavc/train_grad_norms.json")
    momentum = json.loads((RELEASED / "slavc" / "train_momentum_norms.json").read_text())
    ours = {
        official_name(n): p.norm().item() for n, p in model.named_parameters() if n.startswith("momentum_")
    }
    assert sorted(ours) == sorted(momentum)
    for name, value in momentum.items():
        assert ours[name] == pytest.approx(value, rel=RTOL), name


def test_slavc_eval_maps_online_and_momentum_and_loss_equal_official():
    gold = np.load(RELEASED / "slavc" / "eval.npz")
    b = batch("slavc")
    model, _ = released_model("slavc")
    model.eval()
    for momentum_map in (True, False):
        model.options.momentum_map = momentum_map
        got = model.av_map(b["frame_view1"], b["spect"])
        np.testing.assert_allclose(got.numpy(), gold[f"savl_mom{int(momentum_map)}"], rtol=RTOL, atol=1e-10)


def test_fnac_training_step_equals_official_loss_terms_and_gradients():
    from sspl.losses import fnac_losses

    gold = np.load(RELEASED / "fnac" / "train.npz")
    model, _ = released_model("fnac")
    b = batch("fnac")
    model.train()
    model.img_dropout = MaskSequence([b["mask0"]], 0.9)
    out = model(b["frame_view1"], b["spect"])  # one forward; the two phases differ only in the loss
    terms = fnac_losses(out.visual, out.audio, 0.03)
    np.testing.assert_allclose([t.item() for t in terms], gold["terms"], rtol=RTOL)
    # train.py: the contrastive term alone during warm-up, then + 100 x each FNAC term (the weighting by
    # epoch of FNACMethod.loss is tested in test_released_engine.py)
    for phase, loss in (
        ("warmup", terms[0]),
        ("full", terms[0] + 100 * terms[1] + 100 * terms[2] + 100 * terms[3]),
    ):
        model.zero_grad()
        loss.backward(retain_graph=True)
        assert loss.item() == pytest.approx(float(gold[f"{phase}_loss"]), rel=RTOL)
        assert_grad_norms(model, f"fnac/train_grad_norms_{phase}.json")


def test_fnac_eval_map_equals_official():
    gold = np.load(RELEASED / "fnac" / "train.npz")
    model, _ = released_model("fnac")
    b = batch("fnac")
    got = model.eval().av_map(b["frame_view1"], b["spect"])
    np.testing.assert_allclose(got.detach().numpy(), gold["eval_savl"], rtol=RTOL, atol=1e-10)
