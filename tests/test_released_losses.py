"""SLAVC's and FNAC's losses as pure functions, against goldens of their official code (float64).

The goldens (tests/data/released/{slavc,fnac}/loss.npz, README there) ran the official loss code on the
small unit-norm features that ``slavc_fnac_recipe.features`` regenerates.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from slavc_fnac_recipe import RELEASED, features
from sspl.losses import fnac_losses, slavc_loss, slavc_map

TAU = 0.03


def _close(ours: torch.Tensor, theirs: np.ndarray) -> None:
    np.testing.assert_allclose(ours.detach().numpy(), theirs, rtol=1e-9, atol=1e-12)


def test_slavc_loss_value_gradients_and_maps_equal_the_official_code():
    gold = np.load(RELEASED / "slavc" / "loss.npz")
    f = {k: torch.from_numpy(v) for k, v in features("slavc").items()}
    for k in ("img1", "img2", "aud1", "aud2"):
        f[k].requires_grad_(True)
    loss = slavc_loss(
        (f["img1"], f["img2"]),
        (f["aud1"], f["aud2"]),
        (f["img1_trg"], f["img2_trg"]),
        (f["aud1_trg"], f["aud2_trg"]),
        TAU,
    )
    loss.backward()
    _close(loss, gold["loss"])
    for k in ("img1", "img2", "aud1", "aud2"):
        _close(f[k].grad, gold["grad_" + k])
    _close(
        slavc_map((f["img1_trg"], f["img2_trg"]), (f["aud1_trg"], f["aud2_trg"]), TAU), gold["savl_momentum"]
    )
    _close(slavc_map((f["img1"], f["img2"]), (f["aud1"], f["aud2"]), TAU), gold["savl_online"])


def test_slavc_loss_hand_case_perfect_pairs_cost_little():
    # Two frames, one location each: frame n's feature equals clip n's, orthogonal to the other.
    v = torch.eye(2, dtype=torch.float64).reshape(2, 2, 1, 1)
    a = torch.eye(2, dtype=torch.float64)
    loss = slavc_loss((v, v), (a, a), (v, v), (a, a), tau=0.1)
    # per term: -log softmax over clips of (1/0.1, 0) = log(1 + e^-10); the location softmax is 1
    assert loss.item() == pytest.approx(2 * np.log1p(np.exp(-10.0)), rel=1e-6)


@pytest.mark.parametrize("term", range(4))
def test_fnac_terms_and_their_gradients_equal_the_official_code(term):
    gold = np.load(RELEASED / "fnac" / "loss.npz")
    f = features("fnac")
    img = torch.from_numpy(f["img"]).requires_grad_(True)
    aud = torch.from_numpy(f["aud"]).requires_grad_(True)
    losses = fnac_losses(img, aud, TAU)
    losses[term].backward()
    _close(losses[term], gold[f"loss{term}"])
    _close(img.grad, gold[f"grad{term}_img"])
    _close(aud.grad, gold[f"grad{term}_aud"])


def test_fnac_regularisers_vanish_when_the_similarity_matrices_agree():
    # Identical, orthogonal one-location features: every B x B matrix is the same scaled identity.
    v = torch.eye(3, dtype=torch.float64).reshape(3, 3, 1, 1)
    contrastive, fns_a, tns, fns_v = fnac_losses(v, torch.eye(3, dtype=torch.float64), tau=1.0)
    # one location: the normalised own map is 0 < 0.6, so the foreground features are all zero
    assert fns_a.item() == pytest.approx(0.0, abs=1e-7)
    assert fns_v.item() == pytest.approx(0.0, abs=1e-7)
    uniform = torch.full((3,), 1 / 3, dtype=torch.float64)
    peaked = torch.softmax(torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64), 0)
    assert tns.item() == pytest.approx((peaked - uniform).abs().mean().item(), rel=1e-6)
    assert contrastive.item() == pytest.approx(2 * -torch.log(peaked[0]).item(), rel=1e-6)
