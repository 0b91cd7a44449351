"""The engine hooks the released methods need: ``before_step`` (SLAVC's momentum update) runs in the
training step before the loss; SLAVC and FNAC train on SynthAV's small encoders."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sspl.config import Config, SSPLConfig
from sspl.engine.step import build_optimisation, train_step


class _Recorder:
    name = "recorder"

    def __init__(self):
        self.calls = []

    def before_step(self, model):
        self.calls.append(("before_step", float(model.weight.detach().sum())))

    def loss(self, model, batch, config):
        self.calls.append(("loss", float(model.weight.detach().sum())))
        return (model(batch["x"]) ** 2).mean(), {}

    def param_groups(self, model, optim):
        return [
            {"name": "all", "params": list(model.parameters()), "lr": 0.1, "weight_decay": optim.weight_decay}
        ]


def test_train_step_calls_the_methods_before_step_hook_before_the_loss_and_the_update():
    torch.manual_seed(0)
    model, method = nn.Linear(3, 1), _Recorder()
    cfg = Config()
    opt = build_optimisation(method, model, cfg, steps_per_epoch=1, device=torch.device("cpu"))
    before = float(model.weight.detach().sum())
    train_step(model, method, {"x": torch.randn(4, 3)}, cfg, opt)
    assert [c[0] for c in method.calls] == ["before_step", "loss"]
    assert method.calls[0][1] == before  # the hook saw the weights before the optimiser step
    assert float(model.weight.detach().sum()) != before


def _small_config(method: str, **options) -> Config:
    model = SSPLConfig(
        visual_encoder="small_cnn",
        audio_encoder="small_cnn",
        visual_channels=128,
        audio_dim=128,
        visual_weights=None,
        audio_weights=None,
        train_visual=True,
        train_audio=True,
    )
    return Config(model=model, method=method, method_options={"dim": 16, **options})


def test_slavc_trains_on_small_encoders_and_moves_its_momentum_copy_by_one_minus_m():
    from sspl.models.methods import get_method

    torch.manual_seed(0)
    cfg = _small_config("slavc", momentum_img=0.5, momentum_aud=0.5, dropout_img=0.0)
    method = get_method("slavc")
    model = method.build(cfg, pretrained=False).train()
    batch = {"frame_view1": torch.randn(3, 3, 64, 64), "spect": torch.randn(3, 3, 96, 64)}
    opt = build_optimisation(method, model, cfg, steps_per_epoch=2, device=torch.device("cpu"))
    online0 = model.img_proj1.weight.detach().clone()
    train_step(model, method, batch, cfg, opt)
    online1 = model.img_proj1.weight.detach().clone()
    assert not torch.equal(online0, online1)
    # step 1's hook saw online == momentum (fresh copy): no change; step 2's hook averages with m = 0.5
    assert torch.equal(model.momentum_img_proj1.weight, online0)
    out = train_step(model, method, batch, cfg, opt)
    torch.testing.assert_close(model.momentum_img_proj1.weight, 0.5 * online0 + 0.5 * online1)
    assert torch.isfinite(out.loss)
    assert all(not p.requires_grad for n, p in model.named_parameters() if n.startswith("momentum_"))
    maps = model.eval().localize(batch["frame_view1"], batch["spect"])
    assert maps.shape[0] == 3 and maps.dim() == 3


def test_fnac_trains_on_small_encoders_with_its_warm_up_by_epoch():
    from sspl.models.methods import get_method

    torch.manual_seed(0)
    cfg = _small_config("fnac", warmup_epochs=1)
    method = get_method("fnac")
    model = method.build(cfg, pretrained=False).eval()  # no dropout: the two epochs see the same features
    batch = {"frame_view1": torch.randn(3, 3, 64, 64), "spect": torch.randn(3, 3, 96, 64)}
    warm, extra = method.loss(model, {**batch, "epoch": 0}, cfg)
    full, _ = method.loss(model, {**batch, "epoch": 1}, cfg)
    assert warm.item() == extra["contrastive"]
    expected = extra["contrastive"] + 100 * (extra["fns_audio"] + extra["tns"] + extra["fns_visual"])
    assert full.item() == pytest.approx(expected, rel=1e-5)
    opt = build_optimisation(method, model.train(), cfg, steps_per_epoch=1, device=torch.device("cpu"))
    assert torch.isfinite(train_step(model, method, {**batch, "epoch": 1}, cfg, opt).loss)


def test_optim_adam_adds_weight_decay_to_the_gradient_as_the_released_models_trained():
    from sspl.config import ConfigError, OptimConfig

    cfg = Config(optim=OptimConfig(optimizer="adam", weight_decay=0.5, lr=0.1))
    model, method = nn.Linear(3, 1), _Recorder()
    opt = build_optimisation(method, model, cfg, steps_per_epoch=1, device=torch.device("cpu"))
    assert type(opt.optimizer) is torch.optim.Adam
    # first Adam step moves every weight by lr * sign(grad + wd * w) (|m / sqrt(v)| = 1); AdamW would
    # instead move by lr * sign(grad) plus lr * wd * w
    w0, b0 = model.weight.detach().clone(), model.bias.detach().clone()
    x = torch.randn(4, 3)
    train_step(model, method, {"x": x}, cfg, opt)
    w0r = w0.clone().requires_grad_(True)
    grad = torch.autograd.grad(((x @ w0r.T + b0) ** 2).mean(), w0r)[0]
    torch.testing.assert_close(
        model.weight.detach(), w0 - 0.1 * torch.sign(grad + 0.5 * w0), atol=1e-6, rtol=0
    )
    with pytest.raises(ConfigError, match="optim.optimizer"):
        OptimConfig(optimizer="sgd")


def test_shipped_slavc_and_fnac_configs_hold_the_official_training_scripts_settings():
    from pathlib import Path

    from sspl.config import load_config
    from sspl.models.methods.fnac import FNACOptions
    from sspl.models.methods.negatives import parse_method_options
    from sspl.models.methods.slavc import SLAVCOptions

    root = Path(__file__).parents[1] / "configs"
    slavc = load_config(root / "slavc_vggsound144k.yaml")  # scripts/train_vggsound144k.sh
    assert parse_method_options(SLAVCOptions, slavc) == SLAVCOptions(0.03, 512, 0.9, 0.0, 0.999, 0.999, False)
    assert (slavc.optim.optimizer, slavc.optim.lr, slavc.optim.weight_decay) == ("adam", 1e-4, 0.0)
    assert (slavc.train.epochs, slavc.train.batch_size, slavc.data.train_list) == (20, 128, "vggss_144k")
    lists = {
        "flickr10k": "flickr_10k",
        "flickr144k": "flickr_144k",
        "vggsound10k": "vggss_10k",
        "vggsound144k": "vggss_144k",
    }
    for name, train_list in lists.items():  # train_flickr.sh / train_vggss.sh
        cfg = load_config(root / f"fnac_{name}.yaml")
        assert parse_method_options(FNACOptions, cfg) == FNACOptions(
            0.03, 512, 0.9, 0.0, 5, 100.0, 100.0, 100.0
        )
        assert (cfg.optim.optimizer, cfg.optim.lr, cfg.optim.weight_decay) == ("adam", 1e-4, 1e-4)
        assert (cfg.train.epochs, cfg.train.batch_size, cfg.data.train_list) == (30, 256, train_list)
    for c in (slavc, cfg):
        m = c.model
        assert (m.visual_encoder, m.audio_encoder, m.audio_frontend, m.visual_weights, m.audio_weights) == (
            "resnet18",
            "resnet18",
            "stft",
            "imagenet",
            None,
        )
        assert m.train_visual and m.train_audio and c.data.test_transform == "resize"


def test_dropouts_and_momenta_are_checked_with_their_ranges():
    from sspl.config import ConfigError
    from sspl.models.methods.fnac import FNACOptions
    from sspl.models.methods.slavc import SLAVCOptions

    with pytest.raises(ConfigError, match=r"method_options.dropout_img=1.0: must be in \[0, 1\)"):
        FNACOptions(dropout_img=1.0)
    with pytest.raises(ConfigError, match=r"method_options.dropout_aud=-0.1: must be in \[0, 1\)"):
        SLAVCOptions(dropout_aud=-0.1)
    assert SLAVCOptions(momentum_img=1.0).momentum_img == 1.0  # a frozen momentum copy
    with pytest.raises(ConfigError, match=r"method_options.momentum_aud=1.5: must be in \[0, 1\]"):
        SLAVCOptions(momentum_aud=1.5)
    with pytest.raises(ConfigError, match=r"method_options.weight_tns=-1.0: must be >= 0"):
        FNACOptions(weight_tns=-1.0)
