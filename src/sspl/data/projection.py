"""A raw map over the network's centre crop, drawn on the original frame.

Every original pixel centre is taken into crop coordinates through the crop mapping
(:class:`~sspl.data.transforms.CropMapping`, ``crop = (original - offset) / scale`` per axis) and the map is
sampled there bilinearly with half-pixel centres, exactly as :func:`sspl.metrics.upsample_map` samples it
for evaluation (a 224 x 224 frame gets the evaluated map itself). The result is min-max normalised over
the crop; pixels outside the crop have no prediction and are NaN.

:func:`evaluation_picture` places a scored grid over the crop (the protocol's ``size x size`` frame) on a
frame cell by cell instead (:func:`spread_cells`), so an evaluated mask or box is drawn on the frame the
network saw exactly as it was scored.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from .images import to_rgb

if TYPE_CHECKING:  # the mapping is only read here: its module's torchvision is not needed to import this
    from .transforms import CropMapping

__all__ = ["axis_weights", "evaluation_picture", "grid_cells", "project_map", "spread_cells"]


@lru_cache(maxsize=32)
def axis_weights(
    n_out: int, scale: float, offset: float, size: int, n_in: int
) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear weights ``n_out x n_in`` from map cells to original pixels along one axis, and which
    original pixels lie inside the crop.

    Pixel ``i``'s centre sits at crop coordinate ``c = (i + 0.5 - offset) / scale``, i.e. at map
    coordinate ``c * n_in / size - 0.5`` (half-pixel centres, clamped to the border cells, as
    ``F.interpolate(..., align_corners=False)``).
    """
    crop = (np.arange(n_out, dtype=np.float64) + 0.5 - offset) / scale
    inside = (crop >= 0) & (crop < size)
    src = np.clip(crop * n_in / size - 0.5, 0, n_in - 1)
    i0 = np.floor(src).astype(np.intp)
    i1 = np.minimum(i0 + 1, n_in - 1)
    frac = src - i0
    weights = np.zeros((n_out, n_in), dtype=np.float64)
    rows = np.arange(n_out)
    np.add.at(weights, (rows, i0), 1 - frac)
    np.add.at(weights, (rows, i1), frac)
    return weights.astype(np.float32), inside


def project_map(raw_map: np.ndarray | torch.Tensor, mapping: CropMapping) -> np.ndarray:
    """A raw map over the network's crop, drawn on the original frame and min-max normalised.

    Args:
        raw_map: ``h x w`` raw similarity map (or ``N x h x w``).
        mapping: the crop mapping of the original ``width x height``
            (:func:`~sspl.data.transforms.eval_crop_to_original`).

    Returns:
        ``height x width`` (or ``N x height x width``) float32 in [0, 1] inside the crop, NaN outside
        (no prediction). A map with zero range is all ones inside the crop, as in
        :func:`sspl.metrics.normalize_map`.
    """
    raw = raw_map.detach().cpu().numpy() if isinstance(raw_map, torch.Tensor) else np.asarray(raw_map)
    raw = raw.astype(np.float32, copy=False)
    if raw.ndim not in (2, 3):
        raise ValueError(f"raw_map must be h x w or N x h x w, got shape {raw.shape}")
    h, w = raw.shape[-2:]
    wy, in_y = axis_weights(mapping.height, mapping.scale_y, mapping.offset_y, mapping.size, h)
    wx, in_x = axis_weights(mapping.width, mapping.scale_x, mapping.offset_x, mapping.size, w)
    # The crop is a rectangle of whole rows and columns: interpolate only there.
    rows, cols = np.flatnonzero(in_y), np.flatnonzero(in_x)
    # Two single-axis contractions in NumPy's own loops: a BLAS call of this size costs more in
    # thread hand-offs than in arithmetic, badly so on a busy machine.
    up = np.einsum("nyj,xj->nyx", np.einsum("yi,nij->nyj", wy[rows], raw.reshape(-1, h, w)), wx[cols])
    up = up.reshape(*raw.shape[:-2], rows.size, cols.size)  # (N x) rows x cols
    lo = up.min(axis=(-2, -1), keepdims=True)
    span = up.max(axis=(-2, -1), keepdims=True) - lo
    # Constancy is judged on the raw map: interpolation weights that sum to 1 only up to rounding
    # would otherwise stretch a constant map's last-bit noise over [0, 1].
    varies = (raw.max(axis=(-2, -1)) > raw.min(axis=(-2, -1)))[..., None, None] & (span > 0)
    heat = np.full((*raw.shape[:-2], mapping.height, mapping.width), np.nan, dtype=np.float32)
    if rows.size and cols.size:
        inside = np.where(varies, (up - lo) / np.where(varies, span, 1), np.float32(1))
        heat[..., rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] = np.clip(inside, 0, 1)
    return heat


