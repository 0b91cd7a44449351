"""Which region does the SSPL objective prefer? Its loss when the attention is put on chosen regions.

SSPL learns where to look only through the loss: the attention map decides which visual features are pooled
into each view's representation, and the SimSiam loss rewards representations that agree across the two
views. So the question "why does SSPL not settle on the sounding object?" has a direct measurement: take a
trained model, replace its attention map by a fixed region of the frame (the sounding object's box, a silent
object's box, the background), and read the loss. A region whose loss is as low as the object's is an
equally good answer to the objective; if the background scores as well as the object, nothing in the
objective pushes the map off the background, and if a silent object scores as well as the sounding one,
nothing pushes it towards the object that makes the sound.

For every ``split`` scene (validation by default: this is model analysis), ``--repeats`` pairs of views are
drawn with the training augmentation (resize to 1.1 x 224, random 224 crop, horizontal flip with p = 0.5),
and the region masks (boxes of ``scenes.json``) go through the same crop and flip. Each region's weights on
the feature grid are the share of each cell it covers, rescaled to the total weight of the model's own
attention in that view (the head's batch norms see representations of the scale they were trained on).
Everything runs in eval mode (batch norms with their running statistics), as the validation loss does.

Reported per region: the SimSiam loss (-1 best) and the cosine between the two views' pooled visual features
before the head (how view-invariant that region's features are on their own), averaged over scenes and
repeats; "own map" is the model's attention, for reference.

    python experiments/synthav_region_loss.py --out runs/synthav     # after experiments/synthav_learning.py

Writes ``OUT/<preset>/<run>/region_loss.json`` for every SSPL run found, ``OUT/region_loss.json`` with all
of them, and prints the Markdown table of docs/results.md.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

from sspl.data.datasets import load_samples
from sspl.data.transforms import CROP_RESIZE_FACTOR, HFLIP_P, IMAGENET_MEAN, IMAGENET_STD
from sspl.engine.checkpoint import find_checkpoint, load_checkpoint, restore_model
from sspl.io import atomic_save_json
from sspl.losses import simsiam_loss
from sspl.models.attention import attention_pool

log = logging.getLogger("synthav_region_loss")

REGIONS = ("own map", "sounding object", "silent object", "background", "whole frame")


def _box_mask(bbox: list[float], side: int) -> torch.Tensor:
    """``side x side`` float mask of a normalised ``[x0, y0, x1, y1]`` box."""
    x0, y0, x1, y1 = (round(v * side) for v in bbox)
    mask = torch.zeros(side, side)
    mask[y0:y1, x0:x1] = 1.0
    return mask


def _view(
    image: torch.Tensor, masks: torch.Tensor, rng: np.random.Generator, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One training view of ``image`` (``3 x H x W`` in [0, 1]) and the same crop and flip of ``masks``
    (``R x H x W``): the ``crop`` and ``hflip`` augmentations of :mod:`sspl.data.transforms`."""
    side = int(size * CROP_RESIZE_FACTOR)
    image = TF.resize(image, side, interpolation=InterpolationMode.BICUBIC, antialias=True).clamp(0, 1)
    masks = TF.resize(masks, side, interpolation=InterpolationMode.BILINEAR, antialias=True)
    h, w = image.shape[-2:]
    top, left = int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
    image, masks = TF.crop(image, top, left, size, size), TF.crop(masks, top, left, size, size)
    if rng.random() < HFLIP_P:
        image, masks = TF.hflip(image), TF.hflip(masks)
    return TF.normalize(image, IMAGENET_MEAN, IMAGENET_STD), masks


