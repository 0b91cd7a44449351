"""Atomic file writes.

Every long job (preparation, training) writes its outputs through these helpers: the data goes to a
temporary file in the destination folder, is flushed to disk, and is renamed over the final name. A
killed process therefore leaves either the previous file or none, never a half-written one that looks
finished. The file gets the permissions an ordinary ``open`` would give it (``0o666`` less the umask),
not the owner-only ones of a temporary file, so a prepared set or a run can be shared.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = [
    "atomic_open",
    "atomic_save_image",
    "atomic_save_json",
    "atomic_save_npy",
    "atomic_save_torch",
    "atomic_write_bytes",
    "atomic_write_text",
    "make_shareable",
    "nearest_existing",
    "output_folder_blocked",
]

# The process's umask, read once (reading it means setting it; at import no other thread writes files).
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def nearest_existing(path: str | os.PathLike) -> Path:
    """``path`` if it exists, else the nearest of its parents that does (where it would be created)."""
    path = Path(path)
    return next((p for p in (path, *path.parents) if p.exists()), path)


def output_folder_blocked(folder: Path) -> str | None:
    """Why ``folder`` cannot be an output folder (a file stands at it or above it), else ``None``."""
    existing = nearest_existing(folder)
    if existing.is_dir() or not existing.exists():
        return None
    return f"{existing}: is a file, not a folder" + (
        "" if existing == folder else f", so the output folder {folder} cannot be made"
    )


def make_shareable(path: str | os.PathLike) -> None:
    """Give a temporary file (``mkstemp`` makes it owner-only) the permissions of an ordinary write."""
    os.chmod(path, 0o666 & ~_UMASK)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing and rename it over ``path`` on success.

    Args:
        path: final destination.
        mode: ``"wb"`` or ``"w"`` (text, UTF-8).

    Yields:
        A writable file object. If the block raises, the temporary file is removed and ``path`` is
        left untouched.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open supports modes 'wb' and 'w', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        make_shareable(tmp)
        with os.fdopen(fd, mode, **({"encoding": "utf-8", "newline": ""} if mode == "w" else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename is None:  # a full disk's write error names no file
            raise _named(e, path) from e
        raise


def _named(error: OSError, path: Path) -> OSError:
    """The same error naming the file being written: ``[Errno 28] No space left ...: 'path'`` (OSError
    picks the subclass, PermissionError etc., from the errno)."""
    return OSError(error.errno, error.strerror or str(error), str(path))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    with atomic_open(path, "w") as f:
        f.write(text)


def atomic_save_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> None:
    """Serialise ``obj`` as JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Save one array in ``.npy`` format atomically."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def atomic_save_image(path: str | os.PathLike, image: Any, **save_kwargs: Any) -> None:
    """Save a PIL image atomically; the format is taken from the file suffix (``quality=95`` etc.)."""
    path = Path(path)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: unsupported image suffix {path.suffix!r} (use .jpg or .png)")
    buf = io.BytesIO()
    image.save(buf, format=fmt, **save_kwargs)
    atomic_write_bytes(path, buf.getvalue())


def atomic_save_torch(path: str | os.PathLike, obj: Any) -> None:
    """``torch.save`` to ``path`` atomically."""
    import torch

    with atomic_open(path, "wb") as f:
        try:
            torch.save(obj, f)
        except RuntimeError as e:
            # torch turns the file's write error (a full disk) into a RuntimeError about stream positions
            # (and Ctrl-C during the write into one too: it must stay an interrupt, not become an error)
            cause = e.__context__
            if isinstance(cause, OSError):
                raise _named(cause, Path(path)) from e
            if isinstance(cause, KeyboardInterrupt):
                raise cause from None
            raise