def grid_cells(mapping: CropMapping, size: int, scale: int = 1) -> tuple[int, np.ndarray, np.ndarray]:
    """Where the cells of a ``size x size`` grid over the crop (e.g. the protocol's scored frame) lie on the
    original frame drawn ``enlarge`` times larger, the smallest whole factor that gives every cell at
    least ``scale`` pixels a side.

    Returns:
        ``(enlarge, rows, cols)``: for each row and column of the enlarged frame, the grid row or column
        holding its centre (nearest neighbour), -1 outside the crop.
    """
    crop_per_cell = mapping.size / size
    # 1e-9: a whole ratio computed in floating point must not round up to the next factor
    enlarge = max(1, math.ceil(scale / (crop_per_cell * min(mapping.scale_x, mapping.scale_y)) - 1e-9))

    def axis(n: int, per_pixel: float, offset: float) -> np.ndarray:
        crop = ((np.arange(n * enlarge) + 0.5) / enlarge - offset) / per_pixel
        cell = np.minimum(np.floor(crop / crop_per_cell), size - 1).astype(np.intp)
        return np.where((crop >= 0) & (crop < mapping.size), cell, -1)

    rows = axis(mapping.height, mapping.scale_y, mapping.offset_y)
    return enlarge, rows, axis(mapping.width, mapping.scale_x, mapping.offset_x)


def evaluation_picture(
    image: Image.Image, size: int, scale: int = 1, mapping: CropMapping | None = None
) -> tuple[Image.Image, np.ndarray, np.ndarray]:
    """The picture a ``size x size`` scored grid is drawn on, and the grid row and column under each of its
    rows and columns (-1: none).

    Without ``mapping``: ``image`` resized to ``size`` squared (bicubic; the frame the benchmarks' boxes
    are given in), drawn ``scale`` times larger, each cell a ``scale x scale`` block. With the ``mapping``
    of ``image`` (where the network's input lay in it): ``image`` itself, enlarged by :func:`grid_cells`'
    whole factor (each pixel repeated: the picture's pixels are the frame's), each cell where the
    network saw it and none outside its input.
    """
    rgb = to_rgb(image)
    if mapping is None:
        cells = np.arange(size * scale) // scale
        return rgb.resize((size * scale, size * scale), Image.Resampling.BICUBIC), cells, cells
    if rgb.size != (mapping.width, mapping.height):
        raise ValueError(
            f"image is {rgb.width} x {rgb.height}, its mapping {mapping.width} x {mapping.height}"
        )
    k, rows, cols = grid_cells(mapping, size, scale)
    return rgb.resize((rgb.width * k, rgb.height * k), Image.Resampling.NEAREST), rows, cols


def spread_cells(grid: np.ndarray, rows: np.ndarray, cols: np.ndarray, outside=False) -> np.ndarray:
    """``grid`` spread over a picture of :func:`evaluation_picture`: each pixel takes its cell's value,
    ``outside`` where it has none."""
    out = grid[np.ix_(np.maximum(rows, 0), np.maximum(cols, 0))]
    out[(rows < 0)[:, None] | (cols < 0)[None]] = outside
    return out
