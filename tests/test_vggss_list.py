"""`--list vggss_test_5158`: the ids of the bundled VGG-SS boxes, so a VGG-SS test set prepared from a
folder that holds other clips too (the whole VGG-Sound test split) is one `sspl evaluate` can score."""

# ruff: noqa: F811  (the `checkpoint` fixture is imported, then requested by name)

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sspl.cli import main
from sspl.data.annotations import load_annotations
from sspl.data.lists import load_list, read_list_text
from sspl.data.manifest import read_manifest
from sspl.data.prepare import read_clip_list
from sspl.data.video import write_synthetic_video
from sspl.errors import DataError
from test_faults_data import checkpoint  # noqa: F401  (the small untrained model, saved once)

VGGSS_IDS = ("zpWuikVorYg_000032", "gEvCUcZ6w88_000030")  # two clips with VGG-SS boxes
NOT_VGGSS = "abcdefghijk_000010"  # a VGG-Sound test clip without boxes


def test_the_list_is_exactly_the_clips_with_bundled_boxes():
    boxed = load_annotations("vggss")
    ids = load_list("vggss_test_5158")
    assert len(ids) == len(set(ids)) == 5158
    assert set(ids) == set(boxed) and all(len(boxed[i].boxes) for i in ids)
    # `sspl prepare --list` reads it through the same rows: every id, no label, no split.
    entries = read_clip_list("vggss_test_5158")
    assert [(e.id, e.label, e.split) for e in entries] == [(i, "", "") for i in ids]
    assert read_list_text("vggss_test_5158")[1] == "sspl/assets/benchmarks/vggss_test_5158.json"


def test_an_unknown_list_name_lists_the_new_name_among_the_bundled_ones():
    with pytest.raises(DataError, match=r"vggss_test_518: no such list file.*vggss_test_5158"):
        load_list("vggss_test_518")


def _evaluate(ckpt: Path, data: Path, out: Path, *extra: str) -> int:
    args = ["evaluate", "--checkpoint", str(ckpt), "--data", str(data), "--benchmark", "vggss"]
    return main([*args, "--out", str(out), "--device", "cpu", "--no-progress", *extra])


def test_prepare_with_the_list_gives_a_set_evaluate_scores(checkpoint, tmp_path, capsys):
    src = tmp_path / "vggsound_test"
    for k, clip in enumerate((*VGGSS_IDS, NOT_VGGSS)):
        write_synthetic_video(src / f"{clip}.mp4", seconds=3.0, seed=k)
    # The whole folder: the clip without boxes stops the evaluation (the fault the list is there for).
    assert main(["prepare", str(src), str(tmp_path / "all"), "--workers", "1", "--no-progress"]) == 0
    assert _evaluate(checkpoint, tmp_path / "all", tmp_path / "eval_all") != 0
    assert f"1 sample(s) have no ground-truth annotation: {NOT_VGGSS}" in capsys.readouterr().err
    # With the list: the boxed clips only; the test ids with no file here are recorded as failed.
    out = tmp_path / "vggss"
    args = ["prepare", str(src), str(out), "--list", "vggss_test_5158", "--workers", "1", "--no-progress"]
    main(args)
    rows = {r.id: r for r in read_manifest(out)}
    assert len(rows) == 5158 and NOT_VGGSS not in rows
    assert sorted(i for i, r in rows.items() if r.ok) == sorted(VGGSS_IDS)
    # Evaluate refuses a partial test set by default, and scores it with --allow-missing.
    assert _evaluate(checkpoint, out, tmp_path / "eval_refused") != 0
    assert "5156 clip(s) of the split failed to prepare" in capsys.readouterr().err
    assert _evaluate(checkpoint, out, tmp_path / "eval", "--allow-missing") == 0
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert len(report["not_evaluated"]) == 5156
    assert report["benchmark_coverage"]["evaluated_test_ids"] == 2
