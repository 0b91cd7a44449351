"""SSPL: the three-stream network of the paper's Figure 3, composed from its parts.

Two augmented views of a frame go through the (frozen) visual encoder; the audio clip's log-mel
patches go through the (frozen) audio encoder, whose embedding is the PCM's target and, through ``g``,
the attention query. Each view is refined by the PCM (optional), pooled by the attention module, and
projected by the SimSiam head; the two views predict each other (:func:`sspl_loss`, on the maths of
:mod:`sspl.losses`). The raw similarity map of the attention module is the localization. The encoders and
``g`` are the streams every method shares (:mod:`sspl.models.streams`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import SSPLConfig
from ..losses import simsiam_loss
from .attention import AttentionModule, cosine_map
from .heads import SimSiamHead
from .official import OFFICIAL_FILES
from .pcm import PredictiveCodingModule
from .streams import AudioVisualStreams

# OFFICIAL_FILES lives in sspl.models.official; named here too for the callers that import it from here.
__all__ = ["OFFICIAL_FILES", "SSPL", "SSPLOutput", "ViewOutput", "sspl_loss"]


@dataclass
class ViewOutput:
    """What one visual view produces.

    Attributes:
        visual_features: ``B x C x h x w`` encoder output.
        pcm_features: ``B x C x h x w`` PCM output (``None`` without PCM).
        sim_map: ``B x h x w`` raw cosine similarity map: the localization.
        att_map: ``B x h x w`` scaled map used as attention.
        fav: ``B x C'`` audio-visual representation.
    """

    visual_features: torch.Tensor
    pcm_features: torch.Tensor | None
    sim_map: torch.Tensor
    att_map: torch.Tensor
    fav: torch.Tensor


@dataclass
class SSPLOutput:
    """Maps and embeddings of a two-view forward pass.

    Attributes:
        audio_embedding: ``B x D`` audio embedding averaged over patches and L2-normalised (PCM target).
        audio_transformed: ``B x C`` ``g`` of each patch's embedding, averaged over patches (AM query).
        view1, view2: per-view outputs.
        p1, p2: ``B x P`` predictions; z1, z2: ``B x P`` projections (detached under stop-gradient).
    """

    audio_embedding: torch.Tensor
    audio_transformed: torch.Tensor
    view1: ViewOutput
    view2: ViewOutput
    p1: torch.Tensor
    p2: torch.Tensor
    z1: torch.Tensor
    z2: torch.Tensor


class SSPL(AudioVisualStreams):
    """Self-Supervised Predictive Learning for sound source localization.

    Args:
        config: the model configuration (ablations are its switches).
        visual_encoder: optional module ``B x 3 x H x W -> B x C x h x w`` replacing the configured one.
        audio_encoder: optional module ``B x 1 x 96 x 64 -> B x D`` replacing the configured one.

    The encoders, their freezing, ``g`` and the input checks are the shared streams'
    (:class:`~sspl.models.streams.AudioVisualStreams`); SSPL adds the PCM, the attention module and the
    SimSiam head. The constructor builds randomly initialised encoders and does no I/O; pretrained weights
    are loaded by :func:`sspl.create_model` / :func:`sspl.load` (or :meth:`from_official_checkpoint`).
    """

    def __init__(
        self,
        config: SSPLConfig | None = None,
        *,
        visual_encoder: nn.Module | None = None,
        audio_encoder: nn.Module | None = None,
    ) -> None:
        cfg = config or SSPLConfig()
        super().__init__(cfg, visual_encoder=visual_encoder, audio_encoder=audio_encoder)
        c = cfg.visual_channels
        self.pcm = (
            PredictiveCodingModule(c, cfg.audio_dim, cfg.pcm_channels or c, cfg.cycles) if cfg.pcm else None
        )
        self.attention = AttentionModule(cfg.scaling, cfg.fusion)
        self.head = SimSiamHead(
            AttentionModule.output_dim(c, cfg.fusion), cfg.proj_dim, cfg.pred_hidden, cfg.stop_grad
        )

    # ----------------------------------------------------------------------------------------------
    # the streams
    # ----------------------------------------------------------------------------------------------

    def audio_features(self, patch_embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``B x P x D`` patch embeddings -> (PCM target ``B x D``, attention query ``B x C``).

        The target is the patch-averaged embedding, L2-normalised; the query is ``g`` applied to every
        patch and then averaged, both as in the official code.
        """
        return self._audio(None, patch_embeddings)

    def view(self, visual_features: torch.Tensor, target: torch.Tensor, query: torch.Tensor) -> ViewOutput:
        """PCM (optional) and attention for one view."""
        refined = self.pcm(visual_features, target) if self.pcm is not None else None
        fav, sim, att = self.attention(refined if refined is not None else visual_features, query)
        return ViewOutput(visual_features, refined, sim, att, fav)

    def _audio(
        self, spect: torch.Tensor | None, audio_patch_embeddings: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        embedding, query = self.audio(spect, audio_patch_embeddings)
        return F.normalize(embedding, p=2, dim=1), query

    def forward(
        self,
        view1: torch.Tensor | None,
        view2: torch.Tensor | None,
        spect: torch.Tensor | None = None,
        *,
        audio_patch_embeddings: torch.Tensor | None = None,
        visual_features: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> SSPLOutput:
        """Two-view forward pass.

        Args:
            view1, view2: ``B x 3 x H x W`` augmented views of the same frames (``None`` when
                ``visual_features`` is given).
            spect: ``B x P x 96 x 64`` log-mel patches, or
            audio_patch_embeddings: ``B x P x D`` cached embeddings of a frozen audio encoder.
            visual_features: ``(f1, f2)``, each ``B x C x h x w``: the two views' feature maps of a frozen
                visual encoder, computed outside (``data.cache_visual``); the encoder is then skipped.
        """
        target, query = self._audio(spect, audio_patch_embeddings)
        f1, f2 = self._visual_views(view1, view2, visual_features)
        # PCM and head run per view: their batch norms must see one view at a time, as in the paper.
        out1 = self.view(f1, target, query)
        out2 = self.view(f2, target, query)
        p1, p2, z1, z2 = self.head(out1.fav, out2.fav)
        return SSPLOutput(target, query, out1, out2, p1, p2, z1, z2)

    def _visual_views(
        self,
        view1: torch.Tensor | None,
        view2: torch.Tensor | None,
        visual_features: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if visual_features is not None:
            if view1 is not None or view2 is not None:
                raise ValueError("give the two views or their visual_features, not both")
            f1, f2 = visual_features
            if f1.dim() != 4 or f1.shape != f2.shape:
                raise ValueError(
                    f"visual_features must be two B x C x h x w maps of one shape, got "
                    f"{tuple(f1.shape)} and {tuple(f2.shape)}"
                )
            if self.config.train_visual:
                raise ValueError("visual_features need a frozen visual encoder (config.train_visual is true)")
            return f1, f2
        if view1 is None or view2 is None:
            raise ValueError("give both views (B x 3 x H x W) or visual_features")
        if view1.shape != view2.shape:
            raise ValueError(f"views differ in shape: {tuple(view1.shape)} vs {tuple(view2.shape)}")
        # Both views through the encoder in one call: it has no batch statistics, so this is exact.
        f1, f2 = self.encode_visual(torch.cat([view1, view2])).chunk(2)
        return f1, f2

    def training_loss(
        self,
        view1: torch.Tensor | None,
        view2: torch.Tensor | None,
        spect: torch.Tensor | None = None,
        *,
        audio_patch_embeddings: torch.Tensor | None = None,
        visual_features: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """SimSiam loss of a two-view forward pass in the current train/eval mode (scalar); see
        :func:`sspl_loss`, which the trainer's method calls too."""
        loss, _ = sspl_loss(
            self,
            view1,
            view2,
            spect,
            audio_patch_embeddings=audio_patch_embeddings,
            visual_features=visual_features,
        )
        return loss

    # ----------------------------------------------------------------------------------------------
    # localization
    # ----------------------------------------------------------------------------------------------

    def localize(
        self,
        frames: torch.Tensor,
        spect: torch.Tensor | None = None,
        *,
        audio_patch_embeddings: torch.Tensor | None = None,
        cycles: int | None = None,
    ) -> torch.Tensor:
        """The raw cosine similarity map of ``frames`` (what evaluation reads).

        Args:
            frames: ``B x 3 x 224 x 224`` normalised frames.
            spect: ``B x 3 x 96 x 64`` (or ``B x 3 x 1 x 96 x 64``) log-mel patches.
            audio_patch_embeddings: cached ``B x P x D`` embeddings instead of ``spect``.
            cycles: PCM cycles to run (paper Fig. 6); default all.

        Returns:
            ``B x h x w`` (14 x 14 for 224 input) similarities in [-1, 1].
        """
        target, query = self._audio(spect, audio_patch_embeddings)
        feats = self.encode_visual(frames)
        if self.pcm is not None:
            feats = self.pcm(feats, target, cycles=cycles)
        return cosine_map(feats, query)

    def pcm_step_maps(
        self,
        frames: torch.Tensor,
        spect: torch.Tensor | None = None,
        *,
        audio_patch_embeddings: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Similarity maps after every PCM step (paper Figs. 6-7, t = 1..T).

        Returns:
            ``T x B x h x w`` with ``T = cycles + 1``; the last equals :meth:`localize`.
        """
        if self.pcm is None:
            raise ValueError("this model has no PCM (config.pcm is False)")
        target, query = self._audio(spect, audio_patch_embeddings)
        steps = self.pcm(self.encode_visual(frames), target, return_steps=True)
        return torch.stack([cosine_map(f, query) for f in steps])

    # ----------------------------------------------------------------------------------------------
    # official checkpoints
    # ----------------------------------------------------------------------------------------------

    @classmethod
    def from_official_checkpoint(
        cls, path: str | os.PathLike, *, config: SSPLConfig | None = None, map_location: str = "cpu"
    ) -> SSPL:
        """Load a model trained by the official SSPL code (see
        :func:`sspl.models.factory.load_official_checkpoint`, which this calls).

        Args:
            path: folder holding ``frame_best.pth``, ``sound_best.pth``, ``ssl_head_best.pth`` and, for
                SSPL w/ PCM, ``pcm_best.pth`` (keys with or without a ``module.`` prefix).
            config: base config for the non-inferred options; PCM on/off and the number of cycles are
                inferred from the files.
            map_location: unused (the files are read onto the CPU); kept for compatibility.

        Returns:
            The model in eval mode.
        """
        from .factory import load_official_checkpoint  # the factory builds on this module

        return load_official_checkpoint(path, config=config, model_class=cls)


def sspl_loss(
    model: nn.Module,
    view1: torch.Tensor | None,
    view2: torch.Tensor | None,
    spect: torch.Tensor | None = None,
    *,
    audio_patch_embeddings: torch.Tensor | None = None,
    visual_features: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, SSPLOutput]:
    """The SSPL training loss: the two views predict each other (Eqs. 7/8), in the current train/eval mode.

    The one loss path of SSPL: :meth:`SSPL.training_loss` and the trainer's method
    (:class:`~sspl.models.methods.sspl_method.SSPLMethod`) both call it.

    Args:
        model: an :class:`SSPL`, or a wrapper that forwards to one (``DistributedDataParallel``): it is
            called as a module, so that the wrapper synchronises gradients.
        view1, view2, spect, audio_patch_embeddings, visual_features: as :meth:`SSPL.forward`.

    Returns:
        The scalar loss and the forward pass's outputs.

    Raises:
        ValueError: a batch of one in training mode (the head's batch norms need two samples).
    """
    first = visual_features[0] if visual_features is not None else view1
    if model.training and first is not None and first.shape[0] < 2:
        raise ValueError("training needs a batch of at least 2 (batch norm statistics); got 1")
    out = model(
        view1,
        view2,
        spect,
        audio_patch_embeddings=audio_patch_embeddings,
        visual_features=visual_features,
    )
    return simsiam_loss(out.p1, out.p2, out.z1, out.z2), out
