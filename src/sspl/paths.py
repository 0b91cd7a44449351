"""Paths read from data files: every one stays inside its folder, every id is a plain file name.

A prepared folder's ``manifest.csv`` and ``annotations.json``, and the lists a user passes, are data, not
code: a crafted row must not make a command read ``/etc/passwd`` or write ``../../x.png`` over a user's
file. Every reader joins such paths through :func:`path_inside`, and every id that becomes part of an
output's name goes through :func:`plain_name`.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePath

from .errors import DataError

__all__ = ["is_plain_name", "path_inside", "plain_name"]


def is_plain_name(name: str) -> bool:
    """Whether ``name`` can be used as one file name: not empty, no separator, not ``.`` or ``..``, no
    NUL or other control character (a newline in a file name breaks every line-based tool)."""
    return bool(
        name
        and name not in (".", "..")
        and "/" not in name
        and "\\" not in name
        and not any(ord(c) < 32 or ord(c) == 127 for c in name)
    )


def plain_name(name: str, where: str) -> str:
    """``name`` if it is a plain file name (:func:`is_plain_name`), else a :class:`DataError`.

    Args:
        name: an id or file name read from a data file.
        where: the data file (and line) it was read from, for the message.
    """
    if not is_plain_name(name):
        raise DataError(f"{where}: id {name!r} is not a plain file name (no '/', '..' or control characters)")
    return name


def path_inside(root: str | os.PathLike, relative: str | os.PathLike, where: str) -> Path:
    """``root / relative``, refused unless it stays inside ``root``.

    The check is on the resolved path, so a ``..`` component, an absolute path and a symbolic link that
    points out of ``root`` are all refused; a link that stays inside is fine.

    Args:
        root: the folder the data file describes.
        relative: a path read from the data file (relative to ``root``).
        where: the data file (and line) it was read from, for the message.

    Raises:
        DataError: naming ``where`` and the path.
    """
    if not str(relative) or "\0" in str(relative) or PurePath(relative).is_absolute():
        raise DataError(f"{where}: path {str(relative)!r} must be relative to {root}")
    base = Path(root).resolve()
    joined = Path(root) / relative
    resolved = joined.resolve()
    if resolved != base and base not in resolved.parents:
        raise DataError(f"{where}: path {str(relative)!r} leads outside {root}")
    return joined
