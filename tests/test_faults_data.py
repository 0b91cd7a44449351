"""Fault injection on the data a command reads and the folder `sspl evaluate` writes (issue 20).

Crafted paths and ids in a prepared folder's manifest, in ``encoders.json`` and in list files; a NaN
log-mel; `sspl evaluate` into a non-empty, a locked and a read-only ``--out``. Each test names what a
user would lose or what would be opened without the fix.
"""

# ruff: noqa: F811  (the `synth_dir` fixture of test_engine is imported, then requested by name)

from __future__ import annotations

import dataclasses
import errno
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from small_runs import evaluate_argv
from sspl.cli import main as cli_main
from sspl.data.manifest import read_manifest, write_manifest
from sspl.errors import DataError, WeightsError
from sspl.outputs import LOCK_NAME, OutputInUseError, output_lock
from test_engine import SMALL, small_config, synth_dir  # noqa: F401  (the engine tests' tiny set, settings)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """The small model at its seeded start: enough to run every evaluation here in seconds."""
    from sspl.engine.synthav import save_untrained

    return save_untrained(small_config(), tmp_path_factory.mktemp("ckpt") / "untrained.pt")


def _test_ids(data: Path) -> list[str]:
    return sorted(r.id for r in read_manifest(data) if r.split == "test" and r.ok)


def _crafted(synth_dir: Path, dest: Path, clip_id: str, **changes: str) -> int:
    """A copy of the set in which clip ``clip_id``'s manifest row gets ``changes``; returns its line."""
    shutil.copytree(synth_dir, dest)
    rows = read_manifest(dest)
    rows = [dataclasses.replace(r, **changes) if r.id == clip_id else r for r in rows]
    write_manifest(dest, rows)
    new_id = changes.get("id", clip_id)
    if new_id != clip_id:  # its boxes go with it, so that only the id can stop the evaluation
        annotations = json.loads((dest / "annotations.json").read_text())
        for a in annotations:
            a["file"] = new_id if a["file"] == clip_id else a["file"]
        (dest / "annotations.json").write_text(json.dumps(annotations))
    return 2 + sorted(r.id for r in read_manifest(dest)).index(new_id)


@pytest.fixture
def opened(monkeypatch) -> list[str]:
    """Every frame (PIL) and array (numpy) file opened while the test runs, resolved."""
    import PIL.Image

    seen: list[str] = []
    image_open, np_load = PIL.Image.open, np.load

    def recording(original):
        def wrapper(fp, *args, **kwargs):
            if isinstance(fp, (str, os.PathLike)):
                seen.append(os.path.realpath(fp))
            return original(fp, *args, **kwargs)

        return wrapper

    monkeypatch.setattr(PIL.Image, "open", recording(image_open))
    monkeypatch.setattr(np, "load", recording(np_load))
    return seen


# --------------------------------------------------------------------------------------------------
# 1. paths and ids read from data files
# --------------------------------------------------------------------------------------------------


def test_an_id_leading_outside_never_names_an_evaluation_output(
    synth_dir,
    checkpoint,
    tmp_path,
    capsys,
    caplog,
):
    victim_id = _test_ids(synth_dir)[0]
    data = tmp_path / "sets" / "data"
    line = _crafted(synth_dir, data, victim_id, id="../../x")
    out = tmp_path / "sets" / "eval" / "run"
    # overlays/../../x.png would land in tmp_path/sets/x.png, over a user's file
    (tmp_path / "sets" / "x.png").write_text("the user's own file")
    overlays = ["--save-overlays", "30"]
    with caplog.at_level("WARNING", logger="sspl.data.manifest"):
        assert cli_main(evaluate_argv(checkpoint, data, out, *overlays)) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("sspl evaluate: error: ") and len(err.splitlines()) == 1
    refused = (
        f"{data}/manifest.csv:{line}: id '../../x' is not a plain file name (no '/', '..' or control "
        "characters); the clip is refused"
    )
    assert f"1 clip(s) of the split failed to prepare (../../x), e.g. {refused}; a score" in err
    assert caplog.messages == [refused]
    assert not out.exists()
    assert cli_main(evaluate_argv(checkpoint, data, out, *overlays, "--allow-missing")) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["not_evaluated"] == ["../../x"]
    assert report["num_samples"] == len(_test_ids(synth_dir)) - 1
    assert (tmp_path / "sets" / "x.png").read_text() == "the user's own file"
    written = sorted(p.name for p in (out / "overlays").iterdir())
    assert written == sorted(f"{i}.png" for i in _test_ids(synth_dir)[1:])
    assert sorted(p.name for p in tmp_path.rglob("x.png")) == ["x.png"]  # only the user's


