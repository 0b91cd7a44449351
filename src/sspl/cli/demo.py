"""``sspl demo [--out DIR]``: SynthAV -> encoder pretraining -> SSPL training -> evaluation -> localization of
held-out scenes and a bundled real video -> ``DIR/index.html``; no download, no GPU, a few CPU minutes."""

from __future__ import annotations

import argparse
import time

from ..errors import SSPLError
from .summary import Summary, add_json_option, count_files, emit


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..demo import DemoSettings

    d = DemoSettings()
    p = subparsers.add_parser(
        "demo",
        help="train and evaluate SSPL on a small synthetic set, localize a real video, write an HTML page",
        description=(
            "Generates a small SynthAV set, pretrains its small encoders, trains SSPL on it with them frozen "
            "and, on the same scenes, the Attention baseline (the project's best localizer on SynthAV), "
            "evaluates both on held-out scenes beside SSPL's untrained model, the oracle query and trivial maps, "
            "localizes a few scenes and a bundled real video, and writes OUT/index.html (what ran, scores, "
            "curves, both methods' maps, the heat-map video). Rerunning resumes."
        ),
    )
    p.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    p.add_argument(
        "--preset", choices=["easy", "distractors"], default=d.preset, help=f"SynthAV preset ({d.preset})"
    )
    p.add_argument("--scenes", type=int, default=d.scenes, help=f"main SynthAV scenes ({d.scenes})")
    p.add_argument("--epochs", type=int, default=d.epochs, help=f"SSPL training epochs ({d.epochs})")
    p.add_argument(
        "--pcm",
        action=argparse.BooleanOptionalAction,
        default=d.pcm,
        help=f"SSPL with PCM or without ({'with' if d.pcm else 'without'})",
    )
    p.add_argument("--seed", type=int, default=d.seed, help=f"seed ({d.seed})")
    p.add_argument("--workers", type=int, default=None, help="processes for scene generation (all cores)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_json_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..demo import DemoSettings, run_demo

    try:
        settings = DemoSettings(
            preset=args.preset,
            scenes=args.scenes,
            pretrain_scenes=args.scenes,
            epochs=args.epochs,
            pcm=args.pcm,
            seed=args.seed,
            workers=args.workers,
        )
    except ValueError as e:
        raise SSPLError(str(e)) from e
    start = time.perf_counter()
    summary = run_demo(args.out, settings, progress=not args.no_progress)
    trained, untrained, oracle = summary["metrics"][:3]
    facts = {
        "held-out SSPL cIoU@0.5": trained["cIoU@0.5"],
        "AUC": trained["AUC"],
        "untrained cIoU@0.5": untrained["cIoU@0.5"],
        "oracle cIoU@0.5": oracle["cIoU@0.5"],
    }
    beside = summary.get("beside")
    if beside:  # the method trained beside SSPL on the same scenes
        facts[f"{beside['method']} cIoU@0.5"] = beside["metrics"]["cIoU@0.5"]
    emit(
        Summary(
            "demo",
            count_files(args.out),
            out=args.out,
            open=summary["page"],
            seconds=time.perf_counter() - start,
            facts=facts,
            details={"metrics": summary["metrics"]},
        ),
        args.json,
    )
    return 0
