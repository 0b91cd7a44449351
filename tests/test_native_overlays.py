"""``sspl evaluate --save-overlays`` draws a released model's map on the frame the model read: the source-size
frame of ``sspl prepare --native-frames`` (non-square), the map and boxes stretched over the whole of it as
the ``resize`` transform squeezed it; SSPL's overlay stays on the 256 x 256 frame."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image
from torch import nn

from sspl import viz
from sspl.cli import main
from sspl.data.prepare import prepare
from sspl.data.preprocess import Preprocess
from sspl.data.projection import evaluation_picture
from sspl.data.transforms import eval_crop_to_original
from sspl.engine import evaluate as evaluate_module
from sspl.metrics import BENCHMARKS, gt_map_from_boxes, normalize_map, threshold_map, upsample_map
from sspl.models.released import RELEASED_FORMATS, released_config

WIDTH, HEIGHT = 320, 160  # the source frame: twice as wide as tall
BOX = [0.5, 0.25, 0.75, 0.75]  # normalised: x 160-240, y 40-120 on the source frame


class CornerLocalizer(nn.Module):
    """A 14 x 14 map hot on its top-left cells whatever it sees and hears."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))  # compute_maps reads the model's device from it

    def localize(self, frames: torch.Tensor, spect: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(len(frames), 14, 14)
        out[:, 1:5, 1:4] = 1.0
        return out


@pytest.fixture(scope="module")
def native(tmp_path_factory) -> Path:
    """A folder prepared with --native-frames from one 320 x 160 PNG of fine noise (which the 256 x 256
    frame cannot keep) and its boxes file."""
    src = tmp_path_factory.mktemp("src")
    noise = np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    Image.fromarray(noise).save(src / "wide.png")
    rate = 16000
    sf.write(src / "wide.wav", 0.3 * np.sin(2 * np.pi * 440 * np.arange(4 * rate) / rate), rate)
    out = tmp_path_factory.mktemp("native")
    assert prepare(src, out, workers=1, progress=False, layout="pairs", native_frames=True).done == 1
    (out / "boxes.json").write_text(json.dumps([{"file": "wide", "bbox": [BOX]}]))
    return out


def _overlay(native: Path, out: Path, preprocess: Preprocess, monkeypatch) -> np.ndarray:
    monkeypatch.setattr(evaluate_module, "load", lambda *a, **k: (CornerLocalizer(), preprocess))
    argv = ["evaluate", "--checkpoint", "stub", "--data", str(native), "--benchmark", "vggss"]
    argv += ["--annotations", str(native / "boxes.json"), "--split", "all", "--out", str(out)]
    assert main([*argv, "--no-progress", "--save-overlays", "1", "--no-colorbar"]) == 0
    return np.asarray(Image.open(out / "overlays" / "wide.png").convert("RGB"))


def _stretched(grid: np.ndarray, height: int, width: int) -> np.ndarray:
    """A 224 x 224 grid over the whole frame, each picture pixel taking the cell under its centre."""
    rows = np.floor((np.arange(height) + 0.5) * 224 / height).astype(int)
    cols = np.floor((np.arange(width) + 0.5) * 224 / width).astype(int)
    return grid[np.ix_(rows, cols)]


def test_a_released_model_s_overlay_is_drawn_on_the_native_frame(native, tmp_path, monkeypatch):
    preprocess = Preprocess.from_config(released_config(RELEASED_FORMATS["ezvsl"]))
    assert preprocess.test_transform == "resize"
    overlay = _overlay(native, tmp_path / "eval", preprocess, monkeypatch)
    # the whole factor giving each scored pixel 2 pixels a side: 3 (160 * 3 / 224 >= 2 > 160 * 2 / 224)
    header, k = 16 + 4 * viz.EVALUATION_SCALE, 3
    assert overlay.shape == (header + HEIGHT * k, WIDTH * k, 3)
    picture = overlay[header:].astype(np.float64)
    # the ground-truth box where it lies on the source frame: x 160-240, y 40-120, three times larger
    green = (overlay[header:] == viz.BOX_COLOR).all(axis=2)
    ys, xs = np.nonzero(green)
    assert (ys.min(), ys.max() + 1, xs.min(), xs.max() + 1) == (40 * k, 120 * k, 160 * k, 240 * k)
    box = gt_map_from_boxes([BOX], rule="union", box_format="normalized") > 0
    np.testing.assert_array_equal(green, viz._outline(_stretched(box, HEIGHT * k, WIDTH * k)))
    # the evaluated mask stretched over the whole frame, as the resize transform squeezed the frame
    raw = CornerLocalizer().localize(torch.zeros(1), None)[0].numpy()
    protocol = BENCHMARKS["vggss"]  # a model without its own threshold policy: fixed
    heat = normalize_map(upsample_map(raw))
    mask = threshold_map(heat, protocol.threshold, protocol.threshold_value)
    white = (overlay[header:] == viz.MASK_COLOR).all(axis=2)
    mask_outline = viz._outline(_stretched(mask, HEIGHT * k, WIDTH * k))
    np.testing.assert_array_equal(white, mask_outline & ~green)
    # where the map is coldest, the source frame's own pixels under the colour map's floor weight
    cold = (_stretched(heat, HEIGHT * k, WIDTH * k) == 0) & ~green & ~mask_outline
    source = np.asarray(Image.open(native / "frames_native" / "wide.png").convert("RGB"), np.float64)
    source = np.repeat(np.repeat(source, k, axis=0), k, axis=1)
    weight = np.round(255 * viz.DEFAULT_ALPHA * viz.ALPHA_FLOOR) / 255
    floor = viz.colorize(np.zeros((1, 1)))[0, 0].astype(np.float64)
    assert cold.mean() > 0.5
    assert np.abs(picture - (source * (1 - weight) + floor * weight))[cold].max() <= 1.0
    # not the 256 x 256 frame stretched to the same size: its noise is another
    squeezed = Image.open(native / "frames" / "wide.jpg").resize((WIDTH * k, HEIGHT * k), Image.BICUBIC)
    off = np.abs(picture - np.asarray(squeezed, np.float64) * (1 - weight) - floor * weight)[cold]
    assert off.mean() > 40


def test_sspl_s_overlay_stays_on_the_256_frame(native, tmp_path, monkeypatch):
    overlay = _overlay(native, tmp_path / "eval", Preprocess(), monkeypatch)
    raw = CornerLocalizer().localize(torch.zeros(1), None)[0].numpy()
    frame = Image.open(native / "frames" / "wide.jpg")
    expect = viz.evaluation_overlay(
        frame, raw, [BOX], protocol=BENCHMARKS["vggss"], title="wide", colorbar=False
    )
    assert overlay.shape == (24 + 448, 448, 3)
    np.testing.assert_array_equal(overlay, np.asarray(expect))


def test_a_cropped_input_leaves_the_frame_outside_it_without_cells():
    # the centre crop of a 320 x 160 frame: its middle 160 columns; each scored pixel 1 picture pixel a side
    mapping = eval_crop_to_original(WIDTH, HEIGHT, mode="crop")
    frame = Image.new("RGB", (WIDTH, HEIGHT), (9, 9, 9))
    picture, rows, cols = evaluation_picture(frame, 224, 1, mapping)
    assert picture.size == (2 * WIDTH, 2 * HEIGHT)  # 160 / 224 < 1: enlarged twice
    assert (rows >= 0).all() and rows[0] == 0 and rows[-1] == 223
    inside = np.flatnonzero(cols >= 0)
    assert (inside[0], inside[-1] + 1) == (160, 480) and cols[160] == 0 and cols[479] == 223
