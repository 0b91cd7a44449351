"""``sspl evaluate``: cIoU@0.5, AUC and the success curve of a checkpoint on a benchmark, beside its floors."""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import SSPLError
from . import parse_device


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="evaluate a checkpoint on a prepared test set",
        description="Writes OUT/report.json (ciou@0.5, auc, success curve, sample count, protocol, and the "
        "whole-image / centre-box / random-map baselines), OUT/per_sample.csv and OUT/success_curve.png "
        "(with --save-overlays, OUT/index.html and OUT/overlays/). OUT must be new or empty, unless "
        "--overwrite.",
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        help="run directory, checkpoint file, official SSPL folder, or a released model's file or name "
        "(`sspl weights --released`)",
    )
    p.add_argument("--data", required=True, help="prepared folder of the test clips")
    p.add_argument("--benchmark", required=True, choices=["flickr", "vggss", "avsbench", "synth"])
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--protocol",
        choices=["fixed", "median"],
        help="threshold: fixed (min-max >= 0.5, SSPL) or median (LVS/HardWay/EZ-VSL); default: the model's "
        "own (median for a released EZ-VSL checkpoint), else fixed",
    )
    p.add_argument(
        "--upsample",
        default="half-pixel",
        choices=["half-pixel", "align-corners"],
        help="how the map is upsampled to 224: half-pixel (OpenCV bilinear, SSPL and LVS; default) or "
        "align-corners (EZ-VSL)",
    )
    p.add_argument("--split", default="test", help="manifest split to evaluate ('all' for every clip)")
    p.add_argument(
        "--annotations",
        help="boxes file or folder (default: the data's annotations.json or the benchmark's bundled boxes)",
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=0, help="data loader workers")
    p.add_argument("--device", help="cpu, cuda, cuda:N (default: cuda when available)")
    p.add_argument("--cycles", type=int, help="PCM cycles at test time (paper Fig. 6)")
    p.add_argument(
        "--save-overlays", type=int, default=0, metavar="K", help="draw K samples with boxes and masks"
    )
    p.add_argument(
        "--allow-missing",
        action="store_true",
        help="evaluate even if clips of the split failed to prepare (they are listed in report.json as "
        "not_evaluated); by default the run fails, since the number would not be the benchmark's",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a non-empty OUT, replacing an earlier evaluation's outputs there (other files are "
        "left alone); by default a non-empty OUT is refused",
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..engine.evaluate import evaluate

    for flag, value, least in (("--batch-size", args.batch_size, 1), ("--workers", args.workers, 0)):
        if value < least:
            raise SSPLError(f"{flag} must be at least {least}, got {value}")
    if args.cycles is not None and args.cycles < 0:
        raise SSPLError(f"--cycles must be at least 0, got {args.cycles}")

    report = evaluate(
        args.checkpoint,
        args.data,
        args.benchmark,
        args.out,
        protocol=args.protocol,
        upsample=args.upsample,
        split=None if args.split == "all" else args.split,
        annotations=args.annotations,
        batch_size=args.batch_size,
        num_workers=args.workers,
        device=parse_device(args.device),
        cycles=args.cycles,
        allow_missing=args.allow_missing,
        save_overlays=args.save_overlays,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    r = report.report
    floors = ", ".join(f"{k} {v['ciou@0.5']:.3f}/{v['auc']:.3f}" for k, v in r["baselines"].items())
    print(
        f"{args.benchmark} ({r['protocol']['threshold']}, {r['num_samples']} samples): ciou@0.5 {r['ciou@0.5']:.4f}  "
        f"auc {r['auc']:.4f}   [baselines ciou@0.5/auc: {floors}]"
    )
    coverage = r.get("benchmark_coverage")
    if coverage and coverage["evaluated_sspl_test_ids"] < coverage["sspl_test_ids"]:
        print(
            f"warning: only {coverage['evaluated_sspl_test_ids']} of the {coverage['sspl_test_ids']} "
            f"{args.benchmark} test clips the paper evaluates are here; not comparable with published numbers",
            file=sys.stderr,
        )
    print(json.dumps({"report": str(report.out_dir / "report.json")}))
    return 0
