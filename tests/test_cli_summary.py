"""Every command ends with the same two lines (its key numbers; what it wrote and what to open) or, with
``--json``, one JSON object; the format lives in one place, ``sspl.cli.summary``. The commands' own tests
check their lines (test_prepare, test_synth, test_pretrain, test_engine, test_localize, test_weights,
test_demo); here: the format itself, that every command offers ``--json``, and ``sspl evaluate``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sspl.cli import COMMANDS, build_parser, main
from sspl.cli.summary import Summary, count_files
from sspl.engine.checkpoint import save_checkpoint
from sspl.models.methods import get_method


def test_the_two_lines():
    s = Summary(
        "train",
        6,
        out="runs/x",
        open="runs/x/history.json",
        seconds=12.34,
        facts={"epochs": 2, "best epoch": None, "val_ciou@0.5": 0.41234, "stopped early": False},
    )
    assert s.lines() == [
        "sspl train: epochs 2, best epoch -, val_ciou@0.5 0.4123, stopped early no",
        "Wrote 6 files to runs/x/ in 12.3 s -- open runs/x/history.json",
    ]
    assert Summary("prepare", 1, "clip", out=Path("d")).lines() == ["Wrote 1 clip to d/"]
    assert Summary("weights", 0, "weight file", next="sspl weights --fetch", verb="Found").lines() == [
        "Found 0 weight files -- next: sspl weights --fetch"
    ]


def test_the_json_object():
    s = Summary(
        "localize",
        2,
        out=Path("out"),
        open=Path("out/a.png"),
        seconds=1.234,
        facts={"best epoch": 3, "count": 99},
        details={"outputs": {"overlay": "out/a.png"}, "command": "not me"},
    )
    assert s.as_dict() == {
        "command": "localize",
        "verb": "Wrote",
        "count": 2,  # the summary's own keys are not overwritten by facts or details
        "unit": "file",
        "out": "out",
        "open": "out/a.png",
        "next": None,
        "seconds": 1.23,
        "best_epoch": 3,
        "outputs": {"overlay": "out/a.png"},
    }


def test_count_files(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "f").write_text("x")
    (tmp_path / "g").write_text("x")
    assert count_files(tmp_path) == 2 and count_files(tmp_path / "missing") == 0


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_offers_json(command):
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    parser = sub.choices[command.replace("_", "-")]
    assert any("--json" in a.option_strings for a in parser._actions), command


# --------------------------------------------------------------------------------------------------
# sspl evaluate: its lines, its JSON and its overlays
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny SynthAV set and an untrained small model's run directory."""
    from sspl.config import Config, SSPLConfig
    from sspl.data.synth import generate_synth, synth_config

    config = Config(
        model=SSPLConfig(
            visual_encoder="small_cnn",
            audio_encoder="small_cnn",
            visual_channels=128,
            visual_weights=None,
            audio_weights=None,
        )
    )
    root = tmp_path_factory.mktemp("eval")
    data = root / "synth"
    generate_synth(data, synth_config("easy", num=10, seed=2, pretrain_num=0), workers=1, progress=False)
    torch.manual_seed(0)
    model = get_method("sspl").build(config, pretrained=False).eval()
    save_checkpoint(root / "run" / "checkpoints" / "best.pt", model=model, config=config, epoch=0, step=0)
    return data, root / "run"


def _evaluate(evaluated, out: Path, *extra: str) -> int:
    data, run = evaluated
    argv = ["evaluate", "--checkpoint", str(run), "--data", str(data), "--benchmark", "synth"]
    return main([*argv, "--out", str(out), "--no-progress", *extra])


def test_evaluate_ends_with_the_summary_and_draws_large_overlays(evaluated, tmp_path, capsys):
    out = tmp_path / "eval"
    assert _evaluate(evaluated, out, "--save-overlays", "2") == 0
    facts, wrote = capsys.readouterr().out.splitlines()[-2:]
    report = json.loads((out / "report.json").read_text())
    assert facts.startswith(
        f"sspl evaluate: benchmark synth, protocol fixed, samples {report['num_samples']}, ciou@0.5 "
    )
    assert "baselines ciou@0.5/auc whole " in facts
    # report.json, per_sample.csv, success_curve.png, index.html and the two overlays
    assert re.fullmatch(
        rf"Wrote 6 files to {re.escape(str(out))}/ in [0-9.]+ s -- open {out}/index.html", wrote
    )
    overlays = sorted((out / "overlays").glob("*.png"))
    assert len(overlays) == 2
    picture = Image.open(overlays[0])
    assert picture.height == 448 + 24 and picture.width > 448 + 30  # twice the scored 224, and a colour bar
    strip = np.asarray(picture.convert("RGB"))[24:, 448:].reshape(-1, 3).astype(int)
    assert (np.abs(strip - [253, 231, 37]).max(axis=1) <= 8).any()  # the bar's top colour (viridis yellow)

    bare = tmp_path / "bare"
    assert _evaluate(evaluated, bare, "--save-overlays", "1", "--no-colorbar", "--json") == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert (summary["command"], summary["count"], summary["samples"]) == (
        "evaluate",
        5,
        report["num_samples"],
    )
    assert summary["ciou@0.5"] == report["ciou@0.5"] and summary["report"] == str(bare / "report.json")
    assert summary["open"] == str(bare / "index.html")
    (overlay,) = (bare / "overlays").glob("*.png")
    assert Image.open(overlay).size == (448, 448 + 24)


def test_evaluate_without_overlays_points_at_the_success_curve(evaluated, tmp_path, capsys):
    out = tmp_path / "eval"
    assert _evaluate(evaluated, out) == 0
    wrote = capsys.readouterr().out.splitlines()[-1]
    assert wrote.startswith(f"Wrote 3 files to {out}/ in ") and wrote.endswith(
        f"-- open {out}/success_curve.png"
    )
