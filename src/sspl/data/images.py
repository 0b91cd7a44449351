"""Images of any mode as the 8-bit RGB pictures every command works on: one conversion for all.

``sspl prepare`` (frames it stores), ``sspl localize`` and :class:`sspl.api.Preprocess` (what the network
sees) and :mod:`sspl.viz` (overlays) all convert through :func:`to_rgb`, so one image gives the same
pixels whichever command reads it.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = ["SIXTEEN_BIT_MODES", "to_rgb"]

#: PIL modes of 16-bit grey samples (16-bit PNG and TIFF open as one of them; ``I`` holds them as int32)
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_SIXTEEN_BIT_MAX = 65535.0
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL image mode as 8-bit RGB, by the image's own scale.

    - 16-bit grey (``I;16``, ``I;16B``, ``I;16L``, and ``I``, clipped to 0-65535): scaled by
      255 / 65535, rounded (65535 -> 255, 32768 -> 128): PIL's own conversion clips every value above
      255 to white.
    - float grey (``F``): 0.0-1.0 is black to white, clipped outside.
    - transparency (``RGBA``, ``LA``, ``PA``, a palette with a transparent colour) is composited over
      black: a transparent pixel's hidden colour never shows.
    - grey, palette, CMYK, 1-bit and the rest convert as PIL does.
    """
    if image.mode in SIXTEEN_BIT_MODES:
        image = _grey_to_l(np.asarray(image, dtype=np.float64) / _SIXTEEN_BIT_MAX)
    elif image.mode == "F":
        image = _grey_to_l(np.asarray(image, dtype=np.float64))
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def _grey_to_l(unit: np.ndarray) -> Image.Image:
    """An 8-bit grey image of intensities where 0 is black and 1 is white (clipped, NaN as black)."""
    unit = np.nan_to_num(unit, nan=0.0, posinf=1.0, neginf=0.0)
    levels = np.floor(np.clip(unit, 0.0, 1.0) * 255.0 + 0.5)  # halves round up: 32768 -> 128
    return Image.fromarray(levels.astype(np.uint8), mode="L")
