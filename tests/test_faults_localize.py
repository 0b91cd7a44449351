"""Fault injection for `sspl localize` (issue 20, fault 7): a killed run's temporary files are removed by the
next run into the same folder, while a live run's and the user's own files are left alone.

The model is the tiny small_cnn SSPL with random weights: these tests check which files exist, not maps.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from sspl.api import Preprocess
from sspl.config import Config, SSPLConfig
from sspl.data.video import write_synthetic_video
from sspl.engine.checkpoint import save_checkpoint
from sspl.localize import localize_image, write_image_outputs
from sspl.models.methods import get_method
from sspl.outputs import remove_stale_temps

VIDEO_OUTPUTS = ["clip_contact.png", "clip_heatmap.mp4", "clip_maps.npy", "clip_timestamps.npy"]
#: a user's hidden files beside the outputs, two of them named like (other) temporary files
USER_FILES = [".notes.txt", ".clip_heatmap.mp4.backup", ".other_heatmap.mp4.0123abcd.part"]


@pytest.fixture(scope="module")
def model():
    config = Config(
        model=SSPLConfig(
            visual_encoder="small_cnn",
            audio_encoder="small_cnn",
            visual_channels=64,
            audio_dim=64,
            visual_weights=None,
            audio_weights=None,
        )
    )
    torch.manual_seed(0)
    return config, get_method("sspl").build(config, pretrained=False).eval()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, model) -> Path:
    config, net = model
    run = tmp_path_factory.mktemp("run")
    save_checkpoint(run / "checkpoints" / "best.pt", model=net, config=config, epoch=0, step=0)
    return run


@pytest.fixture(scope="module")
def image_result(tmp_path_factory, model):
    folder = tmp_path_factory.mktemp("media")
    rng = np.random.default_rng(0)
    wav = folder / "tone.wav"
    sf.write(wav, 0.3 * np.sin(2 * np.pi * 330 * np.arange(16000) / 16000), 16000)
    image = folder / "frame.png"
    Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(image)
    return localize_image(model[1], Preprocess(), image, wav)


def _user_files(folder: Path) -> dict[str, bytes]:
    for name in USER_FILES:
        (folder / name).write_bytes(f"the user's {name}".encode())
    return {name: (folder / name).read_bytes() for name in USER_FILES}


def _temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part") and p.name not in USER_FILES)


def _localize(run_dir: Path, video: Path, out: Path) -> list[str]:
    args = ["--checkpoint", str(run_dir), "--video", str(video), "--out", str(out), "--overwrite"]
    return [sys.executable, "-m", "sspl.cli", "localize", *args, "--no-progress", "--device", "cpu"]


def _kill_while_writing(command: list[str], out: Path, timeout: float = 120.0) -> list[str]:
    """Start ``command``, SIGKILL it while its heat-map video is being written; the temporary files left.

    While it runs, its temporary files are not taken for stale ones."""
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and child.poll() is None:
            parts = list(out.glob(".clip_heatmap.mp4.*.part")) if out.is_dir() else []
            if parts and parts[0].stat().st_size > 0:
                break
            time.sleep(0.005)
        assert child.poll() is None, f"ended before it was killed: {child.stderr.read().decode()}"
        # what another run of these outputs does first: the live run's files are held, so they stay
        assert remove_stale_temps(out, VIDEO_OUTPUTS) == [] and all(p.exists() for p in parts)
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(30)
        child.stderr.close()
    return _temps(out)


@pytest.mark.slow  # two CLI runs: about 20-40 s on a loaded 2-core machine
def test_a_killed_localize_leaves_temporary_files_that_the_next_run_removes(run_dir, tmp_path):
    video = write_synthetic_video(tmp_path / "clip.mp4", seconds=8.0, fps=25)
    out = tmp_path / "out"
    out.mkdir()
    users = _user_files(out)
    command = _localize(run_dir, video, out)
    left = _kill_while_writing(command, out)
    assert any(name.startswith(".clip_heatmap.mp4.") for name in left), left  # what a killed run leaves
    assert not any((out / name).exists() for name in VIDEO_OUTPUTS)  # and no output looking finished
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert _temps(out) == []
    assert sorted(p.name for p in out.iterdir()) == sorted(VIDEO_OUTPUTS + USER_FILES)
    assert {name: (out / name).read_bytes() for name in USER_FILES} == users
    maps, times = np.load(out / "clip_maps.npy"), np.load(out / "clip_timestamps.npy")
    assert maps.shape == (80, 14, 14) and times.shape == (80,)  # 8 s at the default 10 frames/s
    assert (out / "clip_heatmap.mp4").stat().st_size > 0


def test_stale_temporary_files_of_this_run_s_outputs_go_those_of_a_live_run_stay(image_result, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    users = _user_files(out)
    stale = [out / ".frame_overlay.png.5f3a9c0e12ab.part", out / ".frame_map.npy.77aa00bb11cc.part"]
    for path in stale:
        path.write_bytes(b"left by a killed run")
    # another run writing the same outputs into this folder right now holds its temporary file
    live = out / ".frame_map.npy.0a1b2c3d4e5f.part"
    fd = os.open(live, os.O_WRONLY | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, b"being written")
        write_image_outputs(image_result, out, "frame", overwrite=True)
        assert live.read_bytes() == b"being written"
    finally:
        os.close(fd)
    assert not any(path.exists() for path in stale)
    expected = ["frame_map.npy", "frame_overlay.png", live.name, *USER_FILES]
    assert sorted(p.name for p in out.iterdir()) == sorted(expected)
    assert {name: (out / name).read_bytes() for name in USER_FILES} == users
    np.testing.assert_array_equal(np.load(out / "frame_map.npy"), image_result.raw_map.astype(np.float32))


def test_a_run_that_refuses_existing_outputs_removes_nothing(image_result, tmp_path):
    out = tmp_path / "out"
    write_image_outputs(image_result, out, "frame")
    stale = out / ".frame_map.npy.5f3a9c0e12ab.part"
    stale.write_bytes(b"left by a killed run")
    with pytest.raises(FileExistsError, match=r"frame_overlay\.png: already exists"):
        write_image_outputs(image_result, out, "frame")
    assert stale.read_bytes() == b"left by a killed run"  # refused: nothing touched
