"""Training-step throughput of ours beside a faithful re-run of the official SSPL training step.

Both run the full-size model (VGG16 + VGGish + g + PCM + SimSiam head) with the same weights, those of
the reference recipe (tests/official_recipe.py: seeded He-normal draws in the official checkpoint format;
random, not trained: the speed of a step does not depend on the weights' values, and unlike PyTorch's
default initialisation they give well-conditioned similarity maps, so the two losses can be compared),
on the same random batch, with AdamW and the official parameter groups:

- official: the control flow of the official ``NetWrapper.forward`` and ``train()``
  (github.com/zjsong/SSPL, ``sspl_w_pcm/main.py``), written out below: the audio is encoded by a Python
  loop over the samples (frozen VGGish recomputed every step, 3 patches per sample, ``g`` applied per
  patch and averaged), VGG16 is called once per view, fp32, default (contiguous) memory format. Its
  sub-networks are copies of ours, whose outputs equal the official modules' (tests/test_model_golden.py).
- ours: the trainer's own step function, ``sspl.engine.train.train_step``, called with what the trainer
  builds (``build_optimisation``: AdamW over the ``sspl`` method's parameter groups, the schedule, the AMP
  scaler): the method plugin's loss (audio batched, both views through VGG16 in one call, frozen encoders
  without autograd), finite-loss check, backward, gradient norm, optimiser and scheduler step;
  channels-last memory format, as the trainer uses on every device.
- ours + cached audio: the same with the frozen VGGish embeddings precomputed (``--cache-audio``, exact).

Before timing, both are checked to compute the same step: in float64 on the batch's first 4 pairs, loss
and the gradient of ``g`` agree to rounding (1e-10 and 1e-8 relative); then the first float32 step of each
on the whole batch, which is also the warm-up, must give the same loss to 1e-5 (g's float32 gradients are
reported: the head's batch norms amplify float32 rounding). Then the timed steps
(forward + backward + optimiser step) alternate between the variants, and the median is reported.
Achieved FLOP/s uses the step's FLOPs counted by ``torch.utils.flop_counter.FlopCounterMode`` (forward and
backward, a multiply-add counts 2) beside the best GFLOP/s of a large VGG-like convolution measured here.

Targets (issue 7): ours (exact, no cache) at least 1.1x the official step on the 2-core CPU at batch 16;
on a GPU at batch 128, ours with bf16 autocast and cached audio at least 3x the official fp32 step. GPU
rows are measured when CUDA is present, else reported as pending. Run on an idle machine (check `uptime`).

    python bench/bench_train_step.py [--batch-size 16] [--steps 3] [--threads N] [--no-record]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# official_recipe: the reference weights in the official checkpoint format
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from _common import report
from official_recipe import write_official_checkpoint
from sspl.config import Config
from sspl.engine.distributed import DistEnv
from sspl.engine.step import build_optimisation
from sspl.engine.train import train_step
from sspl.models.methods import get_method
from sspl.models.sspl import SSPL

TARGET_CPU_SPEEDUP = 1.1
TARGET_GPU_SPEEDUP = 3.0
CONV_PEAK_SHAPE = (8, 256, 56, 56)  # CPU batch x channels x H x W of the peak probe (VGG16's conv3 size)
# Same maths: in float64 on the batch's first CHECK_PAIRS pairs, loss and g's gradients agree to rounding.
CHECK_PAIRS = 4
CHECK64_LOSS_ABS = 1e-10
CHECK64_GRAD_REL = 1e-8
# Same numbers: the float32 first step on the whole batch (on CPU) gives the same loss to 1e-5. g's float32
# gradients are reported only: the head's batch norms amplify the rounding of the batched, channels-last
# calls (measured up to a few percent at batch 4).
CHECK32_LOSS_ABS = 1e-5


# --------------------------------------------------------------------------------------------------
# the official step
# --------------------------------------------------------------------------------------------------


class OfficialNet(nn.Module):
    """The official ``NetWrapper`` composition over copies of our sub-networks (same weights)."""

    def __init__(self, model: SSPL) -> None:
        super().__init__()
        m = copy.deepcopy(model)
        self.net_frame = m.visual_encoder
        self.vggish = m.audio_encoder  # the official VGGish: its trunk, then ``fc`` (our g) on its output
        self.fc = m.audio_transform
        self.net_pc = m.pcm
        self.net_ssl_head = m.head

    def forward(self, view1: torch.Tensor, view2: torch.Tensor, spect: torch.Tensor) -> torch.Tensor:
        """``B x 3 x 224 x 224`` twice and ``B x 3 x 1 x 96 x 64`` -> the SimSiam loss."""
        orig, trans = [], []
        for i in range(spect.size(0)):  # the official per-sample audio loop
            emb = self.vggish(spect[i])  # 3 x 128
            orig.append(emb.mean(dim=0))
            trans.append(self.fc(emb).mean(dim=0))
        audio_orig = F.normalize(torch.stack(orig), p=2, dim=1)
        audio_trans = torch.stack(trans)

        feats = []
        for view in (view1, view2):  # one VGG16 call per view
            vis = self.net_frame(view)
            if self.net_pc is not None:
                vis = self.net_pc(vis, audio_orig)
            feats.append(self._attention(vis, audio_trans))
        p1, p2, z1, z2 = self.net_ssl_head(*feats)
        return 0.5 * (-F.cosine_similarity(p1, z2, dim=1).mean() - F.cosine_similarity(p2, z1, dim=1).mean())

    @staticmethod
    def _attention(vis: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """The official ``att_map_weight``: cosine map, min-max scaling, attention pooling."""
        b, c, h, w = vis.shape
        v = F.normalize(vis, p=2, dim=1).view(b, c, h * w).permute(0, 2, 1)  # B x HW x C
        a = F.normalize(audio, p=2, dim=1).unsqueeze(2)  # B x C x 1
        att = torch.matmul(v, a).squeeze(2)  # B x HW
        lo = att.min(dim=1, keepdim=True).values
        hi = att.max(dim=1, keepdim=True).values
        att = ((att - lo) / (hi - lo + 1e-10)).unsqueeze(2)
        return torch.matmul(vis.view(b, c, -1), att).squeeze(2)  # B x C


# --------------------------------------------------------------------------------------------------
# steps
# --------------------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def recipe_model(pcm: bool) -> SSPL:
    """The full-size model with the reference recipe's weights (PCM with 4 cycles, or none)."""
    with tempfile.TemporaryDirectory(prefix="sspl-bench-weights-") as tmp:
        write_official_checkpoint(Path(tmp), pcm=pcm)
        return SSPL.from_official_checkpoint(tmp)


