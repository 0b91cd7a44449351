"""The `sspl` command line: thin wrappers that parse options, build configs and call the library.

Each sub-command lives in its own module of this package and exposes ``register(subparsers)``, which adds
its parser and sets ``func`` (called with the parsed namespace, returns an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading

from ..errors import SSPLError

COMMANDS = (
    "prepare",
    "synth",
    "synth_pretrain",
    "train",
    "evaluate",
    "localize",
    "demo",
    "weights",
    "app",
)


def parse_device(name: str | None):
    """The ``torch.device`` a ``--device`` option names (None when not given), checked for existence."""
    import torch

    if name is None:
        return None
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise SSPLError(f"--device {name}: not a device name ({e})") from e
    if device.type not in ("cpu", "cuda", "mps"):
        raise SSPLError(f"--device {name}: choose cpu, cuda, cuda:N or mps")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SSPLError(f"--device {name}: no CUDA device is available (use --device cpu)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise SSPLError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise SSPLError(
            f"--device {name}: no Apple MPS device in this PyTorch build or machine (use --device cpu)"
        )
    return device


class CommandParser(argparse.ArgumentParser):
    """A sub-command's parser: options may come before, between or after its positionals
    (`sspl prepare SRC --no-progress OUT`), as :meth:`~argparse.ArgumentParser.parse_intermixed_args` reads
    them. Plain parsing stops a positional list at the first option, so the positional after it was
    left over as an "unrecognized argument"."""

    _intermixing = False

    def parse_known_args(self, args=None, namespace=None):
        if self._intermixing:  # parse_known_intermixed_args parses twice with the plain method
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="sspl",
        description="Self-supervised sound source localization in visual scenes (SSPL, CVPR 2022).",
    )
    parser.add_argument("--version", action="version", version=f"sspl {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=CommandParser)
    for name in COMMANDS:
        module = importlib.import_module(f"{__name__}.{name}")
        module.register(sub)
    return parser


def error_message(e: BaseException) -> str:
    """The message of ``e``; for an error re-raised from a data loader worker, the original message
    without the worker's traceback (PyTorch puts the whole traceback in the message)."""
    text = str(e)
    if text.startswith("Caught ") and "Original Traceback" in text:
        for name in (f"{type(e).__module__}.{type(e).__qualname__}", type(e).__qualname__):
            at = text.rfind(f"\n{name}: ")
            if at >= 0:
                return text[at + len(name) + 3 :].strip()
    return text


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``timeout``, a batch scheduler), raised in the main thread so that it stops a
    command the way Ctrl-C does: worker processes are stopped and what was finished is kept."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may come before, between or after options (`train.epochs=1 --no-progress x=2`)
    if extra and hasattr(args, "overrides") and all("=" in a and not a.startswith("-") for a in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s", stream=sys.stderr
    )
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if main_thread else None
    try:
        return int(args.func(args) or 0)
    except (SSPLError, FileNotFoundError, NotADirectoryError, FileExistsError) as e:
        print(f"sspl {args.command}: error: {error_message(e)}", file=sys.stderr)
        return 1
    except OSError as e:  # unwritable output, full disk, ...: the message names the path
        if args.verbose:
            raise
        print(f"sspl {args.command}: error: {error_message(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        terminated = isinstance(e, Terminated)
        print(f"sspl {args.command}: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        return 143 if terminated else 130
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
