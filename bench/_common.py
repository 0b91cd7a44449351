"""Shared helpers of the benchmark scripts: machine description and the docs/benchmarks.md row.

Every script prints one JSON line with its result and, unless ``--no-record`` is given, appends a row
to ``docs/benchmarks.md`` with the date, machine, versions, command and result.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = ROOT / "docs" / "benchmarks.md"
TABLE_HEADER = "| date | benchmark | machine | versions | command | result |\n|---|---|---|---|---|---|\n"


def machine() -> str:
    """CPU model and core count, plus the GPU name when CUDA is present."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    desc = f"{cpu}, {os.cpu_count()} cores"
    try:
        import torch

        if torch.cuda.is_available():
            desc += f", GPU {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    return desc


def versions() -> str:
    parts = [f"python {platform.python_version()}"]
    try:
        import torch

        parts.append(f"torch {torch.__version__}")
    except ImportError:
        pass
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        parts.append(f"sspl {sha}")
    except (OSError, subprocess.CalledProcessError):
        pass
    return ", ".join(parts)


def command() -> str:
    return "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])


def report(name: str, result: dict, record: bool = True) -> None:
    """Print ``result`` as one JSON line and append a row for it to docs/benchmarks.md."""
    line = {"benchmark": name, **result, "machine": machine(), "versions": versions()}
    print(json.dumps(line))
    if not record:
        return
    BENCHMARKS_MD.parent.mkdir(parents=True, exist_ok=True)
    if not BENCHMARKS_MD.exists():
        BENCHMARKS_MD.write_text(
            "# Benchmarks\n\nRows appended by the scripts in `bench/`.\n\n" + TABLE_HEADER
        )
    text = BENCHMARKS_MD.read_text()
    if TABLE_HEADER not in text:
        text += "\n## Raw results\n\n" + TABLE_HEADER
    cells = [
        _dt.date.today().isoformat(),
        name,
        machine(),
        versions(),
        f"`{command()}`",
        json.dumps(result).replace("|", "\\|"),
    ]
    text += "| " + " | ".join(cells) + " |\n"
    BENCHMARKS_MD.write_text(text)
