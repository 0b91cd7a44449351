"""FNAC's SpecAugment-style masks on the released models' ``1 x 257 x T`` log-spectrogram.

FNAC's official training (github.com/OpenNLPLab/FNAC_AVL, ``datasets.py``: a frequency mask, then a time
mask, both of ``max_width=10`` and filled with 0 before the division by 12, so 0 after it as well) zeroes
one band of frequency bins and one band of time frames per clip. Each band's width is drawn from
``0 .. max_width - 1`` (0 leaves the spectrogram as it is), and its start over the *other* axis's length:
the frequency band starts in ``[0, T)`` and the time band in ``[0, 257)``, so a time band starting at or
past ``T`` masks nothing. That is what their released models were trained with, so it is kept.

The draws use torch's generator where theirs use Python's ``random``, so the data loader's per-sample
seeding (:func:`sspl.data.datasets.sample_seed`) makes them reproducible; the distribution is theirs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..config import AUDIO_AUGMENTATIONS  # the names; this module implements them

__all__ = ["AUDIO_AUGMENTATIONS", "MASK_MAX_WIDTH", "apply_spec_masks", "draw_band"]

#: FNAC's ``max_width`` of both masks.
MASK_MAX_WIDTH = 10


def draw_band(start_range: int, max_width: int = MASK_MAX_WIDTH) -> tuple[int, int]:
    """``(start, end)`` of one band: start uniform in ``[0, start_range)``, width in ``[0, max_width)``."""
    start = int(torch.randint(start_range, ()).item())
    width = int(torch.randint(max_width, ()).item())
    return start, start + width


def apply_spec_masks(spect: torch.Tensor, names: Sequence[str]) -> torch.Tensor:
    """A copy of the ``C x F x T`` spectrogram with the named masks applied, in FNAC's order (frequency,
    then time), each band drawn by :func:`draw_band` over the other axis's length."""
    unknown = [n for n in names if n not in AUDIO_AUGMENTATIONS]
    if unknown:
        raise ValueError(f"unknown audio augmentation(s) {unknown}; choose from {AUDIO_AUGMENTATIONS}")
    out = spect.clone()
    bins, frames = out.shape[-2:]
    if "freq_mask" in names:
        start, end = draw_band(frames)
        out[..., start:end, :] = 0
    if "time_mask" in names:
        start, end = draw_band(bins)
        out[..., start:end] = 0
    return out
