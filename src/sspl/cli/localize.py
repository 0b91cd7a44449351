"""``sspl localize``: where is the sound in my video (or image)? See :mod:`sspl.localize`."""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

from ..errors import SSPLError
from . import parse_device
from .summary import Summary, add_json_option, emit


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "localize",
        help="heat maps of the sounding object in a video or an image",
        description=(
            "Localize the sound in a video (every output frame gets the map of the 3-s audio window "
            "centred on it) or in an image with a sound file (the map of the centre 3 s of the sound). Video outputs: <stem>_heatmap.mp4 (overlay "
            "at the source resolution, odd sides trimmed to even for H.264, with the sound, a colour bar on the "
            "right and each frame's time top left), "
            "<stem>_maps.npy (T x 14 x 14 raw maps), <stem>_timestamps.npy (seconds) and "
            "<stem>_contact.png. Image outputs: <stem>_overlay.png "
            "and <stem>_map.npy. The network sees the centre square of the frame; the parts outside it "
            "have no prediction and are shown greyed."
        ),
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--video", metavar="FILE", help="video file (any container FFmpeg reads)")
    src.add_argument(
        "--image",
        metavar="FILE",
        help="image file (any mode and size); needs --audio, of which the centre 3 s are localized",
    )
    p.add_argument(
        "--audio",
        metavar="FILE",
        help="sound file (mixed to mono). With --image: required, and only its centre 3 s are used (the "
        "official clip rule; a shorter sound is repeated to fill 3 s), so trim it to the moment to localize. "
        "With --video: it replaces the video's own track (needed when the video has none), is taken to "
        "start with the first frame, and each frame gets the 3 s centred on it",
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        metavar="CKPT",
        help="run directory of `sspl train`, a .pt checkpoint, a folder of official SSPL files, or a released "
        "model's file or name (EZ-VSL's best.pth ...; `sspl weights --released` lists them)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if needed)")
    p.add_argument(
        "--fps",
        type=float,
        help="output frames per second (default: source rate, at most 10; never above the source rate)",
    )
    p.add_argument("--batch-size", type=int, help="frames per model call (default 8 on CPU, 32 on CUDA)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: CUDA when available)")
    p.add_argument(
        "--no-colorbar",
        dest="colorbar",
        action="store_false",
        help="no colour bar beside the overlays (by default one shows the colour scale, 0 to 1)",
    )
    p.add_argument(
        "--no-timestamp",
        dest="timestamp",
        action="store_false",
        help="no time (mm:ss.s) on the frames of the heat-map video",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs of the same names")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_json_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..localize import (
        check_outputs_free,
        image_output_paths,
        localize_image,
        read_image,
        write_image_outputs,
        write_video_outputs,
    )

    if args.fps is not None and not (math.isfinite(args.fps) and args.fps > 0):
        raise SSPLError(f"--fps must be a positive number, got {args.fps}")
    if args.batch_size is not None and args.batch_size < 1:
        raise SSPLError(f"--batch-size must be at least 1, got {args.batch_size}")
    device = parse_device(args.device)
    start = time.perf_counter()
    if args.video is not None:
        result, paths = write_video_outputs(
            args.checkpoint,
            None,
            args.video,
            args.out,
            fps=args.fps,
            audio_path=args.audio,
            batch_size=args.batch_size,
            device=device,
            progress=not args.no_progress,
            colorbar=args.colorbar,
            timestamp=args.timestamp,
            overwrite=args.overwrite,
        )
        facts = {"frames": len(result.timestamps), "fps": result.fps}
        first = paths["heatmap_video"]
    else:
        if args.audio is None:
            raise SSPLError("--image needs --audio FILE (the sound to localize)")
        if args.fps is not None or args.batch_size is not None:
            raise SSPLError("--fps and --batch-size apply to --video only")
        # Inputs and outputs are checked before the model loads, so that a mistake fails fast (localize_image
        # reads the sound before it loads the model).
        if not args.overwrite:
            check_outputs_free(image_output_paths(args.out, Path(args.image).stem))
        image = read_image(args.image)
        result = localize_image(args.checkpoint, None, image, args.audio, device=device)
        paths = write_image_outputs(
            result, args.out, Path(args.image).stem, colorbar=args.colorbar, overwrite=args.overwrite
        )
        facts = {"width": result.image.width, "height": result.image.height}
        first = paths["overlay"]
    summary = Summary(
        "localize",
        len(paths),
        out=args.out,
        open=first,
        seconds=time.perf_counter() - start,
        facts=facts,
        details={"outputs": {key: str(path) for key, path in paths.items()}},
    )
    emit(summary, args.json)
    return 0
