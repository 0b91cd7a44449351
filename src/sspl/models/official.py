"""The official SSPL checkpoint files: which files, which config they imply, and their key renames.

The official training code (Song et al., CVPR 2022) writes one state dict per model part; this module
reads them and renames their keys to one :class:`~sspl.models.sspl.SSPL` state dict.
:func:`sspl.models.factory.load_official_checkpoint` builds the model from them (the one place weights go
into models).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from ..config import SSPLConfig
from ..errors import WeightsError
from ..weights import read_state_dict
from .pcm import official_pcm_key

__all__ = ["OFFICIAL_FILES", "official_config", "official_to_state_dict", "read_official_parts"]

#: The files the official training code writes (``checkpoint()`` in its main.py), by model part.
OFFICIAL_FILES = {
    "frame": "frame_best.pth",
    "sound": "sound_best.pth",
    "pcm": "pcm_best.pth",
    "ssl_head": "ssl_head_best.pth",
}


def read_official_parts(folder: Path) -> dict[str, dict[str, torch.Tensor]]:
    """The state dicts of an official checkpoint folder, by part (``pcm`` only when its file exists).

    Raises:
        WeightsError: not a folder, or a required file missing (naming the files the official code writes).
    """
    if not folder.is_dir():
        raise WeightsError(f"{folder}: not a folder with official SSPL checkpoint files")
    missing = [
        OFFICIAL_FILES[p]
        for p in ("frame", "sound", "ssl_head")
        if not (folder / OFFICIAL_FILES[p]).is_file()
    ]
    if missing:
        raise WeightsError(
            f"{folder}: missing official checkpoint file(s) {', '.join(missing)} (the official training "
            "code writes frame_best.pth, sound_best.pth, ssl_head_best.pth and, with PCM, pcm_best.pth)"
        )
    return {
        part: read_state_dict(folder / name)
        for part, name in OFFICIAL_FILES.items()
        if (folder / name).is_file()
    }


def official_config(parts: dict[str, dict[str, torch.Tensor]], base: SSPLConfig) -> SSPLConfig:
    """``base`` with PCM on/off and its cycles inferred from the files, and no encoder weights to load
    (the files hold the encoders)."""
    has_pcm = "pcm" in parts
    cycles = (
        sum(1 for k in parts.get("pcm", {}) if k.startswith("BNError_step.") and k.endswith(".weight")) // 3
    )
    return replace(
        base,
        pcm=has_pcm,
        cycles=cycles if has_pcm else base.cycles,
        visual_weights=None,
        audio_weights=None,
    )


def official_to_state_dict(parts: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Rename the official per-part state dicts to one :class:`~sspl.models.sspl.SSPL` state dict.

    ``frame``: ``feat_extractor.N.*`` -> ``visual_encoder.features.N.*``; ``sound``: VGGish
    ``features.*`` / ``embeddings.*`` -> ``audio_encoder.*`` and ``fc.*`` -> ``audio_transform.*``;
    ``pcm``: see :func:`sspl.models.pcm.official_pcm_key`; ``ssl_head``: ``projector.*`` /
    ``predictor.*`` -> ``head.*``.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in parts.get("frame", {}).items():
        if not key.startswith("feat_extractor."):
            raise WeightsError(f"unexpected key in {OFFICIAL_FILES['frame']}: {key!r}")
        out["visual_encoder.features." + key.removeprefix("feat_extractor.")] = value
    for key, value in parts.get("sound", {}).items():
        if key.startswith("fc."):
            out["audio_transform." + key.removeprefix("fc.")] = value
        elif key.startswith(("features.", "embeddings.")):
            out["audio_encoder." + key] = value
        elif key.startswith("pproc."):
            continue  # PCA post-processing: not used by SSPL
        else:
            raise WeightsError(f"unexpected key in {OFFICIAL_FILES['sound']}: {key!r}")
    for key, value in parts.get("pcm", {}).items():
        try:
            out["pcm." + official_pcm_key(key)] = value
        except KeyError as e:
            raise WeightsError(f"unexpected key in {OFFICIAL_FILES['pcm']}: {key!r}") from e
    for key, value in parts.get("ssl_head", {}).items():
        out["head." + key] = value
    return out