def _passwd_from(folder: Path) -> str:
    return "../" * (len(folder.resolve().parts) - 1) + "etc/passwd"


@pytest.mark.parametrize("column", ["frame", "spect", "audio"])
@pytest.mark.parametrize("form", ["dotdot", "absolute", "link", "folder_link"])
def test_a_path_leading_outside_is_refused_with_its_manifest_line(
    synth_dir,
    tmp_path,
    caplog,
    opened,
    column,
    form,
):
    clip = _test_ids(synth_dir)[0]
    data = tmp_path / "data"
    outside = tmp_path / "outside"  # a readable file of the right kind: without the check it would be used
    original = next(r for r in read_manifest(synth_dir) if r.id == clip)
    outside.write_bytes((synth_dir / getattr(original, column)).read_bytes())
    crafted = {
        "dotdot": _passwd_from(tmp_path / "data"),
        "absolute": str(outside),
        "link": "frames/link.jpg",
        "folder_link": "elsewhere/outside",
    }[form]
    line = _crafted(synth_dir, data, clip, **{column: crafted})
    if form == "link":
        (data / "frames" / "link.jpg").symlink_to(outside)
    if form == "folder_link":
        (data / "elsewhere").symlink_to(tmp_path)
    from sspl.data.datasets import PreparedDataset, load_samples

    with caplog.at_level("WARNING", logger="sspl.data.manifest"):
        samples = load_samples(data)
    assert clip not in [s.id for s in samples]
    row = next(r for r in read_manifest(data) if r.id == clip)
    reason = "must be relative to" if form == "absolute" else "leads outside"
    message = f"{data}/manifest.csv:{line}: {column} of clip {clip}: path {crafted!r} {reason} {data}"
    assert row.status == "failed" and row.error == f"{message}; the clip is refused"
    assert caplog.messages.count(row.error) == 1  # once, however often the manifest is read
    for item in PreparedDataset(samples, mode="eval"):
        assert item["id"] != clip
    assert not {str(outside.resolve()), "/etc/passwd"} & set(opened)


def test_links_that_stay_inside_the_folder_are_followed(synth_dir, tmp_path, caplog):
    from sspl.data.datasets import load_samples

    data = tmp_path / "data"
    clips = _test_ids(synth_dir)[:2]
    _crafted(synth_dir, data, clips[0], frame=f"up/data/frames/{clips[0]}.jpg")
    rows = read_manifest(data)
    rows = [dataclasses.replace(r, spect=f"mel/{r.id}.npy") if r.id == clips[1] else r for r in rows]
    write_manifest(data, rows)
    (data / "up").symlink_to(tmp_path)  # out of the folder, and back in
    (data / "mel").symlink_to(data / "spect")  # a folder link inside
    with caplog.at_level("WARNING", logger="sspl.data.manifest"):
        samples = {s.id: s for s in load_samples(data)}
    assert caplog.messages == []
    assert samples[clips[0]].load_frame().size == (256, 256)
    assert samples[clips[1]].load_spect().shape == (3, 96, 64)


@pytest.mark.slow  # a whole (tiny) training run: about 30 s on 2 busy cores
def test_train_leaves_out_a_clip_whose_frame_leads_outside(synth_dir, tmp_path, caplog, opened):
    clip = sorted(r.id for r in read_manifest(synth_dir) if r.split == "train")[0]
    outside = tmp_path / "private.jpg"
    outside.write_bytes((synth_dir / "frames" / f"{clip}.jpg").read_bytes())
    data = tmp_path / "data"
    line = _crafted(synth_dir, data, clip, frame=f"../{outside.name}")
    argv = [
        "train",
        "--data",
        str(data),
        "--run-dir",
        str(tmp_path / "run"),
        "--epochs",
        "1",
        "--no-progress",
    ]
    with caplog.at_level("WARNING", logger="sspl.data.manifest"):
        assert cli_main([*argv, *SMALL]) == 0
    assert caplog.messages == [
        f"{data}/manifest.csv:{line}: frame of clip {clip}: path '../private.jpg' leads outside {data}; "
        "the clip is refused"
    ]
    assert str(outside.resolve()) not in opened
    assert any(p.endswith(".jpg") for p in opened)  # the other frames were read


