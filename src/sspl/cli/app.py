"""``sspl app --checkpoint CKPT``: a local web page to try a checkpoint on your own video, or image and sound.
See :mod:`sspl.app`."""

from __future__ import annotations

import argparse
import errno
import json
import sys

from ..errors import SSPLError
from . import parse_device
from .summary import add_json_option


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..app import DEFAULT_HOST, DEFAULT_MAX_UPLOAD_MB, DEFAULT_PORT

    p = subparsers.add_parser(
        "app",
        help="a local web page: upload a video, or an image and a sound, and see where the sound is",
        description=(
            "Serves a page on this machine where you upload a video (or an image and a sound) and get what "
            "`sspl localize` writes: the overlay video with its sound, the contact sheet or the image's "
            "overlay, and the raw maps, with progress and a one-line message for bad input. Uploads and "
            "results stay in a temporary folder removed when the app stops (Ctrl-C)."
        ),
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        metavar="CKPT",
        help="run directory of `sspl train`, a .pt checkpoint, or a folder of official SSPL files",
    )
    p.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to listen on (default {DEFAULT_HOST}, this machine only; the app has no login, "
        "so 0.0.0.0 shows it to your whole network)",
    )
    p.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free one)"
    )
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: CUDA when available)")
    p.add_argument(
        "--max-upload-mb",
        type=float,
        default=DEFAULT_MAX_UPLOAD_MB,
        help=f"largest upload accepted, in MB (default {DEFAULT_MAX_UPLOAD_MB})",
    )
    add_json_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..app import make_server
    from ..engine.loading import load_with_origin

    if not 0 <= args.port <= 65535:
        raise SSPLError(f"--port must be between 0 and 65535, got {args.port}")
    if not args.max_upload_mb > 0:
        raise SSPLError(f"--max-upload-mb must be positive, got {args.max_upload_mb}")
    model, preprocess, origin = load_with_origin(args.checkpoint, device=parse_device(args.device))
    notes = []
    if origin == "synth":
        notes.append(
            "This model was trained on SynthAV (synthetic scenes): its maps on real images and videos "
            "mean nothing."
        )
    try:
        server = make_server(
            model,
            preprocess,
            checkpoint=args.checkpoint,
            notes=notes,
            host=args.host,
            port=args.port,
            max_upload_mb=args.max_upload_mb,
        )
    except OSError as e:
        why = (
            "in use; choose another --port (0 picks a free one)"
            if e.errno == errno.EADDRINUSE
            else e.strerror
        )
        raise SSPLError(f"{args.host}:{args.port}: cannot listen there: {why or e}") from e
    for note in notes:
        print(f"sspl app: warning: {note}", file=sys.stderr)
    if args.json:  # for scripts: where the app listens, as one JSON object (it writes no files to report)
        ready = {"command": "app", "url": server.url, "checkpoint": str(args.checkpoint), "warnings": notes}
        print(json.dumps(ready), flush=True)
    else:
        print(f"sspl app: open {server.url} in your browser (Ctrl-C stops the app)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the normal way to stop a server
        print("sspl app: stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0
