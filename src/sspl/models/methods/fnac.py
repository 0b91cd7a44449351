"""FNAC (Sun et al., CVPR 2023, "Learning audio-visual source localization via false negative aware
contrastive learning").

The network is EZ-VSL's (ResNet-18 streams, both trained, a 1x1-convolution image projection and a linear
audio projection, unit-normalised, temperature 0.03) with dropout on the image encoder's map (0.9 in the
official scripts) and on the audio embedding (0). The loss is EZ-VSL's multiple-instance contrastive loss
alone for ``warmup_epochs`` epochs, then plus FNAC's three false-negative-aware terms, each weighted 100
(:func:`sspl.losses.fnac_losses`). The map is each frame's similarity with its own clip over ``tau``
(``B x 7 x 7``), as EZ-VSL's, and the test-time map is EZ-VSL's object-guided localization (FNAC's
``test.py`` is EZ-VSL's: :mod:`sspl.models.ezvsl`).

The epoch comes from the batch (``batch["epoch"]``, 0-based, set by the trainer); a batch without it (a
benchmark, a single step) counts as past the warm-up.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...config import Config, ConfigError, OptimConfig, SSPLConfig
from ...losses import FNAC_FOREGROUND_THRESHOLD, fnac_losses
from ..ezvsl import EZVSL, UPSAMPLE_MODES
from ..factory import load_encoder, load_encoder_weights
from . import register_method, with_encoder_groups
from .ezvsl import check_fractions, check_map_options
from .negatives import parse_method_options

__all__ = ["FNACMethod", "FNACModel", "FNACOptions"]


@dataclass
class FNACOptions:
    """``method_options`` of ``method: fnac`` (defaults: the official ``train_*.sh`` scripts).

    Attributes:
        tau: temperature of every similarity (0.03).
        dim: output size of both projections (512).
        dropout_img: dropout on the image encoder's ``512 x 7 x 7`` map (0.9).
        dropout_aud: dropout on the audio embedding (0).
        warmup_epochs: epochs trained on the contrastive term alone (``--warmup 5``).
        weight_fns_audio: weight of FNS-1 (``--fnac_loss1_weight 100``).
        weight_tns: weight of TNS (``--fnac_loss2_weight 100``).
        weight_fns_visual: weight of FNS-2 (``--fnac_loss3_weight 100``).
        foreground: threshold of TNS's foreground mask on the normalised own-clip map (0.6).
        ogl: localize with EZ-VSL's object-guided localization (the official ``test.py``).
        ogl_alpha: weight of the audio-visual map in OGL (``--alpha 0.4`` of ``test_*.sh``).
        upsample: ``bilinear-align-corners`` (``test.py``'s ``validate``, which prints first) or ``bicubic``
            (its ``validate2`` and ``train.py``'s validation) for the audio-visual map; ``none``: raw.
    """

    tau: float = 0.03
    dim: int = 512
    dropout_img: float = 0.9
    dropout_aud: float = 0.0
    warmup_epochs: int = 5
    weight_fns_audio: float = 100.0
    weight_tns: float = 100.0
    weight_fns_visual: float = 100.0
    foreground: float = FNAC_FOREGROUND_THRESHOLD
    ogl: bool = True
    ogl_alpha: float = 0.4
    upsample: str = "bilinear-align-corners"

    def __post_init__(self) -> None:
        check_map_options(self, UPSAMPLE_MODES)
        if self.warmup_epochs < 0:
            raise ConfigError(f"method_options.warmup_epochs={self.warmup_epochs}: must be >= 0")
        check_fractions(self, "dropout_img", "dropout_aud")
        for name in ("weight_fns_audio", "weight_tns", "weight_fns_visual"):
            if getattr(self, name) < 0:
                raise ConfigError(f"method_options.{name}={getattr(self, name)}: must be >= 0")


class FNACModel(EZVSL):
    """FNAC's network: EZ-VSL's (:class:`~sspl.models.ezvsl.EZVSL`: projections, ``tau``, OGL at test
    time) with dropout on the image encoder's map and on the audio embedding before the projections.

    Args:
        config: the ``model:`` section (``resnet18`` encoders, both trained; no ``g``).
        options: the method's options (:class:`FNACOptions`).
    """

    def __init__(self, config: SSPLConfig, options: FNACOptions | None = None) -> None:
        options = options or FNACOptions()
        super().__init__(
            config,
            dim=options.dim,
            tau=options.tau,
            ogl_alpha=options.ogl_alpha if options.ogl else None,
            upsample=options.upsample,
        )
        self.options = options
        self.img_dropout = nn.Dropout(options.dropout_img)
        self.aud_dropout = nn.Dropout(options.dropout_aud)

    def embed(
        self,
        frames: torch.Tensor,
        spect: torch.Tensor | None,
        audio_patch_embeddings: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit-norm ``B x dim x 7 x 7`` image features and ``B x dim`` clip embeddings, with the dropouts
        (the image's drawn first, as the official order) before the projections. ``spect``:
        ``B x 1 x F x T`` spectrograms, or the ``B x P x 96 x 64`` log-mel patches of a patch encoder, whose
        embeddings are averaged (SynthAV's small encoders)."""
        img = F.normalize(self.img_proj(self.img_dropout(self.encode_visual(frames))), dim=1)
        if audio_patch_embeddings is None:
            if spect is None:
                raise ValueError("give spect (B x 1 x F x T spectrograms) or audio_patch_embeddings")
            audio_patch_embeddings = self.encode_audio(spect)  # B x P x D
        aud = F.normalize(self.aud_proj(self.aud_dropout(audio_patch_embeddings.mean(dim=1))), dim=1)
        return img, aud


class FNACMethod:
    """FNAC's training (see the module docstring)."""

    name = "fnac"

    def build(self, config: Config, *, pretrained: bool = True) -> FNACModel:
        model = FNACModel(config.model, parse_method_options(FNACOptions, config))
        if pretrained:
            load_encoder_weights(model, config.model)
            if model.saliency_encoder is not None:
                load_encoder(model.saliency_encoder, "visual_encoder", "imagenet")
        return model

    def loss(self, model: nn.Module, batch: dict, config: Config) -> tuple[torch.Tensor, dict[str, float]]:
        o = parse_method_options(FNACOptions, config)
        frames, spect = batch["frame_view1"], batch["spect"]
        if model.training and frames.shape[0] < 2:
            raise ValueError("contrastive training needs a batch of at least 2 (the negatives); got 1")
        out = model(frames, spect)
        img, aud = (
            x.float() if x.dtype in (torch.float16, torch.bfloat16) else x for x in (out.visual, out.audio)
        )
        contrastive, fns_a, tns, fns_v = fnac_losses(img, aud, o.tau, o.foreground)  # float32 under autocast
        extra = {
            "contrastive": contrastive.item(),
            "fns_audio": fns_a.item(),
            "tns": tns.item(),
            "fns_visual": fns_v.item(),
        }
        if batch.get("epoch", o.warmup_epochs) < o.warmup_epochs:
            return contrastive, extra
        return (
            contrastive + o.weight_fns_audio * fns_a + o.weight_tns * tns + o.weight_fns_visual * fns_v,
            extra,
        )

    def param_groups(self, model: FNACModel, optim: OptimConfig) -> list[dict]:
        """Projections at ``optim.lr``; the trained encoders at ``optim.lr_encoder`` (default ``optim.lr``)."""
        projections = [*model.img_proj.parameters(), *model.aud_proj.parameters()]
        groups = [{"name": "projections", "params": projections, "lr": optim.lr}]
        return with_encoder_groups(groups, model, optim)


register_method(FNACMethod())
