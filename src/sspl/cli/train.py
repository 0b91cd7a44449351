"""``sspl train``: train SSPL (or a baseline) on a prepared folder; resumable; torchrun for several GPUs."""

from __future__ import annotations

import argparse
import logging
import os
import time

from ..config import Config, apply_overrides, config_to_yaml, load_config
from .summary import Summary, add_json_option, count_files, emit

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a model on a prepared folder",
        description="Train on a folder written by `sspl prepare` or `sspl synth`. Options come from --config "
        "(YAML) and key=value overrides, e.g. `optim.lr_head=1e-4 model.pcm=false`. For several GPUs or nodes, "
        "launch with `torchrun --nproc_per_node N -m sspl.cli train ...`. Every config key is described in "
        "docs/config.md; --print-config shows the config a command line resolves to.",
    )
    p.add_argument(
        "--config",
        help="YAML config (see configs/); defaults to the paper's SSPL w/ PCM settings, or with --resume to "
        "the run's saved config",
    )
    p.add_argument("--data", help="prepared folder (sspl prepare / sspl synth); required to train")
    p.add_argument("--run-dir", help="output folder for config, logs and checkpoints; required to train")
    p.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved config (defaults, then --config, then the options and key=value overrides; "
        "with --resume, the run's saved config) as YAML and exit without training or writing anything; "
        "every key is described in docs/config.md",
    )
    p.add_argument("--epochs", type=int, help="number of epochs (overrides train.epochs)")
    p.add_argument("--method", help="sspl (default), attention or hardway (overrides method)")
    p.add_argument(
        "--val-fraction",
        type=float,
        help="share of the training clips held out for model selection when the data has no val split "
        "(default 0.05; overrides data.val_fraction)",
    )
    p.add_argument(
        "--negatives",
        choices=["all", "exclude-same-class"],
        help="negatives of the contrastive baselines (attention, hardway): all other clips of the batch, or "
        "those of another class (needs labels; paper Fig. 2) (overrides method_options.negatives)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --run-dir from its last checkpoint, with its saved config; only epochs, "
        "patience, logging and evaluation frequency, device, loader workers and --cache-audio may change",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a previous run's files in --run-dir (only the files a run writes: others stay)",
    )
    p.add_argument(
        "--cache-audio", action="store_true", help="cache the frozen audio encoder's embeddings (exact)"
    )
    p.add_argument(
        "--cache-visual",
        action="store_true",
        help="cache the frozen visual encoder's features once and crop/flip them in feature space "
        "(approximate, not recommended: on SynthAV its cIoU was not within noise of exact training, see "
        "docs/benchmarks.md; only with the default crop + hflip augmentations; evaluation stays exact)",
    )
    p.add_argument(
        "--allow-overlap", action="store_true", help="train even if ids overlap a benchmark test set"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_json_option(p)
    p.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides, e.g. optim.lr_head=1e-4"
    )
    p.set_defaults(func=run, usage_error=p.error)


def run(args: argparse.Namespace) -> int:
    needed = {"--data": args.data, "--run-dir": args.run_dir}
    if args.print_config:  # the config alone: a run dir only to read the saved config of --resume
        needed = {"--run-dir": args.run_dir} if args.resume and args.config is None else {}
    missing = [option for option, value in needed.items() if not value]
    if missing:
        args.usage_error(f"the following arguments are required: {', '.join(missing)}")
    if args.print_config:
        print(config_to_yaml(resolved_config(args)), end="")
        return 0
    from ..engine.run_dir import HISTORY_NAME
    from ..engine.train import train

    cfg = resolved_config(args)
    start = time.perf_counter()
    result = train(
        cfg,
        args.data,
        args.run_dir,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun the other processes' results are partial
        return 0
    run_dir = result.run_dir
    summary = Summary(
        "train",
        count_files(run_dir),
        out=run_dir,
        open=run_dir / HISTORY_NAME,
        seconds=time.perf_counter() - start,
        facts={
            "epochs": result.epochs_completed,
            "steps": result.steps,
            "best epoch": result.best_epoch,
            result.select_metric: result.best_metric,
            "stopped early": result.stopped_early,
        },
        details={"run_dir": str(run_dir)},
    )
    emit(summary, args.json)
    return 0


def option_overrides(args: argparse.Namespace) -> list[str]:
    """The key=value overrides, then those of the options that set config keys (they win)."""
    overrides = list(args.overrides)
    if args.epochs is not None:
        overrides.append(f"train.epochs={args.epochs}")
    if args.val_fraction is not None:
        overrides.append(f"data.val_fraction={args.val_fraction}")
    if args.method:
        overrides.append(f"method={args.method}")
    if args.negatives:
        overrides.append(f"method_options.negatives={args.negatives}")
    if args.cache_audio:
        overrides.append("data.cache_audio=true")
    if args.cache_visual:
        overrides.append("data.cache_visual=true")
    if args.allow_overlap:
        overrides.append("data.allow_overlap=true")
    return overrides


def resolved_config(args: argparse.Namespace) -> Config:
    """The config a run of these arguments trains with (read only: nothing is written)."""
    from ..engine.train import TrainingError, saved_config

    overrides = option_overrides(args)
    if args.resume and args.overwrite:
        raise SystemExit("sspl train: error: --resume and --overwrite exclude each other")
    if args.resume and args.config is None:
        if args.print_config:  # the saved config, or the reason there is none
            return apply_overrides(saved_config(args.run_dir), overrides)
        try:
            saved = saved_config(args.run_dir)
        except TrainingError:  # train() says what is wrong, once it holds the run dir: a live run that has
            saved = Config()  # no checkpoint yet is then named as in use, not taken for a stopped one
        return apply_overrides(saved, overrides)
    return load_config(args.config, overrides)
