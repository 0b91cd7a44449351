"""sspl: self-supervised sound source localization in visual scenes (SSPL, Song et al., CVPR 2022).

The public surface:

- :class:`SSPL` and :class:`SSPLConfig`: the model and its typed configuration;
- :func:`create_model`: a model with its pretrained encoders;
- :func:`load`: a trained localizer (ours or the official checkpoints) with its preprocessing;
- :func:`localize_image` and :func:`localize_video`: maps for your own media, as arrays;
- :mod:`sspl.weights`: known pretrained weights (URL, SHA-256, cache, offline message).

``import sspl`` is light: each name above is imported from its module on first use (localizing brings
PyAV, matplotlib and torchvision; a model brings torch), and so is each submodule (``sspl.weights``).
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Each public name and the module that defines it, imported on first use.
_LAZY = {
    "SSPL": "sspl.models.sspl",
    "SSPLConfig": "sspl.config",
    "SSPLOutput": "sspl.models.sspl",
    "create_model": "sspl.models.factory",
    "load": "sspl.engine.loading",
    "localize_image": "sspl.localize",
    "localize_video": "sspl.localize",
}

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

if TYPE_CHECKING:  # what type checkers and IDEs read; at run time __getattr__ resolves these
    from .config import SSPLConfig
    from .engine.loading import load
    from .localize import localize_image, localize_video
    from .models.factory import create_model
    from .models.sspl import SSPL, SSPLOutput


def __getattr__(name: str) -> Any:
    """A public name from its module, or a submodule, imported at its first use and kept."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
