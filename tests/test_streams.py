"""One model-streams class under every method, one SSPL loss path, one weights-loading path.

SSPL and the baselines compose :class:`~sspl.models.streams.AudioVisualStreams` (encoders, their freezing,
the input checks and the audio query ``g``), so a bad input is refused alike whatever the method; the method
plugin and ``SSPL.training_loss`` compute the loss through one function; every method's ``build`` loads its
encoder weights through :mod:`sspl.models.factory`.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from sspl.config import Config, apply_overrides
from sspl.models.baselines import AttentionBaseline, HardWayBaseline
from sspl.models.methods import get_method
from sspl.models.sspl import SSPL

METHODS = ("sspl", "attention", "hardway")
C, D = 16, 8
TINY = [
    "model.visual_encoder=small_cnn",
    "model.audio_encoder=small_cnn",
    f"model.visual_channels={C}",
    f"model.audio_dim={D}",
    "model.proj_dim=32",
    "model.pred_hidden=8",
    "model.transform_hidden=16",
    "model.visual_weights=null",
    "model.audio_weights=null",
]


def tiny_config(method: str, *extra: str) -> Config:
    return apply_overrides(Config(), [*TINY, f"method={method}", *extra])


class TinyVisual(nn.Module):
    """B x 3 x 224 x 224 -> B x C x 14 x 14 with a batch norm (so eval mode matters)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, C, kernel_size=16, stride=16)
        self.norm = nn.BatchNorm2d(C)

    def forward(self, x):
        return self.norm(self.conv(x))


class TinyAudio(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(96 * 64, D)

    def forward(self, x):
        return torch.relu(self.fc(x.flatten(1)))


def clips(b: int = 2):
    g = torch.Generator().manual_seed(0)
    return torch.randn(b, 3, 224, 224, generator=g), torch.randn(b, 3, 96, 64, generator=g)


@pytest.mark.parametrize("method", METHODS)
def test_a_bad_5d_spect_is_refused_alike_by_every_method(method):
    torch.manual_seed(0)
    model = get_method(method).build(tiny_config(method), pretrained=False).eval()
    frames, _ = clips()
    bad = torch.randn(2, 3, 2, 96, 64)  # 5-D, but not one channel per patch
    with pytest.raises(ValueError) as caught, torch.no_grad():
        model.localize(frames, bad)
    assert str(caught.value) == "spect must be B x P x 1 x 96 x 64, got (2, 3, 2, 96, 64)"
    with pytest.raises(ValueError, match="spect must be B x P x 1 x 96 x 64"):
        model.encode_audio(bad)


@pytest.mark.parametrize("make", [SSPL, AttentionBaseline, HardWayBaseline])
def test_every_model_takes_any_encoder_module_and_freezes_it(make):
    from sspl.models.streams import AudioVisualStreams

    torch.manual_seed(0)
    visual, audio = TinyVisual(), TinyAudio()
    model = make(tiny_config("sspl").model, visual_encoder=visual, audio_encoder=audio)
    assert isinstance(model, AudioVisualStreams)
    assert model.visual_encoder is visual and model.audio_encoder is audio
    assert not any(p.requires_grad for p in [*visual.parameters(), *audio.parameters()])
    model.train()
    assert model.training and not visual.training and not audio.training  # frozen: eval mode kept
    frames, spect = clips()
    with torch.no_grad():
        maps = model.localize(frames, spect)
    assert maps.shape == (2, 14, 14) and torch.isfinite(maps).all()
    # the state dict keeps the names saved checkpoints use
    prefixes = {k.split(".")[0] for k in model.state_dict()}
    assert {"visual_encoder", "audio_encoder", "audio_transform"} <= prefixes


def test_method_loss_and_training_loss_are_one_function(monkeypatch):
    import sspl.models.sspl as sspl_module

    cfg = tiny_config("sspl")
    torch.manual_seed(0)
    model = get_method("sspl").build(cfg, pretrained=False).train()
    frames, spect = clips(4)
    views = frames, frames.flip(-1)
    batch = {"frame_view1": views[0], "frame_view2": views[1], "spect": spect}
    plain = model.training_loss(*views, spect)
    assert torch.equal(get_method("sspl").loss(model, batch, cfg)[0], plain)
    seen = []

    def spy(p1, p2, z1, z2):
        seen.append(p1.shape)
        return torch.tensor(7.0)

    monkeypatch.setattr(sspl_module, "simsiam_loss", spy)
    assert model.training_loss(*views, spect).item() == 7.0
    assert get_method("sspl").loss(model, batch, cfg)[0].item() == 7.0
    assert seen == [(4, 32), (4, 32)]
    with pytest.raises(ValueError, match="at least 2 \\(batch norm statistics\\); got 1"):
        get_method("sspl").loss(model, {k: v[:1] for k, v in batch.items()}, cfg)


@pytest.fixture(scope="module")
def encoder_files(tmp_path_factory):
    from sspl.models.small import SmallAudioCNN, SmallVisualCNN

    root = tmp_path_factory.mktemp("encoders")
    torch.manual_seed(1)
    visual, audio = SmallVisualCNN(C), SmallAudioCNN(D)
    torch.save(visual.state_dict(), root / "visual.pt")
    torch.save(audio.state_dict(), root / "audio.pt")
    return {"visual": (root / "visual.pt", visual), "audio": (root / "audio.pt", audio)}


@pytest.mark.parametrize("method", METHODS)
def test_every_method_loads_its_weights_through_the_factory(method, encoder_files, monkeypatch):
    import sspl.models.factory as factory

    (vpath, visual), (apath, audio) = encoder_files["visual"], encoder_files["audio"]
    cfg = tiny_config(method, f"model.visual_weights={vpath}", f"model.audio_weights={apath}")
    model = get_method(method).build(cfg, pretrained=True)
    for ours, theirs in ((model.visual_encoder, visual), (model.audio_encoder, audio)):
        assert all(
            torch.equal(a, b) for a, b in zip(ours.state_dict().values(), theirs.state_dict().values())
        )
    assert not any(p.requires_grad for p in model.visual_encoder.parameters())

    calls = []
    monkeypatch.setattr(factory, "load_visual_encoder_weights", lambda m, w, **k: calls.append(("v", m, w)))
    monkeypatch.setattr(factory, "load_audio_encoder_weights", lambda m, w, **k: calls.append(("a", m, w)))
    model = get_method(method).build(cfg, pretrained=True)
    assert calls == [("v", model.visual_encoder, str(vpath)), ("a", model.audio_encoder, str(apath))]
    calls.clear()
    get_method(method).build(replace(cfg, model=replace(cfg.model, audio_weights=None)), pretrained=True)
    assert [c[0] for c in calls] == ["v"]
    calls.clear()
    get_method(method).build(cfg, pretrained=False)
    assert calls == []
