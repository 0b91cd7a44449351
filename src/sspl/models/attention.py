"""The attention module (paper Sec. 3.2, Eqs. 3-5) and the fusion alternatives of Table S5.

The similarity map ``S`` is the cosine similarity between the audio vector and the visual feature at
every location (Eq. 3). It is both the localization map and, after scaling to [0, 1] (Eq. 5; Table 5
compares scalings), the attention that pools the visual features into the audio-visual
representation ``f_av`` (Eq. 4).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import FUSIONS, SCALINGS  # the names a config may hold; implemented here

__all__ = ["FUSIONS", "SCALINGS", "AttentionModule", "attention_pool", "cosine_map", "scale_map"]


MINMAX_EPS = 1e-10  # the official code adds it to the range so a constant map does not divide by zero


def cosine_map(visual: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
    """Eq. 3: cosine similarity between ``audio`` and each location of ``visual``.

    Args:
        visual: ``B x C x H x W`` feature map.
        audio: ``B x C`` audio vector.

    Returns:
        ``B x H x W`` similarities in [-1, 1].
    """
    b, c, h, w = visual.shape
    if audio.shape != (b, c):
        raise ValueError(f"audio vector {tuple(audio.shape)} does not match visual map {tuple(visual.shape)}")
    v = F.normalize(visual, p=2, dim=1).flatten(2).transpose(1, 2)  # B x HW x C
    a = F.normalize(audio, p=2, dim=1).unsqueeze(2)  # B x C x 1
    return torch.bmm(v, a).view(b, h, w)


def scale_map(sim: torch.Tensor, scaling: str = "minmax") -> torch.Tensor:
    """Scale a ``B x H x W`` similarity map to attention weights (Eq. 5 and Table 5).

    ``minmax`` (the paper's choice) maps each map to [0, 1]; ``sigmoid`` squashes each value; ``softmax``
    normalises over locations (Senocak et al.); ``relu`` zeroes negative similarities (Qian et al.);
    ``relu_softmax`` applies a softmax over locations to the ReLU of the map.
    """
    b = sim.shape[0]
    flat = sim.reshape(b, -1)  # B x HW
    if scaling == "minmax":
        lo = flat.min(dim=1, keepdim=True).values
        hi = flat.max(dim=1, keepdim=True).values
        out = (flat - lo) / (hi - lo + MINMAX_EPS)
    elif scaling == "sigmoid":
        out = torch.sigmoid(flat)
    elif scaling == "softmax":
        out = torch.softmax(flat, dim=1)
    elif scaling == "relu":
        out = F.relu(flat)
    elif scaling == "relu_softmax":
        out = torch.softmax(F.relu(flat), dim=1)
    else:
        raise ValueError(f"unknown scaling {scaling!r}; choose from {SCALINGS}")
    return out.view_as(sim)


def attention_pool(visual: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Eq. 4: ``f_av(k) = sum_ij weights(i, j) * visual(k, i, j)``.

    Args:
        visual: ``B x C x H x W`` (un-normalised features).
        weights: ``B x H x W``.

    Returns:
        ``B x C``.
    """
    b, c = visual.shape[:2]
    return torch.bmm(visual.reshape(b, c, -1), weights.reshape(b, -1, 1)).view(b, c)


class AttentionModule(nn.Module):
    """Similarity map, its scaling, and the fusion of audio and visual features.

    With ``fusion="attention"`` (the paper's AM) the representation is the attention-pooled visual
    feature. The Table S5 alternatives fuse the spatially averaged visual feature with the transformed
    audio vector by concatenation (``2C``-d), element-wise product or sum; the similarity map is still
    computed and still the localization map.

    Args:
        scaling: one of :data:`SCALINGS`.
        fusion: one of :data:`FUSIONS`.
    """

    def __init__(self, scaling: str = "minmax", fusion: str = "attention") -> None:
        super().__init__()
        if scaling not in SCALINGS:
            raise ValueError(f"unknown scaling {scaling!r}; choose from {SCALINGS}")
        if fusion not in FUSIONS:
            raise ValueError(f"unknown fusion {fusion!r}; choose from {FUSIONS}")
        self.scaling = scaling
        self.fusion = fusion

    @staticmethod
    def output_dim(channels: int, fusion: str) -> int:
        """Size of the fused representation for ``channels``-d features."""
        return 2 * channels if fusion == "concat" else channels

    def forward(
        self, visual: torch.Tensor, audio: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """
        Args:
            visual: ``B x C x H x W`` visual (or PCM-refined) features.
            audio: ``B x C`` transformed audio vector ``g(f_a)``.

        Returns:
            ``(fav, sim_map, att_map)``: ``B x C'`` representation, ``B x H x W`` raw cosine map and
            ``B x H x W`` scaled attention.
        """
        sim = cosine_map(visual, audio)
        att = scale_map(sim, self.scaling)
        if self.fusion == "attention":
            fav = attention_pool(visual, att)
        else:
            pooled = visual.mean(dim=(2, 3))  # B x C
            if self.fusion == "concat":
                fav = torch.cat([pooled, audio], dim=1)
            elif self.fusion == "multiply":
                fav = pooled * audio
            else:
                fav = pooled + audio
        return fav, sim, att
