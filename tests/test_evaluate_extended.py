"""``sspl evaluate --protocol extended`` and ``--save-maps`` end to end on a tiny SynthAV set, the method's
confidence hook, and the extended sets' clips without a visible source."""

# ruff: noqa: F811  (the `synth_dir` fixture of test_engine is imported, then requested by name)

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from small_runs import evaluate_argv
from sspl.cli import main as cli_main
from sspl.data.annotations import load_annotations
from sspl.data.lists import load_list, silent_pairs
from sspl.data.lists import test_ids as benchmark_ids
from sspl.data.manifest import read_manifest
from sspl.engine.extended import map_confidences, with_silent_pairs
from sspl.errors import DataError
from sspl.metrics import Protocol, ciou, evaluate_maps, gt_map_from_boxes
from sspl.metrics_extended import evaluate_extended, extended_metrics, slavc_confidence
from test_engine import small_config, synth_dir  # noqa: F401  (the engine tests' tiny set)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from sspl.engine.synthav import save_untrained

    return save_untrained(small_config(), tmp_path_factory.mktemp("ckpt") / "untrained.pt")


@pytest.fixture(scope="module")
def extended_dir(synth_dir, tmp_path_factory) -> Path:
    """The tiny set with every third test clip's boxes removed: clips without a visible source."""
    dest = tmp_path_factory.mktemp("ext") / "set"
    shutil.copytree(synth_dir, dest)
    test = sorted(r.id for r in read_manifest(dest) if r.split == "test" and r.ok)
    silent = set(test[::3])
    entries = json.loads((dest / "annotations.json").read_text())
    for e in entries:
        if e["file"] in silent:
            e["bbox"] = []
    (dest / "annotations.json").write_text(json.dumps(entries))
    return dest


