"""A model trained on SynthAV, applied to a user's image or video, is warned about once: its maps on real
media look plausible and mean nothing. What it was trained on is read from the checkpoint's config (its
``small_cnn`` encoders start from the weights ``sspl synth-pretrain`` writes)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from small_runs import save_small_run
from sspl.cli import main
from sspl.data.video import write_synthetic_video
from sspl.engine.checkpoint import load_checkpoint, trained_on
from sspl.engine.loading import load, load_with_origin
from sspl.localize import localize_image, write_video_outputs

WARNING = (
    "this model was trained on SynthAV (synthetic scenes); its maps on real images and videos mean nothing"
)


def _run(folder: Path, visual_weights: str | None, audio_weights: str | None) -> Path:
    """A run directory holding a tiny small_cnn SSPL whose config names these encoder weights."""
    return save_small_run(folder, visual_weights, audio_weights)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    encoders = root / "synth_encoders"  # `sspl synth-pretrain --out` (the files themselves are not needed)
    return {
        "synth": _run(
            root / "synth", str(encoders / "visual_encoder.pt"), str(encoders / "audio_encoder.pt")
        ),
        "random": _run(root / "random", None, None),
        "own": _run(root / "own", str(root / "mine" / "visual.pt"), None),
    }


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("media")
    rng = np.random.default_rng(0)
    t = np.arange(int(1.5 * 22050)) / 22050
    sf.write(folder / "tone.wav", 0.3 * np.sin(2 * np.pi * 330 * t), 22050)
    Image.fromarray(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)).save(folder / "photo.png")
    return {
        "wav": folder / "tone.wav",
        "image": folder / "photo.png",
        "video": write_synthetic_video(folder / "clip.mp4", seconds=1.0, fps=5),
    }


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_the_checkpoint_tells_what_it_was_trained_on(runs):
    origins = {
        name: trained_on(load_checkpoint(run / "checkpoints" / "best.pt")) for name, run in runs.items()
    }
    assert origins == {"synth": "synth", "random": None, "own": None}
    assert load_with_origin(runs["synth"], device="cpu")[2] == "synth"
    assert len(load(runs["synth"], device="cpu")) == 2  # load's answer is unchanged


def test_a_synth_model_on_a_real_image_is_warned_about_once(runs, media, caplog):
    with caplog.at_level(logging.WARNING):
        localize_image(runs["synth"], None, media["image"], media["wav"], device="cpu")
    assert _warnings(caplog) == [f"{runs['synth']}: {WARNING}"]


@pytest.mark.parametrize("name", ["random", "own"])
def test_a_model_of_other_data_gives_no_warning(runs, media, caplog, name):
    with caplog.at_level(logging.WARNING):
        localize_image(runs[name], None, media["image"], media["wav"], device="cpu")
    assert _warnings(caplog) == []


def test_a_synth_model_on_a_video_is_warned_about_once(runs, media, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        write_video_outputs(
            runs["synth"], None, media["video"], tmp_path / "out", device="cpu", progress=False
        )
    assert _warnings(caplog) == [f"{runs['synth']}: {WARNING}"]


def test_cli_localize_warns_on_one_line(runs, media, tmp_path, capsys, caplog):
    argv = ["localize", "--checkpoint", str(runs["synth"]), "--out", str(tmp_path / "out"), "--no-progress"]
    with caplog.at_level(logging.WARNING):
        assert main([*argv, "--image", str(media["image"]), "--audio", str(media["wav"])]) == 0
    assert _warnings(caplog) == [f"{runs['synth']}: {WARNING}"]
