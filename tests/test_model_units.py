"""Unit tests of the model parts: shapes, batch size 1, and every ablation switch changing the computation."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from sspl import SSPL, SSPLConfig
from sspl.errors import WeightsError
from sspl.losses import negative_cosine, simsiam_loss
from sspl.models.attention import AttentionModule, attention_pool, cosine_map, scale_map
from sspl.models.encoders import VGG16Trunk, VGGishTrunk, build_audio_encoder, build_visual_encoder
from sspl.models.pcm import PredictiveCodingModule, official_pcm_key

C, D = 16, 8
TINY = SSPLConfig(
    visual_channels=C,
    audio_dim=D,
    proj_dim=32,
    pred_hidden=8,
    transform_hidden=16,
    cycles=2,
    visual_weights=None,
    audio_weights=None,
)


class TinyVisual(nn.Module):
    """B x 3 x 224 x 224 -> B x C x 14 x 14 in one strided conv (keeps the tests fast)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, C, kernel_size=16, stride=16)

    def forward(self, x):
        return self.conv(x)


class TinyAudio(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(96 * 64, D)

    def forward(self, x):
        return torch.relu(self.fc(x.flatten(1)))


def tiny(**changes) -> SSPL:
    torch.manual_seed(0)
    return SSPL(replace(TINY, **changes), visual_encoder=TinyVisual(), audio_encoder=TinyAudio())


def batch(b: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(b, 3, 224, 224, generator=g),
        torch.randn(b, 3, 224, 224, generator=g),
        torch.randn(b, 3, 96, 64, generator=g),
    )


# --------------------------------------------------------------------------------------------------
# encoders
# --------------------------------------------------------------------------------------------------


def test_vgg16_trunk_shapes_and_torchvision_layout():
    import torchvision

    trunk = VGG16Trunk()
    tv = torchvision.models.vgg16(weights=None).features[:29]
    assert [type(m) for m in trunk.features] == [type(m) for m in tv]
    assert set(trunk.state_dict()) == {f"features.{k}" for k in tv.state_dict()}
    with torch.no_grad():
        assert trunk(torch.randn(1, 3, 224, 224)).shape == (1, 512, 14, 14)
    # conv5_3 output is taken before its ReLU, so it has negative values
    trunk.features.load_state_dict(tv.state_dict())
    with torch.no_grad():
        assert trunk(torch.randn(2, 3, 64, 64)).min() < 0


def test_vggish_trunk_flattens_channel_last():
    trunk = VGGishTrunk().eval()
    x = torch.randn(3, 1, 96, 64)
    with torch.no_grad():
        conv = trunk.features(x)
        assert conv.shape == (3, 512, 6, 4)
        expected = trunk.embeddings(conv.permute(0, 2, 3, 1).reshape(3, -1))
        assert torch.equal(trunk(x), expected)
        assert trunk(x).shape == (3, 128) and trunk(x).min() >= 0  # ends with ReLU, as in the official code


def test_encoder_registry_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown visual encoder"):
        build_visual_encoder("resnet")
    with pytest.raises(ValueError, match="unknown audio encoder"):
        build_audio_encoder("wav2vec")


# --------------------------------------------------------------------------------------------------
# attention module
# --------------------------------------------------------------------------------------------------


def test_cosine_map_hand_computed():
    visual = torch.zeros(1, 2, 1, 3)
    visual[0, :, 0, 0] = torch.tensor([1.0, 0.0])  # same direction as audio
    visual[0, :, 0, 1] = torch.tensor([0.0, 5.0])  # orthogonal
    visual[0, :, 0, 2] = torch.tensor([-2.0, 0.0])  # opposite
    audio = torch.tensor([[3.0, 0.0]])
    assert torch.allclose(cosine_map(visual, audio), torch.tensor([[[1.0, 0.0, -1.0]]]))


def test_scalings():
    sim = torch.tensor([[[-0.5, 0.0], [0.25, 0.5]]])
    mm = scale_map(sim, "minmax")
    assert torch.allclose(mm, torch.tensor([[[0.0, 0.5], [0.75, 1.0]]]))
    e = torch.exp(torch.tensor([-0.5, 0.0, 0.25, 0.5]))  # softmax over the 4 locations, by hand
    assert torch.allclose(scale_map(sim, "softmax"), (e / e.sum()).view(1, 2, 2))
    assert torch.allclose(scale_map(sim, "relu"), sim.clamp(min=0))
    assert torch.allclose(scale_map(sim, "sigmoid"), torch.sigmoid(sim))
    assert torch.allclose(
        scale_map(sim, "relu_softmax"), torch.softmax(sim.clamp(min=0).flatten(), 0).view(1, 2, 2)
    )
    # a constant map does not divide by zero
    assert torch.equal(scale_map(torch.ones(1, 2, 2), "minmax"), torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match="unknown scaling"):
        scale_map(sim, "tanh")


def test_attention_pool_is_weighted_sum():
    visual = torch.arange(8.0).view(1, 2, 2, 2)
    weights = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])
    # channel 0 holds 0..3, channel 1 holds 4..7
    assert torch.equal(attention_pool(visual, weights), torch.tensor([[0.0 + 2 * 3.0, 4.0 + 2 * 7.0]]))


