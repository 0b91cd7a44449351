"""`train` prints one line per epoch on the console: epoch, training loss, the selection metric, the best
so far and the epoch's time (issue 24); the numbers are those of history.json."""

from __future__ import annotations

import json
import logging
import re

import pytest

import test_engine
from sspl.engine.train import train
from test_engine import small_config

synth_dir = test_engine.synth_dir

LINE = re.compile(
    r"^epoch (\d+)/(\d+)  loss (-?\d+\.\d{4})  (\S+) (-?\d+\.\d{4})  best (-?\d+\.\d{4}) \(epoch (\d+)\)  "
    r"(\d+\.\d) s$"
)


@pytest.mark.parametrize(
    "select, key, better",
    [("auto", "val_ciou@0.5", float.__gt__), ("loss", "val_loss", float.__lt__)],
)
def test_each_epoch_ends_with_one_console_line_of_the_logged_numbers(
    synth_dir, tmp_path, caplog, select, key, better
):
    run = tmp_path / "run"
    with caplog.at_level(logging.INFO, logger="sspl"):
        cfg = small_config("train.epochs=2", f"train.select_metric={select}")
        result = train(cfg, synth_dir, run, progress=False)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert len(lines) == 2, lines
    history = [r for r in json.loads((run / "history.json").read_text()) if r["epoch"] > 0]
    best, best_epoch = None, None
    for line, record in zip(lines, history):
        m = LINE.match(line)
        assert m, line
        epoch, epochs, loss, shown_key, value, shown_best, shown_best_epoch, seconds = m.groups()
        assert (int(epoch), int(epochs)) == (record["epoch"], 2)
        assert loss == f"{record['train_loss']:.4f}"
        assert shown_key == result.select_metric == key
        assert value == f"{record[key]:.4f}"
        if best is None or better(record[key], best):
            best, best_epoch = record[key], record["epoch"]
        assert (shown_best, int(shown_best_epoch)) == (f"{best:.4f}", best_epoch)
        assert float(seconds) >= 0
    assert (best, best_epoch) == (result.best_metric, result.best_epoch)
