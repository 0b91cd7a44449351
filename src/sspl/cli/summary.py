"""The lines every ``sspl`` command ends with: what it wrote, where, and what to open.

One format for every command, so a person reads all of them the same way::

    sspl train: epochs 2, best epoch 2, val_ciou@0.5 0.4123
    Wrote 6 files to runs/x/ in 12.3 s -- open runs/x/history.json

The first line holds the command's key numbers (left out when there are none); the second is always
there. A command that only looks (``sspl weights``) says ``Found`` instead of ``Wrote``. With ``--json``
a command prints one JSON object on one line instead, for scripts: ``command``, ``verb``, ``count``,
``unit``, ``out``, ``open``, ``next`` and ``seconds``, then the key numbers (spaces in their names as
``_``) and any details only a script needs (every output path, nested results).
"""

from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Summary", "add_json_option", "count_files", "emit"]

_PREPOSITION = {"Wrote": "to", "Found": "in"}


@dataclass
class Summary:
    """What a command did, for its closing lines.

    Attributes:
        command: the sub-command (``"prepare"``, ``"train"``, ...).
        count: how many ``unit`` it wrote (or found).
        unit: what it counts, singular (``"file"``, ``"clip"``, ``"scene"``); an ``s`` is added for
            any count but 1.
        out: the folder it wrote in (None when it wrote nowhere).
        open: the file to look at first (None when there is none).
        next: a command to run next (None when there is none).
        seconds: wall time of the command (None when not measured).
        facts: the key numbers, in order, as a person names them (``{"best epoch": 3}``).
        details: what only a script needs (JSON only).
        verb: ``"Wrote"``, or ``"Found"`` for a command that only looks.
    """

    command: str
    count: int
    unit: str = "file"
    out: str | os.PathLike | None = None
    open: str | os.PathLike | None = None
    next: str | None = None
    seconds: float | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    verb: str = "Wrote"

    def lines(self) -> list[str]:
        """The human form: the key numbers (if any), then what was written and what to open."""
        lines = []
        if self.facts:
            lines.append(
                f"sspl {self.command}: " + ", ".join(f"{k} {_show(v)}" for k, v in self.facts.items())
            )
        text = f"{self.verb} {self.count} {self.unit}{'' if self.count == 1 else 's'}"
        if self.out is not None:
            text += f" {_PREPOSITION.get(self.verb, 'in')} {Path(self.out)}{os.sep}"
        if self.seconds is not None:
            text += f" in {self.seconds:.1f} s"
        if self.open is not None:
            text += f" -- open {self.open}"
        if self.next is not None:
            text += f" -- next: {self.next}"
        lines.append(text)
        return lines

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (see the module docstring)."""
        out = {
            "command": self.command,
            "verb": self.verb,
            "count": self.count,
            "unit": self.unit,
            "out": None if self.out is None else str(self.out),
            "open": None if self.open is None else str(self.open),
            "next": self.next,
            "seconds": None if self.seconds is None else round(self.seconds, 2),
        }
        for key, value in [*((k.replace(" ", "_"), v) for k, v in self.facts.items()), *self.details.items()]:
            out.setdefault(key, value)  # the summary's own keys first, then a fact before a detail
        return out


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "-" if not math.isfinite(value) else f"{value:.4g}"
    return "-" if value is None else str(value)


def add_json_option(parser: argparse.ArgumentParser) -> None:
    """``--json``: one JSON object instead of the closing lines."""
    parser.add_argument(
        "--json",
        action="store_true",
        help="end with one JSON object on one line (what was written, where, the key numbers, every output "
        "path) instead of the two summary lines, for scripts",
    )


def emit(summary: Summary, as_json: bool) -> None:
    """Print the closing lines of a command, or its JSON object (``as_json``)."""
    if as_json:
        print(json.dumps(summary.as_dict(), default=str))
    else:
        print("\n".join(summary.lines()))


def count_files(folder: str | os.PathLike) -> int:
    """How many files are under ``folder`` (0 when it does not exist)."""
    root = Path(folder)
    return sum(1 for p in root.rglob("*") if p.is_file()) if root.is_dir() else 0
