"""SynthAV generation: determinism, the prepared format, ground truth, difficulty knobs, splits, CLI."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from sspl.audio import load_audio, waveform_to_examples
from sspl.cli import main
from sspl.data.manifest import read_manifest, read_meta
from sspl.data.synth import (
    BACKGROUND_LABEL,
    IGNORE_LABEL,
    SynthConfig,
    cell_coverage,
    generate_synth,
    load_scenes,
    location_coverage,
    location_labels,
    render_scene,
    synth_config,
)
from sspl.errors import DataError
from sspl.outputs import LOCK_NAME

TINY = {"num": 12, "seed": 3, "pretrain_num": 16, "val_fraction": 0.25, "test_fraction": 0.25}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, SynthConfig]:
    config = synth_config("distractors", **TINY)
    out = tmp_path_factory.mktemp("synth") / "set"
    generate_synth(out, config, workers=1, progress=False)
    return out, config


def _file_digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != LOCK_NAME  # the lock holds the writer's pid: not an output
    }


def test_same_seed_gives_identical_bytes_whatever_the_workers(tmp_path):
    config = synth_config("distractors", num=4, seed=11, pretrain_num=2)
    generate_synth(tmp_path / "a", config, workers=1, progress=False)
    generate_synth(tmp_path / "b", config, workers=2, progress=False)
    a, b = _file_digests(tmp_path / "a"), _file_digests(tmp_path / "b")
    assert len(a) == 4 + 6 * 3 + 4  # meta, manifest, annotations, scenes; 6 scenes x 3 files; 4 in pretrain/
    assert a == b

    generate_synth(
        tmp_path / "c", synth_config("distractors", num=4, seed=12, pretrain_num=2), progress=False
    )
    c = _file_digests(tmp_path / "c")
    frames = [k for k in a if k.startswith("frames/")]
    assert all(a[k] != c[k] for k in frames)


def test_prepared_format(tiny):
    root, config = tiny
    meta = read_meta(root)
    assert meta["kind"] == "synth"
    assert meta["synth"] == config.to_json()
    assert [c["name"] for c in meta["categories"]] == [c.name for c in config.categories]
    rows = read_manifest(root)
    assert len(rows) == 12 + 16
    assert {r.split for r in rows} == {"train", "val", "test", "pretrain"}
    assert sum(r.split == "test" for r in rows) == 3 and sum(r.split == "val" for r in rows) == 3
    row = rows[0]
    assert row.ok and row.duration == 3.0 and row.sample_rate == 16000
    with Image.open(root / row.frame) as im:
        assert im.format == "JPEG" and im.mode == "RGB" and im.size == (256, 256)
    wave, rate = sf.read(root / row.audio, dtype="float32")
    assert rate == 16000 and wave.shape == (48000,) and sf.info(root / row.audio).subtype == "FLOAT"
    assert -1.0 <= wave.min() < -0.99 and 0.99 < wave.max() <= 1.0  # official min/max normalisation
    spect = np.load(root / row.spect)
    assert spect.shape == (3, 96, 64) and spect.dtype == np.float32
    np.testing.assert_array_equal(spect, waveform_to_examples(wave).numpy())


def test_annotations_hold_the_sounding_box_of_every_scene(tiny):
    root, config = tiny
    rows = {r.id: r for r in read_manifest(root)}
    annotations = json.loads((root / "annotations.json").read_text())
    assert sorted(a["file"] for a in annotations) == sorted(rows)
    scenes = load_scenes(root)
    for a in annotations:
        (box,) = a["bbox"]
        x1, y1, x2, y2 = box
        assert 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1
        side = np.sqrt((x2 - x1) * (y2 - y1))
        assert 0.1 < side <= config.object_size[1] + 1e-6
        assert a["class"] == rows[a["file"]].label
        scene = scenes[a["file"]]
        sounding = scene["objects"][scene["sounding"]]
        assert sounding["bbox"] == box and sounding["category"] == a["class"]
        assert config.min_objects <= len(scene["objects"]) <= config.max_objects
        names = [o["category"] for o in scene["objects"]]
        assert len(set(names)) == len(names)  # share_category off: all categories distinct


def test_box_is_the_tight_box_of_the_rendered_sounding_object(tiny):
    root, config = tiny
    annotations = {a["file"]: a["bbox"][0] for a in json.loads((root / "annotations.json").read_text())}
    for index in range(3):
        scene = render_scene(config, "main", index)
        mask = scene.masks[scene.sounding]
        rows, cols = np.nonzero(mask)
        x1, y1, x2, y2 = np.round(np.asarray(annotations[f"synth_{index:06d}"]) * 256).astype(int)
        assert (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1) == (x1, y1, x2, y2)
        # the object really is drawn there: its pixels carry the category colour, not the background's
        colour = np.asarray(config.categories[scene.categories[scene.sounding]].colour, dtype=float)
        drawn = scene.image[mask].astype(float).max(axis=1) / colour.max()
        assert np.median(drawn) > 0.75
        assert not (scene.masks.sum(0) > 1).any()  # objects never overlap


def test_splits_are_disjoint_and_frames_unique(tiny):
    root, _ = tiny
    rows = read_manifest(root)
    by_split = {s: {r.id for r in rows if r.split == s} for s in ("train", "val", "test", "pretrain")}
    all_ids = [i for ids in by_split.values() for i in ids]
    assert len(all_ids) == len(set(all_ids)) == len(rows)
    assert all(i.startswith("synthpre_") for i in by_split["pretrain"])
    digests = [hashlib.sha1((root / r.frame).read_bytes()).hexdigest() for r in rows]
    assert len(set(digests)) == len(digests)


def test_pretrain_labels(tiny):
    root, config = tiny
    ids = (root / "pretrain/ids.txt").read_text().split()
    coverage = np.load(root / "pretrain/location_coverage.npy")
    labels = np.load(root / "pretrain/location_labels.npy")
    sounds = np.load(root / "pretrain/sound_labels.npy")
    assert ids == [f"synthpre_{i:06d}" for i in range(16)]
    assert coverage.shape == (16, 1 + config.num_categories, 14, 14) and coverage.dtype == np.float32
    assert labels.shape == (16, 14, 14) and labels.dtype == np.uint8
    assert sounds.shape == (16,) and sounds.dtype == np.int64
    np.testing.assert_allclose(coverage.sum(1), 1.0, atol=1e-5)
    rows = {r.id: r for r in read_manifest(root)}
    names = [c.name for c in config.categories]
    assert [names[s] for s in sounds] == [rows[i].label for i in ids]
    for k in (0, 5):
        scene = render_scene(config, "pretrain", k)
        np.testing.assert_array_equal(labels[k], location_labels(coverage[k]))
        present = {1 + c for c in scene.categories}
        assert set(np.unique(labels[k])) - {BACKGROUND_LABEL, IGNORE_LABEL} <= present
        # each object's category dominates the cell that holds its centre
        for cat, (x0, y0, side) in zip(scene.categories, scene.objects_px):
            cy, cx = int((y0 + side / 2) * 14 / 256), int((x0 + side / 2) * 14 / 256)
            assert coverage[k, 1 + cat, cy, cx] > 0.3
        # a large object's interior is labelled with its category
        big = max(range(len(scene.categories)), key=lambda j: scene.objects_px[j][2])
        assert (labels[k] == 1 + scene.categories[big]).any()


def test_cell_coverage_hand_computed():
    mask = np.zeros((8, 8), dtype=bool)
    mask[:2, :2] = True
    expected = np.zeros((4, 4))
    expected[0, 0] = 1.0
    np.testing.assert_allclose(cell_coverage(mask, grid=4), expected)
    # a 7-px side in 2 cells of 3.5 px: the centre pixel is split between the four cells
    mask = np.zeros((7, 7))
    mask[3, 3] = 1
    np.testing.assert_allclose(cell_coverage(mask, grid=2), np.full((2, 2), 0.25 / 3.5**2))
    # coverage from masks: background fills the rest
    masks = np.zeros((1, 8, 8), dtype=bool)
    masks[0, :4, :4] = True
    cov = location_coverage(masks, [1], num_categories=2, grid=2)
    np.testing.assert_allclose(cov[2], [[1, 0], [0, 0]])
    np.testing.assert_allclose(cov[0], [[0, 1], [1, 1]])
    np.testing.assert_array_equal(location_labels(cov), [[2, 0], [0, 0]])


def test_easy_preset_has_the_sounding_object_alone():
    config = synth_config("easy", num=5)
    assert (config.min_objects, config.max_objects) == (1, 1)
    for i in range(5):
        scene = render_scene(config, "main", i)
        assert len(scene.categories) == 1 and scene.sounding == 0
        assert scene.masks.shape == (1, 256, 256)
    # pretraining scenes do not follow the preset: encoders learn to tell objects apart
    counts = {len(render_scene(config, "pretrain", i).categories) for i in range(12)}
    assert counts <= {2, 3, 4} and len(counts) > 1


def test_object_count_and_size_knobs():
    config = synth_config("distractors", num=1, min_objects=4, max_objects=4, object_size=(0.1, 0.12))
    for i in range(4):
        scene = render_scene(config, "main", i)
        assert len(scene.categories) == 4
        sides = np.sqrt((scene.boxes[:, 2] - scene.boxes[:, 0]) * (scene.boxes[:, 3] - scene.boxes[:, 1]))
        assert (sides <= 0.12 + 1 / 256).all() and (sides > 0.07).all()


def test_share_category_lets_distractors_share_the_sounding_category():
    # 2 categories, 3 objects, distractors drawn without replacement from both: one always shares
    shared = synth_config(
        "distractors", num=1, num_categories=2, min_objects=3, max_objects=3, share_category=True
    )
    for i in range(4):
        scene = render_scene(shared, "main", i)
        assert scene.categories.count(scene.categories[scene.sounding]) == 2
    with pytest.raises(ValueError, match="distinct categories"):
        synth_config("distractors", num=1, num_categories=2, min_objects=3, max_objects=3)
    distinct = synth_config("distractors", num=1, min_objects=4, max_objects=4)
    for i in range(4):
        cats = render_scene(distinct, "main", i).categories
        assert len(set(cats)) == 4


def test_snr_sets_the_noise_level_of_the_written_clip(tmp_path):
    estimates = {}
    for snr in (0.0, 20.0):
        config = synth_config("easy", num=2, seed=5, pretrain_num=0, snr_db=snr)
        generate_synth(tmp_path / f"snr{snr:g}", config, workers=1, progress=False)
        for i in range(2):
            wave, _ = load_audio(tmp_path / f"snr{snr:g}" / f"audio/synth_{i:06d}.wav")
            source = render_scene(config, "main", i).source.astype(np.float64)
            # the clip is an affine map of source + noise: regress it on [source, 1], the rest is noise
            design = np.stack([source, np.ones_like(source)], axis=1)
            coef, *_ = np.linalg.lstsq(design, wave.astype(np.float64), rcond=None)
            residual = wave - design @ coef
            estimates[snr, i] = 10 * np.log10(np.mean((coef[0] * source) ** 2) / np.mean(residual**2))
    for (snr, _), estimate in estimates.items():
        assert abs(estimate - snr) < 0.5, estimates


def test_snr_changes_only_the_noise():
    a = render_scene(synth_config("distractors", num=1, snr_db=0.0), "main", 0)
    b = render_scene(synth_config("distractors", num=1, snr_db=20.0), "main", 0)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.source, b.source)
    np.testing.assert_allclose(a.noise, b.noise * 10.0, rtol=1e-5, atol=1e-7)


def test_sounds_are_category_specific():
    # the log-mel profile of a clean signature is closer to other scenes of its category than to others
    config = synth_config("easy", num=1, snr_db=30.0)
    by_cat: dict[int, list[np.ndarray]] = {}
    i = 0
    while min((len(by_cat.get(c, [])) for c in range(8)), default=0) < 2 and i < 200:
        scene = render_scene(config, "main", i)
        profile = waveform_to_examples(scene.mix.astype(np.float64)).numpy().mean(axis=(0, 1))  # 64 bands
        by_cat.setdefault(scene.categories[0], []).append(profile - profile.mean())
        i += 1
    protos = {c: v[0] for c, v in by_cat.items()}
    for c, (_, probe) in ((c, v[:2]) for c, v in by_cat.items()):
        nearest = min(protos, key=lambda k: np.linalg.norm(protos[k] - probe))
        assert nearest == c


def test_resume_and_refusals(tmp_path, tiny):
    config = synth_config("easy", num=3, seed=2, pretrain_num=1)
    out = tmp_path / "set"
    generate_synth(out, config, workers=1, progress=False)
    before = _file_digests(out)
    (out / "frames/synth_000001.jpg").unlink()  # as if killed before this scene finished
    (out / "manifest.csv").unlink()
    generate_synth(out, config, workers=1, progress=False)
    assert _file_digests(out) == before
    with pytest.raises(DataError, match=r"other settings \(--snr-db 10.0 there, 3.0 now\)"):
        generate_synth(out, synth_config("easy", num=3, seed=2, pretrain_num=1, snr_db=3.0), progress=False)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty"):
        generate_synth(other, config, progress=False)
    assert (other / "notes.txt").read_text() == "mine"


def test_resume_rewrites_damaged_scenes_and_drops_stale_temporaries(tmp_path):
    config = synth_config("easy", num=4, seed=5, pretrain_num=2)
    out = tmp_path / "set"
    generate_synth(out, config, workers=1, progress=False)
    before = _file_digests(out)
    (out / "manifest.csv").unlink()  # unfinished, and damaged since by hand or by a full disk:
    (out / "frames/synth_000000.jpg").write_bytes(b"")
    spect = out / "spect/synth_000001.npy"
    spect.write_bytes(spect.read_bytes()[:100])
    audio = out / "audio/synthpre_000001.wav"
    audio.write_bytes(audio.read_bytes()[:1000])
    frame = out / "frames/synth_000002.jpg"
    frame.write_bytes(frame.read_bytes()[:-10])
    stale = out / "spect/.synth_000003.npy.x1y2z3.tmp"  # left by a run killed mid-write
    stale.write_bytes(b"partial")
    top = out / ".scenes.json.a1b2c3.tmp"
    top.write_text("partial")
    generate_synth(out, config, workers=1, progress=False)
    assert not stale.exists() and not top.exists()
    assert _file_digests(out) == before


def test_a_run_killed_while_writing_its_first_file_can_be_resumed(tmp_path):
    out = tmp_path / "set"
    out.mkdir()
    (out / ".meta.json.k9x8y7.tmp").write_text('{"form')  # all a kill during the first write leaves
    generate_synth(out, synth_config("easy", num=3, pretrain_num=0), workers=1, progress=False)
    assert (out / "meta.json").is_file() and not (out / ".meta.json.k9x8y7.tmp").exists()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("synth", [1], "'synth' holds list, expected an object"),
        ("version", None, "version None is not a whole number"),
        ("version", "abc", "version 'abc' is not a whole number"),
    ],
)
def test_a_meta_json_with_wrong_types_is_named(tmp_path, field, value, message):
    config = synth_config("easy", num=3, seed=2, pretrain_num=0)
    out = tmp_path / "set"
    generate_synth(out, config, workers=1, progress=False)
    meta = json.loads((out / "meta.json").read_text())
    meta[field] = value
    (out / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=rf"meta\.json: {re.escape(message)}"):
        generate_synth(out, config, workers=1, progress=False)


def test_a_path_below_a_file_and_an_empty_split_are_reported(tmp_path, caplog):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(DataError, match="afile/sub: cannot be made, .*afile is a file, not a folder"):
        generate_synth(tmp_path / "afile/sub", synth_config("easy", num=3), progress=False)
    with caplog.at_level("WARNING", logger="sspl.data.synth"):
        summary = generate_synth(
            tmp_path / "small", synth_config("easy", num=3, pretrain_num=0), workers=1, progress=False
        )
    assert summary["scenes"]["val"] == 0
    assert "the val split is empty (3 scenes are too few for its share 0.1)" in caplog.text
    assert "train split" not in caplog.text and "test split" not in caplog.text


@pytest.mark.parametrize(
    "bad",
    [
        {"object_size": (0.4, 0.3)},
        {"object_size": (0.2, 0.7)},
        {"min_objects": 0},
        {"val_fraction": 0.5, "test_fraction": 0.5},
        {"num": 0},
        {"num": 10**10},  # would build ten billion tasks in memory
        {"pretrain_num": 2_000_000},
        {"num_categories": 9},
        {"snr_db": -7000.0},  # overflowed, or gave clips of NaN
        {"seed": -1},
        {"share_category": True, "min_objects": 10, "max_objects": 10},  # 8 categories: at most 9
    ],
)
def test_invalid_settings_are_refused(bad):
    with pytest.raises(ValueError, match="invalid SynthAV settings"):
        synth_config("distractors", **{"num": 4, **bad})


def test_cli_synth_end_to_end(tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["synth", str(out), "--num", "4", "--seed", "1", "--preset", "easy", "--pretrain-num", "2"]
    argv += ["--snr-db", "5", "--object-size", "0.2", "0.3", "--workers", "1", "--no-progress"]
    assert main([*argv, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert sum(summary["scenes"].values()) == summary["count"] == 6
    assert (summary["command"], summary["out"], summary["open"]) == (
        "synth",
        str(out),
        str(out / "manifest.csv"),
    )
    assert main(argv) == 0  # a finished set: nothing left to do
    facts, wrote = capsys.readouterr().out.splitlines()[-2:]
    assert facts == "sspl synth: " + ", ".join(f"{k} {v}" for k, v in summary["scenes"].items())
    assert facts.startswith("sspl synth: train 3, val 0, test 1,")
    assert wrote.startswith(f"Wrote 6 scenes to {out}/ in ") and wrote.endswith(
        f" -- open {out / 'manifest.csv'}"
    )
    meta = read_meta(out)
    assert meta["synth"]["snr_db"] == 5.0 and meta["synth"]["object_size"] == [0.2, 0.3]
    assert meta["synth"]["max_objects"] == 1
    assert main(["synth", str(tmp_path / "bad"), "--num", "4", "--object-size", "0.6", "0.7"]) == 1
    assert "object_size" in capsys.readouterr().err


def test_a_set_made_before_a_setting_existed_has_that_settings_default():
    from sspl.data.synth import settings_differences

    config = synth_config("easy", num=50, seed=3)
    older = config.to_json()
    del older["no_source_fraction"]  # sets made before the extended preset do not record it
    assert settings_differences(older, config) == []
    assert settings_differences(older, synth_config("easy", num=50, seed=4)) == ["--seed 3 there, 4 now"]
    assert settings_differences(older, synth_config("extended", num=50, seed=3)) != []
