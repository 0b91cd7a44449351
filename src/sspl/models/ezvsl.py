"""EZ-VSL (Mo & Morgado, "Localizing Visual Sounds the Easy Way", ECCV 2022) on the shared streams.

The ResNet-18 image trunk (``B x 3 x 224 x 224 -> B x 512 x 7 x 7``) and audio network
(``B x 1 x 257 x T -> B x 512``) of :mod:`sspl.models.resnet`, both trained, each followed by a projection
(a 1x1 convolution of the map, a linear layer of the audio vector) and an L2 normalisation. The
audio-visual map of frame ``i`` with audio ``j`` is their cosine similarity at every location divided by
the temperature ``tau`` (paper Eq. 2); the model returns it for every pair of the batch, and the
multiple-instance contrastive loss (:mod:`sspl.models.methods.ezvsl`) takes its maximum over locations.

Test-time object-guided localization (OGL, paper Sec. 3.3): a frozen ImageNet ResNet-18 gives an object
saliency map, the mean absolute value of its ``7 x 7`` features over channels; both maps are upsampled to
the frame size (bilinear, corners aligned, as the official ``test.py``), min-max normalised, mixed as
``alpha * AV + (1 - alpha) * OBJ`` and normalised again. ``alpha = 1`` is the audio-visual map alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import SSPLConfig
from ..metrics_extended import slavc_confidence
from .encoders import freeze
from .resnet import ResNet18Trunk, init_like_ezvsl
from .streams import AudioVisualStreams

__all__ = [
    "EZVSL",
    "UPSAMPLE_MODES",
    "EZVSLOutput",
    "minmax_normalize",
    "object_saliency",
    "ogl_fuse",
    "upsample_maps",
]

#: how a ``7 x 7`` map is brought to the frame size: ``bilinear-align-corners`` (the official ``test.py``),
#: ``bicubic`` (the validation of the official ``train.py``), or ``none`` (the raw map)
UPSAMPLE_MODES = ("bilinear-align-corners", "bicubic", "none")


def upsample_maps(maps: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """``B x h x w -> B x H x W`` as the released code upsamples (see :data:`UPSAMPLE_MODES`)."""
    if mode == "none":
        return maps
    if mode not in UPSAMPLE_MODES:
        raise ValueError(f"unknown upsampling {mode!r}; choose from {', '.join(UPSAMPLE_MODES)}")
    x = maps[:, None]
    if mode == "bicubic":
        return F.interpolate(x, size=size, mode="bicubic", align_corners=False)[:, 0]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)[:, 0]


def minmax_normalize(maps: torch.Tensor) -> torch.Tensor:
    """Per-map ``(m - min) / (max - min)`` of ``B x H x W`` maps; a constant map is left as it is (as the
    official ``normalize_img``)."""
    lo = maps.amin(dim=(-2, -1), keepdim=True)
    span = maps.amax(dim=(-2, -1), keepdim=True) - lo
    return torch.where(span == 0, maps, (maps - lo) / torch.where(span == 0, torch.ones_like(span), span))


def object_saliency(features: torch.Tensor) -> torch.Tensor:
    """OGL's object map: ``B x C x h x w`` ImageNet features -> ``B x h x w`` mean absolute activation."""
    return features.abs().mean(dim=1)


def ogl_fuse(av: torch.Tensor, obj: torch.Tensor, alpha: float) -> torch.Tensor:
    """``normalize(alpha * normalize(av) + (1 - alpha) * normalize(obj))`` of ``B x H x W`` maps."""
    return minmax_normalize(alpha * minmax_normalize(av) + (1 - alpha) * minmax_normalize(obj))


@dataclass
class EZVSLOutput:
    """What :class:`EZVSL` computes for a batch.

    Attributes:
        visual: ``B x dim x h x w`` projected, L2-normalised visual features.
        audio: ``B x dim`` projected, L2-normalised audio embeddings.
        logits: ``B x B x h x w``; ``[i, j]`` is audio ``j`` on frame ``i``, divided by ``tau``.
        av_map: ``B x h x w`` the diagonal of ``logits`` (each frame with its own audio).
    """

    visual: torch.Tensor
    audio: torch.Tensor
    logits: torch.Tensor
    av_map: torch.Tensor


