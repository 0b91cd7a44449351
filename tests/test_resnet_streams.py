"""The ResNet-18 streams of the released models (EZ-VSL, SLAVC, FNAC): torchvision's ResNet-18 to 7 x 7 for
images, a 1-channel ResNet-18 max-pooled to 512 for spectrograms, ImageNet weights resolved, SHA-256
checked and cached like VGG16's, and both plugged into the shared streams.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torchvision
from torch import nn

from sspl import weights
from sspl.config import ConfigError, SSPLConfig
from sspl.errors import WeightsError
from sspl.models.encoders import build_audio_encoder, build_visual_encoder
from sspl.models.factory import load_encoder_weights
from sspl.models.resnet import ResNet18Audio, ResNet18Trunk
from sspl.models.streams import AudioVisualStreams


def _torchvision_trunk(in_channels: int = 3) -> nn.Module:
    net = torchvision.models.resnet18(weights=None)
    if in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    net.fc = nn.Identity()
    return net


def _randomise(module: nn.Module, seed: int) -> None:
    """Non-trivial values in every parameter and batch-norm statistic (eval mode uses the statistics)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if t.is_floating_point():
                r = torch.rand(t.shape, generator=g)
                t.copy_(0.5 + r if name.endswith("running_var") else (r - 0.5) * 0.2)


def test_the_image_trunk_is_torchvision_resnet18_to_layer4():
    ours, theirs = ResNet18Trunk().eval(), _torchvision_trunk().eval()
    assert set(ours.state_dict()) == set(theirs.state_dict())  # fc is an Identity: no keys
    _randomise(theirs, 0)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = ours(x)
        # torchvision flattens what avgpool = Identity leaves: the official code unflattens to 512 x 7 x 7
        theirs.avgpool = nn.Identity()
        expected = theirs(x).unflatten(1, (512, 7, 7))
    assert out.shape == (2, 512, 7, 7)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_the_audio_network_is_a_one_channel_resnet18_max_pooled_to_512():
    ours, theirs = ResNet18Audio().eval(), _torchvision_trunk(in_channels=1).eval()
    theirs.avgpool = nn.AdaptiveMaxPool2d((1, 1))
    assert set(ours.state_dict()) == set(theirs.state_dict())
    _randomise(theirs, 2)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(3, 1, 257, 300, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)
    assert ours(x).shape == (3, 512)


def test_the_audio_network_starts_as_the_released_models_initialise_it():
    torch.manual_seed(0)
    net = ResNet18Audio()
    bn = net.layer1[0].bn1
    assert 0.9 < bn.weight.min() and bn.weight.max() < 1.1 and bn.weight.std() > 0.005  # N(1, 0.02), not 1
    assert torch.all(bn.bias == 0)
    # Kaiming normal, fan out: std sqrt(2 / (64 * 7 * 7)) for conv1
    assert abs(net.conv1.weight.std().item() - (2 / (64 * 49)) ** 0.5) < 0.003


#: EZ-VSL's streams: ResNet-18 image and audio encoders (the audio one from scratch) on 1 x 257 x T spectrograms
RESNET_STREAMS = SSPLConfig(
    visual_encoder="resnet18",
    audio_encoder="resnet18",
    audio_weights=None,
    audio_dim=512,
    audio_frontend="stft",
)


def test_the_registry_builds_them_and_the_config_names_them():
    assert isinstance(build_visual_encoder("resnet18"), ResNet18Trunk)
    assert isinstance(build_audio_encoder("resnet18"), ResNet18Audio)
    assert RESNET_STREAMS.audio_frontend == "stft"  # a valid config
    with pytest.raises(ConfigError, match="audioset.*VGGish's.*resnet18"):
        SSPLConfig(audio_encoder="resnet18", audio_dim=512, audio_frontend="stft")
    with pytest.raises(ConfigError, match=r"model.audio_dim=128: the resnet18 audio encoder gives 512"):
        SSPLConfig(audio_encoder="resnet18", audio_weights=None, audio_frontend="stft")
    with pytest.raises(ConfigError, match=r"takes 1 x 257 x T spectrograms.*audio_frontend=stft"):
        SSPLConfig(audio_encoder="resnet18", audio_weights=None, audio_dim=512)


