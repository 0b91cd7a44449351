"""Fault injection against `sspl prepare` (and `sspl synth`): two writers at once, SIGKILL at random points
then resume, a full disk, a read-only output, crafted list and manifest entries, options between the
positionals, images of every mode."""

from __future__ import annotations

import errno
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from sspl.cli import build_parser, main
from sspl.data import prepare as prep
from sspl.data.manifest import read_manifest
from sspl.data.video import write_synthetic_video
from sspl.io import atomic_save_image
from sspl.localize import read_image
from sspl.outputs import LOCK_NAME, output_lock
from test_prepare import _descendants, _gone, _prepare_until

PYTHON = [sys.executable, "-m", "sspl.cli"]


def _videos(folder: Path, count: int) -> Path:
    for i in range(count):
        write_synthetic_video(folder / f"clip{i:02d}.mp4", seconds=1.0, seed=i)
    return folder


def _tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (but the lock file) by relative path, with its bytes."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != LOCK_NAME
    }


def _unshare_works() -> bool:
    if shutil.which("unshare") is None or not sys.platform.startswith("linux"):
        return False
    return subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0


needs_unshare = pytest.mark.skipif(
    not _unshare_works(), reason="needs `unshare -m` (a private mount namespace) to mount a small tmpfs"
)


# --------------------------------------------------------------------------------------------------
# Options between the positionals (#10)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["prepare", "SRC", "--no-progress", "OUT"],
        ["prepare", "--workers", "2", "SRC", "--layout", "videos", "OUT", "--no-progress"],
        ["prepare", "SRC", "OUT", "--no-progress", "--workers", "2"],
    ],
)
def test_options_may_come_between_the_positionals(argv):
    args = build_parser().parse_args(argv)
    assert (args.src, args.out, args.no_progress) == ("SRC", "OUT", True)


def test_other_commands_parse_intermixed_too():
    args = build_parser().parse_args(["prepare", "--merge", "--no-progress", "OUT"])
    assert (args.src, args.out, args.merge) == (None, "OUT", True)
    args = build_parser().parse_args(["synth", "--num", "4", "OUT", "--seed", "3"])
    assert (args.out, args.num, args.seed) == ("OUT", 4, 3)
    args = build_parser().parse_args(["train", "--data", "D", "a=1", "--run-dir", "R", "b=2"])
    assert args.overrides == ["a=1", "b=2"]
    args = build_parser().parse_args(["weights", "imagenet", "--json", "audioset"])
    assert args.names == ["imagenet", "audioset"] and args.json


