"""The predictive coding module (PCM; paper Sec. 3.3, supplement A-B.1, Algorithm S1).

Three representation layers sit between the audio feature (layer 0) and the visual feature map (which
is the prediction of the top layer). Spatial sizes for a 14 x 14 visual map::

    layer:   0 (audio, D)   r[0] (3 x 3)   r[1] (7 x 7)   r[2] (14 x 14, C)
    top-down prediction  <- conv1x1+GELU+avgpool  <- conv3x3+maxpool  <- conv3x3+maxpool
    bottom-up error      -> convT1x1              -> convT3x3/2       -> upsample x2 + convT3x3

One *step* is a feedback (top-down) sweep followed by a feedforward (bottom-up) sweep. The initial
step builds the representations; each of the ``cycles`` recurrent cycles then updates them with
learned per-channel rates ``b`` (feedback, Eq. S11) and ``a`` (feedforward, Eq. S13), both passed
through ReLU. Every layer has its own batch norm in every step (the audio prediction has none). A 1 x 1
transposed convolution maps the top representation of the last step to the refined visual feature.
The paper's ``T`` counts all steps: ``T = cycles + 1`` (default 4 cycles, T = 5).

Parameter names are ours; :func:`official_pcm_key` maps the official ``PCNet`` state-dict keys.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PredictiveCodingModule", "official_pcm_key"]


class _TopDown(nn.Module):
    """Prediction of a lower layer: 3x3 convolution (no bias), then 2x2 max pooling."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.conv(x))