def make_batch(batch_size: int, device: torch.device, generator: torch.Generator) -> dict:
    """Random normalised frames (two views) and log-mel-like patches, ``B x 3 x 96 x 64``."""
    views = torch.randn(2, batch_size, 3, 224, 224, generator=generator)
    spect = torch.randn(batch_size, 3, 96, 64, generator=generator) * 2.0 - 3.0
    return {"frame_view1": views[0].to(device), "frame_view2": views[1].to(device), "spect": spect.to(device)}


def official_optimizer(net: OfficialNet, cfg: Config) -> torch.optim.Optimizer:
    """The official ``create_optimizer``: g; PCM convolutions and norms; PCM rates without weight decay;
    SimSiam head at its own learning rate."""
    groups: list[dict] = [{"params": list(net.fc.parameters()), "lr": cfg.optim.lr}]
    if net.net_pc is not None:
        rates = list(net.net_pc.feedback_rate) + list(net.net_pc.feedforward_rate)
        rate_ids = {id(p) for p in rates}
        convs = [p for p in net.net_pc.parameters() if id(p) not in rate_ids]
        groups.append({"params": convs, "lr": cfg.optim.lr})
        groups.append({"params": rates, "lr": cfg.optim.lr, "weight_decay": 0.0})
    groups.append({"params": list(net.net_ssl_head.parameters()), "lr": cfg.optim.lr_head})
    return torch.optim.AdamW(groups, betas=(cfg.optim.betas[0], 0.999), weight_decay=cfg.optim.weight_decay)