@pytest.mark.parametrize("fusion,dim", [("attention", C), ("concat", 2 * C), ("multiply", C), ("add", C)])
def test_fusions(fusion, dim):
    am = AttentionModule(fusion=fusion)
    fav, sim, att = am(torch.randn(2, C, 14, 14), torch.randn(2, C))
    assert fav.shape == (2, dim) and sim.shape == (2, 14, 14) and att.shape == (2, 14, 14)
    assert tiny(fusion=fusion).head.projector.layer1[0].in_features == dim


def test_fusions_by_hand():
    # Table S5: the alternatives fuse the audio vector with the mean-pooled visual map
    visual = torch.tensor([[[[1.0, 3.0], [5.0, 7.0]], [[0.0, 0.0], [2.0, -2.0]]]])  # 1 x 2 x 2 x 2
    audio = torch.tensor([[2.0, -1.0]])
    mean = torch.tensor([[4.0, 0.0]])
    expected = {
        "concat": torch.cat([mean, audio], dim=1),
        "multiply": torch.tensor([[8.0, 0.0]]),
        "add": torch.tensor([[6.0, -1.0]]),
    }
    for fusion, fav in expected.items():
        assert torch.equal(AttentionModule(fusion=fusion)(visual, audio)[0], fav), fusion
    # the paper's AM pools with the min-max scaled cosine map instead
    fav, sim, att = AttentionModule(fusion="attention")(visual, audio)
    assert torch.allclose(fav, attention_pool(visual, scale_map(sim, "minmax")))
    assert torch.equal(att, scale_map(sim, "minmax"))


# --------------------------------------------------------------------------------------------------
# PCM
# --------------------------------------------------------------------------------------------------


def test_pcm_shapes_steps_and_fewer_cycles():
    pcm = PredictiveCodingModule(visual_channels=C, audio_dim=D, hidden_channels=12, cycles=3).eval()
    visual, audio = torch.randn(2, C, 14, 14), torch.randn(2, D)
    with torch.no_grad():
        out = pcm(visual, audio)
        steps = pcm(visual, audio, return_steps=True)
        assert out.shape == (2, C, 14, 14)
        assert len(steps) == 4 and torch.allclose(steps[-1], out)
        # stopping after t cycles equals the t-th intermediate step
        for t in range(4):
            assert torch.allclose(pcm(visual, audio, cycles=t), steps[t], atol=1e-6)
        assert not torch.allclose(steps[0], steps[-1])
    with pytest.raises(ValueError, match="cycles must be in"):
        pcm(visual, audio, cycles=4)