class _UpsampleError(nn.Module):
    """Error passed to a higher layer: bilinear upsampling (align_corners), then a 3x3 transposed conv."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose2d(
            in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False
        )

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return self.conv(F.interpolate(x, size=size, mode="bilinear", align_corners=True))


class PredictiveCodingModule(nn.Module):
    """PCM: refine a visual feature map under the audio prior.

    Args:
        visual_channels: channels ``C`` of the visual map (512 for VGG16); also the output channels.
        audio_dim: size ``D`` of the audio feature it predicts (128 for VGGish).
        hidden_channels: channels of the two lower representation layers (512 in the paper).
        cycles: recurrent cycles after the initial step (the official ``cycs_in``; paper ``T - 1``).
    """

    def __init__(
        self, visual_channels: int = 512, audio_dim: int = 128, hidden_channels: int = 512, cycles: int = 4
    ) -> None:
        super().__init__()
        if cycles < 0:
            raise ValueError(f"cycles must be >= 0, got {cycles}")
        c, d, h = visual_channels, audio_dim, hidden_channels
        self.cycles = cycles
        self.layer_channels = (h, h, c)  # r[0], r[1], r[2]

        # Feedback (top-down) predictions: top_down[j] predicts r[j] from r[j + 1].
        self.predict_audio = nn.Conv2d(h, d, kernel_size=1)
        self.top_down = nn.ModuleList([_TopDown(h, h), _TopDown(c, h)])
        # Feedforward (bottom-up) errors: bottom_up[j] carries the error of r[j] into r[j + 1].
        self.error_from_audio = nn.ConvTranspose2d(d, h, kernel_size=1, bias=False)
        self.bottom_up = nn.ModuleList(
            [nn.ConvTranspose2d(h, h, kernel_size=3, stride=2, bias=False), _UpsampleError(h, c)]
        )
        self.output = nn.ConvTranspose2d(c, c, kernel_size=1)

        # Per-channel rates (Eqs. S11, S13), used through ReLU so they stay non-negative.
        self.feedback_rate = nn.ParameterList(
            [nn.Parameter(torch.full((1, n, 1, 1), 0.5)) for n in (h, h, c)]
        )
        self.feedforward_rate = nn.ParameterList(
            [nn.Parameter(torch.full((1, n, 1, 1), 1.0)) for n in (h, h, c)]
        )

        # Batch norms: the initial step normalises r[0], r[1] (top-down) and r[0..2] (bottom-up); each
        # cycle t has its own, indexed [2t + j] (top-down, j = 0, 1) and [3t + j] (bottom-up, j = 0..2).
        self.bn_init_top_down = nn.ModuleList([nn.BatchNorm2d(n) for n in (h, h)])
        self.bn_init_bottom_up = nn.ModuleList([nn.BatchNorm2d(n) for n in (h, h, c)])
        self.bn_top_down = nn.ModuleList([nn.BatchNorm2d(n) for _ in range(cycles) for n in (h, h)])
        self.bn_bottom_up = nn.ModuleList([nn.BatchNorm2d(n) for _ in range(cycles) for n in (h, h, c)])

    def _predict_audio(self, r0: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.predict_audio(r0)).mean(dim=(2, 3))  # B x D

    def _bottom_up(
        self,
        base: list[torch.Tensor],
        pred: list[torch.Tensor],
        audio: torch.Tensor,
        audio_pred: torch.Tensor,
        norms: list[nn.Module],
    ) -> list[torch.Tensor]:
        """Feedforward sweep (Eqs. S12-S13): ``r[j] = GELU(BN(base[j] + relu(a_j) * W^T e[j-1]))``."""
        err = (audio - audio_pred)[:, :, None, None].expand(-1, -1, *base[0].shape[-2:])  # B x D x 3 x 3
        out = [F.gelu(norms[0](base[0] + F.relu(self.feedforward_rate[0]) * self.error_from_audio(err)))]
        for j in (1, 2):
            err = out[j - 1] - pred[j - 1]
            if j == 1:
                carried = self.bottom_up[0](err, output_size=base[1].shape[-2:])
            else:
                carried = self.bottom_up[1](err, size=tuple(base[2].shape[-2:]))
            out.append(F.gelu(norms[j](base[j] + F.relu(self.feedforward_rate[j]) * carried)))
        return out

    def forward(
        self,
        visual: torch.Tensor,
        audio: torch.Tensor,
        *,
        cycles: int | None = None,
        return_steps: bool = False,
    ) -> torch.Tensor | list[torch.Tensor]:
        """
        Args:
            visual: ``B x C x H x W`` visual feature map (the top-layer prediction, ``p_L = f_v``).
            audio: ``B x D`` audio feature (the official code feeds the L2-normalised VGGish embedding).
            cycles: run fewer recurrent cycles than built (paper Fig. 6); default all.
            return_steps: also return the refined feature after every step.

        Returns:
            ``B x C x H x W`` refined feature, or the list of ``cycles + 1`` refined features (one per
            step, the last one being the output) when ``return_steps``.
        """
        cycles = self.cycles if cycles is None else cycles
        if not 0 <= cycles <= self.cycles:
            raise ValueError(f"cycles must be in [0, {self.cycles}], got {cycles}")
        if visual.shape[1] != self.layer_channels[2]:
            raise ValueError(f"PCM built for {self.layer_channels[2]} visual channels, got {visual.shape[1]}")

        # Initial step, feedback: r[1] and r[0] are predicted from the layer above.
        r1 = F.gelu(self.bn_init_top_down[1](self.top_down[1](visual)))
        r0 = F.gelu(self.bn_init_top_down[0](self.top_down[0](r1)))
        pred = [r0, r1, visual]
        if min(r0.shape[-2:]) < 1:
            raise ValueError(
                f"visual map {tuple(visual.shape[-2:])} is too small for the PCM (needs >= 4 x 4)"
            )
        # Initial step, feedforward: the prediction errors correct each layer from the bottom up.
        rep = self._bottom_up(pred, pred, audio, self._predict_audio(r0), list(self.bn_init_bottom_up))
        steps = [self.output(rep[2])] if return_steps else []

        for t in range(cycles):
            # Feedback (Eqs. S10-S11): r[j] <- GELU(BN((1 - b_j) r[j] + b_j p[j])), top layer without BN.
            b = F.relu(self.feedback_rate[2])
            rep[2] = F.gelu((1 - b) * rep[2] + b * visual)
            for j in (1, 0):
                pred[j] = self.top_down[j](rep[j + 1])
                b = F.relu(self.feedback_rate[j])
                rep[j] = F.gelu(self.bn_top_down[2 * t + j]((1 - b) * rep[j] + b * pred[j]))
            # Feedforward (Eqs. S12-S13).
            norms = [self.bn_bottom_up[3 * t + j] for j in range(3)]
            rep = self._bottom_up(rep, pred, audio, self._predict_audio(rep[0]), norms)
            if return_steps:
                steps.append(self.output(rep[2]))

        return steps if return_steps else self.output(rep[2])


_OFFICIAL_PCM_RENAMES = (
    (r"^PredProcess\.0\.", "predict_audio."),
    (r"^PredProcess\.([12])\.conv2d\.", lambda m: f"top_down.{int(m[1]) - 1}.conv."),
    (r"^ErrorProcess\.0\.", "error_from_audio."),
    (r"^ErrorProcess\.1\.", "bottom_up.0."),
    (r"^ErrorProcess\.2\.convtrans2d\.", "bottom_up.1.conv."),
    (r"^ErrorProcess\.3\.", "output."),
    (r"^b0\.", "feedback_rate."),
    (r"^a0\.", "feedforward_rate."),
    (r"^BNPred\.", "bn_init_top_down."),
    (r"^BNError\.", "bn_init_bottom_up."),
    (r"^BNPred_step\.", "bn_top_down."),
    (r"^BNError_step\.", "bn_bottom_up."),
)


def official_pcm_key(key: str) -> str:
    """Map a key of the official ``PCNet`` state dict to :class:`PredictiveCodingModule`'s name."""
    for pattern, repl in _OFFICIAL_PCM_RENAMES:
        new, n = re.subn(pattern, repl, key)
        if n:
            return new
    raise KeyError(f"unexpected key in an official PCM checkpoint: {key!r}")
