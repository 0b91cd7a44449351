"""sspl: self-supervised sound source localization in visual scenes (SSPL, Song et al., CVPR 2022).

The public surface:

- :class:`SSPL` and :class:`SSPLConfig`: the model and its typed configuration;
- :func:`create_model`: a model with its pretrained encoders;
- :func:`load`: a trained localizer (ours or the official checkpoints) with its preprocessing;
- :func:`localize_image` and :func:`localize_video`: maps for your own media, as arrays;
- :mod:`sspl.weights`: known pretrained weights (URL, SHA-256, cache, offline message).
"""

from __future__ import annotations

__version__ = "0.1.0"

from .api import load
from .config import SSPLConfig
from .localize import localize_image, localize_video
from .models.factory import create_model
from .models.sspl import SSPL, SSPLOutput

__all__ = [
    "SSPL",
    "SSPLConfig",
    "SSPLOutput",
    "__version__",
    "create_model",
    "load",
    "localize_image",
    "localize_video",
]
