"""``sspl synth OUT --num N --seed S``: generate a SynthAV set (see :mod:`sspl.data.synth`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import SSPLError
from .summary import Summary, add_json_option, emit


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "synth",
        help="generate SynthAV, a synthetic audio-visual localization benchmark",
        description=(
            "Generate SynthAV scenes in the prepared format (frames, audio, log-mel, manifest) with the "
            "sounding object's boxes (annotations.json), every object's category and box (scenes.json) and "
            "an encoder-pretraining split (pretrain/). Same settings and seed give byte-identical files; "
            "rerunning on an unfinished folder resumes it."
        ),
    )
    p.add_argument("out", metavar="OUT", help="output folder (new, empty, or an unfinished set to resume)")
    p.add_argument("--num", type=int, required=True, help="scenes for train + val + test")
    p.add_argument("--seed", type=int, default=0, help="seed of the whole set (default 0)")
    p.add_argument(
        "--preset",
        choices=("easy", "distractors", "extended"),
        default="distractors",
        help=(
            "easy: the sounding object alone; distractors: 2-4 objects (default); extended: 2-4 objects, "
            "and half of the scenes without a visible source (the extended protocol's test clips)"
        ),
    )
    p.add_argument("--min-objects", type=int, help="objects per scene, at least (overrides the preset)")
    p.add_argument("--max-objects", type=int, help="objects per scene, at most (overrides the preset)")
    p.add_argument(
        "--object-size",
        type=float,
        nargs=2,
        metavar=("MIN", "MAX"),
        help=(
            "object box side as a fraction of the frame side (default 0.15 0.35); an object with no room "
            "left beside the others is shrunk, 10%% at a time, until it fits"
        ),
    )
    p.add_argument("--snr-db", type=float, help="sound-to-background-noise ratio in dB (default 10)")
    p.add_argument(
        "--share-category",
        action="store_true",
        default=None,
        help="let distractors have the sounding object's category",
    )
    p.add_argument(
        "--no-source-fraction",
        type=float,
        metavar="F",
        help=(
            "share of each split's scenes whose sound has no visible source, half silent (its category "
            "is not in the frame) and half off-screen (the object lies beside the frame); their "
            "annotations hold no box and scenes.json records each scene's kind (default 0; extended: 0.5)"
        ),
    )
    p.add_argument("--num-categories", type=int, help="use the first K of the 8 categories (default 8)")
    p.add_argument("--val-fraction", type=float, help="share of scenes in val (default 0.1)")
    p.add_argument("--test-fraction", type=float, help="share of scenes in test (default 0.2)")
    p.add_argument(
        "--pretrain-num",
        type=int,
        help="scenes of the encoder-pretraining split (default 1000; 0 for none, and then no synth-pretrain)",
    )
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_json_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..data.synth import generate_synth, synth_config

    try:
        config = synth_config(
            args.preset,
            num=args.num,
            seed=args.seed,
            min_objects=args.min_objects,
            max_objects=args.max_objects,
            object_size=tuple(args.object_size) if args.object_size else None,
            snr_db=args.snr_db,
            share_category=args.share_category,
            num_categories=args.num_categories,
            val_fraction=args.val_fraction,
            test_fraction=args.test_fraction,
            pretrain_num=args.pretrain_num,
            no_source_fraction=args.no_source_fraction,
        )
    except ValueError as e:
        raise SSPLError(str(e)) from e
    if args.workers is not None and args.workers < 1:
        raise SSPLError(f"--workers must be >= 1, got {args.workers}")
    summary = generate_synth(args.out, config, workers=args.workers, progress=not args.no_progress)
    scenes = summary["scenes"]
    out = Path(summary["out_dir"])
    emit(
        Summary(
            "synth",
            sum(scenes.values()),
            "scene",
            out=out,
            open=out / "manifest.csv",
            seconds=summary["seconds"],
            facts=dict(scenes),
            details={"out_dir": summary["out_dir"], "scenes": scenes},
        ),
        args.json,
    )
    return 0