def test_pcm_rates_initialised_as_official_and_used_through_relu():
    pcm = PredictiveCodingModule(visual_channels=C, audio_dim=D, hidden_channels=12, cycles=1).eval()
    assert all(torch.all(r == 0.5) for r in pcm.feedback_rate)
    assert all(torch.all(r == 1.0) for r in pcm.feedforward_rate)
    visual, audio = torch.randn(2, C, 14, 14), torch.randn(2, D)
    with torch.no_grad():
        before = pcm(visual, audio)
        # negative rates act as zero through ReLU: -1 and -5 give the same output
        for r in pcm.feedforward_rate:
            r.fill_(-1.0)
        a = pcm(visual, audio)
        for r in pcm.feedforward_rate:
            r.fill_(-5.0)
        b = pcm(visual, audio)
    assert torch.allclose(a, b) and not torch.allclose(a, before)


def test_pcm_batch_norm_count_matches_official_layout():
    pcm = PredictiveCodingModule(cycles=4)
    assert len(pcm.bn_top_down) == 8 and len(pcm.bn_bottom_up) == 12
    assert official_pcm_key("BNError_step.11.weight") == "bn_bottom_up.11.weight"
    assert official_pcm_key("PredProcess.2.conv2d.weight") == "top_down.1.conv.weight"
    assert official_pcm_key("ErrorProcess.2.convtrans2d.weight") == "bottom_up.1.conv.weight"
    with pytest.raises(KeyError):
        official_pcm_key("something.else")


# --------------------------------------------------------------------------------------------------
# the composed model
# --------------------------------------------------------------------------------------------------


def test_forward_shapes():
    model = tiny().train()
    v1, v2, spect = batch()
    out = model(v1, v2, spect)
    assert out.audio_embedding.shape == (4, D) and out.audio_transformed.shape == (4, C)
    assert torch.allclose(out.audio_embedding.norm(dim=1), torch.ones(4))
    assert out.view1.sim_map.shape == (4, 14, 14) and out.view1.pcm_features.shape == (4, C, 14, 14)
    assert out.p1.shape == out.z1.shape == (4, 32)


def test_spect_layouts_and_cached_embeddings_agree():
    model = tiny().eval()
    v1, _, spect = batch()
    with torch.no_grad():
        a = model.localize(v1, spect)
        b = model.localize(v1, spect.unsqueeze(2))  # B x 3 x 1 x 96 x 64
        c = model.localize(v1, audio_patch_embeddings=model.encode_audio(spect))
    assert torch.equal(a, b) and torch.equal(a, c)
    with pytest.raises(ValueError, match="spect must be"):
        model.localize(v1, torch.randn(4, 96, 64))


def test_batch_size_one_works_in_eval_and_fails_clearly_in_training():
    model = tiny().eval()
    v1, v2, spect = batch(1)
    with torch.no_grad():
        assert model.localize(v1, spect).shape == (1, 14, 14)
        out = model(v1, v2, spect)
    assert out.view1.fav.shape == (1, C)  # the official code squeezes this to 1-d and breaks
    model.train()
    with pytest.raises(ValueError, match="at least 2"):
        model.training_loss(v1, v2, spect)


def test_localize_is_independent_of_batch_composition():
    model = tiny().eval()
    v1, _, spect = batch(3)
    with torch.no_grad():
        together = model.localize(v1, spect)
        alone = torch.cat([model.localize(v1[i : i + 1], spect[i : i + 1]) for i in range(3)])
    assert torch.allclose(together, alone, atol=1e-6)


