"""HardWay (LVS: Chen et al., "Localizing Visual Sounds the Hard Way", CVPR 2021) as a training method: the
SSPL paper's local-level baseline.

The model is :class:`~sspl.models.baselines.HardWayBaseline`: frozen encoders and ``g``, and the cosine
map ``S_ij`` of clip ``j``'s audio query on frame ``i``'s visual features. Training uses one view
(``frame_view1``; crop + horizontal flip by default) and the LVS objective (their Sec. 3.2-3.3):

1. A soft tri-map of each frame's own map ``S_ii``: positive region ``m_p = sigmoid((S - eps_p) / tau_m)``,
   negative region ``m_n = 1 - sigmoid((S - eps_n) / tau_m)``, with ``eps_p = 0.65``, ``eps_n = 0.4``,
   ``tau_m = 0.03``; locations between the thresholds belong to neither (the uncertain band).
2. Region similarities (weighted means of the map): the positive ``<m_p, S_ii> / |m_p|``; the hard
   negative ``<m_n, S_ii> / |m_n|`` (the background of the same image); the easy negatives
   ``<m_p(S_ij), S_ij> / |m_p(S_ij)|``, each other clip's audio on this frame pooled over its own positive
   region.
3. Cross-entropy over ``[positive, easy negatives, hard negative] / tau`` (``tau = 0.07``) with the
   positive as the target, averaged over the batch.

As in their code the soft masks are not detached, so gradients also flow through the region weights.
Differences from their code, both without effect on a well-behaved batch: the positive is removed from
the easy negatives by masking (their code multiplies the diagonal by -99, which turns a negative
similarity into a large positive logit), and the region weights are computed in float32 so that far
below a threshold they do not underflow to an empty region under mixed precision.

The localization map is the cosine map of the frame with its own audio, evaluated by the same evaluator
as SSPL; LVS reports the ``median`` threshold (``sspl evaluate --protocol median``), both protocols work.

Options (``method_options`` of the config; unknown keys are an error): see :class:`HardWayOptions`.
Learning rate and weight decay: ``optim.lr`` and ``optim.weight_decay`` for ``g`` (``optim.lr_head`` is
not used).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...config import Config, ConfigError, OptimConfig
from ..baselines import HardWayBaseline
from ..factory import load_encoder_weights
from . import register_method, with_encoder_groups
from .negatives import NEGATIVES, negative_mask, parse_method_options

__all__ = ["HardWayMethod", "HardWayOptions", "hardway_logits", "hardway_loss", "region_mean", "trimap"]


@dataclass
class HardWayOptions:
    """``method_options`` of ``method: hardway`` (defaults: LVS's values).

    Attributes:
        epsilon_pos: threshold of the positive region (0.65).
        epsilon_neg: threshold of the negative region (0.4); equal to ``epsilon_pos`` removes the
            uncertain band (LVS without tri-map).
        trimap_temperature: sharpness of the soft thresholds (0.03).
        temperature: divides the logits of the cross-entropy (0.07).
        hard_negatives: contrast with the frame's own background (LVS's ``Neg``); false leaves only the
            other clips' audio as negatives.
        negatives: ``all`` other clips of the batch, or ``exclude-same-class`` (paper Figure 2b).
    """

    epsilon_pos: float = 0.65
    epsilon_neg: float = 0.4
    trimap_temperature: float = 0.03
    temperature: float = 0.07
    hard_negatives: bool = True
    negatives: str = "all"

    def __post_init__(self) -> None:
        if self.epsilon_neg > self.epsilon_pos:
            raise ConfigError(
                f"method_options.epsilon_neg={self.epsilon_neg} exceeds epsilon_pos={self.epsilon_pos}: the "
                "negative region must lie below the positive one"
            )
        for key in ("trimap_temperature", "temperature"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"method_options.{key}={getattr(self, key)}: must be > 0")
        if self.negatives not in NEGATIVES:
            raise ConfigError(
                f"method_options.negatives={self.negatives!r}: choose from {', '.join(NEGATIVES)}"
            )


def trimap(
    sim: torch.Tensor, epsilon_pos: float = 0.65, epsilon_neg: float = 0.4, temperature: float = 0.03
) -> tuple[torch.Tensor, torch.Tensor]:
    """LVS's soft positive and negative regions of similarity maps (any shape).

    Returns:
        ``(positive, negative)`` weights in (0, 1), shaped like ``sim``: ``sigmoid((sim - epsilon_pos) / T)``
        and ``1 - sigmoid((sim - epsilon_neg) / T)``.
    """
    positive = torch.sigmoid((sim - epsilon_pos) / temperature)
    negative = 1.0 - torch.sigmoid((sim - epsilon_neg) / temperature)
    return positive, negative


def region_mean(sim: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted mean of ``... x h x w`` maps over their last two dimensions -> ``...``."""
    total = weights.sum(dim=(-2, -1)).clamp_min(torch.finfo(weights.dtype).tiny)
    return (weights * sim).sum(dim=(-2, -1)) / total


