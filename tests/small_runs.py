"""A run directory holding a tiny random SSPL on the SynthAV small encoders, for tests of what loads a
checkpoint (the app, the SynthAV warning), and the command line that evaluates one on a SynthAV folder."""

from __future__ import annotations

from pathlib import Path

import torch

from sspl.config import Config, SSPLConfig
from sspl.engine.checkpoint import save_checkpoint
from sspl.models.methods import get_method


def save_small_run(folder: Path, visual_weights: str | None = None, audio_weights: str | None = None) -> Path:
    """``folder/checkpoints/best.pt`` of a seeded small_cnn SSPL whose config names these encoder weights
    (the files themselves are not needed); returns ``folder``."""
    config = Config(
        model=SSPLConfig(
            visual_encoder="small_cnn",
            audio_encoder="small_cnn",
            visual_channels=128,
            audio_dim=128,
            visual_weights=visual_weights,
            audio_weights=audio_weights,
        )
    )
    torch.manual_seed(0)
    model = get_method("sspl").build(config, pretrained=False).eval()
    save_checkpoint(folder / "checkpoints" / "best.pt", model=model, config=config, epoch=0, step=0)
    return folder


def evaluate_argv(checkpoint: Path, data: Path, out: Path, *extra: str) -> list[str]:
    """``sspl evaluate`` of ``checkpoint`` on the SynthAV folder ``data`` into ``out``, then ``extra``."""
    command = ["evaluate", "--checkpoint", str(checkpoint), "--data", str(data), "--benchmark", "synth"]
    return [*command, "--out", str(out), "--no-progress", *extra]
