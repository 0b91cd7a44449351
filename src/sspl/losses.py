"""Losses as pure functions (the model returns embeddings; the loss is computed here)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "FNAC_FOREGROUND_THRESHOLD",
    "fnac_losses",
    "negative_cosine",
    "simsiam_loss",
    "slavc_loss",
    "slavc_map",
]


def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Eq. 6: ``-cos(p, z)`` averaged over the batch. ``p``, ``z``: ``B x D``."""
    return -F.cosine_similarity(p, z, dim=1).mean()


def simsiam_loss(p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """Eq. 7/8: ``0.5 * (-cos(p1, z2) - cos(p2, z1))``; the stop-gradient is applied to ``z`` by the model."""
    return 0.5 * (negative_cosine(p1, z2) + negative_cosine(p2, z1))


def slavc_loss(
    img: tuple[torch.Tensor, torch.Tensor],
    aud: tuple[torch.Tensor, torch.Tensor],
    img_target: tuple[torch.Tensor, torch.Tensor],
    aud_target: tuple[torch.Tensor, torch.Tensor],
    tau: float = 0.03,
) -> torch.Tensor:
    """SLAVC's objective (Mo & Morgado, NeurIPS 2022, Sec. 4; official ``SLAVC.forward``).

    Two projections of each stream give two similarity volumes per pair (frame ``n``, clip ``m``): the
    first is a softmax over the batch's clips (which clip sounds here), the second a softmax over the
    frame's locations (where it sounds); their product summed over locations is the probability that
    frame ``n`` goes with clip ``m``. It is computed twice, online frames against the momentum
    encoder's clips and momentum frames against online clips, and each time every frame must pick its
    own clip (cross-entropy over the clips, as the official code does for both terms).

    Args:
        img: the online projections ``(v1, v2)``, each ``B x C x h x w``, unit norm over ``C``.
        aud: the online projections ``(a1, a2)``, each ``B x C``, unit norm.
        img_target, aud_target: the momentum encoder's projections, same shapes (no gradient needed).
        tau: temperature of every similarity.

    Returns:
        Scalar: the sum of the two cross-entropies (each a mean over frames).
    """
    labels = torch.arange(img[0].shape[0], device=img[0].device)
    return F.cross_entropy(_slavc_log_probs(img, aud_target, tau), labels) + F.cross_entropy(
        _slavc_log_probs(img_target, aud, tau), labels
    )


def _slavc_log_probs(
    img: tuple[torch.Tensor, torch.Tensor], aud: tuple[torch.Tensor, torch.Tensor], tau: float
) -> torch.Tensor:
    """``B x B`` log of sum over locations of softmax-over-clips x softmax-over-locations."""
    s1 = torch.einsum("nchw,mc->nmhw", img[0], aud[0]).flatten(-2) / tau  # B x B x hw
    s2 = torch.einsum("nchw,mc->nmhw", img[1], aud[1]).flatten(-2) / tau
    return torch.log((F.softmax(s1, dim=1) * F.softmax(s2, dim=2)).sum(dim=2))


def slavc_map(
    img: tuple[torch.Tensor, torch.Tensor], aud: tuple[torch.Tensor, torch.Tensor], tau: float = 0.03
):
    """SLAVC's localization map: the mean of the two projections' similarity maps of each frame with
    its own clip, divided by ``tau``. ``img``: two ``B x C x h x w``; ``aud``: two ``B x C``; returns
    ``B x h x w``."""
    s1 = torch.einsum("nchw,nc->nhw", img[0], aud[0])
    s2 = torch.einsum("nchw,nc->nhw", img[1], aud[1])
    return (s1 / tau + s2 / tau) / 2


#: FNAC's foreground threshold on the min-max normalised own-clip map (official ``high_conf_thresh``).
FNAC_FOREGROUND_THRESHOLD = 0.6


def fnac_losses(
    img: torch.Tensor, aud: torch.Tensor, tau: float = 0.03, foreground: float = FNAC_FOREGROUND_THRESHOLD
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """FNAC's four loss terms (Sun et al., CVPR 2023, Sec. 3; official ``FNAC.calculate_loss``).

    ``S[n, m]`` is the max over locations of frame ``n``'s similarity map with clip ``m`` (divided by
    ``tau``): the multiple-instance contrastive logits of EZ-VSL. FNAC adds three L1 distances between
    row-softmaxed ``B x B`` similarity matrices, which keep pairs that are alike in one modality from
    being pushed apart in the cross-modal one (false negatives):

    - ``contrastive``: cross-entropy of ``S`` over clips plus over frames;
    - ``fns_audio`` (FNS-1): ``softmax(A A^T / tau)`` vs ``softmax(S)``, ``A`` the clip embeddings;
    - ``tns`` (true negative suppression): ``softmax(A A^T / tau)`` vs ``softmax(F F^T / tau)``, ``F``
      the frames' features averaged over the locations whose normalised own-clip similarity exceeds
      ``foreground`` (the others count as zeros);
    - ``fns_visual`` (FNS-2): ``softmax(V V^T / tau)`` vs ``softmax(S)``, ``V`` the frames' features
      averaged over all locations.

    Args:
        img: ``B x C x h x w`` visual features, unit norm over ``C``.
        aud: ``B x C`` audio embeddings, unit norm.
        tau: temperature of every similarity.
        foreground: threshold on each frame's own-clip map, min-max normalised (with ``1e-5`` added to
            the range, as the official code).

    Returns:
        ``(contrastive, fns_audio, tns, fns_visual)``, scalars; FNAC trains on ``contrastive`` alone for
        its warm-up epochs, then on ``contrastive + w1 * fns_audio + w2 * tns + w3 * fns_visual``.
    """
    b = img.shape[0]
    sim = torch.einsum("nchw,mc->nmhw", img, aud) / tau  # B x B x h x w
    own = sim[torch.arange(b), torch.arange(b)]  # B x h x w
    lo, hi = own.amin((1, 2), keepdim=True), own.amax((1, 2), keepdim=True)
    own = (own - lo) / (hi - lo + 1e-5)
    fg = (img * (own > foreground).unsqueeze(1)).flatten(-2).mean(-1)  # B x C
    logits = sim.flatten(-2).max(dim=-1)[0]  # B x B
    labels = torch.arange(b, device=img.device)
    contrastive = F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)
    img_avg = img.mean(dim=(2, 3))

    def dist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.l1_loss(torch.softmax(x, dim=1), torch.softmax(y, dim=1))

    aud_sim = aud @ aud.T / tau
    return (
        contrastive,
        dist(aud_sim, logits),
        dist(aud_sim, fg @ fg.T / tau),
        dist(img_avg @ img_avg.T / tau, logits),
    )
