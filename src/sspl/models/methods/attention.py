"""Attention (Senocak et al., CVPR 2018) as a training method: the SSPL paper's global-level baseline.

The model is :class:`~sspl.models.baselines.AttentionBaseline` (frozen encoders, ``g``, softmax attention
over the cosine map, attention-weighted pooling, FC projection into the audio embedding space). It trains
on one view (``frame_view1``, crop + horizontal flip by default, as the SSPL paper's reproduction,
supplement C) against the other clips of the batch as negatives.

Objective (``method_options.objective``):

- ``triplet`` (default): Senocak et al.'s unsupervised loss, the one the SSPL paper reproduces "as
  faithfully as possible". For frame ``i`` with its own audio ``i`` and another clip's audio ``j``, the
  distances ``d+ = |v_i - a_i|`` and ``d- = |v_i - a_j|`` go through a softmax that is pushed to ``(0, 1)``
  by a mean squared error, which equals ``sigmoid(d+ - d-)^2``. They draw one random negative per
  anchor; we average over all negatives of the batch instead, which is the expectation of their loss
  under a uniform draw: the same objective, deterministic and with less variance. Deviation: the
  embeddings are L2-normalised before the distances (their code compares raw SoundNet outputs), so the
  loss does not depend on the audio encoder's scale and the sigmoid cannot saturate on a wrong pair
  (``|d+ - d-| <= 2``).
- ``infonce``: cross-entropy over the batch of the cosine similarities divided by a temperature, each
  frame against its own audio and its negatives (the form later global-level methods use); offered for
  comparison.

Options (``method_options`` of the config; unknown keys are an error): see :class:`AttentionOptions`.
Learning rate and weight decay: ``optim.lr`` and ``optim.weight_decay`` for ``g`` and the projection
(``optim.lr_head`` is not used); the SSPL paper tuned them without publishing the values (supplement C).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...config import Config, ConfigError, OptimConfig
from ..baselines import ATTENTION_SCALINGS, AttentionBaseline
from ..factory import load_encoder_weights
from . import register_method, with_encoder_groups
from .negatives import NEGATIVES, negative_mask, parse_method_options

__all__ = ["OBJECTIVES", "AttentionMethod", "AttentionOptions", "infonce_loss", "triplet_loss"]

OBJECTIVES = ("triplet", "infonce")


@dataclass
class AttentionOptions:
    """``method_options`` of ``method: attention``.

    Attributes:
        objective: ``triplet`` (Senocak et al.'s loss, default) or ``infonce`` (see the module docstring).
        temperature: InfoNCE temperature (0.07, as HardWay's); unused by ``triplet``.
        scaling: attention over locations, ``softmax`` (Senocak et al.'s Eq. 1) or ``relu_softmax``
            (their public code).
        negatives: ``all`` other clips of the batch, or ``exclude-same-class`` (paper Figure 2b).
    """

    objective: str = "triplet"
    temperature: float = 0.07
    scaling: str = "softmax"
    negatives: str = "all"

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ConfigError(
                f"method_options.objective={self.objective!r}: choose from {', '.join(OBJECTIVES)}"
            )
        if self.scaling not in ATTENTION_SCALINGS:
            raise ConfigError(
                f"method_options.scaling={self.scaling!r}: choose from {', '.join(ATTENTION_SCALINGS)}"
            )
        if self.negatives not in NEGATIVES:
            raise ConfigError(
                f"method_options.negatives={self.negatives!r}: choose from {', '.join(NEGATIVES)}"
            )
        if not self.temperature > 0:
            raise ConfigError(f"method_options.temperature={self.temperature}: must be > 0")


def _unit_distances(visual: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
    """``B x B`` Euclidean distances between the L2-normalised rows of ``visual`` and ``audio``."""
    cos = F.normalize(visual.float(), dim=1) @ F.normalize(audio.float(), dim=1).T
    # |u - w|^2 = 2 - 2 cos for unit vectors; the clamp keeps the gradient of sqrt finite at distance 0
    return (2.0 - 2.0 * cos).clamp_min(1e-12).sqrt()


def triplet_loss(visual: torch.Tensor, audio: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """Senocak et al.'s unsupervised loss, averaged over every negative of each anchor.

    Args:
        visual: ``B x D`` visual embeddings (frame ``i``).
        audio: ``B x D`` audio embeddings (clip ``i``'s sound is the positive of frame ``i``).
        negatives: ``B x B`` bool, see :func:`~sspl.models.methods.negatives.negative_mask`.

    Returns:
        Scalar: the mean over anchors of the mean over their negatives ``j`` of
        ``sigmoid(d_ii - d_ij)^2`` (distances of L2-normalised embeddings); an anchor left without
        negatives contributes 0.
    """
    d = _unit_distances(visual, audio)  # B x B, [i, j] = |v_i - a_j|
    per_pair = torch.sigmoid(d.diagonal()[:, None] - d) ** 2
    negatives = negatives.to(per_pair.dtype)
    per_anchor = (per_pair * negatives).sum(dim=1) / negatives.sum(dim=1).clamp_min(1.0)
    return per_anchor.mean()


def infonce_loss(
    visual: torch.Tensor, audio: torch.Tensor, negatives: torch.Tensor, temperature: float = 0.07
) -> torch.Tensor:
    """Cross-entropy of each frame's own audio against its negatives, on cosine similarities / temperature.

    Args:
        visual, audio: ``B x D`` embeddings.
        negatives: ``B x B`` bool; clips that are neither the positive nor a negative are left out.
        temperature: divides the cosine similarities.

    Returns:
        Scalar mean over anchors (an anchor without negatives contributes 0).
    """
    logits = F.normalize(visual.float(), dim=1) @ F.normalize(audio.float(), dim=1).T / temperature
    keep = negatives | torch.eye(len(logits), dtype=torch.bool, device=logits.device)
    logits = logits.masked_fill(~keep, float("-inf"))
    return F.cross_entropy(logits, torch.arange(len(logits), device=logits.device))


class AttentionMethod:
    """Senocak et al.'s attention network with in-batch negatives (see the module docstring)."""

    name = "attention"

    def build(self, config: Config, *, pretrained: bool = True) -> AttentionBaseline:
        options = parse_method_options(AttentionOptions, config)
        cfg = config.model
        model = AttentionBaseline(cfg, scaling=options.scaling)
        return load_encoder_weights(model, cfg) if pretrained else model

    def loss(self, model: nn.Module, batch: dict, config: Config) -> tuple[torch.Tensor, dict[str, float]]:
        options = parse_method_options(AttentionOptions, config)
        frames = batch["frame_view1"]
        b = frames.shape[0]
        if model.training and b < 2:
            raise ValueError("contrastive training needs a batch of at least 2 (the negatives); got 1")
        out = model(frames, batch.get("spect"), audio_patch_embeddings=batch.get("audio_emb"))
        negatives = negative_mask(b, options.negatives, batch.get("label"), device=frames.device)
        if options.objective == "triplet":
            loss = triplet_loss(out.visual_embedding, out.audio_embedding, negatives)
        else:
            loss = infonce_loss(out.visual_embedding, out.audio_embedding, negatives, options.temperature)
        with torch.no_grad():
            cos = (
                F.normalize(out.visual_embedding.float(), dim=1)
                @ F.normalize(out.audio_embedding.float(), dim=1).T
            )
            extra = {
                "pos_cos": cos.diagonal().mean().item(),
                "neg_cos": cos[negatives].mean().item() if negatives.any() else 0.0,
                "negatives_per_clip": negatives.sum(dim=1).float().mean().item(),
            }
        return loss, extra

    def param_groups(self, model: AttentionBaseline, optim: OptimConfig) -> list[dict]:
        """``g`` and the projection at ``optim.lr``; trained encoders at ``optim.lr_encoder``."""
        groups = [
            {"name": "audio_transform", "params": list(model.audio_transform.parameters()), "lr": optim.lr},
            {"name": "projection", "params": list(model.projection.parameters()), "lr": optim.lr},
        ]
        return with_encoder_groups(groups, model, optim)


register_method(AttentionMethod())
