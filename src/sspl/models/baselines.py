"""The paper's contrastive baselines as modules: Attention (Senocak et al., CVPR 2018) and HardWay (LVS,
Chen et al., CVPR 2021), built from the same parts as SSPL (paper Sec. 4.1; supplement C).

Both are two-stream networks on :class:`~sspl.models.streams.AudioVisualStreams`, as SSPL: the visual
encoder (``B x 3 x H x W -> B x C x h x w``) and audio encoder (``B x 1 x 96 x 64 -> B x D`` per log-mel
patch), frozen unless the config trains them, and the audio transform ``g`` (FC(512)-ReLU-FC(512), "as in
[46]", paper Sec. 4.2) that maps the audio embedding into the visual feature space. The modules return maps
and embeddings; the contrastive losses, which need the other clips of the batch, live with the methods
(:mod:`sspl.models.methods.attention`, :mod:`sspl.models.methods.hardway`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import SSPLConfig
from .attention import attention_pool, cosine_map, scale_map
from .streams import AudioVisualStreams

__all__ = [
    "ATTENTION_SCALINGS",
    "AttentionBaseline",
    "AttentionOutput",
    "HardWayBaseline",
    "cosine_maps_all_pairs",
]

#: Scalings of the cosine map into attention weights: ``softmax`` over locations is Senocak et al.'s
#: Eq. 1; their public code applies a ReLU first (``relu_softmax``).
ATTENTION_SCALINGS = ("softmax", "relu_softmax")


def cosine_maps_all_pairs(visual: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every clip's audio with every location of every frame.

    Args:
        visual: ``B x C x h x w`` feature maps.
        audio: ``B x C`` audio vectors.

    Returns:
        ``B x B x h x w``: entry ``[i, j]`` is the map of audio ``j`` on frame ``i`` (the diagonal equals
        :func:`~sspl.models.attention.cosine_map`).
    """
    b, c = visual.shape[:2]
    if audio.shape != (b, c):
        raise ValueError(f"audio vectors {tuple(audio.shape)} do not match visual maps {tuple(visual.shape)}")
    v = F.normalize(visual, p=2, dim=1)
    a = F.normalize(audio, p=2, dim=1)
    return torch.einsum("ichw,jc->ijhw", v, a)


@dataclass
class AttentionOutput:
    """What :class:`AttentionBaseline` computes for a batch of clips.

    Attributes:
        sim_map: ``B x h x w`` cosine similarity of the audio query with each location.
        att_map: ``B x h x w`` attention weights (sum to 1 over locations): the localization.
        visual_embedding: ``B x D`` projection of the attention-pooled visual feature.
        audio_embedding: ``B x D`` the clip's audio embedding (mean over patches), what it is compared to.
    """

    sim_map: torch.Tensor
    att_map: torch.Tensor
    visual_embedding: torch.Tensor
    audio_embedding: torch.Tensor


class AttentionBaseline(AudioVisualStreams):
    """Global-level contrastive baseline (Senocak et al., CVPR 2018, Sec. 3).

    The audio query ``g(f_a)`` attends over the visual map (``softmax`` over locations of the cosine
    similarity, their Eq. 1), the attention-weighted sum of visual features (their ``z``) goes through a
    small FC projection, ReLU-FC(C)-ReLU-FC(D) as in their public code, into the audio embedding space,
    and is compared there with the clip's own audio embedding (positive) and other clips' (negatives).

    Args:
        config: the ``model:`` section.
        scaling: ``softmax`` (paper) or ``relu_softmax`` (their public code); see :data:`ATTENTION_SCALINGS`.
        visual_encoder, audio_encoder: modules replacing the configured encoders (see
            :class:`~sspl.models.streams.AudioVisualStreams`).
    """

    def __init__(
        self,
        config: SSPLConfig,
        *,
        scaling: str = "softmax",
        visual_encoder: nn.Module | None = None,
        audio_encoder: nn.Module | None = None,
    ) -> None:
        super().__init__(config, visual_encoder=visual_encoder, audio_encoder=audio_encoder)
        if scaling not in ATTENTION_SCALINGS:
            raise ValueError(f"unknown attention scaling {scaling!r}; choose from {ATTENTION_SCALINGS}")
        self.scaling = scaling
        c = config.visual_channels
        # the visual trunk may end before its ReLU (VGG16 conv5_3), so the pooled feature is rectified first
        self.projection = nn.Sequential(
            nn.ReLU(), nn.Linear(c, c), nn.ReLU(inplace=True), nn.Linear(c, config.audio_dim)
        )

    def forward(
        self,
        frames: torch.Tensor,
        spect: torch.Tensor | None = None,
        *,
        audio_patch_embeddings: torch.Tensor | None = None,
    ) -> AttentionOutput:
        """Maps and embeddings of ``B`` clips (``frames`` ``B x 3 x H x W``, ``spect`` ``B x P x 96 x 64``)."""
        embedding, query = self.audio(spect, audio_patch_embeddings)  # B x D, B x C
        visual = self.encode_visual(frames)  # B x C x h x w
        sim = cosine_map(visual, query)  # B x h x w
        att = scale_map(sim, self.scaling)
        pooled = attention_pool(visual, att)  # B x C
        return AttentionOutput(sim, att, self.projection(pooled), embedding)

    def localize(
        self,
        frames: torch.Tensor,
        spect: torch.Tensor | None = None,
        *,
        audio_patch_embeddings: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The attention map (what Senocak et al. evaluate and the SSPL paper's Fig. 5 shows).

        Returns:
            ``B x h x w`` attention weights; each map sums to 1 and is a monotone function of the cosine
            map, so the ``median`` protocol scores both alike.
        """
        _, query = self.audio(spect, audio_patch_embeddings)
        return scale_map(cosine_map(self.encode_visual(frames), query), self.scaling)

    def map_confidence(self, maps: torch.Tensor) -> torch.Tensor:
        """The extended protocol's confidence (:mod:`sspl.metrics_extended`) of ``B x h x w`` attention maps:
        the attention mass on the top quarter of locations, in [1/4, 1].

        Senocak et al. publish none, and SLAVC's rule needs the cosine's level, which the softmax over
        locations removes; how concentrated the attention is on one region is what is left of the match.
        """
        flat = maps.flatten(1)  # B x hw
        return flat.topk(max(1, flat.shape[1] // 4), dim=1).values.sum(dim=1)


class HardWayBaseline(AudioVisualStreams):
    """Local-level contrastive baseline with hard negatives inside the image (Chen et al., CVPR 2021).

    The model only produces cosine similarity maps between the audio query ``g(f_a)`` and the visual
    features; the tri-map of positive / uncertain / negative regions and the contrast with the other clips'
    audio are the loss's (:mod:`sspl.models.methods.hardway`).
    """

    def forward(
        self,
        frames: torch.Tensor,
        spect: torch.Tensor | None = None,
        *,
        audio_patch_embeddings: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``B x B x h x w`` maps of every clip's audio on every frame (entry ``[i, j]``: audio ``j``, frame ``i``)."""
        _, query = self.audio(spect, audio_patch_embeddings)
        return cosine_maps_all_pairs(self.encode_visual(frames), query)

    def localize(
        self,
        frames: torch.Tensor,
        spect: torch.Tensor | None = None,
        *,
        audio_patch_embeddings: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``B x h x w`` cosine similarity map of each frame with its own audio (LVS's localization)."""
        _, query = self.audio(spect, audio_patch_embeddings)
        return cosine_map(self.encode_visual(frames), query)