def test_encoders_json_cannot_point_outside_its_folder(tmp_path):
    from sspl.engine.pretrain import load_synth_encoders

    encoders = tmp_path / "encoders"
    encoders.mkdir()
    (tmp_path / "elsewhere.pt").write_bytes(b"not read")
    record = {
        "visual": {"out_channels": 8, "weights": "../elsewhere.pt"},
        "audio": {"embed_dim": 8, "weights": "audio_encoder.pt"},
    }
    (encoders / "encoders.json").write_text(json.dumps(record))
    with pytest.raises(
        WeightsError, match=r"encoders.json: path '../elsewhere.pt' leads outside .*encoders$"
    ):
        load_synth_encoders(encoders)


@pytest.mark.parametrize(
    ("text", "line", "shown"),
    [("clip_a\n..\nclip_b\n", 2, "'..'"), ('clip_a\n"two\nlines"\n', 2, "'two\\nlines'")],
)
def test_a_list_id_that_is_no_file_name_is_refused_with_its_line(text, line, shown):
    from sspl.data.lists import parse_rows

    with pytest.raises(
        DataError, match="^" + re.escape(f"mine.txt:{line}: id {shown} is not a plain file name")
    ):
        parse_rows(text, "mine.txt")


# --------------------------------------------------------------------------------------------------
# 2. `sspl evaluate` writes into an empty --out, or replaces only its own outputs
# --------------------------------------------------------------------------------------------------


def test_evaluate_refuses_a_non_empty_out_before_any_work(
    synth_dir, checkpoint, tmp_path, capsys, monkeypatch
):
    from sspl.engine import evaluate as evaluate_module

    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text("an earlier report")
    (out / "notes.txt").write_text("mine")
    monkeypatch.setattr(evaluate_module, "compute_maps", lambda *a, **k: pytest.fail("model pass ran"))
    assert cli_main(evaluate_argv(checkpoint, synth_dir, out)) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        f"sspl evaluate: error: {out}: not empty (holds notes.txt, report.json); choose another --out, or "
        "pass --overwrite to replace an earlier evaluation's outputs (other files are left alone)"
    )
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "report.json"]
    assert (out / "report.json").read_text() == "an earlier report"
    # the lock file an earlier command left is no content: a folder holding only it is taken
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / LOCK_NAME).write_text("123 sspl evaluate\n")
    monkeypatch.undo()
    assert cli_main(evaluate_argv(checkpoint, synth_dir, empty)) == 0
    assert (empty / "report.json").is_file()


def test_overwrite_removes_only_what_an_evaluation_wrote(synth_dir, checkpoint, tmp_path):
    out = tmp_path / "out"
    assert cli_main(evaluate_argv(checkpoint, synth_dir, out, "--save-overlays", "2")) == 0
    ours = sorted(p.name for p in (out / "overlays").iterdir())
    assert len(ours) == 2
    (out / "overlays" / "holiday.png").write_text("the user's picture")
    (out / "notes.txt").write_text("the user's notes")
    (tmp_path / "victim.png").write_text("outside the output")
    # an old per_sample.csv naming ../../victim: its overlay name would be out/overlays/../../victim.png
    with open(out / "per_sample.csv", "a") as f:
        f.write("../../victim,0.5\n")
    before = (out / "report.json").stat().st_mtime_ns
    assert cli_main(evaluate_argv(checkpoint, synth_dir, out, "--overwrite")) == 0
    assert (out / "report.json").stat().st_mtime_ns != before
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["holiday.png"]
    assert (out / "overlays" / "holiday.png").read_text() == "the user's picture"
    assert (out / "notes.txt").read_text() == "the user's notes"
    assert (tmp_path / "victim.png").read_text() == "outside the output"
    assert not (out / "index.html").exists()  # this run drew no page: the last run's is gone
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [LOCK_NAME, "notes.txt", "overlays", "per_sample.csv", "report.json", "success_curve.png"]
    )


