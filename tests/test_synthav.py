"""SynthAV reference points: the oracle query and the audio-swap diagnostic, checked with hand-built localizers
whose behaviour is known (one follows the sound, one ignores it)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from sspl.data.datasets import PreparedDataset, load_samples
from sspl.data.synth import generate_synth, synth_config
from sspl.engine.synthav import audio_swap_result
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
