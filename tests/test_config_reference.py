"""docs/config.md: generated from the typed config, kept in sync, and complete."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pytest

from sspl.cli.config_reference import REGENERATE, attribute_docs, config_reference
from sspl.config import Config, ConfigError, DataConfig, OptimConfig, SSPLConfig, TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def test_docs_config_md_is_up_to_date():
    written = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    assert written == config_reference(), f"docs/config.md is out of date; regenerate it: {REGENERATE}"


@pytest.mark.parametrize("section", ["model", "data", "optim", "train"])
def test_every_key_has_a_row_with_a_description(section):
    cls = {"model": SSPLConfig, "data": DataConfig, "optim": OptimConfig, "train": TrainConfig}[section]
    rows = {
        line.split(" | ")[0][3:-1]: line for line in config_reference().splitlines() if line.startswith("| `")
    }
    for f in dataclasses.fields(cls):
        row = rows[f"{section}.{f.name}"]
        assert row.split(" | ")[1] == f"`{f.type}`".replace("|", "\\|")
        assert len(row.split(" | ")[3]) > 5, row


def test_rows_show_type_default_and_description():
    text = config_reference()
    assert "| `method` | `str` | `sspl` |" in text
    assert (
        "| `train.batch_size` | `int` | `256` | global batch size (split across processes under DDP)" in text
    )
    assert "| `data.augmentations` | `list[str]` | `[crop, hflip]` |" in text
    assert (
        "| `optim.lr_encoder` | `float \\| None` | `null` | learning rate of encoders that are trained"
        in text
    )
    assert "| `method_options.epsilon_pos` | `float` | `0.65` |" in text


def test_descriptions_come_from_the_docstrings():
    docs = attribute_docs(DataConfig)
    assert docs["cache_visual"].startswith("cache the frozen visual encoder's features of each training")
    assert docs["cache_visual"].endswith("exactly the ``crop`` and ``hflip`` augmentations).")
    assert set(attribute_docs(Config)) == {f.name for f in dataclasses.fields(Config)}


def test_an_undocumented_key_is_refused(monkeypatch):
    @dataclass
    class Partial:
        """A section.

        Attributes:
            documented: here.
        """

        documented: int = 1
        forgotten: int = 2

    from sspl.cli import config_reference as module

    monkeypatch.setitem(module.METHOD_OPTIONS, "partial", Partial)
    with pytest.raises(ConfigError, match="Partial: no description of forgotten in its docstring"):
        config_reference()
