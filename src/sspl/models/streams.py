"""The audio and visual streams every method is built on.

A visual encoder (``B x 3 x H x W -> B x C x h x w``) and an audio encoder (``B x 1 x 96 x 64 -> B x D`` per
log-mel patch, or ``B x 1 x F x T -> B x D`` per whole spectrogram for the ResNet-18 of the released models),
frozen unless the config trains them, and the audio transform ``g`` (FC-ReLU-FC, paper
Sec. 3.2) that maps each patch's embedding into the visual feature space, where it queries the visual map.
SSPL (:mod:`sspl.models.sspl`) and the contrastive baselines (:mod:`sspl.models.baselines`) subclass
:class:`AudioVisualStreams` and add their own parts (PCM, attention and SimSiam head; projection), so the
encoders, their freezing, the input checks and the query are written once. Any encoder module can be passed
in (as SimSiam takes its backbone); by default the config's encoders are built, randomly initialised:
:mod:`sspl.models.factory` loads pretrained weights.

The attribute names ``visual_encoder``, ``audio_encoder`` and ``audio_transform`` are the state-dict
prefixes of saved checkpoints (and of the official files' rename table): they do not change.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import SSPLConfig
from .encoders import build_audio_encoder, build_visual_encoder, freeze
from .heads import AudioTransform

__all__ = ["ENCODERS", "AudioVisualStreams"]

#: The encoder attributes of every model, visual first (the order of optimiser groups and weight loading).
ENCODERS = ("visual_encoder", "audio_encoder")


class AudioVisualStreams(nn.Module):
    """Encoders (frozen unless configured) and ``g``: the part of the network every method shares.

    Args:
        config: the ``model:`` section (encoders, their sizes, ``train_visual`` / ``train_audio``,
            ``transform_hidden``); the fields of other parts (PCM, head) are the subclass's.
        visual_encoder: a module ``B x 3 x H x W -> B x C x h x w`` (``C = config.visual_channels``)
            replacing the configured one.
        audio_encoder: a module ``B x 1 x 96 x 64 -> B x D`` (``D = config.audio_dim``) replacing the
            configured one; one with ``takes_spectrogram = True`` maps a whole ``B x 1 x F x T``
            spectrogram instead (the ResNet-18 of the released models, :mod:`sspl.models.resnet`).
        audio_transform: build ``g``; methods that project the audio their own way (EZ-VSL) leave it out,
            and have no ``audio_transform.*`` keys.

    The constructor does no I/O; :func:`sspl.models.factory.load_encoder_weights` loads weights.
    """

    def __init__(
        self,
        config: SSPLConfig,
        *,
        visual_encoder: nn.Module | None = None,
        audio_encoder: nn.Module | None = None,
        audio_transform: bool = True,
    ) -> None:
        super().__init__()
        self.config = config
        c = config.visual_channels
        if visual_encoder is None:
            visual_encoder = build_visual_encoder(config.visual_encoder, c)
        if audio_encoder is None:
            audio_encoder = build_audio_encoder(config.audio_encoder, config.audio_dim)
        self.visual_encoder = visual_encoder
        self.audio_encoder = audio_encoder
        if audio_transform:
            self.audio_transform = AudioTransform(config.audio_dim, c, config.transform_hidden)
        if not config.train_visual:
            freeze(self.visual_encoder)
        if not config.train_audio:
            freeze(self.audio_encoder)

    def train(self, mode: bool = True) -> AudioVisualStreams:
        """Set training mode; frozen encoders always stay in eval mode (their norms keep statistics)."""
        super().train(mode)
        if not self.config.train_visual:
            self.visual_encoder.eval()
        if not self.config.train_audio:
            self.audio_encoder.eval()
        return self

    def trained_encoder_parameters(self) -> dict[str, list[nn.Parameter]]:
        """The parameters of the encoders the config trains, by attribute name (for optimiser groups)."""
        out = {}
        for name in ENCODERS:
            params = [p for p in getattr(self, name).parameters() if p.requires_grad]
            if params:
                out[name] = params
        return out

    def encode_visual(self, frames: torch.Tensor) -> torch.Tensor:
        """``B x 3 x H x W`` normalised frames -> ``B x C x h x w`` feature map."""
        if frames.dim() != 4 or frames.shape[1] != 3:
            raise ValueError(f"frames must be B x 3 x H x W, got {tuple(frames.shape)}")
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.config.train_visual):
            return self.visual_encoder(frames)

    @property
    def takes_spectrogram(self) -> bool:
        """Whether the audio encoder reads a whole ``B x 1 x F x T`` spectrogram (not log-mel patches)."""
        return bool(getattr(self.audio_encoder, "takes_spectrogram", False))

    def encode_audio(self, spect: torch.Tensor) -> torch.Tensor:
        """Encode all log-mel patches of a batch in one call.

        Args:
            spect: ``B x P x 96 x 64`` or ``B x P x 1 x 96 x 64`` log-mel patches (P = 3 for a 3-s clip);
                for an encoder that :attr:`takes_spectrogram`, ``B x 1 x F x T`` spectrograms.

        Returns:
            ``B x P x D`` per-patch embeddings (what ``--cache-audio`` stores); ``B x 1 x D`` for a
            whole-spectrogram encoder (the spectrogram is the clip's one "patch").
        """
        if self.takes_spectrogram:
            if spect.dim() != 4 or spect.shape[1] != 1:
                raise ValueError(f"spect must be B x 1 x F x T spectrograms, got {tuple(spect.shape)}")
            with torch.set_grad_enabled(torch.is_grad_enabled() and self.config.train_audio):
                return self.audio_encoder(spect)[:, None]  # B x 1 x D
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

    def audio_query(self, patch_embeddings: torch.Tensor) -> torch.Tensor:
        """``B x P x D`` patch embeddings -> ``B x C`` query: ``g`` of every patch, then averaged (as the
        official code)."""
        return self.audio_transform(patch_embeddings).mean(dim=1)

    def audio(
        self, spect: torch.Tensor | None, audio_patch_embeddings: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The clip's audio embedding ``B x D`` (mean over patches) and its query ``B x C``.

        Args:
            spect: ``B x P x 96 x 64`` log-mel patches, or ``None`` with
            audio_patch_embeddings: ``B x P x D`` cached embeddings of a frozen audio encoder.
        """
        if audio_patch_embeddings is None:
            if spect is None:
                raise ValueError("give spect (log-mel patches) or audio_patch_embeddings")
            audio_patch_embeddings = self.encode_audio(spect)
        return audio_patch_embeddings.mean(dim=1), self.audio_query(audio_patch_embeddings)