class OfficialStep:
    """The official ``train()`` loop body: zero_grad, forward, mean, backward, optimiser step (fp32)."""

    def __init__(self, model: SSPL, cfg: Config, device: torch.device) -> None:
        self.net = OfficialNet(model).to(device).train()
        self.optimizer = official_optimizer(self.net, cfg)

    def __call__(self, batch: dict) -> torch.Tensor:
        self.net.zero_grad()
        loss = self.net(batch["frame_view1"], batch["frame_view2"], batch["spect"].unsqueeze(2)).mean()
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def g_grads(self) -> list[torch.Tensor]:
        return [p.grad for p in self.net.fc.parameters()]


class OursStep:
    """The trainer's step function on our model, optionally with cached audio embeddings and bf16 autocast."""

    def __init__(
        self, model: SSPL, cfg: Config, device: torch.device, *, cached_audio: bool, amp: torch.dtype | None
    ) -> None:
        self.model = copy.deepcopy(model).to(device).train()
        self.channels_last = cfg.train.channels_last  # the trainer's rule, on every device
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.cfg = cfg
        self.env = DistEnv(device=device)  # one process
        self.cached_audio = cached_audio
        self.method = get_method("sspl")
        # The trainer's optimiser, schedule and scaler (off: no float16); autocast as the variant asks.
        opt = build_optimisation(self.method, self.model, cfg, steps_per_epoch=1, device=device)
        self.opt = dataclasses.replace(opt, amp_dtype=amp)
        self._cache: dict[int, torch.Tensor] = {}

    def prepare(self, batch: dict) -> dict:
        """The batch as the trainer's loader delivers it (cached embeddings computed once, untimed)."""
        out = dict(batch)
        if self.channels_last:
            for k in ("frame_view1", "frame_view2"):
                out[k] = out[k].contiguous(memory_format=torch.channels_last)
        if self.cached_audio:
            key = id(batch["spect"])
            if key not in self._cache:
                with torch.no_grad():
                    self._cache[key] = self.model.encode_audio(batch["spect"])
            out["audio_emb"] = self._cache[key]
            del out["spect"]
        return out

    def __call__(self, batch: dict) -> torch.Tensor:
        return train_step(self.model, self.method, batch, self.cfg, self.opt, self.env).loss

    def g_grads(self) -> list[torch.Tensor]:
        return [p.grad for p in self.model.audio_transform.parameters()]


def _compare(official: OfficialStep, ours: OursStep, batch: dict) -> dict:
    loss_official = float(official(batch))
    loss_ours = float(ours(ours.prepare(batch)))
    rel = max(
        float((a - b).norm() / b.norm().clamp_min(1e-30)) for a, b in zip(ours.g_grads(), official.g_grads())
    )
    return {
        "loss_official": loss_official,
        "loss_ours": loss_ours,
        "loss_abs_diff": float(f"{abs(loss_official - loss_ours):.3g}"),
        "g_grad_max_rel_diff": float(f"{rel:.3g}"),
    }


def check_same_maths(model: SSPL, cfg: Config, batch: dict, device: torch.device) -> dict:
    """float64 step of both on the batch's first pairs: equal loss and g gradients up to rounding."""
    m64 = copy.deepcopy(model).double()
    b64 = {k: v[:CHECK_PAIRS].double() for k, v in batch.items()}
    result = _compare(
        OfficialStep(m64, cfg, device), OursStep(m64, cfg, device, cached_audio=False, amp=None), b64
    )
    result = {"dtype": "float64", "pairs": CHECK_PAIRS, **result}
    if result["loss_abs_diff"] > CHECK64_LOSS_ABS or result["g_grad_max_rel_diff"] > CHECK64_GRAD_REL:
        raise SystemExit(
            f"official and ours do not compute the same step, so their speeds are not comparable: {result}"
        )
    return result


