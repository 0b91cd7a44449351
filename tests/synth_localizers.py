"""Hand-built SynthAV localizers whose behaviour is known, for the diagnostics' tests (test_synthav.py,
test_swap.py): one follows the sound, one sits on the sounding object whatever it hears, one is flat."""

from __future__ import annotations

import json

import numpy as np
import torch
from torch import nn

from sspl.data.datasets import PreparedDataset, load_samples


def box_map(box) -> torch.Tensor:
    """14 x 14 map: 1 on the cells whose centres fall inside the normalised box."""
    centres = (torch.arange(14) + 0.5) / 14
    inside_x = (centres >= box[0]) & (centres <= box[2])
    inside_y = (centres >= box[1]) & (centres <= box[3])
    return (inside_y[:, None] & inside_x[None, :]).float()


class LookupLocalizer(nn.Module):
    """Knows every scene and sound of a split of the set: returns the box of the object whose category it
    hears (``follow=True``) or the originally sounding object's box whatever it hears (``follow=False``)."""

    def __init__(self, root, follow: bool, split: str = "test") -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))  # compute_maps reads the model's device from it
        self.follow = follow
        scenes = json.loads((root / "scenes.json").read_text())
        samples = load_samples(root, splits=[split])
        eval_set = PreparedDataset(samples, mode="eval")
        self.frames = [(eval_set[i]["frame"], scenes[s.id]) for i, s in enumerate(samples)]
        self.sounds = [(torch.from_numpy(np.load(s.spect)), scenes[s.id]["sound"]) for s in samples]

    def localize(self, frames: torch.Tensor, spect: torch.Tensor) -> torch.Tensor:
        out = []
        for frame, sound in zip(frames, spect):
            scene = next(sc for f, sc in self.frames if torch.equal(f, frame))
            heard = next(cat for s, cat in self.sounds if torch.equal(s, sound))
            target = scene["objects"][scene["sounding"]]
            if self.follow:
                target = next(o for o in scene["objects"] if o["category"] == heard)
            out.append(box_map(target["bbox"]))
        return torch.stack(out)


class ConstantLocalizer(nn.Module):
    """The same flat map for every scene: the evaluated mask is the whole frame."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))

    def localize(self, frames: torch.Tensor, spect: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(frames), 14, 14)
