"""EZ-VSL (Mo & Morgado, ECCV 2022) as a training method: :class:`~sspl.models.ezvsl.EZVSL` and its
multiple-instance contrastive loss, as the official ``train.py`` trains it.

Objective (paper Eq. 3, official ``max_xmil_loss``): the score of frame ``i`` with audio ``j`` is the
maximum over locations of their map ``S_ij / tau``; the loss is the cross-entropy of each frame over the
batch's audio plus that of each audio over the batch's frames, with the matching clip as the target (a sum
of the two, not their mean, as the official code). One view of each frame (``frame_view1``; the official
training transform is resize to 246 (bicubic), random 224 crop and horizontal flip) and the whole
``1 x 257 x T`` log-spectrogram (``model.audio_frontend: stft``).

Both encoders, the projections and nothing else are trained (the OGL saliency network is frozen), with
Adam at ``optim.lr`` (official ``--init_lr`` 1e-4) and no weight decay.

Options (``method_options``; unknown keys are an error): see :class:`EZVSLOptions`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...config import Config, ConfigError, OptimConfig
from ..ezvsl import EZVSL, UPSAMPLE_MODES
from ..factory import load_encoder, load_encoder_weights
from . import register_method, with_encoder_groups
from .negatives import parse_method_options

__all__ = ["EZVSLMethod", "EZVSLOptions", "check_fractions", "check_map_options", "max_mil_loss"]


@dataclass
class EZVSLOptions:
    """``method_options`` of ``method: ezvsl`` (defaults: the official scripts' values).

    Attributes:
        tau: temperature of the audio-visual similarities (``--tau`` 0.03).
        dim: projection size (``--out_dim`` 512).
        ogl: localize with object-guided localization (the official ``test.py``); false: the audio-visual
            map alone.
        ogl_alpha: weight of the audio-visual map in OGL (``--alpha`` 0.4).
        upsample: how maps reach the frame size, ``bilinear-align-corners`` (``test.py``), ``bicubic``
            (``train.py``'s validation) or ``none`` (the raw ``7 x 7`` map; needs ``ogl: false``).
    """

    tau: float = 0.03
    dim: int = 512
    ogl: bool = True
    ogl_alpha: float = 0.4
    upsample: str = "bilinear-align-corners"

    def __post_init__(self) -> None:
        check_map_options(self, UPSAMPLE_MODES)


def check_map_options(options, upsample_modes: tuple[str, ...]) -> None:
    """The options EZ-VSL, SLAVC and FNAC share: ``tau`` > 0, ``dim`` >= 1, ``ogl_alpha`` in [0, 1], an
    ``upsample`` of ``upsample_modes``, and no OGL on raw (``none``) maps.

    Raises:
        ConfigError: naming the option and what it must be.
    """
    if not options.tau > 0:
        raise ConfigError(f"method_options.tau={options.tau}: must be > 0")
    if options.dim < 1:
        raise ConfigError(f"method_options.dim={options.dim}: must be >= 1")
    if not 0 <= options.ogl_alpha <= 1:
        raise ConfigError(f"method_options.ogl_alpha={options.ogl_alpha}: must be in [0, 1]")
    if options.upsample not in upsample_modes:
        raise ConfigError(
            f"method_options.upsample={options.upsample!r}: choose from {', '.join(upsample_modes)}"
        )
    if options.ogl and options.upsample == "none":
        raise ConfigError("method_options.upsample=none: OGL mixes maps at the frame size (set ogl: false)")


def check_fractions(options, *names: str, closed: tuple[str, ...] = ()) -> None:
    """Each named option (a dropout, a momentum) in [0, 1), or in [0, 1] for those in ``closed``.

    Raises:
        ConfigError: naming the option and its range.
    """
    for name in names:
        value = getattr(options, name)
        if not (0 <= value <= 1 if name in closed else 0 <= value < 1):
            raise ConfigError(
                f"method_options.{name}={value}: must be in [0, 1{']' if name in closed else ')'}"
            )


def max_mil_loss(logits: torch.Tensor) -> torch.Tensor:
    """EZ-VSL's multiple-instance contrastive loss.

    Args:
        logits: ``B x B x h x w``; ``[i, j]`` is audio ``j`` on frame ``i``, already divided by ``tau``.

    Returns:
        Scalar: ``CE(frames -> audio) + CE(audio -> frames)`` of the maxima over locations.
    """
    scores = logits.flatten(-2).amax(dim=-1)  # B x B
    target = torch.arange(len(scores), device=scores.device)
    return F.cross_entropy(scores, target) + F.cross_entropy(scores.T, target)


class EZVSLMethod:
    """EZ-VSL's network and loss (see the module docstring)."""

    name = "ezvsl"

    def build(self, config: Config, *, pretrained: bool = True) -> EZVSL:
        options = parse_method_options(EZVSLOptions, config)
        cfg = config.model
        model = EZVSL(
            cfg,
            dim=options.dim,
            tau=options.tau,
            ogl_alpha=options.ogl_alpha if options.ogl else None,
            upsample=options.upsample,
        )
        if pretrained:
            load_encoder_weights(model, cfg)
            if model.saliency_encoder is not None:
                load_encoder(model.saliency_encoder, "visual_encoder", "imagenet")
        return model

    def loss(self, model: nn.Module, batch: dict, config: Config) -> tuple[torch.Tensor, dict[str, float]]:
        frames = batch["frame_view1"]
        if model.training and frames.shape[0] < 2:
            raise ValueError("contrastive training needs a batch of at least 2 (the negatives); got 1")
        out = model(frames, batch.get("spect"), audio_patch_embeddings=batch.get("audio_emb"))
        loss = max_mil_loss(out.logits.float())
        with torch.no_grad():
            scores = out.logits.flatten(-2).amax(dim=-1).float() * model_tau(model)  # max cosine
            off = ~torch.eye(len(scores), dtype=torch.bool, device=scores.device)
            extra = {
                "pos_max_cos": scores.diagonal().mean().item(),
                "neg_max_cos": scores[off].mean().item() if off.any() else 0.0,
            }
        return loss, extra

    def param_groups(self, model: EZVSL, optim: OptimConfig) -> list[dict]:
        """The projections at ``optim.lr``; trained encoders at ``optim.lr_encoder`` (default ``optim.lr``)."""
        groups = [
            {"name": "img_proj", "params": list(model.img_proj.parameters()), "lr": optim.lr},
            {"name": "aud_proj", "params": list(model.aud_proj.parameters()), "lr": optim.lr},
        ]
        return with_encoder_groups(groups, model, optim)


def model_tau(model: nn.Module) -> float:
    """The temperature of an EZ-VSL model, also under DDP's wrapper."""
    return getattr(model, "module", model).tau


register_method(EZVSLMethod())
