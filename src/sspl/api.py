"""The public loading API: a trained localizer with its preprocessing, and the one image conversion.

The code lives in its layer (:mod:`sspl.engine.loading`, :mod:`sspl.data.preprocess`,
:mod:`sspl.data.images`); this module names it for users (``sspl.api.load``, ``sspl.load``).
"""

from __future__ import annotations

from .data.images import to_rgb
from .data.preprocess import Preprocess
from .engine.loading import load

__all__ = ["Preprocess", "load", "to_rgb"]
