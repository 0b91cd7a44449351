"""Throughput of `sspl prepare` on synthetic 10-s 360p clips (h264 + AAC 44.1 kHz stereo).

Writes ``--unique`` clips with PyAV (libx264 with default GOP and scene-cut keyframes, a moving disc on a
drifting gradient with a little noise, a 440 Hz tone with noise), copies them under distinct names up to
``--clips`` files, then times ``prepare`` from scratch with each ``--workers`` value.

With several workers the first run also starts the worker processes (one import of torch in the fork
server, reported as ``cold_s``); the ``--repeat`` runs after it measure steady-state throughput, which
is what a long preparation sees, and the best of them is reported (the machine may be shared).
Target (issue 3): at least 8 clips/s per core.

    python bench/bench_prepare.py [--clips 128] [--unique 8] [--workers 1 2] [--repeat 2] [--no-record]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import report
from sspl.data.prepare import prepare
from sspl.data.video import write_synthetic_video

TARGET_CLIPS_PER_S_PER_CORE = 8.0


def make_clips(folder: Path, clips: int, unique: int, seconds: float, preset: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    originals = []
    for k in range(unique):
        path = folder / f"synthetic{k:03d}_000000.mp4"
        write_synthetic_video(
            path,
            seconds=seconds,
            width=640,
            height=360,
            fps=25,
            audio_rate=44100,
            options={"preset": preset},
            seed=k,
        )
        originals.append(path)
    for k in range(unique, clips):
        shutil.copyfile(originals[k % unique], folder / f"synthetic{k:03d}_000000.mp4")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clips", type=int, default=128, help="clips prepared per run")
    parser.add_argument("--unique", type=int, default=8, help="distinct clips encoded (the rest are copies)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--preset", default="veryfast", help="libx264 preset of the synthetic clips")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=2, help="timed runs after the first, per setting")
    parser.add_argument("--no-record", action="store_true", help="do not append to docs/benchmarks.md")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.clips < 1 or args.unique < 1 or min(args.workers) < 1 or not args.seconds > 0:
        parser.error("--clips, --unique, --workers and --seconds must be positive")

    with tempfile.TemporaryDirectory(prefix="sspl-bench-prepare-") as tmp:
        src = Path(tmp) / "videos"
        t0 = time.perf_counter()
        make_clips(src, args.clips, min(args.unique, args.clips), args.seconds, args.preset)
        generate_s = time.perf_counter() - t0
        result: dict[str, object] = {
            "clips": args.clips,
            "unique_clips": min(args.unique, args.clips),
            "clip": f"{args.seconds:g} s 640x360 25 fps h264 ({args.preset}) + AAC 44.1 kHz stereo",
            "generate_s": round(generate_s, 1),
            "load_avg_1min": round(os.getloadavg()[0], 2),
        }
        per_core = []
        for workers in args.workers:
            walls = []
            for run in range(1 + args.repeat):
                out = Path(tmp) / f"out{workers}_{run}"
                t0 = time.perf_counter()
                summary = prepare(src, out, workers=workers, progress=False)
                walls.append(time.perf_counter() - t0)
                if summary.done != args.clips:
                    raise SystemExit(f"prepare finished {summary} on {args.clips} synthetic clips")
                shutil.rmtree(out)
            rate = args.clips / min(walls[1:])
            per_core.append(rate / workers)
            result[f"workers{workers}_cold_s"] = round(walls[0], 2)
            result[f"workers{workers}_best_s"] = round(min(walls[1:]), 2)
            result[f"workers{workers}_clips_per_s"] = round(rate, 2)
            result[f"workers{workers}_clips_per_s_per_core"] = round(rate / workers, 2)
        result["load_avg_1min_after"] = round(os.getloadavg()[0], 2)
        result["target_clips_per_s_per_core"] = TARGET_CLIPS_PER_S_PER_CORE
        # the target is for 10-s clips: shorter ones are measured but not judged
        at_target = args.seconds >= 10.0
        result["target_met"] = min(per_core) >= TARGET_CLIPS_PER_S_PER_CORE if at_target else None
    report("prepare", result, record=not args.no_record)


if __name__ == "__main__":
    main()