def test_pcm_switch_and_cycles_change_the_map():
    v1, _, spect = batch()
    with torch.no_grad():
        no_pcm = tiny(pcm=False).eval().localize(v1, spect)
        one = tiny(cycles=1).eval().localize(v1, spect)
        two = tiny(cycles=2).eval()
        steps = two.pcm_step_maps(v1, spect)
    assert steps.shape == (3, 4, 14, 14)
    assert torch.allclose(steps[-1], two.localize(v1, spect))
    assert torch.allclose(steps[1], two.localize(v1, spect, cycles=1))
    assert not torch.allclose(no_pcm, steps[-1]) and not torch.allclose(steps[1], steps[2])
    assert tiny(pcm=False).pcm is None and one.shape == no_pcm.shape
    with pytest.raises(ValueError, match="no PCM"):
        tiny(pcm=False).pcm_step_maps(v1, spect)


@pytest.mark.parametrize("scaling", ["sigmoid", "softmax", "relu", "relu_softmax"])
def test_scaling_switch_changes_the_attention_not_the_map(scaling):
    v1, v2, spect = batch()
    with torch.no_grad():
        base = tiny(pcm=False).eval()(v1, v2, spect)
        other = tiny(pcm=False, scaling=scaling).eval()(v1, v2, spect)
    assert torch.allclose(base.view1.sim_map, other.view1.sim_map)
    assert not torch.allclose(base.view1.att_map, other.view1.att_map)
    assert not torch.allclose(base.view1.fav, other.view1.fav)


def test_stop_gradient_switch():
    v1, v2, spect = batch()
    with_sg = tiny().train()(v1, v2, spect)
    without = tiny(stop_grad=False).train()(v1, v2, spect)
    assert not with_sg.z1.requires_grad and not with_sg.z2.requires_grad
    assert without.z1.requires_grad and without.z2.requires_grad
    # with stop-gradient, the loss gradient reaches the projector only through p
    model = tiny().train()
    out = model(v1, v2, spect)
    grads_sg = torch.autograd.grad(
        simsiam_loss(out.p1, out.p2, out.z1, out.z2), out.view1.fav, retain_graph=True
    )[0]
    model_nsg = tiny(stop_grad=False).train()
    out2 = model_nsg(v1, v2, spect)
    grads_nsg = torch.autograd.grad(simsiam_loss(out2.p1, out2.p2, out2.z1, out2.z2), out2.view1.fav)[0]
    assert not torch.allclose(grads_sg, grads_nsg)


def test_frozen_and_trainable_encoders():
    v1, v2, spect = batch()
    frozen = tiny().train()
    assert not frozen.visual_encoder.training  # frozen encoders stay in eval mode
    frozen.training_loss(v1, v2, spect).backward()
    assert all(p.grad is None for p in frozen.visual_encoder.parameters())
    assert all(p.grad is None for p in frozen.audio_encoder.parameters())
    assert all(p.grad is not None for p in frozen.audio_transform.parameters())
    trainable = tiny(train_visual=True, train_audio=True).train()
    trainable.training_loss(v1, v2, spect).backward()
    assert all(p.grad is not None for p in trainable.visual_encoder.parameters())
    assert all(p.grad is not None for p in trainable.audio_encoder.parameters())


def test_losses_hand_computed():
    p = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    z = torch.tensor([[2.0, 0.0], [1.0, 0.0]])
    assert negative_cosine(p, z).item() == pytest.approx(-0.5)  # cosines 1 and 0
    assert simsiam_loss(p, p, p, p).item() == pytest.approx(-1.0)  # perfect prediction is the minimum


def test_official_checkpoint_errors_name_the_problem(tmp_path):
    with pytest.raises(WeightsError, match="not a folder"):
        SSPL.from_official_checkpoint(tmp_path / "nope")
    (tmp_path / "frame_best.pth").write_bytes(b"garbage")
    with pytest.raises(WeightsError, match="sound_best.pth"):
        SSPL.from_official_checkpoint(tmp_path)
    for name in ("sound_best.pth", "ssl_head_best.pth"):
        (tmp_path / name).write_bytes(b"garbage")
    with pytest.raises(WeightsError, match="cannot read checkpoint"):
        SSPL.from_official_checkpoint(tmp_path)