@torch.no_grad()
def region_loss(run: Path, data: Path, split: str = "val", repeats: int = 4, seed: int = 0) -> dict:
    """SimSiam loss and view-to-view feature cosine of the selected checkpoint of ``run`` with its attention
    replaced by each of :data:`REGIONS` (see the module docstring)."""
    model, config = restore_model(load_checkpoint(find_checkpoint(run)))
    if config.method != "sspl":
        raise ValueError(f"{run}: method {config.method!r}; region losses are for SSPL runs")
    if sorted(config.data.augmentations) != ["crop", "hflip"]:
        raise ValueError(
            f"{run}: augmentations {config.data.augmentations}; this script mirrors crop + hflip"
        )
    model.eval()
    size = config.data.image_size
    scenes = json.loads((data / "scenes.json").read_text(encoding="utf-8"))
    samples = [s for s in load_samples(data, splits=[split])]
    rng = np.random.default_rng(seed)
    losses: dict[str, list[float]] = {r: [] for r in REGIONS}
    cosines: dict[str, list[float]] = {r: [] for r in REGIONS}
    for sample in samples:
        scene = scenes[sample.id]
        objects = scene["objects"]
        image = TF.to_tensor(sample.load_frame())
        side = image.shape[-1]
        if image.shape[-2] != side:
            raise ValueError(f"{sample.frame}: SynthAV frames are square, got {tuple(image.shape[-2:])}")
        sounding = _box_mask(objects[scene["sounding"]]["bbox"], side)
        union = torch.stack([_box_mask(o["bbox"], side) for o in objects]).amax(dim=0)
        silent = [k for k in range(len(objects)) if k != scene["sounding"]]
        # one silent object per scene, drawn with the seeded generator (none in the easy preset)
        other = _box_mask(objects[silent[rng.integers(len(silent))]]["bbox"], side) if silent else None
        masks = torch.stack(
            [sounding, other if other is not None else sounding, 1 - union, torch.ones_like(union)]
        )
        spect = sample.load_spect()[None]
        target, query = model.audio_features(model.encode_audio(spect))
        for _ in range(repeats):
            (v1, m1), (v2, m2) = _view(image, masks, rng, size), _view(image, masks, rng, size)
            f1, f2 = model.encode_visual(torch.stack([v1, v2])).chunk(2)
            out = [model.view(f, target, query) for f in (f1, f2)]
            feats = [o.pcm_features if o.pcm_features is not None else o.visual_features for o in out]
            grid = feats[0].shape[-2:]
            weights = {"own map": [o.att_map for o in out]}
            for name, index in (
                ("sounding object", 0),
                ("silent object", 1),
                ("background", 2),
                ("whole frame", 3),
            ):
                if name == "silent object" and other is None:
                    continue
                pair = []
                for o, m in zip(out, (m1, m2)):
                    w = F.adaptive_avg_pool2d(m[index][None, None], grid)[:, 0]  # 1 x h x w cell coverage
                    pair.append(w * o.att_map.sum() / w.sum().clamp_min(1e-6))
                weights[name] = pair
            for name, (w1, w2) in weights.items():
                fav1, fav2 = attention_pool(feats[0], w1), attention_pool(feats[1], w2)
                p1, p2, z1, z2 = model.head(fav1, fav2)
                losses[name].append(float(simsiam_loss(p1, p2, z1, z2)))  # one scene
                cosines[name].append(float(F.cosine_similarity(fav1, fav2, dim=1)))
    return {
        "split": split,
        "scenes": len(samples),
        "repeats": repeats,
        "loss": {r: float(np.mean(v)) for r, v in losses.items() if v},
        "view_cosine": {r: float(np.mean(v)) for r, v in cosines.items() if v},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("runs/synthav"))
    parser.add_argument("--presets", nargs="+", default=["easy", "distractors"])
    parser.add_argument("--split", default="val")
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    everything: dict[str, dict] = {}
    for preset in args.presets:
        data = args.out / preset / "data"
        runs = sorted(p for p in (args.out / preset).glob("sspl_*") if (p / "checkpoints").is_dir())
        for run in [*runs, *sorted((args.out / preset).glob("sspl_*/untrained.pt"))]:
            key = run.parent.name + " (untrained)" if run.suffix == ".pt" else run.name
            path = (
                (run.parent / "region_loss_untrained.json")
                if run.suffix == ".pt"
                else run / "region_loss.json"
            )
            if not path.is_file():
                config = load_checkpoint(find_checkpoint(run))["config"]
                if sorted(config["data"]["augmentations"]) != ["crop", "hflip"]:
                    log.info("%s: %s trains with other augmentations than crop + hflip; skipped", preset, key)
                    continue
                log.info("%s: %s", preset, key)
                atomic_save_json(path, region_loss(run, data, args.split, args.repeats))
            everything.setdefault(preset, {})[key] = json.loads(path.read_text())
    atomic_save_json(args.out / "region_loss.json", everything)
    for preset, rows in everything.items():
        print(
            f"\n#### SynthAV `{preset}`: SSPL's loss with the attention put on one region ({args.split} split)\n"
        )
        print("| model | " + " | ".join(REGIONS) + " |")
        print("|---" * (len(REGIONS) + 1) + "|")
        for key, row in rows.items():
            cells = [
                f"{row['loss'][r]:.3f} ({row['view_cosine'][r]:.3f})" if r in row["loss"] else ""
                for r in REGIONS
            ]
            print(f"| {key} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
