"""``sspl synth-pretrain --data SYNTH --out DIR``: pretrain the small SynthAV encoders with supervision."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import SSPLError
from .summary import Summary, add_json_option, emit


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "synth-pretrain",
        help="pretrain the small visual and audio encoders on a SynthAV set's pretrain split",
        description=(
            "Train SmallVisualCNN (object category at each 14 x 14 location) and SmallAudioCNN (sound "
            "category) on the 'pretrain' split of a folder written by `sspl synth`; writes "
            "visual_encoder.pt, audio_encoder.pt (encoder state dicts) and encoders.json (metrics) to DIR."
        ),
    )
    p.add_argument("--data", required=True, metavar="SYNTH", help="folder written by `sspl synth`")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (new or empty)")
    p.add_argument("--epochs", type=int, default=5, help="passes over the pretraining scenes (default 5)")
    p.add_argument("--batch-size", type=int, default=32, help="batch size (default 32)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument(
        "--visual-channels",
        type=int,
        default=128,
        help="visual feature channels (default 128; another N needs model.visual_channels=N in training)",
    )
    p.add_argument(
        "--audio-dim",
        type=int,
        default=128,
        help="audio embedding size (default 128; another D needs model.audio_dim=D in training)",
    )
    p.add_argument(
        "--no-background-class",
        dest="background_class",
        action="store_false",
        help="train the visual CNN on object pixels only, over the object categories (as ImageNet has no "
        "background class), instead of also labelling the background as one class",
    )
    p.add_argument(
        "--background-kinds",
        action="store_true",
        help="label background cells by their kind (noise, gradient, stripes) instead of as one class, as "
        "ImageNet features tell one kind of background from another",
    )
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty DIR")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_json_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..engine.pretrain import pretrain_synth_encoders

    try:
        info = pretrain_synth_encoders(
            args.data,
            args.out,
            epochs=args.epochs,
            batch_size=args.batch_size,
            seed=args.seed,
            visual_channels=args.visual_channels,
            audio_dim=args.audio_dim,
            background_class=args.background_class,
            background_kinds=args.background_kinds,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
    except ValueError as e:
        raise SSPLError(str(e)) from e
    from ..engine.pretrain import AUDIO_WEIGHTS_NAME, ENCODERS_JSON_NAME, VISUAL_WEIGHTS_NAME

    out = Path(args.out)
    metrics = info["metrics"]
    emit(
        Summary(
            "synth-pretrain",
            3,
            out=out,
            open=out / ENCODERS_JSON_NAME,
            seconds=info["seconds"]["total"],
            facts={k: v for k, v in metrics.items() if isinstance(v, int | float)},
            details={
                "metrics": metrics,
                "files": [
                    str(out / n) for n in (VISUAL_WEIGHTS_NAME, AUDIO_WEIGHTS_NAME, ENCODERS_JSON_NAME)
                ],
            },
        ),
        args.json,
    )
    return 0
