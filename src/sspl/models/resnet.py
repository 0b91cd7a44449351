"""ResNet-18 streams (He et al., CVPR 2016) as the released localization models use them (EZ-VSL, SLAVC,
FNAC): an image trunk to a ``7 x 7`` map and an audio network on a ``1 x 257 x T`` log-spectrogram.

Both are torchvision's ``resnet18`` with its pooling and classifier removed, written here so that importing
the models does not import torchvision; the module and parameter names are torchvision's (``conv1``,
``bn1``, ``layer1.0.conv1``, ``layer2.0.downsample.0``, ...), so ``resnet18-f37072fd.pth`` loads directly
into :class:`ResNet18Trunk` and the official checkpoints' ``imgnet.*`` / ``audnet.*`` entries map one to one.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

__all__ = ["BasicBlock", "ResNet18Audio", "ResNet18Trunk", "init_like_ezvsl"]

#: (channels, stride of the first block) of the four stages; two basic blocks each
_STAGES = ((64, 1), (128, 2), (256, 2), (512, 2))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and an identity (or 1x1 projection) shortcut."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + shortcut)


class ResNet18Trunk(nn.Module):
    """ResNet-18 up to ``layer4`` (no pooling): ``B x in_channels x H x W -> B x 512 x H/32 x W/32``.

    With 3 input channels and ImageNet-normalised ``224 x 224`` frames this is the released models' image
    encoder (``B x 512 x 7 x 7``). torchvision's initialisation (Kaiming-normal convolutions, unit batch
    norms) is used; :data:`published_weights` names the ImageNet file it loads (:mod:`sspl.weights`).
    """

    out_channels = 512
    stride = 32
    #: the config's ``visual_weights`` names -> the known weight file (:data:`sspl.weights.KNOWN_WEIGHTS`)
    published_weights: ClassVar[dict[str, str]] = {"imagenet": "imagenet-resnet18"}

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        channels = 64
        for i, (out, stride) in enumerate(_STAGES, start=1):
            setattr(self, f"layer{i}", nn.Sequential(BasicBlock(channels, out, stride), BasicBlock(out, out)))
            channels = out
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # B x 64 x H/4 x W/4
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))  # B x 512 x H/32 x W/32


class ResNet18Audio(ResNet18Trunk):
    """ResNet-18 on a log-spectrogram: ``B x 1 x F x T -> B x 512``, global max pooling over the map.

    The released models' audio network (a 1-channel ``conv1``, torchvision's ``avgpool`` replaced by an
    adaptive max pool, no classifier), trained from scratch. It takes the whole spectrogram at once
    (:attr:`takes_spectrogram`), unlike VGGish's ``96 x 64`` patches.
    """

    out_dim = 512
    takes_spectrogram = True
    published_weights: ClassVar[dict[str, str]] = {}

    def __init__(self) -> None:
        super().__init__(in_channels=1)
        self.pool = nn.AdaptiveMaxPool2d((1, 1))
        init_like_ezvsl(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(super().forward(x)).flatten(1)  # B x 512


def init_like_ezvsl(module: nn.Module) -> nn.Module:
    """The released models' initialisation of every part that is not ImageNet-pretrained: Kaiming-normal
    (fan-out) convolutions, truncated-normal linear weights (std 0.01), batch-norm weights drawn around 1
    (std 0.02) with zero biases. Linear and convolution biases keep PyTorch's default. Returns ``module``."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, mean=0.0, std=0.01)
        elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
            nn.init.normal_(m.weight, mean=1, std=0.02)
            nn.init.constant_(m.bias, 0)
    return module
