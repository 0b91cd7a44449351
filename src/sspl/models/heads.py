"""Trainable heads: the audio transform ``g`` (Sec. 3.2) and the SimSiam projector/predictor (Eqs. 6-8)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["AudioTransform", "SimSiamHead"]


class AudioTransform(nn.Sequential):
    """``g``: FC(512)-ReLU-FC(512) mapping the audio embedding into the visual feature space.

    ``B x D`` -> ``B x C``. The official code applies it to each log-mel patch and averages afterwards.
    """

    def __init__(self, in_dim: int = 128, out_dim: int = 512, hidden_dim: int = 512) -> None:
        super().__init__(nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim))


def _fc_bn(in_dim: int, out_dim: int, relu: bool = True, affine: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(in_dim, out_dim, bias=False), nn.BatchNorm1d(out_dim, affine=affine)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class _Projector(nn.Module):
    """SimSiam projection MLP: three FC layers with BN, the last one without ReLU and a non-affine BN."""

    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__()
        self.layer1 = _fc_bn(in_dim, dim)
        self.layer2 = _fc_bn(dim, dim)
        self.layer3 = _fc_bn(dim, dim, relu=False, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer3(self.layer2(self.layer1(x)))


class _Predictor(nn.Module):
    """SimSiam prediction MLP: bottleneck FC-BN-ReLU then FC (with bias, no BN)."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.layer1 = _fc_bn(dim, hidden_dim)
        self.layer2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer2(self.layer1(x))


class SimSiamHead(nn.Module):
    """Projector ``in_dim-2048-2048-2048`` and predictor ``2048-512-2048`` (SimSiam, Chen & He 2021).

    Args:
        in_dim: size of the audio-visual representation ``f_av``.
        dim: projection size (2048).
        pred_hidden: predictor bottleneck (512).
        stop_grad: detach the projections returned as targets (Eq. 8); ``False`` is the Table 3 ablation.
    """

    def __init__(
        self, in_dim: int = 512, dim: int = 2048, pred_hidden: int = 512, stop_grad: bool = True
    ) -> None:
        super().__init__()
        self.projector = _Projector(in_dim, dim)
        self.predictor = _Predictor(dim, pred_hidden)
        self.stop_grad = stop_grad

    def forward(
        self, x1: torch.Tensor, x2: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``B x in_dim`` twice -> ``(p1, p2, z1, z2)``, each ``B x dim``; each BN sees one view."""
        z1 = self.projector(x1)
        z2 = self.projector(x2)
        p1 = self.predictor(z1)
        p2 = self.predictor(z2)
        if self.stop_grad:
            z1, z2 = z1.detach(), z2.detach()
        return p1, p2, z1, z2
