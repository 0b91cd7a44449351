"""Atomic writes: all or nothing, and files as shareable as an ordinary write makes them."""

from __future__ import annotations

import errno
import os
import stat

import numpy as np
import pytest
import torch

from sspl import io as sspl_io
from sspl.io import atomic_open, atomic_save_npy, atomic_save_torch, atomic_write_text


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path):
    path = tmp_path / "meta.json"
    atomic_write_text(path, "old\n")
    with pytest.raises(RuntimeError), atomic_open(path, "w") as f:
        f.write("half of the new")
        raise RuntimeError("killed")
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meta.json"]


def test_written_files_get_the_permissions_of_an_ordinary_write(tmp_path):
    atomic_save_npy(tmp_path / "a.npy", np.zeros(3))
    (tmp_path / "b.npy").write_bytes(b"")  # an ordinary write, for comparison
    mode = stat.S_IMODE((tmp_path / "a.npy").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "b.npy").stat().st_mode) == 0o666 & ~_umask()
    assert mode & stat.S_IRGRP or _umask() & stat.S_IRGRP  # readable by the group unless the umask says no
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.zeros(3))


class _FullDisk:
    """A file that takes ``room`` bytes, then fails as a full disk does (an error naming no file)."""

    def __init__(self, file, room: int) -> None:
        self._file, self._room = file, room

    def write(self, data) -> int:
        if len(data) > self._room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= len(data)
        return self._file.write(data)

    def __getattr__(self, name):
        return getattr(self._file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._file.close()


@pytest.mark.parametrize("save", ["text", "torch"])
def test_a_full_disk_is_an_os_error_naming_the_file_and_leaves_nothing(tmp_path, monkeypatch, save):
    real_fdopen = os.fdopen
    monkeypatch.setattr(sspl_io.os, "fdopen", lambda *a, **k: _FullDisk(real_fdopen(*a, **k), 100))
    path = tmp_path / ("meta.json" if save == "text" else "last.pt")
    with pytest.raises(OSError) as raised:
        if save == "text":
            atomic_write_text(path, "x" * 1000)
        else:
            atomic_save_torch(path, {"weight": torch.zeros(1000)})  # torch itself raises a RuntimeError
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(path)
    assert str(raised.value) == f"[Errno 28] No space left on device: '{path}'"
    assert list(tmp_path.iterdir()) == []


class _Interrupted(_FullDisk):
    def write(self, data) -> int:
        if len(data) > self._room:
            raise KeyboardInterrupt  # Ctrl-C arriving while torch writes a large tensor
        return super().write(data)


def test_ctrl_c_during_torch_save_stays_an_interrupt_and_leaves_nothing(tmp_path, monkeypatch):
    real_fdopen = os.fdopen
    monkeypatch.setattr(sspl_io.os, "fdopen", lambda *a, **k: _Interrupted(real_fdopen(*a, **k), 100))
    with pytest.raises(KeyboardInterrupt):
        atomic_save_torch(tmp_path / "last.pt", {"weight": torch.zeros(1000)})
    assert list(tmp_path.iterdir()) == []
