"""The README's Python snippet runs as written (on a tiny random checkpoint and generated media): every
name it calls exists with the arguments it passes, under torch.inference_mode(), and it writes the files
its comments name."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from PIL import Image

from sspl.config import Config
from sspl.data.video import write_synthetic_video
from sspl.engine.checkpoint import save_checkpoint
from sspl.models.methods import get_method

ROOT = Path(__file__).resolve().parents[1]


def _snippet() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Localize sounds in your own media", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    return code


def _inputs(folder: Path, config: Config) -> None:
    """What the snippet names: a run directory, frame.jpg, sound.wav and clip.mp4."""
    torch.manual_seed(0)
    model = get_method("sspl").build(config, pretrained=False).eval()
    run = folder / "runs" / "flickr10k_pcm"
    save_checkpoint(run / "checkpoints" / "best.pt", model=model, config=config, epoch=0, step=0)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)).save(folder / "frame.jpg")
    t = np.arange(2 * 22050) / 22050
    sf.write(folder / "sound.wav", 0.3 * np.sin(2 * np.pi * 330 * t), 22050)
    write_synthetic_video(folder / "clip.mp4", seconds=1.0, fps=10)


def test_the_model_calls_run_under_inference_mode():
    tree = ast.parse(_snippet())
    (block,) = [node for node in tree.body if isinstance(node, ast.With)]
    assert ast.unparse(block.items[0].context_expr) == "torch.inference_mode()"
    inside = {ast.unparse(n.func) for n in ast.walk(block) if isinstance(n, ast.Call)}
    assert {"sspl.localize_image", "sspl.localize_video", "model.localize", "write_video_outputs"} <= inside


def test_the_snippet_runs_and_writes_the_overlay_video(tmp_path, monkeypatch, small_cnn_config):
    _inputs(tmp_path, small_cnn_config)
    monkeypatch.chdir(tmp_path)
    names: dict = {}
    exec(compile(_snippet(), "README.md", "exec"), names)  # the README's own code
    assert names["found"].raw_map.shape == (14, 14)
    assert names["maps"].shape == (1, 14, 14) and names["maps"].is_inference()
    assert names["video"].maps.shape[1:] == (14, 14)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "clip_contact.png",
        "clip_heatmap.mp4",
        "clip_maps.npy",
        "clip_timestamps.npy",
        "frame_map.npy",
        "frame_overlay.png",
    ]
    assert names["paths"]["heatmap_video"] == Path("out") / "clip_heatmap.mp4"
    assert (out / "clip_heatmap.mp4").stat().st_size > 0
