"""`sspl prepare SRC OUT`: a prepared dataset from videos, a SoundNet-Flickr dump or image + audio pairs."""

from __future__ import annotations

import argparse
import sys
import time

from ..audio import CLIP_SECONDS
from ..data.lists import bundled_list_names
from ..data.manifest import MANIFEST_NAME
from ..data.prepare import LAYOUTS, merge_shards, parse_shard, prepare
from ..errors import DataError
from .summary import Summary, add_json_option, emit


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "prepare",
        help="videos / SoundNet-Flickr dumps / image+audio pairs -> prepared dataset",
        description=(
            "Extract the middle frame (256 x 256 JPEG), 16 kHz audio around it and its VGGish log-mel "
            "patches for every clip of SRC into OUT, with a manifest. Resumable: rerun to continue. "
            "With --merge, only merge the shard manifests under OUT."
        ),
    )
    p.add_argument("src", metavar="SRC", nargs="?", help="folder of videos, frames/ + audio/, or pairs")
    p.add_argument("out", metavar="OUT", help="output dataset folder (resumed if it exists)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument(
        "--list",
        dest="list_file",
        metavar="FILE",
        help="ids to prepare: a file (one id per line, or VGG-Sound CSV rows ytid,start_seconds,label,split) "
        f"or the name of a bundled list: {', '.join(bundled_list_names())} (vggss_test_5158: the clips "
        "with VGG-SS boxes, i.e. those `sspl evaluate --benchmark vggss` scores)"
        "; flickr_test_plus_silent / vggss_test_plus_silent (or a video,audio,label CSV) prepare an extended test "
        "set: each pair is a clip with one clip's frame and another's sound, id <video>+<audio>",
    )
    p.add_argument(
        "--shard", metavar="I/N", type=_shard, help="prepare shard I of N (I = 0 .. N-1) of the sorted ids"
    )
    p.add_argument(
        "--audio-seconds",
        type=float,
        default=CLIP_SECONDS,
        metavar="S",
        help="seconds of audio to keep, centred on the frame (default 3 = the official normalised clip; "
        "other values, up to 600, keep raw 16 kHz audio)",
    )
    p.add_argument(
        "--native-audio",
        action="store_true",
        help="also keep each clip's audio as the released EZ-VSL / SLAVC / FNAC models hear it (3 s from the "
        "centre of the track at its own rate, 16-bit mono, audio_native/<id>.wav), for evaluating them with "
        "their own preprocessing",
    )
    p.add_argument(
        "--native-frames",
        action="store_true",
        help="also keep each clip's frame at its source size as the released EZ-VSL / SLAVC / FNAC models read "
        "it (a source JPEG copied byte for byte, else lossless PNG, frames_native/<id>.jpg or .png), for "
        "evaluating and training them with their own preprocessing",
    )
    p.add_argument("--allow-overlap", action="store_true", help="only warn when --list ids are test ids")
    p.add_argument("--layout", choices=LAYOUTS, default="auto", help="source layout (default: detect)")
    p.add_argument(
        "--merge", action="store_true", help="merge OUT/shards/*/manifest.csv into OUT/manifest.csv"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_json_option(p)
    p.set_defaults(func=run)


def _shard(text: str) -> tuple[int, int]:
    try:
        return parse_shard(text)
    except DataError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    if args.merge:
        if args.src is not None:
            raise DataError("--merge takes only OUT: sspl prepare --merge OUT")
        merged = merge_shards(args.out)
        facts = {"done": merged.done, "failed": merged.failed}
        emit(_summary(merged.out, 1, "file", facts, True, start), args.json)
        return 0
    if args.src is None:
        raise DataError("missing SRC: sspl prepare SRC OUT")
    summary = prepare(
        args.src,
        args.out,
        workers=args.workers,
        list_file=args.list_file,
        shard=args.shard,
        audio_seconds=args.audio_seconds,
        layout=args.layout,
        allow_overlap=args.allow_overlap,
        progress=not args.no_progress,
        native_audio=args.native_audio,
        native_frames=args.native_frames,
    )
    facts = {"done": summary.done, "skipped": summary.skipped, "failed": summary.failed}
    emit(_summary(summary.out, summary.done, "clip", facts, summary.merged, start), args.json)
    if summary.failed and not summary.done and not summary.skipped:
        print(
            f"error: no clip could be prepared; each clip's reason is in the error column of the manifest "
            f"in {summary.out}",
            file=sys.stderr,
        )
        return 1
    return 0


def _summary(out, count: int, unit: str, facts: dict, merged: bool, start: float) -> Summary:
    """The closing lines of a prepare (or a merge): the manifest is what to open (its error column names
    each failed clip's reason); ``merged`` says the shards' parts were merged into it."""
    manifest = out / MANIFEST_NAME
    return Summary(
        "prepare",
        count,
        unit,
        out=out,
        open=manifest if manifest.is_file() else None,
        seconds=time.perf_counter() - start,
        facts={**facts, **({"merged shards": True} if merged else {})},
    )
