"""Output folders: checked before work starts, one writer at a time, and only sspl's own files removed.

The rules every writing command follows (docs/reliability.md):

- :func:`check_output_folder` before any work: the folder is a folder (or can be made one) and takes a
  file, so a read-only or misplaced output fails in a second, naming the folder, not after an hour.
- :func:`output_lock` while writing: one process per output folder. The lock is an OS lock
  (``flock``) on a small file in the folder, so a killed process releases it; a second command is told
  which process holds the folder.
- :func:`remove_written` when asked to start over: it deletes the files a command names as its own
  outputs, one by one, and the folders it leaves empty, never a tree and never a file it did not name.
- :func:`remove_stale_temps` at the start of a run: the hidden temporary files of :mod:`sspl.io`'s
  atomic writes that a killed run left behind, for the outputs this command writes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import SSPLError
from .io import nearest_existing

__all__ = [
    "LOCK_NAME",
    "OutputInUseError",
    "check_output_folder",
    "output_lock",
    "remove_stale_temps",
    "remove_written",
    "temp_pattern",
]

#: the lock file each locked output folder holds (a hidden file: it never counts as an output)
LOCK_NAME = ".sspl.lock"


class OutputInUseError(SSPLError):
    """Another process is writing into the output folder."""


def check_output_folder(folder: str | os.PathLike, option: str = "--out") -> None:
    """The output folder is a folder, or can be made one, where files can be written.

    Probed with a temporary file that is never linked (so a failed check leaves nothing behind): the
    folder itself, or the nearest existing folder it would be made in. Root ignores permission bits, but
    not a read-only file system, so the probe is a real write.

    Raises:
        NotADirectoryError: the folder, or a path above it, is a file.
        PermissionError: nothing can be written there (names the folder and ``option``).
    """
    folder = Path(folder)
    existing = nearest_existing(folder)
    if existing.exists() and not existing.is_dir():
        where = "" if existing == folder else f" (in {folder})"
        raise NotADirectoryError(f"{existing}: is a file, not a folder for the outputs ({option}){where}")
    target = folder if folder.is_dir() else existing
    try:
        with tempfile.TemporaryFile(dir=target):
            pass
    except OSError as e:
        what = (
            "write in the output folder" if target == folder else f"create the output folder {folder} in it"
        )
        raise PermissionError(f"{target}: cannot {what} ({option}): {e.strerror or e}") from e


@contextlib.contextmanager
def output_lock(folder: str | os.PathLike, command: str) -> Iterator[None]:
    """Hold ``folder`` for this process while the block runs; the folder is created if needed.

    Args:
        folder: the output folder (a run directory, a prepared folder, an evaluation's ``--out``).
        command: what holds it, for the message another process gets (``"sspl train"``).

    Raises:
        OutputInUseError: another live process holds the folder (names it by process id).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise
            raise OutputInUseError(
                f"{folder}: in use by {_holder(fd)}; wait for it to end (or stop it), or choose another folder"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {command}\n".encode())
        yield
    finally:
        os.close(fd)  # closing releases the lock; the file stays (removing it would race a new holder)


def _holder(fd: int) -> str:
    """What the lock file says holds it: ``process 123 (sspl train)``."""
    text = os.pread(fd, 256, 0).decode("utf-8", "replace").strip()
    pid, _, command = text.partition(" ")
    if not pid.isdigit():
        return "another process"
    return f"process {pid}" + (f" ({command})" if command else "")


def remove_written(folder: str | os.PathLike, relpaths: Iterable[str | os.PathLike]) -> list[Path]:
    """Delete the files ``relpaths`` under ``folder`` that exist, then the folders that leaves empty.

    Only the named files go: a folder among them is never removed with what it holds, and a user's file
    beside them stays. Returns what was deleted.
    """
    root = Path(folder)
    removed: list[Path] = []
    parents: set[Path] = set()
    for rel in relpaths:
        path = root / rel
        if path.is_file() or path.is_symlink():
            path.unlink()
            removed.append(path)
            parents.update(p for p in path.parents if root in p.parents)
    for parent in sorted(parents, key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):  # not empty (a user's file) or gone: left as it is
            parent.rmdir()
    return removed


def temp_pattern(name: str) -> re.Pattern[str]:
    """The hidden temporary names :func:`sspl.io.atomic_open` gives a file ``name`` while writing it."""
    return re.compile(rf"\.{re.escape(name)}\.[A-Za-z0-9_]+\.(tmp|part)")


def remove_stale_temps(folder: str | os.PathLike, names: Iterable[str]) -> list[Path]:
    """Delete the temporary files a killed writer left for the outputs ``names`` in ``folder``.

    Call it while holding the folder (:func:`output_lock`): then no live writer owns them. A writer that
    shares its folder with other runs instead holds each of its temporary files (``flock``) while it
    lives, and a file so held is left alone.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    patterns = [temp_pattern(name) for name in names]
    found = [p for p in folder.iterdir() if p.is_file() and any(rx.fullmatch(p.name) for rx in patterns)]
    stale = [path for path in found if not _held(path)]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def _held(path: Path) -> bool:
    """Whether a live process holds ``path`` with ``flock`` (a file that is gone, or that this process
    may not open, counts as held: it is not this run's to remove)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except (FileNotFoundError, PermissionError):
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno not in (errno.EWOULDBLOCK, errno.EACCES):
            raise
        return True
    finally:
        os.close(fd)
    return False