def test_the_streams_encode_a_whole_spectrogram_as_one_patch():
    cfg = RESNET_STREAMS
    streams = AudioVisualStreams(cfg, audio_transform=False).eval()
    assert streams.takes_spectrogram and not hasattr(streams, "audio_transform")
    assert not any(k.startswith("audio_transform.") for k in streams.state_dict())
    spect = torch.randn(2, 1, 257, 200)
    with torch.no_grad():
        emb = streams.encode_audio(spect)
        assert emb.shape == (2, 1, 512)
        torch.testing.assert_close(emb[:, 0], streams.audio_encoder(spect))
        assert streams.encode_visual(torch.randn(2, 3, 224, 224)).shape == (2, 512, 7, 7)
    with pytest.raises(ValueError, match=r"B x 1 x F x T"):
        streams.encode_audio(torch.randn(2, 3, 96, 64))
    assert any(k.startswith("audio_transform.") for k in AudioVisualStreams(cfg).state_dict())  # g by default


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SSPL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.delenv("SSPL_RESNET18_WEIGHTS", raising=False)
    monkeypatch.delenv("SSPL_VGG16_WEIGHTS", raising=False)
    return tmp_path / "cache"


def test_the_published_resnet18_digest_is_pinned_in_full():
    known = weights.KNOWN_WEIGHTS["imagenet-resnet18"]
    # torchvision names the file after the first 8 hex digits of this SHA-256 (46,830,571 bytes)
    assert known.sha256 == "f37072fd47e89c5e827621c5baffa7500819f7896bbacec160b1a16c560e07ec"
    assert known.filename == f"resnet18-{known.sha256_prefix}.pth" and known.sha256.startswith("f37072fd")
    assert known.url == "https://download.pytorch.org/models/resnet18-f37072fd.pth"


def test_imagenet_means_resnet18_weights_for_the_resnet18_trunk(cache, monkeypatch, tmp_path):
    published = torchvision.models.resnet18(weights=None)
    _randomise(published, 4)
    path = tmp_path / "resnet18-random.pth"
    torch.save(published.state_dict(), path)  # the whole network, fc included, as torchvision publishes it
    digest = weights.sha256_file(path)
    known = dataclasses.replace(
        weights.KNOWN_WEIGHTS["imagenet-resnet18"], sha256_prefix=digest[:8], sha256=digest
    )
    monkeypatch.setitem(weights.KNOWN_WEIGHTS, "imagenet-resnet18", known)
    cache.mkdir()
    (cache / known.filename).write_bytes(path.read_bytes())

    cfg = RESNET_STREAMS
    model = load_encoder_weights(AudioVisualStreams(cfg, audio_transform=False), cfg, download=False)
    torch.testing.assert_close(model.visual_encoder.layer4[1].conv2.weight, published.layer4[1].conv2.weight)
    assert weights.known_weights_name(model.visual_encoder, "imagenet") == "imagenet-resnet18"
    assert weights.known_weights_name(build_visual_encoder("vgg16"), "imagenet") == "imagenet"

    # a changed byte is refused, as for VGG16 (a bad cached copy is passed over and said)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(path.read_bytes()[:-4] + b"abcd")
    with pytest.raises(WeightsError, match=r"bad\.pth: SHA-256 .* does not match resnet18-"):
        weights.resolve("imagenet-resnet18", bad)
    (cache / known.filename).write_bytes(bad.read_bytes())
    with pytest.raises(WeightsError, match=r"resnet18-f37072fd\.pth .* is not cached"):
        weights.resolve("imagenet-resnet18", download=False)


def test_offline_without_resnet18_weights_says_where_to_get_them(cache, monkeypatch, tmp_path):
    url = (tmp_path / "no-such-server" / "resnet18-f37072fd.pth").as_uri()
    known = dataclasses.replace(weights.KNOWN_WEIGHTS["imagenet-resnet18"], url=url)
    monkeypatch.setitem(weights.KNOWN_WEIGHTS, "imagenet-resnet18", known)
    cfg = RESNET_STREAMS
    with pytest.raises(
        WeightsError, match=r"cannot download resnet18-f37072fd\.pth .* Offline\? .*SSPL_RESNET18_WEIGHTS"
    ):
        load_encoder_weights(AudioVisualStreams(cfg, audio_transform=False), cfg)
    with pytest.raises(WeightsError, match=r"resnet18-f37072fd\.pth .* is not cached"):
        load_encoder_weights(AudioVisualStreams(cfg, audio_transform=False), cfg, download=False)