def _evaluate(checkpoint: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return evaluate_argv(checkpoint, data, out, "--batch-size", "5", *extra)


def test_cli_extended_writes_the_report_the_table_and_maps_that_rescore(
    extended_dir, checkpoint, tmp_path, capsys
):
    out = tmp_path / "ev"
    args = ["--protocol", "extended", "--save-maps", "--save-overlays", "2"]
    assert cli_main(_evaluate(checkpoint, extended_dir, out, *args)) == 0
    printed = capsys.readouterr().out
    assert "protocol extended" in printed and "max_f1" in printed and "without a visible source" in printed
    report = json.loads((out / "report.json").read_text())
    test = sorted(r.id for r in read_manifest(extended_dir) if r.split == "test" and r.ok)
    silent = set(test[::3])
    assert report["num_samples"] == len(test) and report["num_silent"] == len(silent) > 0
    assert report["num_visible"] == len(test) - len(silent)
    assert report["protocol"]["name"] == "extended" and report["protocol"]["threshold"] == "fixed"
    for key in ("ap", "max_f1", "precision", "ciou@0.5", "auc"):
        assert 0.0 <= report[key] <= 1.0, key
    assert set(report["baselines"]["whole"]) == {"ciou@0.5", "auc", "ap", "max_f1", "precision"}
    assert report["baselines"]["whole"]["ap"] == 0.0  # one confidence for all: SLAVC's AP has no step

    with open(out / "per_sample.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == test
    assert {"id", "ciou", "confidence", "n_boxes", "area"} <= set(rows[0])
    assert {r["id"] for r in rows if r["n_boxes"] == "0"} == silent
    assert (out / "overlays" / f"{test[0]}.png").is_file() and test[0] in silent  # drawn without a box

    # the confidences are the default hook's (the small SSPL model defines none), from the saved raw maps
    saved = np.load(out / "maps.npz")
    ids = [str(i) for i in saved["ids"]]
    assert ids == test and saved["raw_maps"].shape[0] == len(test)
    np.testing.assert_allclose(saved["confidence"], slavc_confidence(saved["raw_maps"]), rtol=0, atol=1e-7)
    assert [float(r["confidence"]) for r in rows] == saved["confidence"].tolist()

    # re-scored from the npz alone: the masks and boxes give every cIoU, the lists give every number
    protocol = json.loads(str(saved["protocol"]))
    size = protocol["size"]
    masks = np.unpackbits(saved["masks"], axis=-1)[..., :size].astype(bool)
    offsets = np.concatenate([[0], np.cumsum(saved["n_boxes"])])
    cious, areas = [], []
    for k in range(len(ids)):
        boxes = saved["boxes"][offsets[k] : offsets[k + 1]]
        if len(boxes) == 0:
            cious.append(0.0)
            areas.append(0.0)
            continue
        gt = gt_map_from_boxes(boxes, rule=protocol["rule"], box_format=protocol["box_format"], size=size)
        cious.append(ciou(masks[k], gt))
        areas.append(float(gt.sum()))
    np.testing.assert_allclose(cious, saved["ciou"], rtol=0, atol=1e-12)
    rescored = extended_metrics(saved["n_boxes"], cious, saved["confidence"], areas)["all@50"]
    for key in ("ap", "max_f1", "precision"):
        assert rescored[key] == pytest.approx(report[key], abs=1e-12), key
    assert rescored["f1"] == pytest.approx(report["f1"], abs=1e-12)
    # and from the raw maps: the whole evaluation again, the visible clips' numbers the standard protocol's
    fields = {k: v for k, v in protocol.items() if k in Protocol.__dataclass_fields__}
    again = evaluate_extended(
        dict(zip(ids, saved["raw_maps"])),
        {i: saved["boxes"][offsets[k] : offsets[k + 1]] for k, i in enumerate(ids)},
        dict(zip(ids, saved["confidence"].tolist())),
        Protocol(**fields),
    ).summary()
    assert {k: again[k] for k in ("ap", "max_f1", "precision", "ciou@0.5", "auc")} == pytest.approx(
        {k: report[k] for k in ("ap", "max_f1", "precision", "ciou@0.5", "auc")}, abs=1e-12
    )
    visible = [k for k, i in enumerate(ids) if i not in silent]
    standard = evaluate_maps(
        {ids[k]: saved["raw_maps"][k] for k in visible},
        {ids[k]: saved["boxes"][offsets[k] : offsets[k + 1]] for k in visible},
        Protocol(**fields),
    )
    assert report["ciou@0.5"] == standard.ciou_success_rate and report["auc"] == standard.auc


def test_standard_protocol_still_refuses_clips_without_boxes(extended_dir, checkpoint, tmp_path, capsys):
    out = tmp_path / "ev"
    assert cli_main(_evaluate(checkpoint, extended_dir, out)) == 1
    assert "have no box" in capsys.readouterr().err
    assert not out.exists() or not (out / "report.json").exists()


def test_threshold_and_save_maps_options(synth_dir, checkpoint, tmp_path, capsys):
    assert cli_main(_evaluate(checkpoint, synth_dir, tmp_path / "a", "--threshold", "median")) == 1
    assert "--threshold is for --protocol extended" in capsys.readouterr().err
    # the standard protocol with --save-maps: its table is unchanged, the npz holds its cIoU
    std = tmp_path / "c"
    assert cli_main(_evaluate(checkpoint, synth_dir, std, "--protocol", "median", "--save-maps")) == 0
    saved = np.load(std / "maps.npz")
    rows = (std / "per_sample.csv").read_text().splitlines()
    assert rows[0].startswith("id,ciou,ciou_whole")
    expected = {r.split(",")[0]: float(r.split(",")[1]) for r in rows[1:]}
    assert dict(zip([str(i) for i in saved["ids"]], saved["ciou"].round(6).tolist())) == expected
    # --overwrite removes the earlier maps.npz with the other outputs; a set whose clips all have a source
    # under the extended protocol, binarised by the median
    args = ["--protocol", "extended", "--threshold", "median", "--overwrite"]
    assert cli_main(_evaluate(checkpoint, synth_dir, std, *args)) == 0
    report = json.loads((std / "report.json").read_text())
    assert report["protocol"]["threshold"] == "median" and report["num_silent"] == 0
    assert not (std / "maps.npz").exists()


def test_extended_evaluation_with_only_silent_clips_is_refused(extended_dir, checkpoint, tmp_path, capsys):
    data = tmp_path / "silent"
    shutil.copytree(extended_dir, data)
    entries = json.loads((data / "annotations.json").read_text())
    (data / "annotations.json").write_text(json.dumps([{**e, "bbox": []} for e in entries]))
    assert cli_main(_evaluate(checkpoint, data, tmp_path / "ev", "--protocol", "extended")) == 1
    assert "has a box" in capsys.readouterr().err


class _Hooked(torch.nn.Module):
    def map_confidence(self, maps: torch.Tensor) -> torch.Tensor:
        return maps.amax(dim=(1, 2))


def test_confidence_is_the_methods_hook_or_the_default():
    rng = np.random.default_rng(0)
    maps = {f"c{k}": rng.uniform(-1, 1, (7, 7)).astype(np.float32) for k in range(5)}
    maps["big"] = rng.uniform(-1, 1, (14, 14)).astype(np.float32)  # another shape: its own batch
    hooked = map_confidences(_Hooked(), maps, batch_size=2)
    assert hooked == {i: pytest.approx(float(m.max())) for i, m in maps.items()}
    default = map_confidences(torch.nn.Module(), maps)
    assert default == {i: pytest.approx(float(slavc_confidence(m)), abs=1e-7) for i, m in maps.items()}

    class Wrong(torch.nn.Module):
        def map_confidence(self, maps):
            return maps.flatten()

    with pytest.raises(ValueError, match="returned 98 values for 2 maps"):
        map_confidences(Wrong(), {"a": maps["c0"], "b": maps["c1"]})


def test_attention_confidence_is_its_top_quarter_mass():
    from sspl.models.baselines import AttentionBaseline

    weights = torch.zeros(2, 4, 4)
    weights[0] = 1 / 16  # uniform attention: a quarter of the mass on any quarter
    weights[1, 0, :2] = 0.4
    weights[1, 1:, :] = 0.2 / 12
    got = AttentionBaseline.map_confidence(None, weights)
    assert got.tolist() == pytest.approx([0.25, 0.8 + 2 * 0.2 / 12])


def test_extended_sets_clips_without_a_visible_source():
    flickr = silent_pairs("flickr")
    assert len(flickr) == 250 and flickr[0].id == "10000130166+10437048305"
    assert {p.video for p in flickr} == set(
        benchmark_ids("flickr", "full")
    )  # each test frame, with another sound
    assert [p.video for p in flickr] == load_list("flickr_test_plus_silent")  # the list gives the frames
    vggss = silent_pairs("vggss")
    assert len(vggss) == 5158 and len({p.id for p in vggss}) == 5158
    assert sum(p.id == p.video == p.audio for p in vggss) == 379  # heard, not seen: their own sound
    assert not {p.id for p in vggss} & set(benchmark_ids("vggss", "full"))
    gt = with_silent_pairs("flickr", load_annotations("flickr"), "pixels256")
    assert len(gt) == 500 and sum(len(a.boxes) == 0 for a in gt.values()) == 250
    with pytest.raises(ValueError, match="no extended test set for 'avsbench'"):
        silent_pairs("avsbench")


def test_extended_flickr_scores_a_prepared_pair_as_a_clip_without_a_source(
    data_dir, checkpoint, tmp_path, capsys
):
    """Extended Flickr-SoundNet end to end: a test clip (bundled boxes) and its published pair (that frame
    with another clip's sound), prepared from a dump whose files carry those ids."""
    from sspl.data.prepare import prepare

    video, audio = "10000130166", "10437048305"  # the list's first pair
    assert silent_pairs("flickr")[0].id == f"{video}+{audio}"
    src = tmp_path / "dump"
    (src / "frames").mkdir(parents=True)
    (src / "audio").mkdir()
    shutil.copy(data_dir / "prepare" / "10006434483.jpg", src / "frames" / f"{video}.jpg")
    for clip in (video, audio):
        shutil.copy(data_dir / "prepare" / "10006434483.wav", src / "audio" / f"{clip}.wav")
    listed = tmp_path / "mine.csv"
    listed.write_text(f"video,audio,label\n{video},{video},\n{video},{audio},non-sounding\n")
    data = tmp_path / "data"
    assert (
        str(prepare(src, data, workers=1, progress=False, list_file=listed))
        == "done 2 / skipped 0 / failed 0"
    )
    out = tmp_path / "ev"
    args = ["--benchmark", "flickr", "--protocol", "extended"]
    command = [a for a in _evaluate(checkpoint, data, out) if a not in ("--benchmark", "synth")]
    assert cli_main([*command, *args]) == 0
    report = json.loads((out / "report.json").read_text())
    assert (report["num_visible"], report["num_silent"]) == (1, 1)
    assert report["extended_coverage"] == {"silent_pairs": 250, "evaluated_silent_pairs": 1}
    assert report["protocol"]["rule"] == "consensus"
    with open(out / "per_sample.csv", newline="") as f:
        n_boxes = {r["id"]: int(r["n_boxes"]) for r in csv.DictReader(f)}
    assert n_boxes[f"{video}+{audio}"] == 0 and n_boxes[video] == len(load_annotations("flickr")[video].boxes)
    capsys.readouterr()
    # the standard protocol refuses the pair: it knows no box for it
    assert (
        cli_main([*[a if a != str(out) else str(tmp_path / "std") for a in command], "--benchmark", "flickr"])
        == 1
    )
    assert f"{video}+{audio}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"protocol": "fixed", "threshold": "median"}, "with --protocol extended only"),
        ({"protocol": "extended", "threshold": "mean"}, "threshold 'mean'"),
        ({"protocol": "extendd"}, "choose fixed, median, absolute, extended"),
    ],
)
def test_engine_refuses_unknown_protocol_options_before_any_work(tmp_path, options, message):
    from sspl.engine.evaluate import evaluate

    with pytest.raises(DataError, match=message):
        evaluate(tmp_path / "no.pt", tmp_path / "no_data", "synth", tmp_path / "out", **options)
    assert not (tmp_path / "out").exists()


