"""The audio-swap test (sspl.engine.swap, `sspl evaluate --swap`), checked with hand-built localizers whose
answer is known: one follows the sound (follow rate 1), one stays on the sounding object whatever it hears
(follow rate 0), one is flat (on nothing)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch

from sspl.cli import main
from sspl.data.datasets import Sample, load_samples
from sspl.data.preprocess import Preprocess
from sspl.data.synth import generate_synth, synth_config
from sspl.data.transforms import build_eval_transform
from sspl.engine import evaluate as evaluate_module
from sspl.engine.swap import audio_swap_test, load_scene_objects, plan_swaps
from sspl.errors import DataError
from synth_localizers import ConstantLocalizer, LookupLocalizer


@pytest.fixture(scope="module")
def scenes_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("swap") / "set"
    generate_synth(
        out, synth_config("distractors", num=40, seed=5, pretrain_num=0), workers=1, progress=False
    )
    return out


def test_a_map_that_follows_the_sound_has_follow_rate_one(scenes_dir):
    result = audio_swap_test(LookupLocalizer(scenes_dir, follow=True), scenes_dir).summary()
    assert result["trials"] >= 5
    assert result["to_distractor"] == result["follows_sound"] == result["localized_own"] == 1.0
    assert result["follows_sound_given_localized"] == 1.0
    assert result["stays"] == 0.0  # objects do not overlap: the original box is missed


def test_a_map_that_ignores_the_sound_has_follow_rate_zero(scenes_dir):
    result = audio_swap_test(LookupLocalizer(scenes_dir, follow=False), scenes_dir).summary()
    assert result["stays"] == result["localized_own"] == 1.0
    assert result["to_distractor"] == result["follows_sound"] == 0.0
    flat = audio_swap_test(ConstantLocalizer(), scenes_dir).summary()
    assert flat["to_distractor"] == flat["stays"] == flat["follows_sound"] == flat["localized_own"] == 0.0
    assert flat["follows_sound_given_localized"] is None


class _InputRecorder(ConstantLocalizer):
    def __init__(self) -> None:
        super().__init__()
        self.inputs = []

    def localize(self, frames, spect):
        self.inputs += list(zip(frames, spect, strict=True))
        return super().localize(frames, spect)


def test_a_released_model_hears_and_sees_its_own_inputs_in_both_passes(scenes_dir):
    # EZ-VSL / SLAVC / FNAC: stft spectrograms and the whole frame resized, with the own and the donor's sound
    preprocess = Preprocess(audio_frontend="stft", test_transform="resize")
    model = _InputRecorder()
    trials = plan_swaps(load_samples(scenes_dir, splits=["test"]), load_scene_objects(scenes_dir), seed=0)
    audio_swap_test(model, scenes_dir, preprocess=preprocess)
    assert len(model.inputs) == 2 * len(trials)
    resize = build_eval_transform(mode="resize")
    clips = [t.sample for t in trials] + [t.donor for t in trials]
    for (_, spect), clip in zip(model.inputs, clips, strict=True):
        torch.testing.assert_close(spect, clip.load_stft(), rtol=0, atol=0)
    for (frame, _), t in zip(model.inputs[len(trials) :], trials, strict=True):
        torch.testing.assert_close(frame, resize(t.sample.load_frame()), rtol=0, atol=0)


def test_trials_play_a_distractor_category_sound_from_the_same_split(scenes_dir):
    scenes = load_scene_objects(scenes_dir)
    samples = load_samples(scenes_dir, splits=["test"])
    trials = plan_swaps(samples, scenes, seed=0)
    with_distractor = [s for s in samples if len({o["category"] for o in scenes[s.id]["objects"]}) > 1]
    assert 0 < len(trials) <= len(with_distractor)
    for t in trials:
        scene = scenes[t.sample.id]
        assert t.original == scene["objects"][scene["sounding"]]
        assert t.distractor in scene["objects"] and t.distractor["category"] != t.original["category"]
        assert t.donor.split == "test" and scenes[t.donor.id]["sound"] == t.distractor["category"]
    again = plan_swaps(samples, scenes, seed=0)
    assert [(t.sample.id, t.donor.id) for t in again] == [(t.sample.id, t.donor.id) for t in trials]
    other = plan_swaps(samples, scenes, seed=1)
    assert [t.donor.id for t in other] != [t.donor.id for t in trials]


def _sample(sample_id: str) -> Sample:
    return Sample(sample_id, Path("f"), Path("s"), Path("a"), split="test")


def test_scenes_without_a_visible_source_are_donors_not_trials():
    box = [0.1, 0.1, 0.3, 0.3]
    far = [0.6, 0.6, 0.8, 0.8]
    scenes = {
        "a": {"sound": "dog", "sounding": 0, "objects": [{"category": "dog", "bbox": box}, {"category": "cat", "bbox": far}]},
        "b": {"sound": "cat", "sounding": None, "kind": "silent", "objects": [{"category": "dog", "bbox": box}]},
        "c": {"sound": "dog", "sounding": 0, "objects": [{"category": "dog", "bbox": box}, {"category": "owl", "bbox": far}]},
    }  # fmt: skip
    trials = plan_swaps([_sample(i) for i in "abc"], scenes)
    assert [(t.sample.id, t.donor.id, t.distractor["category"]) for t in trials] == [("a", "b", "cat")]
    with pytest.raises(DataError, match=r"here: no test scene has a distractor of another category"):
        plan_swaps([_sample("c")], scenes, source="here")


def test_a_set_without_distractors_or_per_object_boxes_is_refused(tmp_path):
    easy = tmp_path / "easy"
    generate_synth(easy, synth_config("easy", num=10, seed=1, pretrain_num=0), workers=1, progress=False)
    with pytest.raises(DataError, match="no test scene has a distractor"):
        audio_swap_test(ConstantLocalizer(), easy)
    (easy / "scenes.json").unlink()
    with pytest.raises(DataError, match=r"easy: no per-object boxes \(scenes\.json"):
        audio_swap_test(ConstantLocalizer(), easy)
    (easy / "scenes.json").write_text(json.dumps({"synth_000000": {"objects": [{"bbox": [0, 0, 1, 1]}]}}))
    with pytest.raises(DataError, match="scene synth_000000: every object needs a 'category'"):
        audio_swap_test(ConstantLocalizer(), easy)


def _evaluate(data: Path, out: Path, *extra: str) -> int:
    argv = ["evaluate", "--checkpoint", "oracle", "--data", str(data), "--benchmark", "synth"]
    return main([*argv, "--out", str(out), "--no-progress", *extra])


def test_cli_evaluate_swap_end_to_end(scenes_dir, tmp_path, capsys, monkeypatch):
    oracle = LookupLocalizer(scenes_dir, follow=True)
    monkeypatch.setattr(evaluate_module, "load", lambda *a, **k: (oracle, Preprocess(image_size=224)))
    out = tmp_path / "eval"
    assert _evaluate(scenes_dir, out, "--swap") == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    swap = report["swap"]
    assert swap["follows_sound"] == swap["to_distractor"] == 1.0 and swap["stays"] == 0.0
    assert (
        f"swap scenes {swap['trials']}, to distractor 1, stays 0, follows the sound 1"
        in printed.splitlines()[0]
    )
    with open(out / "swap_per_sample.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == swap["trials"]
    assert list(rows[0]) == [
        "id", "category", "distractor_category", "donor", "ciou_own", "ciou_to_distractor", "ciou_to_original"
    ]  # fmt: skip
    assert all(float(r["ciou_to_distractor"]) >= 0.5 > float(r["ciou_to_original"]) for r in rows)
    assert report["ciou@0.5"] == 1.0  # the oracle with the scenes' own sounds
    # a rerun without --swap replaces the earlier outputs, the swap's included
    assert _evaluate(scenes_dir, out, "--overwrite") == 0
    assert "swap" not in json.loads((out / "report.json").read_text())
    assert not (out / "swap_per_sample.csv").exists()


def test_cli_swap_without_per_object_boxes_is_one_line_and_writes_nothing(scenes_dir, tmp_path, capsys):
    data = tmp_path / "noscenes"
    shutil.copytree(scenes_dir, data, ignore=shutil.ignore_patterns("scenes.json"))
    out = tmp_path / "eval"
    assert _evaluate(data, out, "--swap") == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert f"sspl evaluate: error: {data}: no per-object boxes (scenes.json" in err
    assert not out.exists() or not any(out.iterdir())