def hardway_logits(
    maps: torch.Tensor,
    negatives: torch.Tensor,
    *,
    epsilon_pos: float = 0.65,
    epsilon_neg: float = 0.4,
    trimap_temperature: float = 0.03,
    temperature: float = 0.07,
    hard_negatives: bool = True,
) -> torch.Tensor:
    """LVS logits of a batch; the target of every row is column 0.

    Args:
        maps: ``B x B x h x w`` cosine maps, ``[i, j]`` = audio ``j`` on frame ``i``.
        negatives: ``B x B`` bool, which other clips' audio are negatives for frame ``i``.

    Returns:
        ``B x (B + 2)`` float32 (``B x (B + 1)`` without hard negatives): column 0 the positive, columns
        ``1 + j`` the easy negative of audio ``j`` (``-inf`` where ``j`` is not a negative, the diagonal
        included), the last column the hard negative; all divided by ``temperature``.
    """
    b = maps.shape[0]
    if maps.shape[:2] != (b, b) or negatives.shape != (b, b):
        raise ValueError(
            f"maps must be B x B x h x w with a B x B mask, got {tuple(maps.shape)}, {tuple(negatives.shape)}"
        )
    maps = maps.float()
    positive_all, _ = trimap(maps, epsilon_pos, epsilon_neg, trimap_temperature)
    regions = region_mean(maps, positive_all)  # B x B, each audio pooled over its own positive region
    columns = [regions.diagonal()[:, None], regions.masked_fill(~negatives, float("-inf"))]
    if hard_negatives:
        own = maps.diagonal(dim1=0, dim2=1).permute(2, 0, 1)  # B x h x w
        _, background = trimap(own, epsilon_pos, epsilon_neg, trimap_temperature)
        columns.append(region_mean(own, background)[:, None])
    return torch.cat(columns, dim=1) / temperature


def hardway_loss(maps: torch.Tensor, negatives: torch.Tensor, **options: float | bool) -> torch.Tensor:
    """Cross-entropy of :func:`hardway_logits` with the positive as target (scalar, batch mean)."""
    logits = hardway_logits(maps, negatives, **options)
    return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))


class HardWayMethod:
    """LVS: local-level contrast with hard negatives inside the image (see the module docstring)."""

    name = "hardway"

    def build(self, config: Config, *, pretrained: bool = True) -> HardWayBaseline:
        parse_method_options(HardWayOptions, config)  # fail on bad options before any training
        cfg = config.model
        model = HardWayBaseline(cfg)
        return load_encoder_weights(model, cfg) if pretrained else model

    def loss(self, model: nn.Module, batch: dict, config: Config) -> tuple[torch.Tensor, dict[str, float]]:
        options = parse_method_options(HardWayOptions, config)
        frames = batch["frame_view1"]
        b = frames.shape[0]
        if model.training and b < 2:
            raise ValueError("contrastive training needs a batch of at least 2 (the negatives); got 1")
        maps = model(frames, batch.get("spect"), audio_patch_embeddings=batch.get("audio_emb"))
        negatives = negative_mask(b, options.negatives, batch.get("label"), device=frames.device)
        logits = hardway_logits(
            maps,
            negatives,
            epsilon_pos=options.epsilon_pos,
            epsilon_neg=options.epsilon_neg,
            trimap_temperature=options.trimap_temperature,
            temperature=options.temperature,
            hard_negatives=options.hard_negatives,
        )
        loss = F.cross_entropy(logits, torch.zeros(b, dtype=torch.long, device=logits.device))
        with torch.no_grad():
            own = maps.detach().float().diagonal(dim1=0, dim2=1).permute(2, 0, 1)
            positive, negative = trimap(
                own, options.epsilon_pos, options.epsilon_neg, options.trimap_temperature
            )
            extra = {
                "pos_sim": logits[:, 0].mean().item() * options.temperature,
                "pos_area": positive.mean().item(),  # share of the frame in the positive region
                "neg_area": negative.mean().item(),
                "negatives_per_clip": negatives.sum(dim=1).float().mean().item(),
            }
        return loss, extra

    def param_groups(self, model: HardWayBaseline, optim: OptimConfig) -> list[dict]:
        """``g`` at ``optim.lr``; trained encoders at ``optim.lr_encoder``."""
        groups = [
            {"name": "audio_transform", "params": list(model.audio_transform.parameters()), "lr": optim.lr}
        ]
        return with_encoder_groups(groups, model, optim)


register_method(HardWayMethod())
