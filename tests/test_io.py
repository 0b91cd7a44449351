"""Atomic writes: all or nothing, and files as shareable as an ordinary write makes them."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from sspl.io import atomic_open, atomic_save_npy, atomic_write_text


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
