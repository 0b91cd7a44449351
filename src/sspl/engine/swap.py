"""The audio-swap test: does the map follow the *sound*?

cIoU on clips whose source is visible only asks where the map is brightest, so a model that highlights
the most salient object scores well without listening (Mo & Morgado, NeurIPS 2022). The swap test asks
the question directly, on a dataset that knows every object of a frame (its category and box): in a scene
with a silent distractor of another category, play that distractor's sound (another clip of the same
split whose sounding object has the distractor's category) and look where the map goes.

Per trial (one scene) three cIoUs under the evaluation's protocol:

- ``ciou_own``: the map with the scene's own sound against the sounding object's box;
- ``ciou_to_distractor``: the map with the swapped sound against the distractor's box;
- ``ciou_to_original``: the map with the swapped sound against the sounding object's box.

And the rates over trials (a cIoU counts as "on" an object at the protocol's ``ciou_threshold``, 0.5):

- ``to_distractor``: the swapped map is on the distractor (the map moved to it);
- ``stays``: the swapped map is still on the originally sounding object;
- ``follows_sound``: the map is on the sounding object with its own sound *and* on the distractor with
  the distractor's sound, i.e. it moves with the sound; ``localized_own`` is the share of trials whose
  own-sound map is on the sounding object, the ceiling of ``follows_sound``, and
  ``follows_sound_given_localized`` their ratio.

A map that follows the sound scores ``follows_sound`` 1; one that ignores the sound scores 0 (it stays).
Both rates are over the same trials; scenes without a distractor of another category, or whose sound
has no visible source, are no trials.

Per-object boxes come from ``scenes.json`` (:func:`load_scene_objects`), which ``sspl synth`` writes:
``{id: {"sounding": k or null, "objects": [{"category", "bbox"}, ...]}}``, boxes normalised to [0, 1].
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..data.annotations import Annotation
from ..data.datasets import PreparedDataset, Sample, load_samples
from ..data.preprocess import Preprocess
from ..errors import DataError
from ..metrics import BENCHMARKS, Protocol, evaluate_maps
from .loading import load

__all__ = [
    "SCENE_OBJECTS_NAME",
    "SwapResult",
    "SwapTrial",
    "audio_swap_test",
    "load_scene_objects",
    "plan_swaps",
    "run_swaps",
    "swap_trials",
]

#: the file of a prepared folder that holds every object's category and box (SynthAV's scenes.json)
SCENE_OBJECTS_NAME = "scenes.json"


def load_scene_objects(data_dir: str | os.PathLike) -> dict[str, dict]:
    """The per-object boxes of a prepared folder: ``{id: {"sounding": k or None, "objects": [...]}}``.

    Raises:
        DataError: the folder has no ``scenes.json`` (a dataset whose annotations hold only the sounding
            object's boxes, such as Flickr or VGG-SS), or it is not in the expected layout.
    """
    path = Path(data_dir) / SCENE_OBJECTS_NAME
    if not path.is_file():
        raise DataError(
            f"{data_dir}: no per-object boxes ({SCENE_OBJECTS_NAME}: every object's category and box, and "
            "which one sounds, as `sspl synth` writes); the audio-swap test needs them"
        )
    try:
        scenes = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(scenes, dict):
        raise DataError(f"{path}: expected an object mapping clip ids to scenes")
    for sample_id, scene in scenes.items():
        problem = _malformed(scene)
        if problem:
            raise DataError(f"{path}: scene {sample_id}: {problem}")
    return scenes


def _malformed(scene: object) -> str | None:
    """What is wrong with one entry of ``scenes.json`` (None: nothing)."""
    if not isinstance(scene, dict) or not isinstance(scene.get("objects"), list):
        return "needs an 'objects' list"
    if not all(isinstance(o, dict) and "category" in o and "bbox" in o for o in scene["objects"]):
        return "every object needs a 'category' and a 'bbox'"
    k = scene.get("sounding")
    if k is not None and not (isinstance(k, int) and 0 <= k < len(scene["objects"])):
        return f"'sounding' {k!r} is not the index of one of its {len(scene['objects'])} objects (or null)"
    return None


def _sound_of(scene: dict) -> str | None:
    """The category a scene's clip sounds like (``sound``; older sets: the sounding object's category)."""
    if "sound" in scene:
        return scene["sound"]
    return None if scene["sounding"] is None else scene["objects"][scene["sounding"]]["category"]


@dataclass(frozen=True)
class SwapTrial:
    """One swap: ``sample``'s frame with ``donor``'s sound, whose category is the ``distractor``'s."""

    sample: Sample
    donor: Sample
    original: dict  # the sounding object: {"category", "bbox"}
    distractor: dict  # the silent object whose sound is played


