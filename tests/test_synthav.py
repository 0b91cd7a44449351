"""SynthAV diagnostics (map placement; the audio swap is in test_swap.py), checked with hand-built
localizers whose behaviour is known (one sits on the sounding object, one returns a constant map)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sspl.data.datasets import load_samples
from sspl.data.synth import generate_synth, synth_config
from sspl.engine.synthav import map_placement
from sspl.errors import DataError
from synth_localizers import ConstantLocalizer, LookupLocalizer


@pytest.fixture(scope="module")
def scenes_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthav") / "set"
    generate_synth(
        out, synth_config("distractors", num=60, seed=5, pretrain_num=0), workers=1, progress=False
    )
    return out


def _pixels(box) -> np.ndarray:
    """224 x 224 mask of a normalised box by the VGG-SS rule int(224 * v)."""
    x1, y1, x2, y2 = (int(224 * v) for v in box)
    mask = np.zeros((224, 224), dtype=bool)
    mask[y1:y2, x1:x2] = True
    return mask


def test_map_placement_of_a_whole_frame_mask_is_the_share_of_each_region(scenes_dir):
    scenes = json.loads((scenes_dir / "scenes.json").read_text())
    samples = load_samples(scenes_dir, splits=["test"])
    placement = map_placement(ConstantLocalizer(), scenes_dir, "test")
    sounding, silent = [], []
    for s in samples:
        scene = scenes[s.id]
        own = _pixels(scene["objects"][scene["sounding"]]["bbox"])
        others = np.zeros_like(own)
        for k, o in enumerate(scene["objects"]):
            if k != scene["sounding"]:
                others |= _pixels(o["bbox"])
        sounding.append(own.mean())
        silent.append((others & ~own).mean())
    assert placement["scenes"] == len(samples)
    assert placement["mask_area"] == 1.0
    assert placement["on_sounding"] == pytest.approx(np.mean(sounding), abs=1e-9)
    assert placement["on_silent"] == pytest.approx(np.mean(silent), abs=1e-9)
    assert placement["on_background"] == pytest.approx(1 - np.mean(sounding) - np.mean(silent), abs=1e-9)
    by_category = placement["by_category"]
    assert sum(c["scenes"] for c in by_category.values()) == len(samples)
    assert set(by_category) == {
        scenes[s.id]["objects"][scenes[s.id]["sounding"]]["category"] for s in samples
    }


def test_map_placement_of_a_localizer_on_the_sounding_box(scenes_dir):
    placement = map_placement(LookupLocalizer(scenes_dir, follow=False), scenes_dir, "test")
    assert placement["on_sounding"] > 0.8  # the 14 x 14 cell block, upsampled, spills a little past the box
    assert placement["on_silent"] < 0.05
    assert placement["mask_area"] < 0.15
    for group in placement["by_category"].values():
        assert group["on_sounding"] + group["on_silent"] + group["on_background"] == pytest.approx(1.0)


def test_map_placement_needs_scenes(scenes_dir):
    with pytest.raises(DataError, match="no nosuchsplit scene"):
        map_placement(ConstantLocalizer(), scenes_dir, "nosuchsplit")
