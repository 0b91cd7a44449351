"""Unimodal encoders (paper Sec. 3.1): the VGG16 visual trunk, the VGGish audio trunk, and a registry
(which also holds the SynthAV encoders and the ResNet-18 streams of the released models, :mod:`.resnet`).

Both trunks are built without weights (pure modules); pretrained weights are loaded by
:mod:`sspl.weights`. Freezing happens in one place, :func:`freeze`.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "AUDIO_ENCODERS",
    "VISUAL_ENCODERS",
    "VGG16Trunk",
    "VGGishTrunk",
    "build_audio_encoder",
    "build_visual_encoder",
    "freeze",
]

# torchvision VGG16 "D" configuration; "M" is a 2x2 max pool.
_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
_VGGISH_CFG = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M")


def _vgg_layers(cfg: tuple, in_channels: int, final_relu: bool) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(in_channels, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            in_channels = v
    if not final_relu:
        layers.pop()
    return layers


class VGG16Trunk(nn.Module):
    """torchvision VGG16 ``features[0:29]``: conv1_1 through conv5_3, *before* its ReLU.

    ``B x 3 x 224 x 224`` (ImageNet-normalised) -> ``B x 512 x 14 x 14``. Layer indices equal
    torchvision's, so ``features.N.weight`` loads directly from ``vgg16-397923af.pth``.
    """

    out_channels = 512
    stride = 16

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(*_vgg_layers(_VGG16_CFG, 3, final_relu=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class VGGishTrunk(nn.Module):
    """The VGGish network without its PCA post-processing (torchvggish layout).

    ``B x 1 x 96 x 64`` log-mel patch -> ``B x 128`` embedding (after the last ReLU, as in the official
    code). The conv output ``B x 512 x 6 x 4`` is flattened channel-last (``B x 6 x 4 x 512``), the order
    the TensorFlow-converted fully connected weights expect.
    """

    out_dim = 128

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(*_vgg_layers(_VGGISH_CFG, 1, final_relu=True))
        self.embeddings = nn.Sequential(
            nn.Linear(512 * 6 * 4, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, 128),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # B x 512 x 6 x 4
        x = x.permute(0, 2, 3, 1).flatten(1)  # B x (6 * 4 * 512), channel-last
        return self.embeddings(x)


def _small_visual(channels: int) -> nn.Module:
    from .small import SmallVisualCNN

    return SmallVisualCNN(out_channels=channels)


def _small_audio(dim: int) -> nn.Module:
    from .small import SmallAudioCNN

    return SmallAudioCNN(embed_dim=dim)


def _resnet18_visual(channels: int) -> nn.Module:
    from .resnet import ResNet18Trunk

    return ResNet18Trunk()


def _resnet18_audio(dim: int) -> nn.Module:
    from .resnet import ResNet18Audio

    return ResNet18Audio()


# name -> (factory(channels_or_dim) -> module, default output size)
VISUAL_ENCODERS = {
    "vgg16": (lambda c: VGG16Trunk(), 512),
    "small_cnn": (_small_visual, 128),
    "resnet18": (_resnet18_visual, 512),
}
AUDIO_ENCODERS = {
    "vggish": (lambda d: VGGishTrunk(), 128),
    "small_cnn": (_small_audio, 128),
    "resnet18": (_resnet18_audio, 512),
}


def build_visual_encoder(name: str, out_channels: int | None = None) -> nn.Module:
    """Build a visual encoder by name (``vgg16``, ``small_cnn`` or ``resnet18``) without weights.

    Any module mapping ``B x 3 x H x W`` to ``B x C x h x w`` works as a visual encoder; this registry
    only covers the named ones.
    """
    if name not in VISUAL_ENCODERS:
        raise ValueError(f"unknown visual encoder {name!r}; choose from {sorted(VISUAL_ENCODERS)}")
    factory, default = VISUAL_ENCODERS[name]
    return factory(out_channels or default)


def build_audio_encoder(name: str, out_dim: int | None = None) -> nn.Module:
    """Build an audio encoder by name (``vggish``, ``small_cnn`` or ``resnet18``) without weights.

    Any module mapping ``B x 1 x 96 x 64`` log-mel patches to ``B x D`` works as an audio encoder; one with
    ``takes_spectrogram = True`` (``resnet18``) maps a whole ``B x 1 x F x T`` spectrogram to ``B x D``.
    """
    if name not in AUDIO_ENCODERS:
        raise ValueError(f"unknown audio encoder {name!r}; choose from {sorted(AUDIO_ENCODERS)}")
    factory, default = AUDIO_ENCODERS[name]
    return factory(out_dim or default)


def freeze(module: nn.Module) -> nn.Module:
    """Stop gradients to every parameter of ``module`` and put it in eval mode; returns it."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()
