"""``sspl weights``: which pretrained encoder weights are available locally, and fetching them."""

from __future__ import annotations

import argparse

from ..errors import WeightsError
from .summary import Summary, add_json_option, emit


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
    add_json_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..weights import KNOWN_WEIGHTS, cache_dir, misconfigured, resolve, status

    if args.released:
        if args.fetch or args.pin or args.names:
            raise WeightsError("--released lists the released models; it takes no names, --fetch or --pin")
        listed = _released(args.json)
        found = sum(entry["found"] for entry in listed.values())
        summary = Summary(
            "weights",
            found,
            "released model",
            facts={"listed": len(listed), "found": found},
            details={"released": listed},
            verb="Found",
        )
        emit(summary, args.json)
        return 0

    names = args.names or [n for n, k in KNOWN_WEIGHTS.items() if not (args.pin and k.sha256)]
    unknown = [n for n in names if n not in KNOWN_WEIGHTS]
    if unknown:
        raise WeightsError(f"unknown weights {', '.join(unknown)}; known: {', '.join(KNOWN_WEIGHTS)}")
    if args.pin:
        return _pin(names, args.json)
    failed = []
    report = {}
    fetched = 0
    for name in names:
        known = KNOWN_WEIGHTS[name]
        if args.fetch:
            had = (cache_dir() / known.filename).is_file()  # no hashing: resolve checks the copy
            try:
                path = resolve(name)
                message = f"{path} (SHA-256 checked)"
                fetched += not had and path == cache_dir() / known.filename
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
    if not args.json and not args.fetch and not args.names:
        _released(False)
    found = sum(entry["path"] is not None for entry in report.values())
    missing = [n for n, entry in report.items() if entry["path"] is None]
    summary = Summary(
        "weights",
        fetched if args.fetch else found,
        "weight file",
        out=cache_dir() if args.fetch else None,  # a listed file may be anywhere sspl looks
        next=f"sspl weights --fetch {' '.join(missing)}" if missing and not args.fetch else None,
        facts={"found": found, "missing": len(missing)},
        details={"weights": report},
        verb="Wrote" if args.fetch else "Found",
    )
    emit(summary, args.json)
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
    from ..weights import cache_dir, pin, pinned

    report = {}
    for name in names:
        path, digest = pin(name)
        _, source = pinned(name)  # the environment variable, when set, still overrides the record
        report[name] = {"path": str(path), "sha256": digest, "sha256_source": source}
        if not as_json:
            print(f"{name:9s} pinned SHA-256 {digest} of {path}")
            if not source.startswith("recorded"):
                print(f"          but {source} is set and overrides it")
    summary = Summary("weights", len(report), "pin", out=cache_dir(), details={"weights": report})
    emit(summary, as_json)
    return 0


def _released(as_json: bool) -> dict[str, dict]:
    """The released trained models: what each is, whether it is in place, and how to get it there
    (printed unless ``as_json``; returned by name)."""
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
    return report
