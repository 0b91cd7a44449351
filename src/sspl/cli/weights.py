"""``sspl weights``: which pretrained encoder weights are available locally, and fetching them."""

from __future__ import annotations

import argparse
import json

from ..errors import WeightsError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "weights",
        help="list the pretrained encoder weights (VGG16 ImageNet, VGGish AudioSet) or fetch them",
        description=(
            "`sspl weights [NAME ...]` lists each known weight file with where it was found (SHA-256 checked) "
            "or how to get it; `sspl weights --fetch [NAME ...]` downloads the missing ones into the cache "
            "($SSPL_CACHE, else $XDG_CACHE_HOME/sspl, else ~/.cache/sspl), checked before use. Exit status: "
            "1 when a fetch fails, or when a file that is there is unusable (corrupt, or an SSPL_*_WEIGHTS "
            "variable naming a missing file); a file never fetched is not an error when listing."
        ),
    )
    p.add_argument("--fetch", action="store_true", help="download the missing files into the cache")
    p.add_argument("names", nargs="*", metavar="NAME", help="imagenet and/or audioset (default: both)")
    p.add_argument("--json", action="store_true", help="print one JSON line instead of text")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..weights import KNOWN_WEIGHTS, misconfigured, resolve, status

    names = args.names or list(KNOWN_WEIGHTS)
    unknown = [n for n in names if n not in KNOWN_WEIGHTS]
    if unknown:
        raise WeightsError(f"unknown weights {', '.join(unknown)}; known: {', '.join(KNOWN_WEIGHTS)}")
    failed = []
    report = {}
    for name in names:
        known = KNOWN_WEIGHTS[name]
        if args.fetch:
            try:
                path = resolve(name)
                message = f"{path} (SHA-256 checked)"
            except WeightsError as e:
                path, message = None, str(e)
        else:
            path, message = status(name)
        if path is None and (args.fetch or misconfigured(name)):
            failed.append(name)
        report[name] = {"file": known.filename, "path": str(path) if path else None, "message": message}
        if not args.json:
            print(f"{name:9s} {known.description}\n          {message}")
    if args.json:
        print(json.dumps(report))
    # a file never fetched is a normal state when listing; a broken one, or a failed fetch, is not
    return 1 if failed else 0
