"""The output-folder rules (sspl.outputs) and the data-path rules (sspl.paths) every command uses."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from sspl.errors import DataError
from sspl.outputs import (
    LOCK_NAME,
    OutputInUseError,
    check_output_folder,
    output_lock,
    remove_stale_temps,
    remove_written,
)
from sspl.paths import is_plain_name, path_inside, plain_name


@pytest.mark.parametrize("name", ["clip_01", "a.b", "ünï code", "-x", "..a"])
def test_plain_names_pass(name):
    assert is_plain_name(name) and plain_name(name, "m.csv:2") == name


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "a/b", "a\\b", "a\nb", "a\0b", "/etc"])
def test_names_that_are_paths_or_hold_control_characters_are_refused(name):
    assert not is_plain_name(name)
    with pytest.raises(DataError, match=r"^m\.csv:2: id .* is not a plain file name"):
        plain_name(name, "m.csv:2")


def test_paths_inside_the_folder_pass_and_paths_leading_out_are_refused(tmp_path):
    root = tmp_path / "data"
    (root / "frames").mkdir(parents=True)
    (tmp_path / "secret").write_text("x")
    assert path_inside(root, "frames/a.jpg", "m.csv:2") == root / "frames" / "a.jpg"
    assert path_inside(root, "frames/../frames/a.jpg", "m.csv:2") == root / "frames/../frames/a.jpg"
    for bad in ["../secret", "frames/../../secret", "/etc/passwd", "", "a\0b"]:
        with pytest.raises(DataError, match=r"^m\.csv:2: path "):
            path_inside(root, bad, "m.csv:2")
    (root / "out").symlink_to(tmp_path)  # a link leading out of the folder is refused too
    with pytest.raises(DataError, match="leads outside"):
        path_inside(root, "out/secret", "m.csv:2")
    (root / "in").symlink_to(root / "frames")  # one that stays inside is fine
    assert path_inside(root, "in/a.jpg", "m.csv:2") == root / "in" / "a.jpg"


def test_an_output_folder_on_a_file_or_read_only_is_named(tmp_path, monkeypatch):
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError, match=r"f: is a file, not a folder for the outputs \(--out\)"):
        check_output_folder(tmp_path / "f" / "sub")
    check_output_folder(tmp_path / "new" / "deeper")  # can be made: nothing is created by the check
    assert not (tmp_path / "new").exists()
    import tempfile

    def refused(*args, dir=None, **kwargs):
        raise PermissionError(30, "Read-only file system")

    monkeypatch.setattr(tempfile, "TemporaryFile", refused)
    with pytest.raises(PermissionError, match=r"cannot write in the output folder \(--run-dir\): Read-only"):
        check_output_folder(tmp_path, "--run-dir")


def _hold_in_child(folder, seconds):
    code = textwrap.dedent(
        f"""
        import time
        from sspl.outputs import output_lock
        with output_lock({str(folder)!r}, "sspl train"):
            print("held", flush=True)
            time.sleep({seconds})
        """
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child


def test_one_writer_per_folder_and_a_killed_holder_releases_it(tmp_path):
    child = _hold_in_child(tmp_path / "run", 60)
    try:
        with pytest.raises(OutputInUseError, match=rf"run: in use by process {child.pid} \(sspl train\)"):
            with output_lock(tmp_path / "run", "sspl train"):
                pass
    finally:
        child.kill()
        child.wait()
    with output_lock(tmp_path / "run", "sspl evaluate"):  # SIGKILL released it: no stale lock
        assert (tmp_path / "run" / LOCK_NAME).read_text() == f"{os.getpid()} sspl evaluate\n"
        with pytest.raises(OutputInUseError):  # and the same process cannot take it twice either
            with output_lock(tmp_path / "run", "sspl evaluate"):
                pass


def test_remove_written_deletes_only_the_named_files_and_the_folders_it_empties(tmp_path):
    for rel in ["report.json", "overlays/a.png", "overlays/b.png", "plots/c.png", "mine/keep.txt"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
    (tmp_path / "overlays" / "user.png").write_text("the user's")
    removed = remove_written(
        tmp_path, ["report.json", "overlays/a.png", "overlays/b.png", "plots/c.png", "mine", "absent.csv"]
    )
    assert sorted(p.relative_to(tmp_path).as_posix() for p in removed) == [
        "overlays/a.png",
        "overlays/b.png",
        "plots/c.png",
        "report.json",
    ]
    assert (tmp_path / "overlays" / "user.png").read_text() == "the user's"  # the folder stays with it
    assert (tmp_path / "mine" / "keep.txt").exists()  # a named folder is never removed with its files
    assert not (tmp_path / "plots").exists()  # emptied by the removal: removed
    assert tmp_path.is_dir()


def test_stale_temps_of_the_named_outputs_go_and_nothing_else(tmp_path):
    names = [".last.pt.k2j_x9.tmp", ".best.pt.abc.part", ".last.pt.tmp", ".other.pt.abc.tmp", "last.pt"]
    for name in names:
        (tmp_path / name).write_text("x")
    removed = remove_stale_temps(tmp_path, ["last.pt", "best.pt"])
    assert sorted(p.name for p in removed) == [".best.pt.abc.part", ".last.pt.k2j_x9.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".last.pt.tmp", ".other.pt.abc.tmp", "last.pt"]
    assert remove_stale_temps(tmp_path / "absent", ["last.pt"]) == []
