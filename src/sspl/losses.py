"""Losses as pure functions (the model returns embeddings; the loss is computed here)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["negative_cosine", "simsiam_loss"]


def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Eq. 6: ``-cos(p, z)`` averaged over the batch. ``p``, ``z``: ``B x D``."""
    return -F.cosine_similarity(p, z, dim=1).mean()


def simsiam_loss(p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """Eq. 7/8: ``0.5 * (-cos(p1, z2) - cos(p2, z1))``; the stop-gradient is applied to ``z`` by the model."""
    return 0.5 * (negative_cosine(p1, z2) + negative_cosine(p2, z1))