def check_same_step(official: OfficialStep, ours: OursStep, batch: dict, *, strict: bool) -> dict:
    """First float32 step of both on the whole batch (also their warm-up): the losses must agree (checked
    when ``strict``; on a GPU, TF32 convolutions and non-deterministic kernels blur the last digits)."""
    result = {"dtype": "float32", "pairs": batch["spect"].shape[0], **_compare(official, ours, batch)}
    result["loss_official"], result["loss_ours"] = (
        round(result["loss_official"], 7),
        round(result["loss_ours"], 7),
    )
    if strict and result["loss_abs_diff"] > CHECK32_LOSS_ABS:
        raise SystemExit(
            f"official and ours differ on the same batch, so their speeds are not comparable: {result}"
        )
    return result


def time_interleaved(
    steps: dict[str, Callable[[], object]], n: int, device: torch.device
) -> dict[str, float]:
    """Median seconds per step of each variant, the variants taking turns (fair under load drift)."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(n):
        for name, step in steps.items():
            _sync(device)
            t0 = time.perf_counter()
            step()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def step_flops(model: SSPL, cfg: Config, batch_size: int) -> int:
    """FLOPs of one training step's forward and backward at ``batch_size`` (counted at batch 2 on CPU;
    every operation of the step is linear in the batch)."""
    m = copy.deepcopy(model).cpu().train()
    batch = make_batch(2, torch.device("cpu"), torch.Generator().manual_seed(1))
    with FlopCounterMode(display=False) as counter:
        loss, _ = get_method("sspl").loss(m, batch, cfg)
        loss.backward()
    return counter.get_total_flops() * batch_size // 2


def conv_peak_gflops(device: torch.device) -> dict:
    """Best GFLOP/s of a VGG-like 256 -> 256 3 x 3 convolution on 56 x 56 (forward, no autograd), in both
    memory formats: batch 8 in float32 on CPU; batch 128 in float32 (TF32 allowed, PyTorch's default for
    convolutions) and bfloat16 on a GPU, timed over more repetitions."""
    gpu = device.type == "cuda"
    _, c, h, w = CONV_PEAK_SHAPE
    b, reps = (128, 20) if gpu else (CONV_PEAK_SHAPE[0], 5)
    flops = 2 * b * c * c * 9 * h * w
    best = {}
    with torch.no_grad():
        for dtype in (torch.float32, torch.bfloat16) if gpu else (torch.float32,):
            conv = nn.Conv2d(c, c, 3, padding=1).to(device, dtype)
            x = torch.randn(b, c, h, w, device=device, dtype=dtype)
            for fmt in (torch.contiguous_format, torch.channels_last):
                cf, xf = conv.to(memory_format=fmt), x.contiguous(memory_format=fmt)
                cf(xf)
                ts = []
                for _ in range(reps):
                    _sync(device)
                    t0 = time.perf_counter()
                    cf(xf)
                    _sync(device)
                    ts.append(time.perf_counter() - t0)
                name = f"{str(dtype).removeprefix('torch.')}_{'channels_last' if fmt == torch.channels_last else 'contiguous'}"
                best[name] = round(flops / min(ts) / 1e9, 1)
    return {
        "probe": f"conv 256->256 3x3, 56x56, batch {b}, forward",
        "gflops": best,
        "best": max(best.values()),
    }


# --------------------------------------------------------------------------------------------------
# one setting
# --------------------------------------------------------------------------------------------------


def bench_setting(
    pcm: bool, batch_size: int, steps: int, device: torch.device, *, gpu_amp: bool, cfg: Config
) -> dict:
    model = recipe_model(pcm)
    batch = make_batch(batch_size, device, torch.Generator().manual_seed(0))
    maths = check_same_maths(model, cfg, batch, device)
    official = OfficialStep(model, cfg, device)
    variants: dict[str, OursStep] = {"ours": OursStep(model, cfg, device, cached_audio=False, amp=None)}
    check = check_same_step(official, variants["ours"], batch, strict=device.type == "cpu")
    variants["ours_cached_audio"] = OursStep(model, cfg, device, cached_audio=True, amp=None)
    if gpu_amp:
        variants["ours_bf16"] = OursStep(model, cfg, device, cached_audio=False, amp=torch.bfloat16)
        variants["ours_bf16_cached_audio"] = OursStep(
            model, cfg, device, cached_audio=True, amp=torch.bfloat16
        )
    prepared = {name: v.prepare(batch) for name, v in variants.items()}
    for name, v in variants.items():
        if name != "ours":
            v(prepared[name])  # warm-up
    del model
    timed = {"official": lambda: official(batch)}
    timed.update({name: (lambda v=v, b=prepared[name]: v(b)) for name, v in variants.items()})
    seconds = time_interleaved(timed, steps, device)
    flops = step_flops(variants["ours"].model, cfg, batch_size)
    out: dict[str, object] = {
        "same_maths_check": maths,
        "same_step_check": check,
        "step_s": {k: round(v, 3) for k, v in seconds.items()},
    }
    out["pairs_per_s"] = {k: round(batch_size / v, 2) for k, v in seconds.items()}
    out["speedup_vs_official"] = {
        k: round(seconds["official"] / v, 3) for k, v in seconds.items() if k != "official"
    }
    out["step_gflop_fwd_bwd"] = round(flops / 1e9, 1)
    out["achieved_gflops"] = {k: round(flops / v / 1e9, 1) for k, v in seconds.items() if "bf16" not in k}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch-size", type=int, default=16, help="CPU batch (pairs per step)")
    parser.add_argument("--gpu-batch-size", type=int, default=128, help="GPU batch (pairs per step)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant after the warm-up")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--no-gpu", action="store_true", help="skip the GPU rows even when CUDA is present")
    parser.add_argument("--no-record", action="store_true", help="do not append to docs/benchmarks.md")
    args = parser.parse_args()
    if args.batch_size < 4 or args.gpu_batch_size < 4:
        parser.error(
            "--batch-size and --gpu-batch-size must be >= 4 (batch norms over 2 samples make the same-step "
            "check meaningless)"
        )
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg = Config()
    cpu = torch.device("cpu")
    result: dict[str, object] = {
        "model": "VGG16 + VGGish + g + SimSiam head, PCM with 4 cycles (T = 5) or without",
        "weights": "reference recipe (tests/official_recipe.py), random not trained: speed does not depend on the values",
        "batch_size": args.batch_size,
        "timed_steps": args.steps,
        "torch_threads": torch.get_num_threads(),
        "load_avg_1min_before": round(os.getloadavg()[0], 2),
        "cpu_conv_peak": conv_peak_gflops(cpu),
    }
    for pcm in (True, False):
        result["cpu_w_pcm" if pcm else "cpu_wo_pcm"] = bench_setting(
            pcm, args.batch_size, args.steps, cpu, gpu_amp=False, cfg=cfg
        )
    speedup = result["cpu_w_pcm"]["speedup_vs_official"]["ours"]
    result["target_cpu"] = (
        f"ours (exact, no cache) >= {TARGET_CPU_SPEEDUP}x official at batch {args.batch_size}"
    )
    result["target_cpu_met"] = speedup >= TARGET_CPU_SPEEDUP
    if torch.cuda.is_available() and not args.no_gpu:
        gpu = torch.device("cuda")
        result["gpu_conv_peak"] = conv_peak_gflops(gpu)
        for pcm in (True, False):
            result["gpu_w_pcm" if pcm else "gpu_wo_pcm"] = bench_setting(
                pcm, args.gpu_batch_size, args.steps, gpu, gpu_amp=True, cfg=cfg
            )
        best = result["gpu_w_pcm"]["speedup_vs_official"]["ours_bf16_cached_audio"]
        result["target_gpu"] = (
            f"ours bf16 + cached audio >= {TARGET_GPU_SPEEDUP}x official fp32 at batch {args.gpu_batch_size}"
        )
        result["target_gpu_met"] = best >= TARGET_GPU_SPEEDUP
    else:
        result["gpu"] = "skipped: --no-gpu" if args.no_gpu else "pending: no CUDA device on this machine"
    result["load_avg_1min_after"] = round(os.getloadavg()[0], 2)
    report("train_step", result, record=not args.no_record)


if __name__ == "__main__":
    main()
