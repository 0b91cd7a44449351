"""Data loader throughput (samples/s) with N workers, beside the training step's pairs/s.

Generates a SynthAV set (``--scenes`` scenes, distractors preset) in a temporary folder and iterates the
trainer's training data, built as the trainer builds it: ``PreparedDataset`` in train mode (two augmented
224 views per frame and its log-mel patches) and a ``DataLoader`` with the trainer's collate function and
worker initialisation (``sspl.data.loader``), batch ``--batch-size``, shuffled, last partial batch
dropped, workers started afresh every epoch. For each ``--workers`` value and each input variant:

- ``exact``: frames decoded and augmented, log-mel patches read (the default training);
- ``cached_audio``: cached audio embeddings instead of log-mel (``--cache-audio``);
- ``cached_visual``: feature-space views of cached visual features instead of frames, with cached audio
  (``--cache-visual --cache-audio``); the features come from a 512-channel stride-16 stand-in encoder
  with VGG16's 15 x 15 map (the loader only reads them, so their values do not matter).

Reported: samples/s in steady state (after each epoch's first batch, which includes starting the workers)
and including that start-up. The step's throughput is ``--step-pairs-per-s`` (e.g. the ``ours`` pairs/s of
bench_train_step.py on the same machine) or else measured here on the full-size default model (VGG16 +
VGGish + PCM, random weights, the trainer's step, ``--step-steps`` steps after a warm-up): on the GPU with
bf16 at batch 128 when CUDA is present (the step the loader must feed there), else on the CPU.
Target (issue 7): the loader at least 2x the training step's throughput, so it does not starve it.

    python bench/bench_loader.py [--scenes 200] [--workers 0 1 2] [--epochs 2] [--step-pairs-per-s X] [--no-record]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from torch import nn
from torch.utils.data import DataLoader

from _common import report
from sspl.data.datasets import PreparedDataset, load_samples
from sspl.data.feature_cache import build_visual_cache
from sspl.data.loader import collate_samples, worker_init
from sspl.data.synth import generate_synth, synth_config

TARGET_RATIO = 2.0
GPU_STEP_BATCH = 128  # the GPU training setting of the performance issue


class StandIn(nn.Module):
    """Stride-16 patch embedding with VGG16's output size (512 x 15 x 15 on a 246 frame)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 512, 16, stride=16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def loader_throughput(dataset: PreparedDataset, workers: int, batch_size: int, epochs: int) -> dict:
    """Samples/s over ``epochs`` passes: steady state (after each epoch's first batch) and overall."""
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        drop_last=True,
        collate_fn=collate_samples,
        worker_init_fn=worker_init,
    )
    first_s = steady_s = 0.0
    first_n = steady_n = 0
    for epoch in range(epochs):
        dataset.set_epoch(epoch)
        tic = time.perf_counter()
        for k, batch in enumerate(loader):
            now = time.perf_counter()
            n = len(batch["id"])
            if k == 0:
                first_s, first_n = first_s + now - tic, first_n + n
            else:
                steady_s, steady_n = steady_s + now - tic, steady_n + n
            tic = time.perf_counter()
    return {
        "steady_samples_per_s": round(steady_n / max(steady_s, 1e-9), 1),
        "samples_per_s_with_startup": round((steady_n + first_n) / max(steady_s + first_s, 1e-9), 1),
        "first_batch_s": round(first_s / epochs, 3),
    }


