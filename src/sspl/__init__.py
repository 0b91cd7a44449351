"""sspl: self-supervised sound source localization in visual scenes (SSPL, Song et al., CVPR 2022)."""

from __future__ import annotations

__version__ = "0.1.0"
