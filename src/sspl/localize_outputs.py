"""The files one ``sspl localize`` run writes, as one set: named up front, checked before any work, written
under hidden temporary names and renamed together at the end, so a failed or killed run leaves none of
them (:class:`OutputSet`). The names are :func:`image_output_paths` and :func:`video_output_paths`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .errors import DataError
from .outputs import check_output_folder, remove_stale_temps

__all__ = [
    "OutputSet",
    "check_outputs_free",
    "image_output_paths",
    "save_npy",
    "save_png",
    "video_output_paths",
]


class OutputSet:
    """Files written under hidden temporary names in one folder and renamed together on success.

    Each temporary file is held (``flock``) by this process until the run ends. So another run into the
    same folder, which first removes the temporary files of its outputs that a killed run left
    (:func:`sspl.outputs.remove_stale_temps`), leaves those of a live run alone; the OS releases the hold
    of a killed process. On failure (or an interrupt) the temporary files are removed, and the folder too
    when this run created it and it is empty, so nothing half-written is left looking finished.
    """

    def __init__(self, paths: dict[str, Path], *, overwrite: bool) -> None:
        folders = {p.parent for p in paths.values()}
        if len(folders) != 1:
            raise ValueError(f"outputs must share one folder, got {sorted(map(str, folders))}")
        check_output_folder(next(iter(folders)), "--out")
        if not overwrite:
            check_outputs_free(paths)
        for path in paths.values():  # checked now: a rename failing at the end would leave a mixed set
            if path.is_dir():
                raise IsADirectoryError(f"{path}: is a folder; --overwrite replaces output files only")
        self.folder = folders.pop()
        self.final = dict(paths)
        self._created = not self.folder.exists()
        self._temps: dict[str, Path] = {}
        self._held: list[int] = []

    def __enter__(self) -> OutputSet:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DataError(
                f"{self.folder}: cannot create the output folder (--out): {e.strerror or e}"
            ) from e
        remove_stale_temps(self.folder, [path.name for path in self.final.values()])
        return self

    def temp(self, key: str) -> Path:
        """A fresh temporary path for the output ``key``: created empty (with the permissions the
        user's umask gives) and held until the run ends; the writer opens it by name."""
        while True:
            tmp = self.folder / f".{self.final[key].name}.{uuid.uuid4().hex[:12]}.part"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            fcntl.flock(fd, fcntl.LOCK_EX)
            if _still_names(fd, tmp):  # not removed as stale between its creation and the hold
                break
            os.close(fd)
        self._held.append(fd)
        self._temps[key] = tmp
        return tmp

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if exc_type is None:
                missing = set(self.final) - set(self._temps)
                if missing:
                    raise RuntimeError(f"outputs never written: {sorted(missing)}")
                for key, tmp in self._temps.items():
                    os.replace(tmp, self.final[key])
                return
            for tmp in self._temps.values():
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
            if self._created:
                with contextlib.suppress(OSError):
                    self.folder.rmdir()
        finally:
            for fd in self._held:  # released once renamed or removed
                os.close(fd)


def _still_names(fd: int, path: Path) -> bool:
    """Whether ``path`` is still the file open as ``fd``."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def save_npy(path: Path, array: np.ndarray) -> None:
    """``array`` as a ``.npy`` file at exactly ``path`` (no pickled objects)."""
    with open(path, "wb") as f:  # a file object: np.save would append ".npy" to a path
        np.save(f, np.ascontiguousarray(array), allow_pickle=False)


def save_png(path: Path, image: Image.Image) -> None:
    """``image`` as a PNG file at ``path`` (whatever its suffix)."""
    image.save(path, format="PNG")


def image_output_paths(out_dir: str | os.PathLike, stem: str) -> dict[str, Path]:
    """The files :func:`sspl.localize.write_image_outputs` writes: ``overlay`` and ``map``."""
    folder = Path(out_dir)
    return {"overlay": folder / f"{stem}_overlay.png", "map": folder / f"{stem}_map.npy"}


def video_output_paths(out_dir: str | os.PathLike, stem: str) -> dict[str, Path]:
    """The files :func:`sspl.localize.write_video_outputs` writes: ``heatmap_video``, ``maps``, ``timestamps``,
    ``contact_sheet``."""
    folder = Path(out_dir)
    return {
        "heatmap_video": folder / f"{stem}_heatmap.mp4",
        "maps": folder / f"{stem}_maps.npy",
        "timestamps": folder / f"{stem}_timestamps.npy",
        "contact_sheet": folder / f"{stem}_contact.png",
    }


def check_outputs_free(paths: dict[str, Path]) -> None:
    """Refuse to replace existing outputs, or to write them under something that is not a folder.

    Raises:
        NotADirectoryError: an output's folder is an existing file.
        FileExistsError: naming the first output that exists.
    """
    for folder in sorted({p.parent for p in paths.values()}):
        check_output_folder(folder, "--out")
    for path in paths.values():
        if path.exists():
            raise FileExistsError(
                f"{path}: already exists (choose another output folder or pass --overwrite)"
            )
