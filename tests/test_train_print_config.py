"""`sspl train --print-config`: the resolved config as YAML, nothing trained or written."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from sspl.cli import main
from sspl.config import config_from_dict, config_to_yaml, load_config
from sspl.engine.checkpoint import save_checkpoint
from sspl.models.methods import get_method

ROOT = Path(__file__).resolve().parents[1]


def test_prints_the_config_of_file_options_and_overrides(tmp_path, capsys):
    config = ROOT / "configs" / "synthav_pcm.yaml"
    run_dir = tmp_path / "run"
    argv = ["train", "--print-config", "--config", str(config), "--epochs", "3", "optim.lr_head=1e-4"]
    assert main([*argv, "--run-dir", str(run_dir), "--data", str(tmp_path / "no_data")]) == 0
    out = capsys.readouterr().out
    assert out == config_to_yaml(load_config(config, ["optim.lr_head=1e-4", "train.epochs=3"]))
    assert "\noptim:\n  lr_head: 0.0001\n" in out
    assert "\ntrain:\n  epochs: 3\n" in out
    assert yaml.safe_load(out)["model"]["visual_encoder"] == "small_cnn"  # from the file
    assert not run_dir.exists() and sorted(tmp_path.iterdir()) == []  # nothing written, no run dir made


def test_the_defaults_print_exactly_without_data_or_run_dir(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--print-config", "model.pcm=false", "data.augmentations=[crop]"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("method: sspl\nmodel:\n  pcm: false\n  cycles: 4\n  scaling: minmax\n")
    assert "\ndata:\n  augmentations:\n  - crop\n  image_size: 224\n" in out
    assert config_from_dict(yaml.safe_load(out)) == load_config(
        None, ["model.pcm=false", "data.augmentations=[crop]"]
    )
    assert list(tmp_path.iterdir()) == []


def test_a_bad_override_is_one_error_line(capsys):
    assert main(["train", "--print-config", "model.bogus=1"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "sspl train: error: override 'model.bogus=1': unknown key 'model.bogus'\n"


def test_training_still_needs_data_and_run_dir(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--data", "somewhere"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.endswith(
        "sspl train: error: the following arguments are required: --run-dir\n"
    )


def test_with_resume_it_prints_the_saved_config_with_changes(tmp_path, capsys, small_cnn_config):
    cfg = small_cnn_config
    torch.manual_seed(0)
    model = get_method("sspl").build(cfg, pretrained=False)
    save_checkpoint(tmp_path / "checkpoints" / "last.pt", model=model, config=cfg, epoch=0, step=0)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert main(["train", "--print-config", "--resume", "--run-dir", str(tmp_path), "train.epochs=7"]) == 0
    printed = config_from_dict(yaml.safe_load(capsys.readouterr().out))
    assert printed.model == cfg.model and printed.train.epochs == 7
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
