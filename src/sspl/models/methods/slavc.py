"""SLAVC (Mo & Morgado, NeurIPS 2022, "A closer look at weakly-supervised audio-visual source localization").

On the ResNet-18 streams of the released models (:mod:`sspl.models.resnet`), both trained: heavy dropout
on the image features (0.9 in the official VGG-Sound script), two 1x1-convolution / linear projections of
each stream (``img_proj1/2``, ``aud_proj1/2``), unit-normalised, and a momentum copy of the encoders and
projections (``m = 0.999``) that gives the targets. The objective is :func:`sspl.losses.slavc_loss`; the
map is :func:`sspl.losses.slavc_map` (the mean of the two projections' similarity maps over ``tau``), of
the online encoders by default (the official test scripts do not pass ``--use_mom_eval``) or of the
momentum ones (``method_options.momentum_map``, what the official training script validates with).

The momentum copy is updated by :meth:`SLAVCMethod.before_step`, which the training step calls before
each loss: ``theta_m <- m * theta_m + (1 - m) * theta`` over parameters (not batch-norm statistics), the
order of the official ``forward`` (update, then targets). The momentum forward runs in the model's mode
(batch statistics while training, as the official code) and passes through the same dropout modules.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...config import Config, OptimConfig, SSPLConfig
from ...losses import slavc_loss, slavc_map
from ..encoders import freeze
from ..factory import load_encoder, load_encoder_weights
from ..resnet import ResNet18Trunk, init_like_ezvsl
from ..streams import AudioVisualStreams
from . import register_method, with_encoder_groups
from .ezvsl import check_fractions, check_map_options
from .negatives import parse_method_options

#: how :meth:`SLAVCModel.localize` brings ``7 x 7`` maps to the frame size (see :class:`SLAVCOptions`)
SLAVC_UPSAMPLE_MODES = ("bicubic-align-corners", "bicubic", "none")
#: the fixed ranges the official ``test.py`` maps onto [0, 1]: audio-visual ``[-1/tau, 1/tau]``, object
#: saliency ``[0, 2.5]``
OBJECT_SCORE_RANGE = (0.0, 2.5)

__all__ = [
    "SLAVCMethod",
    "SLAVCModel",
    "SLAVCOptions",
    "SLAVCOutput",
]

#: (online part, its momentum copy, which momentum rate) in the official update order
_MOMENTUM_PAIRS = (
    ("visual_encoder", "momentum_visual_encoder", "momentum_img"),
    ("img_proj1", "momentum_img_proj1", "momentum_img"),
    ("img_proj2", "momentum_img_proj2", "momentum_img"),
    ("audio_encoder", "momentum_audio_encoder", "momentum_aud"),
    ("aud_proj1", "momentum_aud_proj1", "momentum_aud"),
    ("aud_proj2", "momentum_aud_proj2", "momentum_aud"),
)


@dataclass
class SLAVCOptions:
    """``method_options`` of ``method: slavc`` (defaults: the official ``train_vggsound144k.sh``).

    Attributes:
        tau: temperature of every similarity (0.03).
        dim: output size of the four projections (512).
        dropout_img: dropout on the image encoder's ``512 x 7 x 7`` map before the projections (0.9).
        dropout_aud: dropout on the audio embedding (0).
        momentum_img: momentum of the image encoder and its projections (0.999).
        momentum_aud: momentum of the audio encoder and its projections (0.999).
        momentum_map: localize with the momentum encoders (``--use_mom_eval``); the official test scripts
            that gave the published numbers use the online ones (``False``).
        ogl: fuse the map with the ImageNet ResNet-18's object saliency (the official ``test.py``).
        ogl_alpha: weight of the audio-visual scores in the fusion (``--alpha 0.9`` of the test scripts).
        upsample: how the ``7 x 7`` maps reach the frame size: ``bicubic-align-corners`` (``test.py``),
            ``bicubic`` (corners not aligned: ``train.py``'s validation) or ``none`` (raw; needs ``ogl: false``).
    """

    tau: float = 0.03
    dim: int = 512
    dropout_img: float = 0.9
    dropout_aud: float = 0.0
    momentum_img: float = 0.999
    momentum_aud: float = 0.999
    momentum_map: bool = False
    ogl: bool = True
    ogl_alpha: float = 0.9
    upsample: str = "bicubic-align-corners"

    def __post_init__(self) -> None:
        check_map_options(self, SLAVC_UPSAMPLE_MODES)
        momenta = ("momentum_img", "momentum_aud")  # 1 keeps the momentum copy as it is
        check_fractions(self, "dropout_img", "dropout_aud", *momenta, closed=momenta)


@dataclass
class SLAVCOutput:
    """Unit-norm projections: ``img``/``img_target`` two ``B x dim x 7 x 7``, ``aud``/``aud_target`` two
    ``B x dim``; the targets come from the momentum encoder, without gradient."""

    img: tuple[torch.Tensor, torch.Tensor]
    aud: tuple[torch.Tensor, torch.Tensor]
    img_target: tuple[torch.Tensor, torch.Tensor]
    aud_target: tuple[torch.Tensor, torch.Tensor]


class SLAVCModel(AudioVisualStreams):
    """SLAVC's network: ResNet-18 streams, dropouts, two projections per stream, and their momentum copies.

    Args:
        config: the ``model:`` section (``resnet18`` encoders, both trained; no ``g``).
        options: the method's options (:class:`SLAVCOptions`).
    """

    #: ``sspl evaluate``'s default threshold: min-max normalise, keep the upper half (the official
    #: ``--relative_prediction``, its VGG-SS command); its Flickr script thresholds the raw scores at 0.5
    threshold_protocol = "median"

    def __init__(self, config: SSPLConfig, options: SLAVCOptions | None = None) -> None:
        super().__init__(config, audio_transform=False)
        self.options = options = options or SLAVCOptions()
        c, d = config.visual_channels, config.audio_dim
        self.img_dropout = nn.Dropout(options.dropout_img)
        self.aud_dropout = nn.Dropout(options.dropout_aud)
        self.img_proj1 = nn.Conv2d(c, options.dim, kernel_size=1)
        self.img_proj2 = nn.Conv2d(c, options.dim, kernel_size=1)
        self.aud_proj1 = nn.Linear(d, options.dim)
        self.aud_proj2 = nn.Linear(d, options.dim)
        for proj in (self.img_proj1, self.img_proj2, self.aud_proj1, self.aud_proj2):
            init_like_ezvsl(proj)
        for online, target, _ in _MOMENTUM_PAIRS:
            setattr(self, target, copy.deepcopy(getattr(self, online)).requires_grad_(False))
        # OGL's saliency network is ImageNet's ResNet-18 whatever is trained (the official test.py)
        self.saliency_encoder = freeze(ResNet18Trunk()) if options.ogl else None

    def train(self, mode: bool = True) -> SLAVCModel:
        """Set training mode; the OGL saliency network always stays in eval mode."""
        super().train(mode)
        if self.saliency_encoder is not None:
            self.saliency_encoder.eval()
        return self

    @torch.no_grad()
    def reset_momentum(self) -> None:
        """Copy the online encoders and projections into their momentum copies (after loading weights)."""
        for online, target, _ in _MOMENTUM_PAIRS:
            for p_m, p in zip(getattr(self, target).parameters(), getattr(self, online).parameters()):
                p_m.copy_(p)

    @torch.no_grad()
    def momentum_update(self) -> None:
        """``theta_m <- m * theta_m + (1 - m) * theta`` for every momentum parameter."""
        for online, target, rate in _MOMENTUM_PAIRS:
            m = getattr(self.options, rate)
            for p_m, p in zip(getattr(self, target).parameters(), getattr(self, online).parameters()):
                p_m.mul_(m).add_(p, alpha=1.0 - m)  # in place; rounds as the official m * p_m + (1 - m) * p

    def _project(
        self, img: torch.Tensor, aud: torch.Tensor, prefix: str
    ) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """Dropout, both projections and unit norm of ``B x C x 7 x 7`` / ``B x D`` encoder outputs."""
        img, aud = self.img_dropout(img), self.aud_dropout(aud)
        v = tuple(F.normalize(getattr(self, f"{prefix}img_proj{i}")(img), dim=1) for i in (1, 2))
        a = tuple(F.normalize(getattr(self, f"{prefix}aud_proj{i}")(aud), dim=1) for i in (1, 2))
        return v, a

    def online(self, frames: torch.Tensor, spect: torch.Tensor):
        """Online projections ``((v1, v2), (a1, a2))`` of ``B x 3 x 224 x 224`` frames and ``B x 1 x F x T``
        spectrograms (or a patch encoder's ``B x P x 96 x 64`` log-mel patches, embeddings averaged)."""
        img = self.encode_visual(frames)  # B x 512 x 7 x 7
        return self._project(img, self.encode_audio(spect).mean(dim=1), "")  # B x P x D -> B x D

    @torch.no_grad()
    def target(self, frames: torch.Tensor, spect: torch.Tensor):
        """The momentum encoder's projections (same shapes as :meth:`online`)."""
        img = self.momentum_visual_encoder(frames)
        if self.takes_spectrogram:
            aud = self.momentum_audio_encoder(spect)  # B x D
        else:  # B x P x 96 x 64 log-mel patches (SynthAV's small encoders): mean of the patches' embeddings
            b, p = spect.shape[:2]
            aud = (
                self.momentum_audio_encoder(spect.reshape(b * p, 1, *spect.shape[-2:])).view(b, p, -1).mean(1)
            )
        return self._project(img, aud, "momentum_")

    def forward(self, frames: torch.Tensor, spect: torch.Tensor) -> SLAVCOutput:
        """Online and momentum projections (image dropout is drawn online first, as the official order)."""
        (v, a), (vt, at) = self.online(frames, spect), self.target(frames, spect)
        return SLAVCOutput(v, a, vt, at)

    @torch.no_grad()
    def av_map(self, frames: torch.Tensor, spect: torch.Tensor) -> torch.Tensor:
        """``B x 7 x 7`` map of each frame with its own clip (:func:`~sspl.losses.slavc_map`, the official
        ``Savl``), of the momentum or the online encoders (``options.momentum_map``)."""
        v, a = self.target(frames, spect) if self.options.momentum_map else self.online(frames, spect)
        return slavc_map(v, a, self.options.tau)

    def map_confidence(self, maps: torch.Tensor) -> torch.Tensor:
        """SLAVC's confidence that a visible object sounds (the extended protocol's, official ``test.py``):
        the mean of the highest quarter of each :meth:`localize` map's scores, ``B x H x W -> B``. A raw
        ``B x 7 x 7`` map (``upsample: none``) is first put on the same fixed scale."""
        scores = maps.flatten(1).float()
        if self.options.upsample == "none":
            scores = slavc_scores(scores, None, self.options.tau, 1.0)
        n = scores.shape[1]
        return scores.topk(-(-n // 4), dim=1).values.mean(dim=1)

    @torch.no_grad()
    def localize(
        self, frames: torch.Tensor, spect: torch.Tensor, *, audio_patch_embeddings: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The official test-time map: ``B x H x W`` scores at the frame size (:func:`slavc_scores`), or the
        raw ``B x 7 x 7`` map with ``upsample: none``."""
        if audio_patch_embeddings is not None:
            raise ValueError("SLAVC trains its audio encoder: give spectrograms, not cached embeddings")
        o = self.options
        av = self.av_map(frames, spect)
        if o.upsample == "none":
            return av
        size = tuple(frames.shape[-2:])
        obj = None
        if self.saliency_encoder is not None:
            obj = upsample(self.saliency_encoder(frames).abs().mean(dim=1), size, o.upsample)
        return slavc_scores(upsample(av, size, o.upsample), obj, o.tau, o.ogl_alpha)


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def upsample(maps: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """``B x h x w -> B x H x W`` by bicubic interpolation, corners aligned or not (``mode``)."""
    x = F.interpolate(maps[:, None], size=size, mode="bicubic", align_corners=mode == "bicubic-align-corners")
    return x[:, 0]


def slavc_scores(av: torch.Tensor, obj: torch.Tensor | None, tau: float, alpha: float) -> torch.Tensor:
    """SLAVC's test-time scores (official ``test.py``): the audio-visual map mapped from ``[-1/tau, 1/tau]``
    and the object saliency from :data:`OBJECT_SCORE_RANGE` onto [0, 1] (fixed ranges, not per map), mixed
    as ``alpha * av + (1 - alpha) * obj`` (``obj`` ``None``: the audio-visual scores alone).

    The official evaluation thresholds these scores at 0.5 as they are, or, with ``--relative_prediction``,
    after a per-map min-max normalisation at their median (``sspl evaluate --protocol median``).
    """
    scores = (av - (-1.0 / tau)) / (1.0 / tau - (-1.0 / tau))
    if obj is None:
        return scores
    lo, hi = OBJECT_SCORE_RANGE
    return scores * alpha + (obj - lo) / (hi - lo) * (1 - alpha)


class SLAVCMethod:
    """SLAVC's training: :func:`~sspl.losses.slavc_loss` on one view, momentum update before each step."""

    name = "slavc"

    def build(self, config: Config, *, pretrained: bool = True) -> SLAVCModel:
        model = SLAVCModel(config.model, parse_method_options(SLAVCOptions, config))
        if pretrained:
            load_encoder_weights(model, config.model)
            if model.saliency_encoder is not None:
                load_encoder(model.saliency_encoder, "visual_encoder", "imagenet")
        model.reset_momentum()
        return model

    def before_step(self, model: nn.Module) -> None:
        """The momentum update (the training step calls it before the loss)."""
        getattr(model, "module", model).momentum_update()

    def loss(self, model: nn.Module, batch: dict, config: Config) -> tuple[torch.Tensor, dict[str, float]]:
        frames, spect = batch["frame_view1"], batch["spect"]
        if model.training and frames.shape[0] < 2:
            raise ValueError("contrastive training needs a batch of at least 2 (the negatives); got 1")
        out = model(frames, spect)
        tau = getattr(model, "module", model).options.tau
        # softmaxes over 49 locations and the batch at tau = 0.03: in float32 at least, also under autocast
        img, aud, img_t, aud_t = (
            tuple(_at_least_float32(x) for x in pair)
            for pair in (out.img, out.aud, out.img_target, out.aud_target)
        )
        loss = slavc_loss(img, aud, img_t, aud_t, tau)
        with torch.no_grad():
            own = slavc_map(img, aud, tau).flatten(1).amax(1).mean().item()
        return loss, {"max_own_similarity": own * tau}

    def param_groups(self, model: SLAVCModel, optim: OptimConfig) -> list[dict]:
        """Projections at ``optim.lr``; the trained encoders at ``optim.lr_encoder`` (default ``optim.lr``);
        the official code trains everything at one rate (Adam, 1e-4)."""
        projections = [
            p
            for n in ("img_proj1", "img_proj2", "aud_proj1", "aud_proj2")
            for p in getattr(model, n).parameters()
        ]
        groups = [{"name": "projections", "params": projections, "lr": optim.lr}]
        return with_encoder_groups(groups, model, optim)


register_method(SLAVCMethod())