def plan_swaps(
    samples: Sequence[Sample], scenes: dict[str, dict], *, seed: int = 0, source: str = "the data"
) -> list[SwapTrial]:
    """One trial per scene of ``samples`` whose sounding object is visible and that holds a distractor of
    another category with a donor clip among ``samples``: the distractor and the donor are drawn (seeded)
    among those. ``source`` names the data in messages.

    Raises:
        DataError: a sample has no entry in ``scenes``, or no scene gives a trial (e.g. the ``easy``
            preset: no distractors).
    """
    missing = [s.id for s in samples if s.id not in scenes]
    if missing:
        raise DataError(f"{source}: {len(missing)} clip(s) have no per-object boxes, e.g. {missing[0]}")
    by_category: dict[str, list[Sample]] = {}
    for sample in samples:
        sound = _sound_of(scenes[sample.id])
        if sound is not None:
            by_category.setdefault(sound, []).append(sample)
    rng = np.random.default_rng(seed)
    trials = []
    for sample in samples:
        scene = scenes[sample.id]
        if scene["sounding"] is None:  # no visible source: nothing to stay on
            continue
        target = scene["objects"][scene["sounding"]]
        others = [
            o
            for o in scene["objects"]
            if o["category"] != target["category"] and by_category.get(o["category"])
        ]
        if not others:
            continue
        other = others[rng.integers(len(others))]
        pool = by_category[other["category"]]
        trials.append(SwapTrial(sample, pool[rng.integers(len(pool))], target, other))
    if not trials:
        split = f"{samples[0].split} " if samples and samples[0].split else ""
        raise DataError(
            f"{source}: no {split}scene has a distractor of another category to play the sound of "
            "(the audio-swap test needs scenes with distractors)"
        )
    return trials


class _SwappedAudio(Dataset):
    """An evaluation dataset whose clip ``i`` plays the sound of ``donors[i]``."""

    def __init__(self, dataset: PreparedDataset, donors: Sequence[Sample]) -> None:
        self.dataset, self.donors = dataset, list(donors)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        item = self.dataset[index]
        item["spect"] = self.dataset.load_audio(self.donors[index])  # in the model's audio front end
        return item


@dataclass(frozen=True)
class SwapResult:
    """The trials' cIoUs (``rows``: one dict per trial, in trial order) under ``protocol``."""

    rows: list[dict]
    ciou_threshold: float
    protocol: dict

    def _share(self, test) -> float:
        return float(np.mean([bool(test(r)) for r in self.rows]))

    def summary(self) -> dict:
        """The ``swap`` section of ``report.json`` (rates defined in the module docstring)."""
        t = self.ciou_threshold
        localized = self._share(lambda r: r["ciou_own"] >= t)
        follows = self._share(lambda r: r["ciou_own"] >= t and r["ciou_to_distractor"] >= t)
        return {
            "trials": len(self.rows),
            "ciou_threshold": t,
            "to_distractor": self._share(lambda r: r["ciou_to_distractor"] >= t),
            "stays": self._share(lambda r: r["ciou_to_original"] >= t),
            "follows_sound": follows,
            "localized_own": localized,
            "follows_sound_given_localized": follows / localized if localized > 0 else None,
            "mean_ciou_to_distractor": float(np.mean([r["ciou_to_distractor"] for r in self.rows])),
            "mean_ciou_to_original": float(np.mean([r["ciou_to_original"] for r in self.rows])),
            "protocol": self.protocol,
        }

    def to_csv(self) -> str:
        """``swap_per_sample.csv``: one line per trial."""
        buf = io.StringIO()
        names = ["id", "category", "distractor_category", "donor", "ciou_own", "ciou_to_distractor"]
        names += ["ciou_to_original"]
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(names)
        for r in self.rows:
            writer.writerow([f"{r[k]:.6f}" if isinstance(r[k], float) else r[k] for k in names])
        return buf.getvalue()


