"""Model FLOPs per pair for T = 1..8 beside the paper's Table S6, and the peak memory of a training step.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add counts 2) on our model
(VGG16 + VGGish + g + PCM + SimSiam head), with ``T - 1`` PCM cycles (T = 1 is the initial pass alone):

- ``inference``: one frame and its 3-s sound through ``localize`` (visual encoder, audio encoder on 3 patches
  with g, PCM, cosine map): what the paper's Table S6 counts (its 35.9 GFLOPs for SSPL w/o PCM is one view
  plus the audio stream). Beside it, the paper's numbers and the sum of the official modules' counts
  (tests/data/reference/flops_official.json, counted the same way on the official code).
- ``train_forward`` and ``train_fwd_bwd``: a training pair (two views, the audio, two PCM passes, head and
  loss), forward alone and forward + backward, counted at batch 2 and divided by 2.

Peak memory: one full training step (the trainer's: method loss, backward, AdamW step; channels-last) at
``--memory-batch`` pairs per T, each in a fresh process so that no earlier allocation hides it. On CPU it
is the process's peak resident memory during the step (``VmHWM`` after resetting it through
``/proc/self/clear_refs``) minus the resident memory before the step (model, optimiser and batch loaded);
on a GPU, ``torch.cuda.max_memory_allocated`` during the step minus the allocation before it. Weights are
a random initialisation: FLOPs and memory do not depend on their values.

    python bench/bench_flops.py [--max-t 8] [--memory-batch 16] [--no-memory] [--threads N] [--no-record]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from torch.utils.flop_counter import FlopCounterMode

from _common import ROOT, report
from sspl.config import Config, SSPLConfig
from sspl.models.encoders import build_audio_encoder, build_visual_encoder, freeze
from sspl.models.methods import get_method
from sspl.models.sspl import SSPL

OFFICIAL_FLOPS = ROOT / "tests" / "data" / "reference" / "flops_official.json"

# Supplement, Table S6 ("Influence of recursive cycles T in PCM"): GFLOPs of SSPL w/ PCM by T, and
# Sec. D.2: "SSPL (w/o PCM) ... occupies 35.9 GFLOPs". The table has no column for T = 2 and T = 4.
PAPER_TABLE_S6_GFLOPS = {1: 38.3, 3: 43.0, 5: 47.6, 6: 49.9, 7: 52.2, 8: 54.5}
PAPER_WO_PCM_GFLOPS = 35.9


def _count(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def _model(cycles: int | None, encoders: tuple | None = None) -> SSPL:
    """Full-size SSPL with ``cycles`` PCM cycles (``None``: w/o PCM), random weights."""
    cfg = SSPLConfig(pcm=cycles is not None, cycles=cycles or 0, visual_weights=None, audio_weights=None)
    if encoders is None:
        return SSPL(cfg)
    return SSPL(cfg, visual_encoder=encoders[0], audio_encoder=encoders[1])


def _batch(size: int, device: torch.device) -> dict:
    g = torch.Generator().manual_seed(0)
    views = torch.randn(2, size, 3, 224, 224, generator=g)
    spect = torch.randn(size, 3, 96, 64, generator=g)
    return {"frame_view1": views[0].to(device), "frame_view2": views[1].to(device), "spect": spect.to(device)}


def count_flops(max_t: int) -> list[dict]:
    """Per-pair GFLOPs of inference and of a training pair for w/o PCM and T = 1..max_t."""
    official = json.loads(OFFICIAL_FLOPS.read_text())
    base_official = official["visual_encoder_per_view"] + official["audio_encoder_3_patches_incl_g"]
    # One pair of encoders for every T (building VGGish is the slow part); frozen as in training.
    encoders = (freeze(build_visual_encoder("vgg16")), freeze(build_audio_encoder("vggish")))
    frame, spect = torch.randn(1, 3, 224, 224), torch.randn(1, 3, 96, 64)
    pair = _batch(2, torch.device("cpu"))
    method, cfg = get_method("sspl"), Config()
    rows = []
    for t in [None, *range(1, max_t + 1)]:
        model = _model(None if t is None else t - 1, encoders)
        model.eval()
        with torch.no_grad():
            inference = _count(lambda m=model: m.localize(frame, spect))
        model.train()
        with torch.no_grad():
            forward = _count(lambda m=model: method.loss(m, pair, cfg))

        def fwd_bwd(m=model) -> None:
            loss, _ = method.loss(m, pair, cfg)
            loss.backward()

        both = _count(fwd_bwd)
        pcm_official = official.get(f"pcm_cycs_in_{t - 1}") if t is not None else 0
        row = {
            "T": t if t is not None else "w/o PCM",
            "inference_gflops": round(inference / 1e9, 2),
            "official_modules_gflops": round((base_official + pcm_official) / 1e9, 2)
            if pcm_official is not None
            else None,
            "paper_gflops": PAPER_WO_PCM_GFLOPS if t is None else PAPER_TABLE_S6_GFLOPS.get(t),
            "train_forward_gflops_per_pair": round(forward / 2 / 1e9, 2),
            "train_fwd_bwd_gflops_per_pair": round(both / 2 / 1e9, 2),
        }
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------------
# memory (one child process per T)
# --------------------------------------------------------------------------------------------------


def _proc_status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def memory_child(t: int | None, batch_size: int, device: torch.device) -> dict:
    """One training step at ``batch_size`` with ``T - 1`` cycles; memory of the step in MiB."""
    cfg = Config()
    model = _model(None if t is None else t - 1).to(device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    method = get_method("sspl")
    optimizer = torch.optim.AdamW(method.param_groups(model, cfg.optim))
    batch = _batch(batch_size, device)
    if cfg.train.channels_last:
        for k in ("frame_view1", "frame_view2"):
            batch[k] = batch[k].contiguous(memory_format=torch.channels_last)

    def step() -> None:
        loss, _ = method.loss(model, batch, cfg)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    tic = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        return {
            "allocated_before_mib": round(before / 2**20),
            "step_peak_extra_mib": round((peak - before) / 2**20),
            "step_s": round(time.perf_counter() - tic, 2),
        }
    before = _proc_status_kb("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
        reset = True
    except OSError:
        reset = False
    step()
    peak = _proc_status_kb("VmHWM")
    return {
        "rss_before_mib": round(before / 1024),
        "step_peak_rss_mib": round(peak / 1024),
        "step_peak_extra_mib": round((peak - before) / 1024),
        "peak_reset": reset,
        "step_s": round(time.perf_counter() - tic, 2),
    }


def measure_memory(max_t: int, batch_size: int, device: str, threads: int | None) -> list[dict]:
    rows = []
    for t in [0, *range(1, max_t + 1)]:
        cmd = [sys.executable, __file__, "--memory-child", str(t), "--memory-batch", str(batch_size)]
        cmd += ["--device", device] + (["--threads", str(threads)] if threads else [])
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if done.returncode != 0:
            raise SystemExit(f"memory measurement for T={t} failed:\n{done.stderr[-2000:]}")
        rows.append({"T": t or "w/o PCM", **json.loads(done.stdout.strip().splitlines()[-1])})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--max-t", type=int, default=8, help="largest T (PCM cycles = T - 1)")
    parser.add_argument("--memory-batch", type=int, default=16, help="pairs per training step for memory")
    parser.add_argument("--no-memory", action="store_true", help="count FLOPs only")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument(
        "--device", default=None, help="device of the memory steps (default: cuda if present)"
    )
    parser.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--no-record", action="store_true", help="do not append to docs/benchmarks.md")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.memory_child is not None:
        t = args.memory_child or None  # 0: w/o PCM
        print(json.dumps(memory_child(t, args.memory_batch, torch.device(device))))
        return
    if args.max_t < 1 or args.memory_batch < 2:
        parser.error("--max-t must be >= 1 and --memory-batch >= 2")

    load_before = round(os.getloadavg()[0], 2)  # FLOPs do not depend on it; the memory times might
    result: dict[str, object] = {
        "load_avg_1min_before": load_before,
        "counter": "torch.utils.flop_counter.FlopCounterMode, multiply-add = 2 FLOPs",
        "weights": "random init: FLOPs and memory do not depend on the values",
        "flops": count_flops(args.max_t),
        "torch_threads": torch.get_num_threads(),
    }
    flops = {r["T"]: r["inference_gflops"] for r in result["flops"]}
    with_pcm = [t for t in range(2, args.max_t + 1) if t in flops]
    if with_pcm:
        result["pcm_gflops_per_cycle"] = round((flops[with_pcm[-1]] - flops[1]) / (with_pcm[-1] - 1), 2)
        result["paper_pcm_gflops_per_cycle"] = 2.3  # supplement Sec. D.2
    if args.no_memory:
        result["memory"] = "not measured (--no-memory)"
    else:
        result["memory_device"] = device
        result["memory_batch"] = args.memory_batch
        result["memory"] = measure_memory(args.max_t, args.memory_batch, device, args.threads)
    result["load_avg_1min_after"] = round(os.getloadavg()[0], 2)
    report("flops_memory", result, record=not args.no_record)


if __name__ == "__main__":
    main()