def test_synthav_extended_preset_under_the_extended_protocol_with_the_swap_test(checkpoint, tmp_path):
    """`sspl synth --preset extended` -> `sspl evaluate --protocol extended --swap`: the scenes without a
    visible source (silent and off-screen, recorded in scenes.json) are exactly the clips with n_boxes 0."""
    from sspl.data.synth import generate_synth, load_scenes, synth_config
    from sspl.engine.evaluate import evaluate

    data = tmp_path / "set"
    generate_synth(data, synth_config("extended", num=20, seed=3, pretrain_num=0), workers=1, progress=False)
    scenes = load_scenes(data)
    test = {i for i, s in scenes.items() if s["split"] == "test"}
    hidden = {i for i in test if scenes[i]["kind"] != "visible"}
    assert {scenes[i]["kind"] for i in hidden} == {"silent", "offscreen"}
    run = evaluate(checkpoint, data, "synth", tmp_path / "ev", protocol="extended", swap=True, progress=False)
    assert run.report["num_silent"] == len(hidden) and run.report["num_samples"] == len(test)
    assert {i for i, n in zip(run.extended.ids, run.extended.n_boxes) if n == 0} == hidden
    assert "swap" in run.report and (tmp_path / "ev" / "swap_per_sample.csv").is_file()