def step_pairs_per_s(batch_size: int, steps: int) -> tuple[float, str]:
    """The trainer's step on the full-size default model (random weights), median of ``steps``: on the
    GPU when there is one (bf16 autocast, batch ``GPU_STEP_BATCH``, the setting the loader must feed),
    else on the CPU at ``batch_size``. Returns the pairs/s and how they were measured."""
    from bench_train_step import OursStep, make_batch, time_interleaved
    from sspl.config import Config, SSPLConfig
    from sspl.models.sspl import SSPL

    torch.manual_seed(0)
    model = SSPL(SSPLConfig(visual_weights=None, audio_weights=None))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    batch_size = GPU_STEP_BATCH if cuda else batch_size
    step = OursStep(model, Config(), device, cached_audio=False, amp=torch.bfloat16 if cuda else None)
    batch = step.prepare(make_batch(batch_size, device, torch.Generator().manual_seed(0)))
    step(batch)  # warm-up
    seconds = time_interleaved({"ours": lambda: step(batch)}, steps, device)["ours"]
    where = f"{torch.cuda.get_device_name()}, bf16" if cuda else "CPU, float32"
    return (
        batch_size / seconds,
        f"measured: full-size default model, trainer's step on {where}, batch {batch_size}",
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenes", type=int, default=200, help="SynthAV scenes generated (all are read)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=2, help="passes over the scenes per setting")
    parser.add_argument(
        "--step-pairs-per-s", type=float, default=None, help="training step throughput to compare"
    )
    parser.add_argument("--step-steps", type=int, default=2, help="timed steps when measuring the step here")
    parser.add_argument("--no-record", action="store_true", help="do not append to docs/benchmarks.md")
    args = parser.parse_args()
    if args.batch_size < 1 or min(args.workers) < 0 or args.step_steps < 1:
        parser.error("--batch-size and --step-steps must be at least 1 and --workers at least 0")
    if args.step_pairs_per_s is not None and not args.step_pairs_per_s > 0:
        parser.error("--step-pairs-per-s must be positive")
    if args.scenes < 2 * args.batch_size or args.epochs < 1:
        parser.error("--scenes must hold at least two batches and --epochs must be >= 1")

    result: dict[str, object] = {
        "batch_size": args.batch_size,
        "cpu_cores": os.cpu_count(),
        "load_avg_1min_before": round(os.getloadavg()[0], 2),
    }
    with tempfile.TemporaryDirectory(prefix="sspl-bench-loader-") as tmp:
        data = Path(tmp) / "synth"
        t0 = time.perf_counter()
        generate_synth(data, synth_config("distractors", num=args.scenes, pretrain_num=0), progress=False)
        result["generate_s"] = round(time.perf_counter() - t0, 1)
        samples = load_samples(data)
        result["samples"] = len(samples)
        audio = {s.id: torch.zeros(3, 128) for s in samples}  # embeddings' values do not matter here
        with torch.no_grad():
            visual = build_visual_cache(StandIn().eval(), samples, Path(tmp) / "visual_cache")
        datasets = {
            "exact": PreparedDataset(samples, mode="train", seed=0),
            "cached_audio": PreparedDataset(samples, mode="train", seed=0, audio_embeddings=audio),
            "cached_visual": PreparedDataset(
                samples, mode="train", seed=0, audio_embeddings=audio, visual_features=visual
            ),
        }
        loader = {}
        for name, ds in datasets.items():
            loader[name] = {
                f"workers_{w}": loader_throughput(ds, w, args.batch_size, args.epochs) for w in args.workers
            }
        result["loader"] = loader

    if args.step_pairs_per_s is not None:
        step, source = args.step_pairs_per_s, "given (--step-pairs-per-s)"
    else:
        step, source = step_pairs_per_s(args.batch_size, args.step_steps)
        source += f", median of {args.step_steps}"
    result["step_pairs_per_s"] = round(step, 2)
    result["step_source"] = source
    result["ratio_loader_to_step"] = {
        name: {w: round(v["steady_samples_per_s"] / step, 1) for w, v in rows.items()}
        for name, rows in loader.items()
    }
    best_exact = max(v["steady_samples_per_s"] for v in loader["exact"].values())
    result["target"] = f"loader >= {TARGET_RATIO}x the step's pairs/s"
    result["target_met_exact_best_workers"] = best_exact >= TARGET_RATIO * step
    result["load_avg_1min_after"] = round(os.getloadavg()[0], 2)
    report("loader", result, record=not args.no_record)


if __name__ == "__main__":
    main()
