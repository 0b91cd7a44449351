"""SynthAV diagnostics (audio swap, map placement), checked with hand-built localizers whose behaviour is
known (one follows the sound, one ignores it, one returns a constant map)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from sspl.data.datasets import PreparedDataset, load_samples
from sspl.data.synth import generate_synth, synth_config
from sspl.engine.synthav import audio_swap_result, map_placement
from sspl.errors import DataError


@pytest.fixture(scope="module")
def scenes_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthav") / "set"
    generate_synth(
        out, synth_config("distractors", num=60, seed=5, pretrain_num=0), workers=1, progress=False
    )
    return out


def _box_map(box) -> torch.Tensor:
    """14 x 14 map: 1 on the cells whose centres fall inside the normalised box."""
    centres = (torch.arange(14) + 0.5) / 14
    inside_x = (centres >= box[0]) & (centres <= box[2])
    inside_y = (centres >= box[1]) & (centres <= box[3])
    return (inside_y[:, None] & inside_x[None, :]).float()


class _LookupLocalizer(nn.Module):
    """Knows every test scene and sound of the set: returns the box of the object whose category it hears
    (``follow=True``) or the originally sounding object's box whatever it hears (``follow=False``)."""

    def __init__(self, root, follow: bool) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))  # compute_maps reads the model's device from it
        self.follow = follow
        scenes = json.loads((root / "scenes.json").read_text())
        samples = load_samples(root, splits=["test"])
        eval_set = PreparedDataset(samples, mode="eval")
        self.frames = [(eval_set[i]["frame"], scenes[s.id]) for i, s in enumerate(samples)]
        self.sounds = [
            (
                torch.from_numpy(np.load(s.spect)),
                scenes[s.id]["objects"][scenes[s.id]["sounding"]]["category"],
            )
            for s in samples
        ]

    def localize(self, frames: torch.Tensor, spect: torch.Tensor) -> torch.Tensor:
        out = []
        for frame, sound in zip(frames, spect):
            scene = next(sc for f, sc in self.frames if torch.equal(f, frame))
            heard = next(cat for s, cat in self.sounds if torch.equal(s, sound))
            target = scene["objects"][scene["sounding"]]
            if self.follow:
                target = next(o for o in scene["objects"] if o["category"] == heard)
            out.append(_box_map(target["bbox"]))
        return torch.stack(out)


def test_a_localizer_that_follows_the_sound_moves_to_the_distractor(scenes_dir):
    to_distractor, to_original = audio_swap_result(_LookupLocalizer(scenes_dir, follow=True), scenes_dir)
    assert to_distractor.num_samples == to_original.num_samples >= 5
    assert to_distractor.ciou_success_rate == 1.0
    assert to_original.ciou_success_rate < 0.2  # objects do not overlap, so the original box is mostly missed


def test_a_localizer_that_ignores_the_sound_stays(scenes_dir):
    to_distractor, to_original = audio_swap_result(_LookupLocalizer(scenes_dir, follow=False), scenes_dir)
    assert to_original.ciou_success_rate == 1.0
    assert to_distractor.ciou_success_rate < 0.2


def test_swap_needs_distractors(tmp_path):
    easy = tmp_path / "easy"
    generate_synth(easy, synth_config("easy", num=20, seed=1, pretrain_num=0), workers=1, progress=False)
    with pytest.raises(DataError, match="no test scene has a distractor"):
        audio_swap_result(nn.Linear(1, 1), easy)


class _ConstantLocalizer(nn.Module):
    """The same flat map for every scene: the evaluated mask is the whole frame."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))

    def localize(self, frames: torch.Tensor, spect: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(frames), 14, 14)


def _pixels(box) -> np.ndarray:
    """224 x 224 mask of a normalised box by the VGG-SS rule int(224 * v)."""
    x1, y1, x2, y2 = (int(224 * v) for v in box)
    mask = np.zeros((224, 224), dtype=bool)
    mask[y1:y2, x1:x2] = True
    return mask


def test_map_placement_of_a_whole_frame_mask_is_the_share_of_each_region(scenes_dir):
    scenes = json.loads((scenes_dir / "scenes.json").read_text())
    samples = load_samples(scenes_dir, splits=["test"])
    placement = map_placement(_ConstantLocalizer(), scenes_dir, "test")
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
    placement = map_placement(_LookupLocalizer(scenes_dir, follow=False), scenes_dir, "test")
    assert placement["on_sounding"] > 0.8  # the 14 x 14 cell block, upsampled, spills a little past the box
    assert placement["on_silent"] < 0.05
    assert placement["mask_area"] < 0.15
    for group in placement["by_category"].values():
        assert group["on_sounding"] + group["on_silent"] + group["on_background"] == pytest.approx(1.0)


def test_map_placement_needs_scenes(scenes_dir):
    with pytest.raises(DataError, match="no nosuchsplit scene"):
        map_placement(_ConstantLocalizer(), scenes_dir, "nosuchsplit")
