"""``sspl weights``: which pretrained encoder weights are available locally, and fetching them."""

from __future__ import annotations

import argparse
import json

from ..errors import WeightsError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "weights",
        help="list the pretrained encoder weights (VGG16 / ResNet-18 ImageNet, VGGish AudioSet) or fetch them",
        description=(
            "`sspl weights [NAME ...]` lists each known weight file with where it was found (SHA-256 checked) "
            "or how to get it; `sspl weights --fetch [NAME ...]` downloads the missing ones into the cache "
            "($SSPL_CACHE, else $XDG_CACHE_HOME/sspl, else ~/.cache/sspl), checked before use. Exit status: "
            "1 when a fetch fails, or when a file that is there is unusable (corrupt, not the pinned copy, or "
            "an SSPL_*_WEIGHTS variable naming a missing file); a file never fetched is not an error when "
            "listing. VGGish's release publishes only an 8-hex-digit digest prefix, so the full SHA-256 of "
            "your copy is pinned when it is first used ($SSPL_VGGISH_SHA256 gives one instead); "
            "`sspl weights --pin audioset` re-pins the copy there now, after you replaced it on purpose."
        ),
    )
    action = p.add_mutually_exclusive_group()
    action.add_argument("--fetch", action="store_true", help="download the missing files into the cache")
    action.add_argument(
        "--pin",
        action="store_true",
        help="record the SHA-256 of the local copy as the one later loads must match (default: audioset)",
    )
    p.add_argument(
        "names", nargs="*", metavar="NAME", help="imagenet, imagenet-resnet18 and/or audioset (default: all)"
    )
    p.add_argument(
        "--released",
        action="store_true",
        help="list only the released trained models (EZ-VSL, SLAVC, FNAC): trained on, published score, "
        "download page and where to put the file (the text listing shows them after the encoder weights)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON line instead of text")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..weights import KNOWN_WEIGHTS, misconfigured, resolve, status

    if args.released:
        if args.fetch or args.pin or args.names:
            raise WeightsError("--released lists the released models; it takes no names, --fetch or --pin")
        _released(args.json)
        return 0

    names = args.names or [n for n, k in KNOWN_WEIGHTS.items() if not (args.pin and k.sha256)]
    unknown = [n for n in names if n not in KNOWN_WEIGHTS]
    if unknown:
        raise WeightsError(f"unknown weights {', '.join(unknown)}; known: {', '.join(KNOWN_WEIGHTS)}")
    if args.pin:
        return _pin(names, args.json)
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
        digest, source = _pin_of(name)
        report[name] = {
            "file": known.filename,
            "path": str(path) if path else None,
            "message": message,
            "sha256": digest,
            "sha256_source": source,
        }
        if not args.json:
            print(f"{name:9s} {known.description}\n          {message}")
            print(f"          SHA-256 {digest} ({source})" if digest else f"          SHA-256 {source}")
    if args.json:
        print(json.dumps(report))
    elif not args.fetch and not args.names:
        _released(False)
    # a file never fetched is a normal state when listing; a broken one, or a failed fetch, is not
    return 1 if failed else 0


def _pin_of(name: str) -> tuple[str | None, str]:
    """The digest a copy must have and where it comes from; an unreadable pin is said, not raised."""
    from ..weights import pinned

    try:
        return pinned(name)
    except WeightsError as e:
        return None, str(e)


def _pin(names: list[str], as_json: bool) -> int:
    """``--pin``: record the digest of each named file's local copy."""
    from ..weights import pin, pinned

    report = {}
    for name in names:
        path, digest = pin(name)
        _, source = pinned(name)  # the environment variable, when set, still overrides the record
        report[name] = {"path": str(path), "sha256": digest, "sha256_source": source}
        if not as_json:
            print(f"{name:9s} pinned SHA-256 {digest} of {path}")
            if not source.startswith("recorded"):
                print(f"          but {source} is set and overrides it")
    if as_json:
        print(json.dumps(report))
    return 0


def _released(as_json: bool) -> None:
    """The released trained models: what each is, whether it is in place, and how to get it there."""
    from ..released_models import RELEASED_MODELS

    report = {}
    if not as_json:
        print("\nreleased trained models (use with --checkpoint NAME or --checkpoint PATH):")
    for name, m in RELEASED_MODELS.items():
        path = m.path()
        found = path.is_file()
        report[name] = {
            "method": m.method,
            "trained_on": m.trained_on,
            "published": m.score,
            "page": m.page,
            "path": str(path),
            "found": found,
        }
        if not as_json:
            where = f"found at {path}" if found else f"not there; download {m.file} from {m.page} to {path}"
            print(f"{name:18s} {m.method} trained on {m.trained_on}; published: {m.score}\n{'':18s} {where}")
    if as_json:
        print(json.dumps(report))
