"""Fault injection for `sspl train` and `sspl synth-pretrain` (issue 20): two writers at once, SIGKILL at
random points then --resume (bit for bit), a full disk, a read-only output, stale temporary files and
--overwrite next to a user's files.

The full-disk and read-only cases mount a small tmpfs in a private mount namespace (``unshare -m``, as
root); they are skipped where that is not permitted.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
import torch

import sspl.engine.train as train_mod
import test_engine
from sspl.cli import main as cli_main
from sspl.engine.checkpoint import load_checkpoint
from sspl.engine.pretrain import pretrain_synth_encoders
from sspl.engine.train import train
from sspl.outputs import LOCK_NAME
from test_engine import SMALL, small_config

#: the engine tests' tiny SynthAV set (a module fixture: made once for this module too)
synth_dir = test_engine.synth_dir


def _cli(data: Path, run: Path, *extra: str, epochs: int = 2) -> list[str]:
    args = ["train", "--data", str(data), "--run-dir", str(run), "--epochs", str(epochs), "--no-progress"]
    return [*args, *extra, *SMALL]


def _start(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "sspl.cli", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_lock(folder: Path, proc: subprocess.Popen, command: str, timeout: float = 300) -> None:
    """Until ``proc`` holds ``folder`` (its lock file names it)."""
    lock, deadline = folder / LOCK_NAME, time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if lock.is_file() and lock.read_text() == f"{proc.pid} {command}\n":
            return
        time.sleep(0.02)
    raise AssertionError(f"{command} did not take {folder} (exit {proc.poll()})")


def _errors(err: str, command: str = "train") -> list[str]:
    return [line for line in err.splitlines() if line.startswith(f"sspl {command}: error:")]


def _same_state(a: dict, b: dict) -> None:
    """Two checkpoints hold the same model, optimiser, scheduler and trainer state, bit for bit."""
    assert (a["epoch"], a["step"]) == (b["epoch"], b["step"])
    assert a["model"].keys() == b["model"].keys()
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True):
        assert torch.equal(sa["exp_avg"], sb["exp_avg"]) and torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])
    assert a["scheduler"] == b["scheduler"] and a["trainer"]["history"] == b["trainer"]["history"]


def _losses(run: Path) -> list[tuple]:
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return [(r["type"], r["step"], r.get("loss"), r.get("val_loss")) for r in rows]


# --------------------------------------------------------------------------------------------------
# one writer per output folder
# --------------------------------------------------------------------------------------------------


def test_a_second_train_in_a_live_run_dir_is_refused_and_the_first_finishes(synth_dir, tmp_path, capsys):
    run = tmp_path / "run"
    first = _start(_cli(synth_dir, run, epochs=1))
    try:
        _wait_for_lock(run, first, "sspl train")
        first.send_signal(signal.SIGSTOP)  # held mid-run, before or after its first checkpoint
        for extra in ([], ["--overwrite"], ["--resume"]):
            assert cli_main(_cli(synth_dir, run, *extra, epochs=1)) == 1, extra
            err = capsys.readouterr().err
            assert _errors(err) == [
                f"sspl train: error: {run}: in use by process {first.pid} (sspl train); wait for it to end "
                "(or stop it), or choose another folder"
            ], extra
    finally:
        first.send_signal(signal.SIGCONT)
        _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    # the first run is whole: nothing of a second one in its files
    assert load_checkpoint(run / "checkpoints/last.pt")["epoch"] == 1
    assert len(list((run / "tb").glob("events.out.tfevents.*"))) == 1
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [(r["type"], r["step"]) for r in records] == [("val", 0), ("train", 1), ("train", 2), ("val", 2)]


def test_a_second_synth_pretrain_into_a_live_output_is_refused(synth_dir, tmp_path, capsys):
    out = tmp_path / "enc"
    argv = ["synth-pretrain", "--data", str(synth_dir), "--out", str(out), "--epochs", "1", "--no-progress"]
    argv += ["--batch-size", "8", "--visual-channels", "16", "--audio-dim", "8"]
    first = _start(argv)
    try:
        _wait_for_lock(out, first, "sspl synth-pretrain")
        first.send_signal(signal.SIGSTOP)
        assert cli_main([*argv, "--overwrite"]) == 1
        assert _errors(capsys.readouterr().err, "synth-pretrain") == [
            f"sspl synth-pretrain: error: {out}: in use by process {first.pid} (sspl synth-pretrain); wait for "
            "it to end (or stop it), or choose another folder"
        ]
    finally:
        first.send_signal(signal.SIGCONT)
        _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    info = json.loads((out / "encoders.json").read_text())
    assert info["visual"]["out_channels"] == 16 and info["audio"]["embed_dim"] == 8


# --------------------------------------------------------------------------------------------------
# SIGKILL, stale temporary files, --overwrite
# --------------------------------------------------------------------------------------------------


def _logged_step(run: Path) -> int:
    """The last step ``log.jsonl`` has a whole record of (0 before any)."""
    path, step = run / "log.jsonl", 0
    for line in path.read_text().splitlines() if path.is_file() else []:
        with contextlib.suppress(ValueError):
            step = max(step, json.loads(line)["step"])
    return step


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_is_bit_for_bit(synth_dir, tmp_path):
    epochs, extra = 3, ["train.max_steps_per_epoch=6"]  # 3 epochs of 4 steps
    full, part = tmp_path / "full", tmp_path / "part"

    def run_to_end(run: Path, *how: str) -> None:
        argv = [sys.executable, "-m", "sspl.cli", *_cli(synth_dir, run, *how, *extra, epochs=epochs)]
        done = subprocess.run(argv, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr

    run_to_end(full)
    # seeded random points: a step of the run, then a random delay into it (a step, a validation, a write)
    rng = random.Random(20)
    resumed_and_killed = 0
    for target in sorted(rng.sample(range(1, 11), 3)):
        # killed before its first checkpoint, a run is started over, as the message says
        resume = (part / "checkpoints/last.pt").is_file()
        proc = _start(_cli(synth_dir, part, "--resume" if resume else "--overwrite", *extra, epochs=epochs))
        _wait_for_lock(part, proc, "sspl train")
        while _logged_step(part) < target and proc.poll() is None:
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.3))
        resumed_and_killed += resume and proc.poll() is None  # (a fast machine may finish first)
        proc.kill()
        proc.communicate()
    assert resumed_and_killed, "no resumed run was killed"
    run_to_end(part, "--resume" if (part / "checkpoints/last.pt").is_file() else "--overwrite")
    _same_state(load_checkpoint(full / "checkpoints/last.pt"), load_checkpoint(part / "checkpoints/last.pt"))
    a, b = load_checkpoint(full / "checkpoints/best.pt"), load_checkpoint(part / "checkpoints/best.pt")
    assert a["epoch"] == b["epoch"] and all(torch.equal(v, b["model"][k]) for k, v in a["model"].items())
    assert _losses(full) == _losses(part)  # each step logged once, with the same loss
    assert not [p.name for p in part.rglob("*.tmp")]


def test_a_killed_runs_temporary_files_go_when_it_is_resumed_and_nothing_else(synth_dir, tmp_path):
    run = tmp_path / "run"
    train(small_config("train.epochs=1", "data.cache_audio=true"), synth_dir, run, progress=False)
    stale = [
        "checkpoints/.last.pt.k2j_x9.tmp",  # a checkpoint being written when the run was killed
        "checkpoints/.best.pt.abc.tmp",
        ".history.json.q1.tmp",
        ".config.yaml.zz.tmp",
        "cache/.audio_embeddings.pt.x_1.tmp",
    ]
    kept = ["checkpoints/.mine.tmp", "checkpoints/notes.txt", ".other.json.q1.tmp", "tb/.last.pt.a.tmp"]
    for rel in stale + kept:
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        (run / rel).write_bytes(b"x" * 1000)
    train(
        small_config("train.epochs=2", "data.cache_audio=true"), synth_dir, run, resume=True, progress=False
    )
    assert [rel for rel in stale if (run / rel).exists()] == []
    assert [rel for rel in kept if not (run / rel).exists()] == []
    assert load_checkpoint(run / "checkpoints/last.pt")["epoch"] == 2


def test_a_killed_synth_pretrains_temporary_files_go_and_do_not_count_as_content(synth_dir, tmp_path):
    out = tmp_path / "enc"
    out.mkdir()
    (out / ".visual_encoder.pt.k2j_x9.tmp").write_bytes(
        b"x" * 1000
    )  # all a kill during the first write leaves
    pretrain_synth_encoders(
        synth_dir, out, epochs=1, batch_size=8, visual_channels=8, audio_dim=8, progress=False
    )
    assert sorted(p.name for p in out.iterdir()) == [
        LOCK_NAME,
        "audio_encoder.pt",
        "encoders.json",
        "visual_encoder.pt",
    ]


def test_overwrite_deletes_the_runs_files_not_the_users_beside_them(synth_dir, tmp_path):
    run = tmp_path / "run"
    train(small_config("train.epochs=1", "data.cache_audio=true"), synth_dir, run, progress=False)
    first_events = sorted((run / "tb").glob("events.out.tfevents.*"))
    assert len(first_events) == 1
    mine = ["checkpoints/notes.txt", "checkpoints/old/best_of_may.pt", "tb/my_plot.png", "cache/mine.npy"]
    for rel in mine:
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        (run / rel).write_text(rel)
    time.sleep(1.1)  # TensorBoard names its file by the second
    train(small_config("train.epochs=1", "train.seed=5"), synth_dir, run, overwrite=True, progress=False)
    assert [rel for rel in mine if not (run / rel).is_file() or (run / rel).read_text() != rel] == []
    events = sorted((run / "tb").glob("events.out.tfevents.*"))
    assert len(events) == 1 and events != first_events  # the old run's events went, the new run's came
    assert not (run / "cache/audio_embeddings.pt").exists()  # the old run's cache went too
    assert load_checkpoint(run / "checkpoints/last.pt")["config"]["train"]["seed"] == 5


# --------------------------------------------------------------------------------------------------
# a full disk and a read-only output (tmpfs in a private mount namespace)
# --------------------------------------------------------------------------------------------------


def _in_namespace(tmp_path: Path, script: str, timeout: float = 900) -> dict:
    """Run a Python ``script`` in a private mount namespace (where it may mount); its last stdout line is
    JSON. Skips the test where ``unshare -m`` is not permitted."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed")
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"unshare -m is not permitted here ({probe.stderr.decode().strip()})")
    code = tmp_path / "script.py"
    code.write_text(textwrap.dedent(script))
    done = subprocess.run(
        ["unshare", "-m", sys.executable, str(code)], capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.slow
def test_a_full_disk_during_training_fails_on_one_line_and_keeps_the_last_checkpoint(synth_dir, tmp_path):
    # The run trains on a tmpfs; once epoch 1's checkpoint is written the disk is shrunk to what is used
    # plus half a checkpoint, so epoch 2's checkpoint cannot be written.
    disk, kept = tmp_path / "disk", tmp_path / "kept"
    disk.mkdir()
    argv = [sys.executable, "-m", "sspl.cli", *_cli(synth_dir, disk / "run")]
    result = _in_namespace(
        tmp_path,
        f"""
        import json, os, shutil, signal, subprocess, time
        disk, run = {str(disk)!r}, {str(disk / "run")!r}
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200m", "tmpfs", disk], check=True)
        proc = subprocess.Popen({argv!r}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        last = os.path.join(run, "checkpoints", "last.pt")
        while not os.path.exists(last) and proc.poll() is None:
            time.sleep(0.01)
        proc.send_signal(signal.SIGSTOP)
        st = os.statvfs(disk)
        used = (st.f_blocks - st.f_bfree) * st.f_frsize
        size = used + os.path.getsize(last) // 2
        subprocess.run(["mount", "-o", f"remount,size={{size}}", disk], check=True)
        proc.send_signal(signal.SIGCONT)
        _, err = proc.communicate()
        shutil.copytree(run, {str(kept)!r})
        print(json.dumps({{"code": proc.returncode, "err": err}}))
        """,
    )
    assert result["code"] == 1, result["err"]
    assert _errors(result["err"]) == [
        f"sspl train: error: [Errno 28] No space left on device: '{disk / 'run' / 'checkpoints' / 'last.pt'}'"
    ]
    assert "Traceback" not in result["err"]
    assert load_checkpoint(kept / "checkpoints/last.pt")["epoch"] == 1  # the previous one, intact
    assert not [p.name for p in kept.rglob("*.tmp")]  # and no half-written one left


def test_a_read_only_output_is_refused_before_the_model_is_built(synth_dir, tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    result = _in_namespace(
        tmp_path,
        f"""
        import contextlib, io, json, os, subprocess
        disk = {str(disk)!r}
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", disk], check=True)
        os.mkdir(os.path.join(disk, "run"))
        with open(os.path.join(disk, "run", "notes.txt"), "w") as f:
            f.write("mine")
        subprocess.run(["mount", "-o", "remount,ro", disk], check=True)

        import sspl.engine.train as train_mod
        from sspl.cli import main

        def built(*args, **kwargs):
            raise AssertionError("the model was built")

        train_mod.get_method = built
        out = {{}}
        for name, argv in {{
            "train": {_cli(synth_dir, disk / "run")!r},
            "resume": {_cli(synth_dir, disk / "run", "--resume")!r},
            "new": {_cli(synth_dir, disk / "new")!r},
            "pretrain": ["synth-pretrain", "--data", {str(synth_dir)!r}, "--out", os.path.join(disk, "enc")],
        }}.items():
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                code = main(argv)
            out[name] = [code, err.getvalue()]
        out["left"] = sorted(os.listdir(disk)) + sorted(os.listdir(os.path.join(disk, "run")))
        print(json.dumps(out))
        """,
    )
    rofs = "Read-only file system"
    expected = {
        "train": f"{disk / 'run'}: cannot write in the output folder (--run-dir): {rofs}",
        "resume": f"{disk / 'run'}: cannot write in the output folder (--run-dir): {rofs}",
        "new": f"{disk}: cannot create the output folder {disk / 'new'} in it (--run-dir): {rofs}",
        "pretrain": f"{disk}: cannot create the output folder {disk / 'enc'} in it (--out): {rofs}",
    }
    for name, message in expected.items():
        code, err = result[name]
        command = "synth-pretrain" if name == "pretrain" else "train"
        assert code == 1 and _errors(err, command) == [f"sspl {command}: error: {message}"], (name, err)
    assert result["left"] == ["run", "notes.txt"]


def test_an_unwritable_run_dir_is_refused_before_the_model_is_built(synth_dir, tmp_path, monkeypatch):
    # without a mount namespace: the write probe itself refused, as a read-only file system refuses it
    def refused(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    def built(*args, **kwargs):
        raise AssertionError("the model was built")

    monkeypatch.setattr(tempfile, "TemporaryFile", refused)
    monkeypatch.setattr(train_mod, "get_method", built)
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(
        PermissionError, match=rf"^{run}: cannot write in the output folder \(--run-dir\): Read"
    ):
        train(small_config("train.epochs=1"), synth_dir, run, progress=False)
    assert list(run.iterdir()) == []
    assert os.listdir(tmp_path) == ["run"]
