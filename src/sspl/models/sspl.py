"""SSPL: the three-stream network of the paper's Figure 3, composed from its parts.

Two augmented views of a frame go through the (frozen) visual encoder; the audio clip's log-mel
patches go through the (frozen) audio encoder, whose embedding is the PCM's target and, through ``g``,
the attention query. Each view is refined by the PCM (optional), pooled by the attention module, and
projected by the SimSiam head; the two views predict each other (loss in :mod:`sspl.losses`). The raw
similarity map of the attention module is the localization.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..config import SSPLConfig
from ..errors import WeightsError
from ..losses import simsiam_loss
from ..weights import read_state_dict
from .attention import AttentionModule, cosine_map
from .encoders import build_audio_encoder, build_visual_encoder, freeze
from .heads import AudioTransform, SimSiamHead
from .pcm import PredictiveCodingModule, official_pcm_key

__all__ = ["OFFICIAL_FILES", "SSPL", "SSPLOutput", "ViewOutput"]

# The files the official training code writes (``checkpoint()`` in its main.py), by model part.
OFFICIAL_FILES = {
    "frame": "frame_best.pth",
    "sound": "sound_best.pth",
    "pcm": "pcm_best.pth",
    "ssl_head": "ssl_head_best.pth",
}


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


class SSPL(nn.Module):
    """Self-Supervised Predictive Learning for sound source localization.

    Args:
        config: the model configuration (ablations are its switches).
        visual_encoder: optional module ``B x 3 x H x W -> B x C x h x w`` replacing the configured one.
        audio_encoder: optional module ``B x 1 x 96 x 64 -> B x D`` replacing the configured one.

    The constructor builds randomly initialised encoders and does no I/O; pretrained weights are loaded
    by :func:`sspl.create_model` / :func:`sspl.load` (or :meth:`from_official_checkpoint`).
    """

    def __init__(
        self,
        config: SSPLConfig | None = None,
        *,
        visual_encoder: nn.Module | None = None,
        audio_encoder: nn.Module | None = None,
    ) -> None:
        super().__init__()
        cfg = config or SSPLConfig()
        self.config = cfg
        c = cfg.visual_channels
        self.visual_encoder = visual_encoder or build_visual_encoder(cfg.visual_encoder, c)
        self.audio_encoder = audio_encoder or build_audio_encoder(cfg.audio_encoder, cfg.audio_dim)
        self.audio_transform = AudioTransform(cfg.audio_dim, c, cfg.transform_hidden)
        self.pcm = (
            PredictiveCodingModule(c, cfg.audio_dim, cfg.pcm_channels or c, cfg.cycles) if cfg.pcm else None
        )
        self.attention = AttentionModule(cfg.scaling, cfg.fusion)
        self.head = SimSiamHead(
            AttentionModule.output_dim(c, cfg.fusion), cfg.proj_dim, cfg.pred_hidden, cfg.stop_grad
        )
        if not cfg.train_visual:
            freeze(self.visual_encoder)
        if not cfg.train_audio:
            freeze(self.audio_encoder)

    # ----------------------------------------------------------------------------------------------
    # modes
    # ----------------------------------------------------------------------------------------------

    def train(self, mode: bool = True) -> SSPL:
        """Set training mode; frozen encoders always stay in eval mode (their norms keep statistics)."""
        super().train(mode)
        if not self.config.train_visual:
            self.visual_encoder.eval()
        if not self.config.train_audio:
            self.audio_encoder.eval()
        return self

    # ----------------------------------------------------------------------------------------------
    # the streams
    # ----------------------------------------------------------------------------------------------

    def encode_audio(self, spect: torch.Tensor) -> torch.Tensor:
        """Encode all log-mel patches of a batch in one call.

        Args:
            spect: ``B x P x 96 x 64`` or ``B x P x 1 x 96 x 64`` log-mel patches (P = 3 for a 3-s clip).

        Returns:
            ``B x P x D`` per-patch embeddings (what ``--cache-audio`` stores).
        """
        if spect.dim() == 5:
            if spect.shape[2] != 1:
                raise ValueError(f"spect must be B x P x 1 x 96 x 64, got {tuple(spect.shape)}")
            spect = spect.squeeze(2)
        if spect.dim() != 4:
            raise ValueError(
                f"spect must be B x P x 96 x 64 (or B x P x 1 x 96 x 64), got {tuple(spect.shape)}"
            )
        b, p = spect.shape[:2]
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.config.train_audio):
            emb = self.audio_encoder(spect.reshape(b * p, 1, *spect.shape[2:]))  # BP x D
        return emb.view(b, p, -1)

    def audio_features(self, patch_embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``B x P x D`` patch embeddings -> (PCM target ``B x D``, attention query ``B x C``).

        The target is the patch-averaged embedding, L2-normalised; the query is ``g`` applied to every
        patch and then averaged, both as in the official code.
        """
        target = F.normalize(patch_embeddings.mean(dim=1), p=2, dim=1)
        query = self.audio_transform(patch_embeddings).mean(dim=1)
        return target, query

    def encode_visual(self, frames: torch.Tensor) -> torch.Tensor:
        """``B x 3 x H x W`` normalised frames -> ``B x C x h x w`` feature map."""
        if frames.dim() != 4 or frames.shape[1] != 3:
            raise ValueError(f"frames must be B x 3 x H x W, got {tuple(frames.shape)}")
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.config.train_visual):
            return self.visual_encoder(frames)

    def view(self, visual_features: torch.Tensor, target: torch.Tensor, query: torch.Tensor) -> ViewOutput:
        """PCM (optional) and attention for one view."""
        refined = self.pcm(visual_features, target) if self.pcm is not None else None
        fav, sim, att = self.attention(refined if refined is not None else visual_features, query)
        return ViewOutput(visual_features, refined, sim, att, fav)

    def _audio(
        self, spect: torch.Tensor | None, audio_patch_embeddings: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if audio_patch_embeddings is None:
            if spect is None:
                raise ValueError("give spect (log-mel patches) or audio_patch_embeddings")
            audio_patch_embeddings = self.encode_audio(spect)
        return self.audio_features(audio_patch_embeddings)

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
        """SimSiam loss of a two-view forward pass in the current train/eval mode (scalar)."""
        first = visual_features[0] if visual_features is not None else view1
        if self.training and first is not None and first.shape[0] < 2:
            raise ValueError("training needs a batch of at least 2 (batch norm statistics); got 1")
        out = self(
            view1,
            view2,
            spect,
            audio_patch_embeddings=audio_patch_embeddings,
            visual_features=visual_features,
        )
        return simsiam_loss(out.p1, out.p2, out.z1, out.z2)

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
        """Load a model trained by the official SSPL code.

        Args:
            path: folder holding ``frame_best.pth``, ``sound_best.pth``, ``ssl_head_best.pth`` and, for
                SSPL w/ PCM, ``pcm_best.pth`` (keys with or without a ``module.`` prefix).
            config: base config for the non-inferred options; PCM on/off and the number of cycles are
                inferred from the files.

        Returns:
            The model in eval mode.
        """
        folder = Path(path)
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
        parts = {
            part: read_state_dict(folder / name)
            for part, name in OFFICIAL_FILES.items()
            if (folder / name).is_file()
        }
        has_pcm = "pcm" in parts
        cycles = (
            sum(1 for k in parts.get("pcm", {}) if k.startswith("BNError_step.") and k.endswith(".weight"))
            // 3
        )
        base = config or SSPLConfig()
        cfg = replace(
            base,
            pcm=has_pcm,
            cycles=cycles if has_pcm else base.cycles,
            visual_weights=None,
            audio_weights=None,
        )
        model = cls(cfg)
        try:
            state = official_to_state_dict(parts)
        except WeightsError as e:
            raise WeightsError(f"{folder}: {e}") from e
        own = model.state_dict()
        wrong = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
        if wrong:
            raise WeightsError(
                f"{folder}: checkpoint does not match the SSPL architecture (shape of {wrong[0]}: "
                f"{tuple(state[wrong[0]].shape)} in the file, {tuple(own[wrong[0]].shape)} in the model)"
            )
        result = model.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise WeightsError(
                f"{folder}: checkpoint does not match the SSPL architecture "
                f"(missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]})"
            )
        return model.eval()


def official_to_state_dict(parts: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Rename the official per-part state dicts to one :class:`SSPL` state dict.

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
