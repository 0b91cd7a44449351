"""Maps of trivial predictors (whole image, centre box, noise), printed beside every result as its floor.

:func:`baseline_maps` makes maps in the form a model's are evaluated in (:func:`sspl.metrics.evaluate_maps`
scores them under the same protocol); :mod:`sspl.metrics` names them too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

__all__ = ["BASELINE_KINDS", "baseline_maps"]

BASELINE_KINDS = ("whole", "center", "random")


def _center_map(size: int, area: float) -> np.ndarray:
    """``size x size`` map: 1 on a centred square covering about ``area`` of the image; outside it a
    ramp strictly below 0.5 that falls to 0 on the border pixels."""
    coords = np.abs(np.arange(size) - (size - 1) / 2)
    # Chebyshev ring index: ring k is the outline of the centred square of side 2k + 2 (even size)
    # or 2k + 1 (odd size); rings 0..inner make the box.
    ring = np.floor(np.maximum(coords[:, None], coords[None, :])).astype(np.int64)
    outer = (size - 1) // 2
    half_side = size * float(np.sqrt(area)) / 2
    inner = round(half_side) - 1 if size % 2 == 0 else round(half_side - 0.5)
    inner = min(max(inner, 0), outer)
    m = np.ones((size, size), dtype=np.float32)
    if inner < outer:
        outside = ring > inner
        m[outside] = 0.5 * (outer - ring[outside]) / (outer - inner)
    return m


def _sample_seed(seed: int, sample_id: str) -> int:
    # Seeded per id, so a sample's random map does not depend on which other samples are evaluated.
    return int.from_bytes(
        hashlib.blake2b(f"{seed}\x00{sample_id}".encode(), digest_size=8).digest(), "little"
    )


def baseline_maps(
    ids: Iterable[str],
    kind: str,
    seed: int = 0,
    *,
    map_size: int = 14,
    size: int = 224,
    center_area: float = 0.5,
) -> dict[str, np.ndarray]:
    """Maps of trivial predictors, to print beside every result as its floor.

    Args:
        ids: sample ids.
        kind: ``"whole"``: a constant ``map_size x map_size`` map, which predicts the whole image
            under both threshold policies (see ``normalize_map``). ``"center"``: a ``size x size``
            map (full evaluation resolution, so no upsampling blurs it) equal to 1 on a centred square
            covering about ``center_area`` of the image and below 0.5 elsewhere, falling towards the
            border; ``fixed`` predicts exactly that square (158 x 158 of 224 x 224 for the default 0.5),
            ``median`` the centred square holding the upper half of the pixels (160 x 160).
            ``"random"``: uniform noise in [0, 1) at ``map_size x map_size`` (a model's resolution),
            drawn from a generator seeded by ``seed`` and the id.
        seed: seed of the random baseline.
        map_size: side of the whole and random maps.
        size: evaluation resolution (side of the centre map).
        center_area: fraction of the image the centre box covers under ``fixed``.

    Returns:
        Sample id -> float32 map.
    """
    ids = list(ids)
    if kind == "whole":
        return {i: np.zeros((map_size, map_size), dtype=np.float32) for i in ids}
    if kind == "center":
        if not 0 < center_area <= 1:
            raise ValueError(f"center_area must be in (0, 1], got {center_area}")
        template = _center_map(size, center_area)
        return {i: template.copy() for i in ids}
    if kind == "random":
        return {
            i: np.random.default_rng(_sample_seed(seed, i)).random((map_size, map_size), dtype=np.float32)
            for i in ids
        }
    raise ValueError(f"unknown baseline {kind!r}; choose one of {BASELINE_KINDS}")