def run_swaps(
    model: torch.nn.Module,
    trials: Sequence[SwapTrial],
    protocol: Protocol,
    preprocess: Preprocess | None = None,
    batch_size: int = 32,
    num_workers: int = 0,
    cycles: int | None = None,
) -> SwapResult:
    """Compute each trial's maps with its own and with the donor's sound and score them (module docstring).

    Args:
        model: a localizer, ``localize(frames, spect, **map_options) -> B x h x w``.
        trials: from :func:`plan_swaps`.
        protocol: the evaluation's protocol (threshold policy, upsampling); each per-object box is one
            normalised box, scored by the union rule whatever the benchmark's boxes.
        preprocess: the model's input preprocessing (frame size, test transform, audio front end; default
            SSPL's), as in the evaluation.
        batch_size, num_workers, cycles: as in :func:`~sspl.engine.evaluate.compute_maps`.
    """
    from .evaluate import compute_maps  # engine/evaluate runs this module's test (``--swap``)

    map_options = {"batch_size": batch_size, "num_workers": num_workers, "cycles": cycles}
    protocol = replace(protocol, rule="union", box_format="normalized")
    preprocess = preprocess or Preprocess()
    frames = PreparedDataset(
        [t.sample for t in trials],
        mode="eval",
        image_size=preprocess.image_size,
        audio_frontend=preprocess.audio_frontend,
        test_transform=preprocess.test_transform,
    )
    own = compute_maps(model, frames, **map_options)
    swapped = compute_maps(model, _SwappedAudio(frames, [t.donor for t in trials]), **map_options)

    def score(maps: dict, key: str) -> dict[str, float]:
        boxes = {t.sample.id: Annotation(t.sample.id, getattr(t, key)["bbox"], "normalized") for t in trials}
        return evaluate_maps(maps, boxes, protocol, expected_count=len(trials)).cious

    ours = score(own, "original")
    to_distractor, to_original = score(swapped, "distractor"), score(swapped, "original")
    rows = [
        {
            "id": t.sample.id,
            "category": t.original["category"],
            "distractor_category": t.distractor["category"],
            "donor": t.donor.id,
            "ciou_own": float(ours[t.sample.id]),
            "ciou_to_distractor": float(to_distractor[t.sample.id]),
            "ciou_to_original": float(to_original[t.sample.id]),
        }
        for t in trials
    ]
    return SwapResult(rows, protocol.ciou_threshold, protocol.describe())


def swap_trials(data_dir: str | os.PathLike, samples: Sequence[Sample], *, seed: int = 0) -> list[SwapTrial]:
    """The trials of :func:`plan_swaps` on ``samples`` of the prepared folder ``data_dir``, with its
    per-object boxes (:func:`load_scene_objects`); what ``sspl evaluate --swap`` plans before any map."""
    return plan_swaps(samples, load_scene_objects(data_dir), seed=seed, source=str(data_dir))


def audio_swap_test(
    model: str | os.PathLike | torch.nn.Module,
    data_dir: str | os.PathLike,
    split: str = "test",
    *,
    protocol: Protocol | None = None,
    preprocess: Preprocess | None = None,
    seed: int = 0,
    batch_size: int = 32,
) -> SwapResult:
    """The audio-swap test on a split of a prepared folder with per-object boxes.

    Args:
        model: a localizer (``localize(frames, spect) -> B x h x w``) or anything :func:`sspl.load` accepts.
        data_dir: the folder (its ``scenes.json`` gives every object's category and box).
        split: the split whose scenes are the trials and whose clips are the donors.
        protocol: default the ``synth`` benchmark's.
        preprocess: the input preprocessing of a ``model`` given as a module (default SSPL's; a checkpoint
            brings its own).
        seed: seeds the choice of distractor and donor.
        batch_size: clips per model pass.

    Raises:
        DataError: no per-object boxes, or no scene of the split gives a trial.
    """
    trials = swap_trials(data_dir, load_samples(Path(data_dir), splits=[split]), seed=seed)
    if not isinstance(model, torch.nn.Module):
        model, preprocess = load(model)
    return run_swaps(model, trials, protocol or BENCHMARKS["synth"], preprocess, batch_size)
