"""Build models with their pretrained encoders (the only place model construction touches files)."""

from __future__ import annotations

from .config import SSPLConfig
from .models.sspl import SSPL
from .weights import load_audio_encoder_weights, load_visual_encoder_weights

__all__ = ["create_model"]


def create_model(config: SSPLConfig | None = None, *, pretrained: bool = True, download: bool = True) -> SSPL:
    """An SSPL model with the encoder weights its config names.

    Args:
        config: model configuration; ``visual_weights`` / ``audio_weights`` name ``"imagenet"`` /
            ``"audioset"``, a file path, or ``None`` (random initialisation).
        pretrained: load those weights (``False``: random encoders, e.g. for smoke tests).
        download: allow downloading known weights that are not cached.

    Raises:
        sspl.errors.WeightsError: weights missing (offline), corrupt, or of another architecture.
    """
    cfg = config or SSPLConfig()
    model = SSPL(cfg)
    if pretrained and cfg.visual_weights:
        load_visual_encoder_weights(model.visual_encoder, cfg.visual_weights, download=download)
    if pretrained and cfg.audio_weights:
        load_audio_encoder_weights(model.audio_encoder, cfg.audio_weights, download=download)
    return model
