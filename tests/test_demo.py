"""`sspl demo` end to end at a tiny scale: every output of the page exists, the numbers in the summary are the
evaluator's, and a rerun resumes instead of starting over."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from sspl.cli import main
from sspl.demo import DemoSettings, demo_video, run_demo
from sspl.engine.train import train
from sspl.errors import DataError

TINY = DemoSettings(
    scenes=30,
    pretrain_scenes=16,
    pretrain_epochs=1,
    epochs=1,
    batch_size=8,
    workers=1,
    localize_scenes=2,
    video_fps=2.0,
    train_overrides=("model.proj_dim=256", "model.pred_hidden=64", "data.num_workers=0"),
)


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.sources.append(dict(attrs)["src"])


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    # a relative output folder, as `make demo` passes it (`--out demo_out`): it once broke the page's links
    root = tmp_path_factory.mktemp("demo").resolve()
    cwd = os.getcwd()
    os.chdir(root)
    try:
        summary = run_demo(Path("out"), TINY, progress=False)
    finally:
        os.chdir(cwd)
    return root / "out", summary


def test_bundled_video_is_packaged():
    assert demo_video().is_file() and demo_video().stat().st_size > 100_000


def test_demo_writes_the_page_and_its_outputs(demo):
    out, summary = demo
    page = out / "index.html"
    assert summary["page"] == str(page)  # absolute, whatever out_dir was
    parser = _Images()
    parser.feed(page.read_text())
    assert len(parser.sources) >= 5  # curves, overlays, scenes, the video's frames
    for src in parser.sources:
        assert (out / src).is_file(), src
    text = page.read_text()
    assert "pipeline only" in text and "not real-world sound localization" in text
    assert "not cached" in text or "SHA-256 checked" in text  # the weights' status is stated
    for key in ("heatmap_video", "maps", "contact_sheet"):
        assert (out / "real_video").joinpath(summary["outputs"][key]).is_file()


def test_summary_numbers_are_the_evaluators(demo):
    out, summary = demo
    report = json.loads((out / "eval" / "report.json").read_text())
    trained, untrained, oracle = summary["metrics"][:3]
    assert trained["cIoU@0.5"] == report["ciou@0.5"] and trained["AUC"] == report["auc"]
    assert trained["scenes"] == report["num_samples"] == 6  # 20% of 30 scenes
    untrained_report = json.loads((out / "untrained" / "eval" / "report.json").read_text())
    assert untrained["cIoU@0.5"] == untrained_report["ciou@0.5"]
    assert 0.0 <= oracle["AUC"] <= 1.0
    names = [row["map"] for row in summary["metrics"][3:]]
    assert names == [f"{k} (trivial)" for k in report["baselines"]]


def test_untrained_checkpoint_is_the_runs_starting_point(demo):
    # the epoch-0 validation of the run scores the model save_untrained wrote: same maps, same numbers
    from sspl.engine.evaluate import evaluate

    out, _ = demo
    val = evaluate(
        out / "untrained" / "checkpoint.pt",
        out / "synthav",
        "synth",
        out / "val0",
        split="val",
        progress=False,
    )
    history = json.loads((out / "run" / "history.json").read_text())
    assert history[0]["epoch"] == 0
    assert val.report["ciou@0.5"] == pytest.approx(history[0]["val_ciou@0.5"])
    assert val.report["auc"] == pytest.approx(history[0]["val_auc"])


def test_bad_settings_fail_before_anything_runs(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "d"), "--scenes", "0", "--epochs", "0"]) == 1
    err = capsys.readouterr().err
    assert "scenes 0: at least 46" in err and "epochs 0" in err
    assert "pretrain_scenes" not in err  # --scenes sets both counts; its one bad value is reported once
    assert not (tmp_path / "d").exists()


def test_a_rerun_with_another_seed_asks_for_another_folder(demo):
    out, _ = demo
    with pytest.raises(DataError, match="holds a demo of another preset, size or seed; give another --out"):
        run_demo(out, dataclasses.replace(TINY, seed=3), progress=False)
    assert (out / "index.html").is_file()  # refused before anything of the finished demo is touched


def test_an_output_that_is_not_a_demo_folder_is_refused_before_anything_runs(tmp_path, capsys):
    theirs = tmp_path / "site"
    theirs.mkdir()
    (theirs / "index.html").write_text("<html>mine</html>")
    (tmp_path / "afile").write_text("x")
    for out, message in (
        (theirs, f"{theirs}: folder is not empty and holds no demo (the demo would overwrite it)"),
        (tmp_path / "afile", f"{tmp_path / 'afile'}: is a file, not a folder"),
        (tmp_path / "afile" / "sub", f"{tmp_path / 'afile'}: is a file, not a folder, so the output folder"),
        ("", "--out is empty"),
    ):
        assert main(["demo", "--out", str(out), "--scenes", "50", "--no-progress"]) == 1
        assert message in capsys.readouterr().err
    assert [p.name for p in theirs.iterdir()] == ["index.html"]
    assert main(["demo", "--out", str(tmp_path / "d"), "--seed", str(2**64)]) == 1
    assert "seed 18446744073709551616: must be in [0, 2**63)" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "site"]


def test_a_rerun_stopped_half_way_leaves_no_page_of_the_last_run(demo, tmp_path, monkeypatch):
    copy = tmp_path / "copy"
    shutil.copytree(demo[0], copy)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("sspl.engine.synthav.evaluate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_demo(copy, TINY, progress=False)
    assert not (copy / "index.html").exists() and not (copy / "summary.json").exists()


def test_switching_pcm_keeps_the_other_models_run(demo, tmp_path, monkeypatch):
    copy = tmp_path / "copy"
    shutil.copytree(demo[0], copy)
    without_pcm = (copy / "run" / "checkpoints" / "last.pt").read_bytes()
    with_pcm = run_demo(copy, dataclasses.replace(TINY, pcm=True), progress=False)
    assert with_pcm["settings"]["pcm"] is True and (copy / "figures" / "pcm_steps.png").is_file()
    assert (copy / "run" / "checkpoints" / "last.pt").read_bytes() == without_pcm

    calls = []

    def spy(*args, **kwargs):
        calls.append(kwargs)
        raise KeyboardInterrupt  # what train was asked to do is all this test needs

    monkeypatch.setattr("sspl.engine.synthav.train", spy)
    with pytest.raises(KeyboardInterrupt):
        run_demo(copy, TINY, progress=False)
    assert calls[0]["resume"] is True  # back to w/o PCM: its finished run is picked up, not retrained


def test_rerun_resumes_and_cli_prints_the_page(demo, capsys, monkeypatch):
    out, _ = demo
    calls = []

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return train(*args, **kwargs)

    monkeypatch.setattr("sspl.engine.synthav.train", spy)
    monkeypatch.setattr("sspl.demo.DemoSettings", lambda **kw: TINY)
    assert main(["demo", "--out", str(out), "--no-progress"]) == 0
    assert calls[0]["resume"] is True  # the finished run is picked up, not retrained
    last = capsys.readouterr().out.splitlines()[-2:]
    assert last[0].startswith("sspl demo: held-out SSPL cIoU@0.5 ") and "oracle cIoU@0.5" in last[0]
    assert last[1].startswith("Wrote ") and last[1].endswith(f" -- open {out / 'index.html'}")