def test_evaluate_refuses_an_out_another_command_is_writing(synth_dir, checkpoint, tmp_path):
    from sspl.engine.evaluate import evaluate

    out = tmp_path / "out"
    with output_lock(out, "sspl evaluate"):
        with pytest.raises(
            OutputInUseError, match=rf"{out}: in use by process {os.getpid()} \(sspl evaluate\)"
        ):
            evaluate(checkpoint, synth_dir, "synth", out, overwrite=True, progress=False)
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]


# --------------------------------------------------------------------------------------------------
# 9. a NaN log-mel is named, not blamed on the learning rates
# --------------------------------------------------------------------------------------------------


def test_train_names_a_non_finite_log_mel(synth_dir, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(synth_dir, data)
    for clip in read_manifest(data):  # each: whichever the first batch draws is named
        spect = np.load(data / clip.spect)
        spect[0, 10, 10] = np.nan
        np.save(data / clip.spect, spect)
    argv = [
        "train",
        "--data",
        str(data),
        "--run-dir",
        str(tmp_path / "run"),
        "--epochs",
        "1",
        "--no-progress",
    ]
    assert cli_main([*argv, *SMALL]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    named = (
        rf"{data}/spect/(\S+)\.npy: log-mel of clip (\S+) holds 1 non-finite value\(s\) \(NaN or infinity\)"
    )
    found = re.search(named, err)
    assert found and found[1] == found[2], err
    assert "learning rate" not in err


def test_encoder_pretraining_names_a_non_finite_log_mel(synth_dir, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(synth_dir, data)
    clip = next(r for r in read_manifest(data) if r.split == "pretrain")
    spect = np.load(data / clip.spect)
    spect[1, 2, 3] = np.inf
    np.save(data / clip.spect, spect)
    assert (
        cli_main(["synth-pretrain", "--data", str(data), "--out", str(tmp_path / "enc"), "--epochs", "1"])
        == 1
    )
    assert capsys.readouterr().err.strip() == (
        f"sspl synth-pretrain: error: {data / clip.spect}: log-mel patches hold NaN, infinite or non-numeric "
        "values; rerun `sspl synth`"
    )


def test_a_log_mel_of_text_or_infinities_is_named(synth_dir, tmp_path):
    from sspl.data.datasets import load_samples

    sample = load_samples(synth_dir, splits=["train"])[0]
    for name, array, words in (
        ("inf.npy", np.full((3, 96, 64), np.inf, dtype=np.float32), "holds 18432 non-finite value"),
        ("big.npy", np.full((3, 96, 64), 1e300), "holds 18432 non-finite value"),  # beyond float32
        ("text.npy", np.full((3, 96, 64), "x"), "holds <U1 values, not numbers"),
    ):
        np.save(tmp_path / name, array)
        with pytest.raises(DataError, match=rf"{name}: log-mel of clip {sample.id} {words}"):
            dataclasses.replace(sample, spect=tmp_path / name).load_spect()
    assert torch.isfinite(sample.load_spect()).all()


# --------------------------------------------------------------------------------------------------
# 11. a read-only --out fails before the evaluation, naming the folder
# --------------------------------------------------------------------------------------------------


def test_evaluate_checks_the_out_folder_is_writable_first(synth_dir, checkpoint, tmp_path, monkeypatch):
    import tempfile

    from sspl.engine import evaluate as evaluate_module

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(evaluate_module, "compute_maps", lambda *a, **k: pytest.fail("model pass ran"))
    monkeypatch.setattr(evaluate_module, "load", lambda *a, **k: pytest.fail("model loaded"))
    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    out = tmp_path / "out"
    with pytest.raises(
        PermissionError,
        match=rf"^{tmp_path}: cannot create the output folder {out} in it \(--out\): Read-only file system$",
    ):
        evaluate_module.evaluate(checkpoint, synth_dir, "synth", out, progress=False)
    assert not out.exists()


def test_evaluate_into_a_read_only_file_system_fails_on_one_line(synth_dir, checkpoint, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    script = (
        f"mount -t tmpfs -o size=1m tmpfs {ro} && mount -o remount,ro {ro} && "
        f"exec {sys.executable} -m sspl.cli " + " ".join(evaluate_argv(checkpoint, synth_dir, ro / "out"))
    )
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("unshare -m is not permitted here")
    done = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    err = done.stderr.strip()
    assert err.endswith(
        f"{ro}: cannot create the output folder {ro / 'out'} in it (--out): Read-only file system"
    )
    assert len(err.splitlines()) == 1, err
