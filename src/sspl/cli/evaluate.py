"""``sspl evaluate``: cIoU@0.5, AUC and the success curve of a checkpoint on a benchmark, beside its floors."""

from __future__ import annotations

import argparse
import sys
import time

from ..errors import SSPLError
from . import parse_device
from .summary import Summary, add_json_option, emit


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="evaluate a checkpoint on a prepared test set",
        description="Writes OUT/report.json (ciou@0.5, auc, success curve, sample count, protocol, and the "
        "whole-image / centre-box / random-map baselines), OUT/per_sample.csv and OUT/success_curve.png "
        "(with --save-overlays, OUT/index.html and OUT/overlays/; with --save-maps, OUT/maps.npz). With "
        "--protocol extended, report.json also holds ap, max_f1 and precision over every clip (cIoU and auc "
        "over the clips with a visible source) and per_sample.csv the confidence and box count of each clip. "
        "OUT must be new or empty, unless --overwrite.",
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
    _add_protocol_options(p)
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
        "--no-colorbar",
        dest="colorbar",
        action="store_false",
        help="no colour bar beside the --save-overlays pictures",
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
    p.add_argument(
        "--swap",
        action="store_true",
        help="also run the audio-swap test (does the map follow the sound?): in each scene with a silent "
        "distractor of another category, play that category's sound (another clip of the split) and report "
        "how often the map moves to the distractor, stays on the sounding object, and follows the sound "
        "(report.json 'swap', OUT/swap_per_sample.csv); needs per-object boxes (scenes.json, as SynthAV has)",
    )
    p.add_argument("--swap-seed", type=int, default=0, help="seed of the swap test's draws (default 0)")
    p.add_argument("--no-progress", action="store_true")
    add_json_option(p)
    p.set_defaults(func=run)


def _add_protocol_options(p: argparse.ArgumentParser) -> None:
    """``--protocol`` (standard thresholds or the extended protocol), ``--threshold``, ``--save-maps``."""
    p.add_argument(
        "--protocol",
        choices=["fixed", "median", "absolute", "extended"],
        help="threshold: fixed (min-max >= 0.5, SSPL), median (LVS/HardWay/EZ-VSL) or absolute (the map as it is "
        ">= 0.5: SLAVC's Flickr test script on its fixed-scale scores); or extended: the extended "
        "protocol (Mo & Morgado 2022, SLAVC's evaluation: clips without a visible source count, each clip has "
        "a confidence; AP and max-F1 at cIoU 0.5). Default: the model's own threshold (median for a released "
        "EZ-VSL checkpoint), else fixed",
    )
    p.add_argument(
        "--threshold",
        choices=["fixed", "median", "absolute"],
        help="how --protocol extended binarises maps (default: the model's own, else fixed)",
    )
    p.add_argument(
        "--save-maps",
        action="store_true",
        help="write OUT/maps.npz: ids, raw maps, evaluated masks, confidences, cIoU and boxes, to re-score the run",
    )


def run(args: argparse.Namespace) -> int:
    from ..engine.evaluate import evaluate

    for flag, value, least in (("--batch-size", args.batch_size, 1), ("--workers", args.workers, 0)):
        if value < least:
            raise SSPLError(f"{flag} must be at least {least}, got {value}")
    if args.cycles is not None and args.cycles < 0:
        raise SSPLError(f"--cycles must be at least 0, got {args.cycles}")
    if args.threshold is not None and args.protocol != "extended":
        raise SSPLError(
            f"--threshold is for --protocol extended; --protocol {args.protocol} is the threshold"
        )

    start = time.perf_counter()
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
        overlay_colorbar=args.colorbar,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        threshold=args.threshold,
        save_maps=args.save_maps,
        swap=args.swap,
        swap_seed=args.swap_seed,
    )
    r = report.report
    coverage = r.get("benchmark_coverage")
    if coverage and coverage["evaluated_sspl_test_ids"] < coverage["sspl_test_ids"]:
        print(
            f"warning: only {coverage['evaluated_sspl_test_ids']} of the {coverage['sspl_test_ids']} "
            f"{args.benchmark} test clips the paper evaluates are here; not comparable with published numbers",
            file=sys.stderr,
        )
    emit(_summary(args, report, time.perf_counter() - start), args.json)
    return 0


def _summary(args: argparse.Namespace, report, seconds: float) -> Summary:
    """The closing summary: what was written, the key numbers (the extended protocol's and the swap test's
    when they ran)."""
    r = report.report
    out = report.out_dir
    names = (
        "report.json",
        "per_sample.csv",
        "swap_per_sample.csv",
        "success_curve.png",
        "index.html",
        "maps.npz",
    )
    files = [out / n for n in names]
    files = [f for f in files if f.is_file()]
    overlays = min(args.save_overlays, r["num_samples"])  # overlays/<id>.png of the first K samples
    floors = ", ".join(f"{k} {v['ciou@0.5']:.3f}/{v['auc']:.3f}" for k, v in r["baselines"].items())
    summary = Summary(
        "evaluate",
        len(files) + overlays,
        out=out,
        open=out / "index.html" if (out / "index.html").is_file() else out / "success_curve.png",
        seconds=seconds,
        facts={
            "benchmark": args.benchmark,
            "protocol": args.protocol or r["protocol"]["threshold"],  # none given: the model's own
            "samples": r["num_samples"],
            "ciou@0.5": r["ciou@0.5"],
            "auc": r["auc"],
            "baselines ciou@0.5/auc": floors,
            **(
                {
                    "without a visible source": r["num_silent"],
                    **{k: r[k] for k in ("ap", "max_f1", "precision")},
                }
                if args.protocol == "extended"
                else {}
            ),
        },
        details={"report": str(out / "report.json"), "baselines": r["baselines"]},
    )
    if "swap" in r:  # the audio-swap test's rates
        s = r["swap"]
        summary.facts.update(
            {
                "swap scenes": s["trials"],
                "to distractor": s["to_distractor"],
                "stays": s["stays"],
                "follows the sound": s["follows_sound"],
            }
        )
    return summary