class EZVSL(AudioVisualStreams):
    """EZ-VSL's network (see the module docstring); pure (no I/O).

    Args:
        config: the ``model:`` section (``resnet18`` encoders, both trained in the released models).
        dim: projection size (official ``--out_dim``, 512).
        tau: temperature (official ``--tau``, 0.03).
        ogl_alpha: weight of the audio-visual map in OGL (official ``--alpha``, 0.4); ``None`` builds no
            saliency network and localizes with the audio-visual map alone.
        upsample: how :meth:`localize` brings maps to the frame size (:data:`UPSAMPLE_MODES`).
        visual_encoder, audio_encoder: modules replacing the configured encoders.
    """

    #: the threshold its authors evaluate with (``sspl evaluate`` uses it unless ``--protocol`` is given)
    threshold_protocol = "median"

    def __init__(
        self,
        config: SSPLConfig,
        *,
        dim: int = 512,
        tau: float = 0.03,
        ogl_alpha: float | None = 0.4,
        upsample: str = "bilinear-align-corners",
        visual_encoder: nn.Module | None = None,
        audio_encoder: nn.Module | None = None,
    ) -> None:
        super().__init__(
            config, visual_encoder=visual_encoder, audio_encoder=audio_encoder, audio_transform=False
        )
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"unknown upsampling {upsample!r}; choose from {', '.join(UPSAMPLE_MODES)}")
        if ogl_alpha is not None and upsample == "none":
            raise ValueError("object-guided localization mixes maps at the frame size: it needs upsampling")
        self.tau, self.ogl_alpha, self.upsample = tau, ogl_alpha, upsample
        self.img_proj = init_like_ezvsl(nn.Conv2d(config.visual_channels, dim, kernel_size=1))
        self.aud_proj = init_like_ezvsl(nn.Linear(config.audio_dim, dim))
        self.saliency_encoder = None
        if ogl_alpha is not None:
            # the official OGL network is torchvision's ImageNet ResNet-18, whatever the trained encoder
            self.saliency_encoder = freeze(ResNet18Trunk())

    def train(self, mode: bool = True) -> EZVSL:
        """Set training mode; the OGL saliency network always stays in eval mode."""
        super().train(mode)
        if self.saliency_encoder is not None:
            self.saliency_encoder.eval()
        return self

    def embed(
        self,
        frames: torch.Tensor,
        spect: torch.Tensor | None,
        audio_patch_embeddings: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B x dim x h x w, B x dim)``: projected, L2-normalised visual features and audio embeddings."""
        img = F.normalize(self.img_proj(self.encode_visual(frames)), dim=1)
        if audio_patch_embeddings is None:
            if spect is None:
                raise ValueError("give spect (B x 1 x F x T spectrograms) or audio_patch_embeddings")
            audio_patch_embeddings = self.encode_audio(spect)  # B x 1 x 512
        aud = F.normalize(self.aud_proj(audio_patch_embeddings.mean(dim=1)), dim=1)
        return img, aud

    def forward(
        self,
        frames: torch.Tensor,
        spect: torch.Tensor | None,
        audio_patch_embeddings: torch.Tensor | None = None,
    ) -> EZVSLOutput:
        img, aud = self.embed(frames, spect, audio_patch_embeddings)
        logits = torch.einsum("nchw,mc->nmhw", img, aud) / self.tau  # B x B x h x w
        return EZVSLOutput(img, aud, logits, logits.diagonal(dim1=0, dim2=1).permute(2, 0, 1))

    def av_map(
        self,
        frames: torch.Tensor,
        spect: torch.Tensor | None,
        audio_patch_embeddings: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``B x h x w``: each frame's features with its own audio, ``/ tau`` (the official ``Savl``)."""
        img, aud = self.embed(frames, spect, audio_patch_embeddings)
        return torch.einsum("nchw,nc->nhw", img, aud) / self.tau

    def saliency_map(self, frames: torch.Tensor) -> torch.Tensor:
        """``B x h x w`` OGL object saliency of the frozen ImageNet network."""
        if self.saliency_encoder is None:
            raise ValueError("this model was built without OGL (ogl_alpha=None)")
        with torch.no_grad():
            return object_saliency(self.saliency_encoder(frames))

    def map_confidence(self, maps: torch.Tensor) -> torch.Tensor:
        """The extended protocol's confidence of ``B x H x W`` :meth:`localize` maps (EZ-VSL and FNAC publish
        none): SLAVC's rule, the mean of the highest quarter of the scores on the map's fixed range. Without
        OGL the map is the cosine divided by ``tau``, range ``+-1/tau``, which gives SLAVC's own scores
        ``(cos + 1) / 2``; with OGL the map is min-max normalised per frame (the official fusion), range
        [0, 1], so the confidence measures how concentrated the map is, not the cosine's level."""
        low, high = (0.0, 1.0) if self.ogl_alpha is not None else (-1.0 / self.tau, 1.0 / self.tau)
        return torch.from_numpy(slavc_confidence(maps, (low, high))).reshape(len(maps))

    @torch.no_grad()
    def localize(
        self,
        frames: torch.Tensor,
        spect: torch.Tensor | None,
        *,
        audio_patch_embeddings: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The test-time map: ``B x H x W`` at the frame size (``B x h x w`` with ``upsample='none'``).

        With OGL, the fused map in [0, 1]; without, the upsampled audio-visual map (raw values).
        """
        size = tuple(frames.shape[-2:])
        av = upsample_maps(self.av_map(frames, spect, audio_patch_embeddings), size, self.upsample)
        if self.ogl_alpha is None:
            return av
        obj = upsample_maps(self.saliency_map(frames), size, "bilinear-align-corners")
        return ogl_fuse(av, obj, self.ogl_alpha)
