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

import sspl
from sspl.cli import main
from sspl.demo import DemoSettings, demo_command, demo_video, run_demo
from sspl.engine.train import train
from sspl.errors import DataError
from sspl.viz import metric_label

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
    beside_epochs=1,
)


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.sources.append(dict(attrs)["src"])


class _Page(HTMLParser):
    """The page's sections: heading -> its tables (rows of cell texts), videos (attributes) and text."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: dict[str, dict] = {}
        self._section: dict | None = None
        self._tag = ""
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        self._tag = tag
        if tag == "h2":
            self._section = {"tables": [], "videos": [], "text": "", "title": ""}
        elif tag == "table":
            self._section["tables"].append([])
        elif tag == "tr":
            self._section["tables"][-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "video":
            self._section["videos"].append(dict(attrs))

    def handle_endtag(self, tag):
        if tag == "h2":
            self.sections[self._section["title"]] = self._section
        elif tag in ("td", "th"):
            self._section["tables"][-1][-1].append("".join(self._cell))
            self._cell = None
        self._tag = ""

    def handle_data(self, data):
        if self._section is None:
            return
        if self._tag == "h2":
            self._section["title"] += data
        elif self._cell is not None:
            self._cell.append(data)
        else:
            self._section["text"] += data


def _page(path: Path) -> dict[str, dict]:
    parser = _Page()
    parser.feed(path.read_text())
    return parser.sections


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
    # the method trained beside SSPL, then the trivial maps
    beside = json.loads((out / "eval_attention" / "report.json").read_text())
    assert summary["metrics"][3] == {
        "map": "Attention (Senocak et al., contrastive), trained",
        "cIoU@0.5": beside["ciou@0.5"],
        "AUC": beside["auc"],
        "scenes": 6,
    }
    assert summary["beside"]["metrics"] == {k: v for k, v in summary["metrics"][3].items() if k != "map"}
    names = [row["map"] for row in summary["metrics"][4:]]
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


def test_the_page_plays_the_video_and_says_what_ran(demo):
    import av
    import torch

    out, first = demo
    assert first["run"]["command"] == demo_command("out", TINY)  # the folder as it was given
    # the page against summary.json (other tests of this module rerun the demo in the folder)
    summary = json.loads((out / "summary.json").read_text())
    page = _page(out / "index.html")
    # the heat-map video plays in the page: a <video controls> with a relative src, H.264 / yuv420p
    (video,) = page["A real video (pipeline only)"]["videos"]
    assert "controls" in video and not Path(video["src"]).is_absolute()
    assert (out / video["src"]).resolve() == Path(summary["outputs"]["heatmap_video"]).resolve()
    with av.open(str(out / video["src"])) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.codec_context.pix_fmt) == ("h264", "yuv420p")
    # what ran, each value from summary.json
    ran = {row[0]: row[1] for row in page["What ran"]["tables"][0][1:]}
    run, sspl_run, beside = summary["run"], summary["sspl"], summary["beside"]
    assert ran["command"] == run["command"]
    assert ran["seed"].startswith(f"{TINY.seed} (") and f"training seed {1234 + TINY.seed}" in ran["seed"]
    assert ran["torch threads"] == str(run["torch_threads"]) == str(torch.get_num_threads())
    assert f"sspl {sspl.__version__}" in ran["versions"] and f"torch {torch.__version__}" in ran["versions"]
    assert ran["wall time"].startswith(f"{run['wall_time_s']:.0f} s (") and run["wall_time_s"] > 0
    assert ran["started (UTC)"] == run["started_utc"]
    assert "30 SynthAV 'easy' scenes: 21 training, 3 validation (model selection), 6 test" in ran["data"]
    assert "SSPL w/o PCM" in ran["SSPL"] and "= 10x the paper's Table S1 SoundNet-Flickr rates" in ran["SSPL"]
    assert f"lr {sspl_run['lr']:g} " in ran["SSPL"] and (sspl_run["lr"], sspl_run["lr_head"]) == (5e-3, 2e-2)
    assert "(0.0005, 0.002)" in ran["SSPL"] and f"{TINY.epochs} epochs" in ran["SSPL"]
    assert ran["SSPL: selected epoch"].startswith(
        f"epoch {summary['best_epoch']} of {TINY.epochs} (best validation cIoU@0.5: "
    )
    label = "Attention (Senocak et al., contrastive)"
    assert beside["label"] == label and beside["method"] == "attention" and beside["lr"] == 1e-3
    assert f"lr {beside['lr']:g}" in ran[label] and "10x" not in ran[label]
    assert ran[f"{label}: selected epoch"].startswith(
        f"epoch {beside['selected_epoch']} of {TINY.beside_epochs}"
    )
    assert ran["evaluation"].startswith(f"{summary['evaluation']['scenes']} held-out test scenes")
    # the scores table is the summary's metrics
    header, *rows = page["Held-out scores"]["tables"][0]
    assert header == ["map", "cIoU@0.5", "AUC", "scenes"]
    assert rows == [
        [m["map"], f"{m['cIoU@0.5']:.3f}", f"{m['AUC']:.3f}", str(m["scenes"])] for m in summary["metrics"]
    ]
    # SSPL's evaluated maps beside the other method's, scene by scene
    pairs = sorted((out / "figures" / "beside").glob("*.png"))
    assert [p.stem for p in pairs] == sorted(p.stem for p in (out / "eval" / "overlays").glob("*.png"))
    assert (
        len(pairs) == 6
        and "Left: SSPL; right: " + label in page[f"Held-out test scenes: SSPL beside {label}"]["text"]
    )


def test_the_evaluation_page_says_what_was_evaluated(demo):
    out, _ = demo
    report = json.loads((out / "eval" / "report.json").read_text())
    text = _page(out / "eval" / "index.html")["What was evaluated"]["text"]
    assert f"Checkpoint: {report['checkpoint']}." in text
    assert f"split test: {report['num_samples']} samples evaluated." in text and report["num_samples"] == 6
    assert "Protocol (synth): maps upsampled to 224 x 224 (half-pixel bilinear)" in text
    assert (
        "a fixed threshold of 0.5 on the min-max normalised map; ground truth: the union of the boxes" in text
    )


def test_metric_keys_read_as_words():
    # the learning curve's axis (learning_curves_plot's default label)
    assert metric_label("val_ciou@0.5") == "validation cIoU@0.5"
    assert metric_label("val_auc") == "validation AUC" and metric_label("train_loss") == "training loss"
    assert metric_label("pairs_per_s") == "pairs_per_s"


def test_the_command_on_the_page_reruns_the_demo():
    assert demo_command("demo_out", DemoSettings()) == "sspl demo --out demo_out"
    cli = DemoSettings(scenes=100, pretrain_scenes=100, seed=2, pcm=True)
    assert demo_command("d", cli) == "sspl demo --out d --scenes 100 --seed 2 --pcm"
    assert demo_command("d", TINY) == f"sspl.demo.run_demo('d', {TINY!r})"  # no command line says TINY


_PROBE = """<!DOCTYPE html><html><body><video id="v" preload="auto" muted src="%s"></video><pre id="o">-</pre>
<script>
const v = document.getElementById("v"), o = document.getElementById("o");
v.addEventListener("loadeddata", () => { o.textContent = "decoded " + v.videoWidth + "x" + v.videoHeight; });
v.addEventListener("error", () => { o.textContent = "error " + v.error.code; });
</script></body></html>"""


@pytest.mark.skipif(
    not (shutil.which("chromium") or shutil.which("chromium-browser")), reason="needs Chromium"
)
def test_chromium_decodes_the_pages_video(demo, tmp_path):
    # the page's video element is only worth having if a browser decodes the writer's MP4
    import subprocess

    import av

    out, _ = demo
    (video,) = _page(out / "index.html")["A real video (pipeline only)"]["videos"]
    shutil.copy(out / video["src"], tmp_path / "clip.mp4")
    (tmp_path / "probe.html").write_text(_PROBE % "clip.mp4")
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    dom = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=8000",
            "--dump-dom",
            (tmp_path / "probe.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    with av.open(str(tmp_path / "clip.mp4")) as container:
        stream = container.streams.video[0]
        assert f'<pre id="o">decoded {stream.width}x{stream.height}</pre>' in dom
