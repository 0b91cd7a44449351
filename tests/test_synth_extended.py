"""SynthAV's extended preset: scenes whose sound has no visible source (silent, off-screen), their empty
boxes, how they read back, and that the standard protocol still refuses clips without boxes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from sspl.cli import main
from sspl.config import Config, apply_overrides
from sspl.data.annotations import load_annotations, subset_annotations
from sspl.data.synth import (
    SCENE_KINDS,
    generate_synth,
    load_scenes,
    render_scene,
    scene_kinds,
    split_assignment,
    synth_config,
)
from sspl.errors import DataError

SETTINGS = {"num": 40, "seed": 3, "pretrain_num": 0}


@pytest.fixture(scope="module")
def extended(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("extended") / "set"
    generate_synth(out, synth_config("extended", **SETTINGS), workers=1, progress=False)
    return out


def test_each_split_holds_the_stated_share_half_silent_half_offscreen(extended):
    config = synth_config("extended", **SETTINGS)
    assert config.no_source_fraction == 0.5  # the documented default of the preset
    scenes = load_scenes(extended)
    for split in ("train", "val", "test"):
        kinds = [s["kind"] for s in scenes.values() if s["split"] == split]
        hidden = round(len(kinds) * 0.5)
        assert kinds.count("silent") == (hidden + 1) // 2, split
        assert kinds.count("offscreen") == hidden // 2, split
        assert kinds.count("visible") == len(kinds) - hidden, split
    assert {s["kind"] for s in scenes.values()} == set(SCENE_KINDS)
    # other shares, and none by default
    third = scene_kinds(synth_config("distractors", num=60, seed=1, no_source_fraction=1 / 3))
    splits = split_assignment(synth_config("distractors", num=60, seed=1))
    test = [k for k, s in zip(third, splits) if s == "test"]
    assert len(test) == 12 and test.count("visible") == 8
    assert set(scene_kinds(synth_config("distractors", num=60, seed=1))) == {"visible"}


def test_boxes_are_empty_exactly_for_scenes_without_a_visible_source(extended):
    scenes = load_scenes(extended)
    entries = {e["file"]: e for e in json.loads((extended / "annotations.json").read_text())}
    assert set(entries) == set(scenes)
    for sid, scene in scenes.items():
        entry = entries[sid]
        assert entry["class"] == scene["sound"]
        if scene["kind"] == "visible":
            sounding = scene["objects"][scene["sounding"]]
            assert sounding["category"] == scene["sound"]
            assert entry["bbox"] == [sounding["bbox"]]
        else:
            assert entry["bbox"] == [] and scene["sounding"] is None


def test_the_sound_category_is_absent_from_frames_without_a_visible_source(extended):
    config = synth_config("extended", **SETTINGS)
    names = [c.name for c in config.categories]
    scenes = load_scenes(extended)
    hidden = [(sid, s) for sid, s in scenes.items() if s["kind"] != "visible"]
    assert len(hidden) == 20
    for sid, scene in hidden:
        assert scene["objects"], sid  # distractors are there: only the source is missing
        assert scene["sound"] not in [o["category"] for o in scene["objects"]]
        rendered = render_scene(config, "main", int(sid.split("_")[1]))  # the frame's objects, as drawn
        assert rendered.kind == scene["kind"] and rendered.sounding is None
        assert names[rendered.sound_category] == scene["sound"]
        assert rendered.sound_category not in rendered.categories
        assert len(rendered.masks) == len(scene["objects"])


def test_offscreen_objects_lie_wholly_outside_the_frame(extended):
    scenes = load_scenes(extended)
    offscreen = [s for s in scenes.values() if s["kind"] == "offscreen"]
    assert len(offscreen) == 10
    for scene in offscreen:
        x1, y1, x2, y2 = scene["offscreen_object"]["bbox"]
        assert scene["offscreen_object"]["category"] == scene["sound"]
        assert x1 < x2 and y1 < y2
        assert x2 <= 0 or x1 >= 1 or y2 <= 0 or y1 >= 1
    assert all("offscreen_object" not in s for s in scenes.values() if s["kind"] != "offscreen")


def test_visible_scenes_are_those_of_the_set_without_hidden_sources():
    extended = synth_config("extended", num=12, seed=7)
    plain = synth_config("distractors", num=12, seed=7)
    kinds = scene_kinds(extended)
    for index in [i for i, k in enumerate(kinds) if k == "visible"][:3]:
        a, b = render_scene(extended, "main", index), render_scene(plain, "main", index)
        assert np.array_equal(a.image, b.image) and np.array_equal(a.source, b.source)
        assert a.categories == b.categories and a.sounding == b.sounding


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".sspl.lock"
    }


def test_same_seed_same_set_other_seed_other_kinds(tmp_path):
    small = {**SETTINGS, "num": 8}
    for name in ("a", "b"):
        generate_synth(tmp_path / name, synth_config("extended", **small), workers=1, progress=False)
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")
    assert "scenes.json" in _digests(tmp_path / "a")
    kinds = scene_kinds(synth_config("extended", **SETTINGS))
    assert kinds == scene_kinds(synth_config("extended", **SETTINGS))
    assert kinds != scene_kinds(synth_config("extended", **{**SETTINGS, "seed": 4}))


def test_empty_boxes_read_back_and_the_standard_protocol_refuses_them(extended):
    annotations = load_annotations(extended)
    scenes = load_scenes(extended)
    for sid, scene in scenes.items():
        assert len(annotations[sid].boxes) == (1 if scene["kind"] == "visible" else 0)
        assert annotations[sid].boxes.shape[1] == 4
    hidden = sorted(sid for sid, s in scenes.items() if s["kind"] != "visible")
    with pytest.raises(DataError, match=r"20 sample\(s\) have no box \(no visible source"):
        subset_annotations(annotations, list(scenes))
    kept = subset_annotations(annotations, list(scenes), allow_empty=True)
    assert sorted(i for i, a in kept.items() if len(a.boxes) == 0) == hidden
    visible = [sid for sid, s in scenes.items() if s["kind"] == "visible"]
    assert len(subset_annotations(annotations, visible)) == 20


def test_training_on_an_extended_set_validates_on_the_visible_scenes(extended, tmp_path):
    from sspl.engine.train import train

    config = apply_overrides(
        Config(),
        [
            "model.visual_encoder=small_cnn",
            "model.audio_encoder=small_cnn",
            "model.visual_channels=128",
            "model.visual_weights=null",
            "model.audio_weights=null",
            "model.pcm=false",
            "model.proj_dim=256",
            "model.pred_hidden=64",
            "train.batch_size=4",
            "train.max_steps_per_epoch=1",
            "train.epochs=1",
            "data.num_workers=0",
        ],
    )
    train(config, extended, tmp_path / "run", progress=False)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert "val_ciou@0.5" in history[-1] and 0 <= history[-1]["val_ciou@0.5"] <= 1


def test_cli_extended_preset_and_share_option(tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["synth", str(out), "--num", "10", "--preset", "extended", "--pretrain-num", "0"]
    assert main([*argv, "--no-source-fraction", "0.4", "--workers", "1", "--no-progress", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["scenes"]["train"] == 7
    meta = json.loads((out / "meta.json").read_text())
    assert meta["synth"]["no_source_fraction"] == 0.4 and meta["synth"]["max_objects"] == 4
    assert sum(s["kind"] != "visible" for s in load_scenes(out).values()) == 4  # 3 of 7, 0 of 1, 1 of 2
    bad = ["synth", str(tmp_path / "bad"), "--num", "4", "--no-source-fraction", "1.5"]
    assert main(bad) == 1
    assert "no_source_fraction must be in [0, 1]" in capsys.readouterr().err


def test_diagnostics_leave_out_scenes_without_a_visible_source(extended):
    from sspl.engine.swap import audio_swap_test
    from sspl.engine.synthav import map_placement
    from synth_localizers import ConstantLocalizer, LookupLocalizer

    scenes = load_scenes(extended)
    visible_test = [i for i, s in scenes.items() if s["split"] == "test" and s["kind"] == "visible"]
    assert map_placement(ConstantLocalizer(), extended, "test")["scenes"] == len(visible_test) == 4
    swap = audio_swap_test(LookupLocalizer(extended, follow=True), extended)
    assert {r["id"] for r in swap.rows} <= set(visible_test)
    assert swap.summary()["follows_sound"] == 1.0


def test_a_set_made_before_the_option_existed_resumes(tmp_path):
    config = synth_config("easy", num=3, seed=2, pretrain_num=0)
    out = tmp_path / "old"
    generate_synth(out, config, workers=1, progress=False)
    meta = json.loads((out / "meta.json").read_text())
    del meta["synth"]["no_source_fraction"]  # as written before this setting existed
    (out / "meta.json").write_text(json.dumps(meta))
    (out / "manifest.csv").unlink()  # unfinished
    generate_synth(out, config, workers=1, progress=False)
    assert (out / "manifest.csv").is_file()
    with pytest.raises(DataError, match=r"--no-source-fraction 0.0 there, 0.5 now"):
        generate_synth(out, synth_config("easy", num=3, seed=2, pretrain_num=0, no_source_fraction=0.5))