def test_prepare_runs_with_an_option_between_src_and_out(tmp_path, capsys):
    src = _videos(tmp_path / "src", 1)
    out = tmp_path / "out"
    assert main(["prepare", str(src), "--no-progress", str(out), "--workers", "1"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "sspl prepare: done 1, skipped 0, failed 0"
    assert [r.id for r in read_manifest(out)] == ["clip00"]


# --------------------------------------------------------------------------------------------------
# Two writers at once (#4)
# --------------------------------------------------------------------------------------------------


def test_a_second_prepare_into_a_held_out_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    src = _videos(tmp_path / "src", 2)
    out = tmp_path / "out"
    monkeypatch.setattr(prep, "prepare_clip", lambda *a: pytest.fail("a clip was prepared"))
    with output_lock(out, "sspl prepare"):
        assert main(["prepare", str(src), str(out), "--workers", "1", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"sspl prepare: error: {out}: in use by process {os.getpid()} (sspl prepare); wait for it to end "
        "(or stop it), or choose another folder\n"
    )
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]


def test_a_plain_run_is_refused_while_a_shard_runs_and_shards_run_side_by_side(tmp_path, capsys, monkeypatch):
    src = _videos(tmp_path / "src", 4)
    out = tmp_path / "out"
    part0 = out / "shards" / "0-of-2"
    with output_lock(part0, "sspl prepare --shard 0/2"):
        # Another shard of the same OUT runs beside it ...
        assert main(["prepare", str(src), str(out), "--shard", "1/2", "--workers", "1", "--no-progress"]) == 0
        assert sorted(r.id for r in read_manifest(out / "shards" / "1-of-2")) == ["clip01", "clip03"]
        # ... the same shard and a plain run do not.
        assert main(["prepare", str(src), str(out), "--shard", "0/2", "--workers", "1", "--no-progress"]) == 1
        assert (
            f"{part0}: in use by process {os.getpid()} (sspl prepare --shard 0/2)" in capsys.readouterr().err
        )
        assert main(["prepare", str(src), str(out), "--workers", "1", "--no-progress"]) == 1
        assert f"{part0}: in use by process {os.getpid()}" in capsys.readouterr().err
    with output_lock(out, "sspl prepare"):  # and a shard does not start while a plain run holds OUT
        monkeypatch.setattr(prep, "SHARD_WAIT_SECONDS", 0.2)
        assert main(["prepare", str(src), str(out), "--shard", "0/2", "--workers", "1"]) == 1
        assert f"{out}: in use by process {os.getpid()} (sspl prepare)" in capsys.readouterr().err
    assert main(["prepare", str(src), str(out), "--shard", "0/2", "--workers", "1", "--no-progress"]) == 0
    assert sorted(r.id for r in read_manifest(out)) == [f"clip{i:02d}" for i in range(4)]


@pytest.mark.slow
def test_two_prepares_into_one_out_at_once_lose_nothing(tmp_path, capsys):
    # The reported case: two lists prepared at once into one OUT; the second must be refused, not merged
    # over the first's manifest.
    src, out, _, first = _prepare_until(tmp_path, workers=1, finished=1)
    assert first.poll() is None, "the first prepare ended before the second started"
    listed = tmp_path / "second.txt"
    listed.write_text("clip20\nclip21\nclip22\nclip23\n")
    # In this process (no interpreter to start): the first run is surely still going.
    assert (
        main(["prepare", str(src), str(out), "--list", str(listed), "--workers", "1", "--no-progress"]) == 1
    )
    assert capsys.readouterr().err == (
        f"sspl prepare: error: {out}: in use by process {first.pid} (sspl prepare); wait for it to end "
        "(or stop it), or choose another folder\n"
    )
    assert first.wait(timeout=300) == 0
    rows = read_manifest(out)
    assert [r.id for r in rows] == [f"clip{i:02d}" for i in range(24)] and all(r.ok for r in rows)
    assert sorted(p.name for p in (out / "frames").iterdir()) == [f"clip{i:02d}.jpg" for i in range(24)]


def test_a_second_synth_into_a_held_out_is_refused(tmp_path, capsys):
    out = tmp_path / "synth"
    with output_lock(out, "sspl synth"):
        argv = ["synth", str(out), "--num", "4", "--pretrain-num", "0", "--workers", "1", "--no-progress"]
        assert main(argv) == 1
    assert capsys.readouterr().err == (
        f"sspl synth: error: {out}: in use by process {os.getpid()} (sspl synth); wait for it to end "
        "(or stop it), or choose another folder\n"
    )
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]
    # The lock file left behind does not make the folder "not empty".
    argv = ["synth", str(out), "--num", "4", "--pretrain-num", "0", "--workers", "1", "--no-progress"]
    assert main(argv) == 0
    assert len(read_manifest(out)) == 4


# --------------------------------------------------------------------------------------------------
# SIGKILL (#5) and resume
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads process trees from /proc")
def test_sigkill_of_prepare_leaves_no_process_behind(tmp_path):
    *_, proc = _prepare_until(tmp_path, workers=2, finished=2)
    assert proc.poll() is None, "prepare finished before the kill"
    tree = _descendants(proc.pid)
    commands = {pid: Path(f"/proc/{pid}/cmdline").read_bytes() for pid in tree if not _gone(pid)}
    assert any(b"forkserver" in c for c in commands.values()), "no forkserver: the pool changed"
    assert len(tree) >= 3  # the forkserver, its two workers (and the resource tracker)
    proc.send_signal(signal.SIGKILL)  # no handler runs: the workers must notice by themselves
    proc.wait()
    deadline = time.monotonic() + 15
    while not all(_gone(pid) for pid in tree) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = {pid: commands.get(pid, b"")[:80] for pid in tree if not _gone(pid)}
    assert not left, f"processes outlived a SIGKILLed prepare: {left}"


def _recorded(out: Path) -> int:
    return len(prep._read_rows(out)) if out.is_dir() else 0


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_gives_an_uninterrupted_runs_files(tmp_path):
    rng = random.Random(20)
    src, out, _, proc = _prepare_until(tmp_path, workers=2, finished=rng.randint(1, 4))
    kills = 1
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    cmd = [*PYTHON, "prepare", str(src), str(out), "--workers", "2", "--no-progress"]
    while kills < 3:
        before = _recorded(out)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        goal = before + rng.randint(1, 2)
        while proc.poll() is None and _recorded(out) < goal and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.05))  # somewhere inside the next clips' writes
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
    assert kills == 3, "prepare finished before the third kill"
    finished = _recorded(out)
    assert finished < 24
    resumed = subprocess.run(cmd, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert (
        resumed.stdout.splitlines()[0] == f"sspl prepare: done {24 - finished}, skipped {finished}, failed 0"
    )

    reference = tmp_path / "reference"
    assert str(prep.prepare(src, reference, workers=2, progress=False)) == "done 24 / skipped 0 / failed 0"
    got, want = _tree(out), _tree(reference)
    assert sorted(got) == sorted(want)  # no temporary file or journal left
    assert all(got[name] == want[name] for name in want)


# --------------------------------------------------------------------------------------------------
# Full disk, read-only output (#11)
# --------------------------------------------------------------------------------------------------


def _in_private_tmpfs(tmp_path: Path, size: str, script: str) -> subprocess.CompletedProcess:
    """Run ``script`` (sh) with a ``size`` tmpfs mounted at ``$MNT`` in a private mount namespace."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    full = f"set -u\nmount -t tmpfs -o size={size} tmpfs {mnt} || exit 99\n{script}"
    env = {**os.environ, "MNT": str(mnt), "SSPL": " ".join(PYTHON)}
    done = subprocess.run(["unshare", "-m", "sh", "-c", full], env=env, capture_output=True, text=True)
    if done.returncode == 99:
        pytest.skip(f"cannot mount a tmpfs in a private mount namespace: {done.stderr.strip()}")
    return done


@needs_unshare
@pytest.mark.slow
def test_a_full_disk_stops_prepare_with_one_line_and_a_rerun_resumes(tmp_path):
    src = _videos(tmp_path / "src", 8)
    logs = tmp_path / "logs"
    logs.mkdir()
    script = f"""
$SSPL prepare {src} $MNT/out --workers 1 --no-progress > {logs}/1.out 2> {logs}/1.err; echo $? > {logs}/1.rc
mount -o remount,size=20m $MNT
$SSPL prepare {src} $MNT/out --workers 1 --no-progress > {logs}/2.out 2> {logs}/2.err; echo $? > {logs}/2.rc
cp -r $MNT/out {tmp_path}/copy
"""
    # about 280 kB a clip: 1 MB holds three
    done = _in_private_tmpfs(tmp_path, "1m", script)
    assert done.returncode == 0, done.stderr
    read = {name: (logs / name).read_text() for name in ("1.rc", "1.out", "1.err", "2.rc", "2.out", "2.err")}
    assert read["1.rc"].strip() == "1" and read["1.out"] == ""
    assert read["1.err"] == (
        f"sspl prepare: error: {tmp_path / 'mnt'}/out: cannot write the prepared dataset: No space left on "
        "device; the clips finished so far are kept: make room and rerun the same command to resume\n"
    )
    assert read["2.rc"].strip() == "0" and read["2.err"] == ""
    done_count, skipped = (int(read["2.out"].replace(",", " ").split()[k]) for k in (3, 5))
    assert 1 <= skipped < 8 and done_count + skipped == 8  # the clips that fit were kept
    reference = tmp_path / "reference"
    prep.prepare(src, reference, workers=1, progress=False)
    copy = _tree(tmp_path / "copy")
    assert copy == _tree(reference)  # same source folder: even meta.json is identical


@needs_unshare
def test_a_read_only_out_is_refused_up_front(tmp_path):
    src = _videos(tmp_path / "src", 1)
    logs = tmp_path / "logs"
    logs.mkdir()
    script = f"""
mkdir $MNT/old && mount -o remount,ro $MNT
$SSPL prepare {src} $MNT/old --workers 1 --no-progress 2> {logs}/old.err; echo $? > {logs}/old.rc
$SSPL prepare {src} $MNT/new --workers 1 --no-progress 2> {logs}/new.err; echo $? > {logs}/new.rc
$SSPL synth $MNT/new --num 4 --pretrain-num 0 --workers 1 --no-progress 2> {logs}/synth.err; echo $? > {logs}/synth.rc
"""
    done = _in_private_tmpfs(tmp_path, "1m", script)
    assert done.returncode == 0, done.stderr
    mnt = tmp_path / "mnt"
    assert (logs / "old.rc").read_text().strip() == "1"
    assert (logs / "old.err").read_text() == (
        f"sspl prepare: error: {mnt}/old: cannot write in the output folder (OUT): Read-only file system\n"
    )
    for name, command in (("new", "prepare"), ("synth", "synth")):
        assert (logs / f"{name}.rc").read_text().strip() == "1"
        assert (logs / f"{name}.err").read_text() == (
            f"sspl {command}: error: {mnt}: cannot create the output folder {mnt}/new in it (OUT): "
            "Read-only file system\n"
        )


def _refuse_writes(*args, **kwargs):
    raise OSError(errno.EROFS, "Read-only file system")


def test_an_unwritable_out_is_refused_before_any_clip_is_decoded(tmp_path, capsys, monkeypatch):
    # The same check without a mount namespace: the probe file cannot be made.
    src = _videos(tmp_path / "src", 1)
    out = tmp_path / "out"
    monkeypatch.setattr(prep, "prepare_clip", lambda *a: pytest.fail("a clip was decoded"))
    monkeypatch.setattr(tempfile, "TemporaryFile", _refuse_writes)
    assert main(["prepare", str(src), str(out), "--workers", "1", "--no-progress"]) == 1
    assert capsys.readouterr().err == (
        f"sspl prepare: error: {tmp_path}: cannot create the output folder {out} in it (OUT): "
        "Read-only file system\n"
    )
    argv = ["synth", str(out), "--num", "4", "--pretrain-num", "0", "--workers", "1", "--no-progress"]
    assert main(argv) == 1
    assert "sspl synth: error: " in capsys.readouterr().err
    assert not out.exists()


# --------------------------------------------------------------------------------------------------
# Crafted list and manifest entries
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["..", "a\x07b"])
def test_a_list_id_that_is_not_a_plain_name_is_refused(tmp_path, capsys, bad):
    src = _videos(tmp_path / "src", 1)
    listed = tmp_path / "ids.txt"
    listed.write_text(f"clip00\n{bad}\n")
    out = tmp_path / "out"
    assert main(["prepare", str(src), str(out), "--list", str(listed), "--no-progress"]) == 1
    assert capsys.readouterr().err == (
        f"sspl prepare: error: {listed}:2: id {bad!r} is not a plain file name (no '/', '..' or control "
        "characters)\n"
    )
    assert not out.exists()


def test_a_list_path_with_dot_dot_never_writes_outside_out(tmp_path):
    src = _videos(tmp_path / "src", 1)
    listed = tmp_path / "ids.txt"
    listed.write_text("../../clip00\n../x\n")  # folders are stripped from listed ids
    out = tmp_path / "deep" / "out"
    before = {p for p in tmp_path.rglob("*") if p.is_file()}
    summary = prep.prepare(src, out, workers=1, list_file=listed, progress=False)
    assert str(summary) == "done 1 / skipped 0 / failed 1"
    assert {r.id for r in read_manifest(out)} == {"clip00", "x"}
    assert {p for p in tmp_path.rglob("*") if p.is_file() and out not in p.parents} == before


def test_a_manifest_row_pointing_outside_out_is_not_trusted(tmp_path):
    src = _videos(tmp_path / "src", 1)
    out = tmp_path / "out"
    prep.prepare(src, out, workers=1, progress=False)
    victim = tmp_path / "victim.jpg"
    victim.write_bytes(b"the user's photo")
    rows = read_manifest(out)
    prep.write_manifest(out, [replace(rows[0], frame="../victim.jpg")])
    (out / "frames" / "clip00.jpg").unlink()
    assert str(prep.prepare(src, out, workers=1, progress=False)) == "done 1 / skipped 0 / failed 0"
    assert victim.read_bytes() == b"the user's photo"
    assert read_manifest(out)[0].frame == "frames/clip00.jpg" and (out / "frames" / "clip00.jpg").is_file()


# --------------------------------------------------------------------------------------------------
# One image conversion (#6)
# --------------------------------------------------------------------------------------------------


def _pair(folder: Path, name: str, image: Image.Image) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    image.save(folder / f"{name}.png")
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(3 * 16000) / 16000)
    sf.write(folder / f"{name}.wav", tone, 16000)


def test_prepare_and_localize_see_the_same_pixels(tmp_path):
    src = tmp_path / "src"
    grey = np.zeros((256, 256), np.uint16)
    grey[:, :128], grey[:, 128:] = 32768, 6553  # 16-bit mid grey and dark grey: 128 and 25
    _pair(src, "grey16", Image.fromarray(grey))
    rgba = np.zeros((256, 256, 4), np.uint8)
    rgba[...] = (250, 20, 20, 0)  # a hidden red behind full transparency: black when shown
    rgba[:, 128:, 3] = 255
    _pair(src, "rgba", Image.fromarray(rgba, "RGBA"))
    out = tmp_path / "out"
    assert str(prep.prepare(src, out, workers=1, progress=False)) == "done 2 / skipped 0 / failed 0"
    for name in ("grey16", "rgba"):
        shown = read_image(src / f"{name}.png")  # what localize reads
        atomic_save_image(tmp_path / f"{name}.jpg", shown, quality=prep.JPEG_QUALITY)
        assert (out / "frames" / f"{name}.jpg").read_bytes() == (tmp_path / f"{name}.jpg").read_bytes(), name
    frame = np.asarray(Image.open(out / "frames" / "grey16.jpg"), np.float32)
    assert abs(frame[:, 8:120].mean() - 128) < 2 and abs(frame[:, 136:248].mean() - 25) < 2  # not white
    frame = np.asarray(Image.open(out / "frames" / "rgba.jpg"), np.float32)
    assert frame[:, 8:120].max() < 8 and abs(frame[:, 136:248, 0].mean() - 250) < 3


def test_a_rerun_removes_only_its_own_stale_temporary_files(tmp_path):
    src = _videos(tmp_path / "src", 2)
    out = tmp_path / "out"
    prep.prepare(src, out, workers=1, progress=False)
    stale = [out / "frames" / ".clip00.jpg.k2j3_9ab.tmp", out / "spect" / ".clip01.npy.x8y7z6w5.tmp"]
    kept = [out / "frames" / ".notes.txt", out / "frames" / ".other.jpg.k2j3_9ab.tmp"]  # not ours
    for path in stale + kept:
        path.write_bytes(b"left by a killed run")
    assert str(prep.prepare(src, out, workers=1, progress=False)) == "done 0 / skipped 2 / failed 0"
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)
