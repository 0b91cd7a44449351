"""Training-step speed of EZ-VSL, SLAVC and FNAC beside their official code's step, and localize speed.

For each method, the model of the shipped config (``configs/{ezvsl,slavc,fnac}_vggsound144k.yaml``:
ResNet-18 image and audio encoders, both trained, Adam at 1e-4; FNAC with weight decay 1e-4) is built with
random weights (no download: speed does not depend on the values) and copied into the official network
through the released-checkpoint key mapping (:mod:`sspl.models.released`, the inverse of what loading a
released ``best.pth`` does), so both run the same weights on the same batch (random ``224 x 224`` frames
and ``1 x 257 x 200`` log-spectrograms: 3 s at 16 kHz).

- official: the official ``model.py`` imported from a checkout given on the command line (never part of
  this project: extract it at run time, see below), its ``train()`` loop body: ``loss = model(image,
  spec)`` (FNAC: the contrastive term plus the three weighted terms, past the warm-up), ``zero_grad``,
  ``backward``, ``Adam.step`` over the parameters that require gradients. torchvision's
  ``resnet18(pretrained=True)`` in their ``model.py`` is called without the download (the weights are
  overwritten by ours anyway).
- ours: the trainer's step, :func:`sspl.engine.train.train_step`, with what the trainer builds
  (:func:`~sspl.engine.step.build_optimisation`, the method's ``before_step`` hook for SLAVC's momentum
  update, channels-last frames as the trainer's loader gives them).

Before timing, a float64 step of both on the batch's first 4 pairs, with the dropouts off (their masks are
drawn in another order on channels-last tensors), must give the same loss and the same gradients of every
trained tensor to rounding (1e-6 / 1e-5 relative: EZ-VSL's loss is taken in float32): the comparison is of the same computation. Then timed steps alternate between
official and ours (fair under the load other jobs put on a shared machine) and the medians are reported
with their ratio. Localize: clips/s of the model's ``localize`` (eval mode, the official test-time map:
object-guided localization for EZ-VSL and FNAC, SLAVC's two-projection map fused with object saliency)
at batch 1 and 16.

    for r in stoneMo+EZ-VSL:ezvsl stoneMo+SLAVC:slavc OpenNLPLab+FNAC_AVL:fnac; do mkdir -p /tmp/off/${r##*:}
        for f in model.py utils.py; do git -C /work/.mirror/${r%%:*}/repo show HEAD:$f > /tmp/off/${r##*:}/$f; done; done
    python bench/bench_released.py --official-ezvsl /tmp/off/ezvsl --official-slavc /tmp/off/slavc \\
        --official-fnac /tmp/off/fnac --official-deps /tmp/offdeps [--batch-size 8] [--steps 3] [--threads 1]

``--official-deps``: a folder appended to ``sys.path`` for the official modules' imports that this
project does not need (FNAC's ``utils.py`` imports scikit-learn). Run it on an idle machine (``uptime``).
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from torch import nn

from _common import report
from sspl.config import Config, load_config
from sspl.data.loader import to_device
from sspl.engine.distributed import DistEnv
from sspl.engine.step import build_optimisation
from sspl.engine.train import train_step
from sspl.models.methods import get_method
from sspl.models.methods.ezvsl import EZVSLOptions
from sspl.models.methods.fnac import FNACOptions
from sspl.models.methods.negatives import parse_method_options
from sspl.models.methods.slavc import SLAVCOptions
from sspl.models.released import RELEASED_FORMATS
from sspl.spectrogram import FFT_SAMPLES, OVERLAP_SAMPLES

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("ezvsl", "slavc", "fnac")
#: the official class of each method and the arguments of its official VGG-Sound 144k script
OFFICIAL_CLASS = {"ezvsl": "EZVSL", "slavc": "SLAVC", "fnac": "FNAC"}
SAMPLE_RATE, SECONDS = 16000, 3
SPECT_FRAMES = 1 + (SAMPLE_RATE * SECONDS - FFT_SAMPLES) // (FFT_SAMPLES - OVERLAP_SAMPLES)  # 200
CHECK_PAIRS = 4
# EZ-VSL's method computes its loss from the logits cast to float32 (``.float()``, for autocast), so in
# float64 the two agree to float32 rounding there, and to float64 rounding for SLAVC and FNAC
CHECK64_LOSS_REL = 1e-6
CHECK64_GRAD_REL = 1e-5
TARGET_SPEEDUP = 1.0


def method_config(method: str, batch_size: int) -> Config:
    """The shipped VGG-Sound 144k config of ``method``, random encoders (no download)."""
    return load_config(
        ROOT / "configs" / f"{method}_vggsound144k.yaml",
        ["model.visual_weights=null", f"train.batch_size={batch_size}"],
    )


def import_official(method: str, folder: Path, deps: Path | None) -> type[nn.Module]:
    """The official network class from ``folder/model.py`` (its ``utils`` resolved in ``folder``), with
    torchvision's ``resnet18`` called without downloading ImageNet weights."""
    import torchvision

    saved_path, saved_utils = list(sys.path), sys.modules.pop("utils", None)
    sys.path.insert(0, str(folder))
    if deps is not None:
        sys.path.append(str(deps))
    try:
        spec = importlib.util.spec_from_file_location(f"official_{method}_model", folder / "model.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = saved_path
        sys.modules.pop("utils", None)
        if saved_utils is not None:
            sys.modules["utils"] = saved_utils
    module.resnet18 = lambda pretrained=False, **kw: torchvision.models.resnet18(**kw)
    return getattr(module, OFFICIAL_CLASS[method])


def method_options(method: str, cfg: Config):
    """The method's options (its ``method_options`` over the official scripts' defaults)."""
    return parse_method_options(
        {"ezvsl": EZVSLOptions, "slavc": SLAVCOptions, "fnac": FNACOptions}[method], cfg
    )


def official_network(method: str, cls: type[nn.Module], cfg: Config) -> nn.Module:
    o = method_options(method, cfg)
    if method == "ezvsl":
        return cls(o.tau, o.dim)
    if method == "slavc":
        return cls(
            o.tau, o.dim, o.dropout_img, o.dropout_aud, o.momentum_img, o.momentum_aud, o.momentum_map
        )  # fmt: skip
    return cls(o.tau, o.dim, o.dropout_img, o.dropout_aud)


def to_official_keys(method: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our state dict in the official key names (the released format's prefixes, inverted); OGL's
    saliency network is not part of the official training model."""
    fmt = RELEASED_FORMATS[method]
    out = {}
    for key, value in state.items():
        if key.startswith("saliency_encoder."):
            continue
        for theirs, ours in fmt.prefixes:
            if key.startswith(ours):
                key = theirs + key[len(ours) :]
                break
        out[key] = value
    return out


class OfficialStep:
    """The official ``train()`` loop body on a copy of ``model``'s weights."""

    def __init__(self, method: str, cls: type[nn.Module], model: nn.Module, cfg: Config) -> None:
        dtype = next(model.parameters()).dtype
        self.net = official_network(method, cls, cfg).to(dtype)
        self.net.load_state_dict(to_official_keys(method, model.state_dict()), strict=True)
        self.net.train()
        self.method, self.o = method, method_options(method, cfg)
        params = [p for p in self.net.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)

    def __call__(self, batch: dict) -> torch.Tensor:
        loss, _ = self.net(batch["frame_view1"], batch["spect"])
        if self.method == "fnac":  # past the warm-up: all four terms
            o = self.o
            loss = (
                loss[0]
                + o.weight_fns_audio * loss[1]
                + o.weight_tns * loss[2]
                + o.weight_fns_visual * loss[3]
            )
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def grads(self) -> dict[str, torch.Tensor]:
        return {n: p.grad for n, p in self.net.named_parameters() if p.grad is not None}


class OursStep:
    """The trainer's step on a copy of ``model``."""

    def __init__(self, method: str, model: nn.Module, cfg: Config) -> None:
        self.model = copy.deepcopy(model).train()
        self.channels_last = cfg.train.channels_last
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.method, self.cfg, self.env = get_method(method), cfg, DistEnv(device=torch.device("cpu"))
        self.opt = build_optimisation(self.method, self.model, cfg, steps_per_epoch=1, device=self.env.device)

    def prepare(self, batch: dict) -> dict:
        """The batch as the trainer's loader delivers it (channels-last frames)."""
        return to_device(batch, self.env.device, self.channels_last)

    def __call__(self, batch: dict) -> torch.Tensor:
        return train_step(self.model, self.method, batch, self.cfg, self.opt, self.env).loss

    def grads(self, method: str) -> dict[str, torch.Tensor]:
        named = {n: p.grad for n, p in self.model.named_parameters() if p.grad is not None}
        return to_official_keys(method, named)


def make_batch(batch_size: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "frame_view1": torch.randn(batch_size, 3, 224, 224, generator=g),
        "spect": torch.randn(batch_size, 1, 257, SPECT_FRAMES, generator=g) * 0.5 - 1.0,
    }


def no_dropout(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    return model


def check_same_maths(method: str, cls: type[nn.Module], model: nn.Module, cfg: Config, batch: dict) -> dict:
    """float64, dropouts off, the first pairs: the same loss and the same gradient of every trained tensor."""
    m64 = no_dropout(copy.deepcopy(model)).double()
    b64 = {k: v[:CHECK_PAIRS].double() for k, v in batch.items()}
    official = OfficialStep(method, cls, m64, cfg)
    no_dropout(official.net)
    ours = OursStep(method, m64, cfg)
    loss_official, loss_ours = float(official(b64)), float(ours(ours.prepare(b64)))
    theirs, mine = official.grads(), ours.grads(method)
    if set(theirs) != set(mine):
        raise SystemExit(f"{method}: trained tensors differ: {sorted(set(theirs) ^ set(mine))[:6]}")
    rel = max(float((mine[k] - g).norm() / g.norm().clamp_min(1e-30)) for k, g in theirs.items())
    result = {
        "dtype": "float64",
        "pairs": CHECK_PAIRS,
        "dropout": "off",
        "loss_official": loss_official,
        "loss_ours": loss_ours,
        "loss_rel_diff": float(f"{abs(loss_official - loss_ours) / abs(loss_official):.3g}"),
        "trained_tensors": len(theirs),
        "grad_max_rel_diff": float(f"{rel:.3g}"),
    }
    if result["loss_rel_diff"] > CHECK64_LOSS_REL or rel > CHECK64_GRAD_REL:
        raise SystemExit(f"{method}: official and ours do not compute the same step: {result}")
    return result


def time_interleaved(steps: dict[str, Callable[[], object]], n: int) -> dict[str, dict[str, list[float]]]:
    """Wall-clock and process CPU seconds per call of each variant, the variants taking turns. On a machine
    shared with other jobs the CPU time is the steadier measure of the work a step does (with one torch
    thread: no thread waits for another that was descheduled)."""
    times: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": []} for name in steps}
    for _ in range(n):
        for name, step in steps.items():
            c0, t0 = time.process_time(), time.perf_counter()
            step()
            times[name]["wall"].append(time.perf_counter() - t0)
            times[name]["cpu"].append(time.process_time() - c0)
    return times


def bench_method(method: str, folder: Path, deps: Path | None, batch_size: int, steps: int) -> dict:
    cfg = method_config(method, batch_size)
    cls = import_official(method, folder, deps)
    torch.manual_seed(0)
    model = get_method(method).build(cfg, pretrained=False)
    batch = make_batch(batch_size)
    maths = check_same_maths(method, cls, model, cfg, batch)
    official, ours = OfficialStep(method, cls, model, cfg), OursStep(method, model, cfg)
    prepared = ours.prepare(batch)
    warm = {"loss_official": round(float(official(batch)), 5), "loss_ours": round(float(ours(prepared)), 5)}
    times = time_interleaved({"official": lambda: official(batch), "ours": lambda: ours(prepared)}, steps)
    out = {"same_maths_check": maths, "first_float32_step (dropout on, not compared)": warm}
    for clock in ("wall", "cpu"):
        med = {k: statistics.median(v[clock]) for k, v in times.items()}
        out[f"{clock}_step_s_median"] = {k: round(v, 3) for k, v in med.items()}
        out[f"{clock}_step_s_all"] = {k: [round(t, 3) for t in v[clock]] for k, v in times.items()}
        out[f"{clock}_pairs_per_s"] = {k: round(batch_size / v, 2) for k, v in med.items()}
        out[f"{clock}_speedup_vs_official"] = round(med["official"] / med["ours"], 3)
    out["localize_clips_per_s"] = localize_speed(model, steps)
    return out


@torch.no_grad()
def localize_speed(model: nn.Module, reps: int) -> dict[str, float]:
    """Clips/s of the model's test-time map at batch 1 and 16 (median of ``reps`` calls after a warm-up), by
    the wall clock and by the process's CPU time (``_cpu``: per CPU-second, summed over torch's threads)."""
    model = copy.deepcopy(model).eval()
    out = {}
    for b in (1, 16):
        batch = make_batch(b, seed=1)
        model.localize(batch["frame_view1"], batch["spect"])
        frames, spect = batch["frame_view1"], batch["spect"]
        ts = time_interleaved({"localize": lambda f=frames, s=spect: model.localize(f, s)}, reps)
        out[f"batch_{b}"] = round(b / statistics.median(ts["localize"]["wall"]), 2)
        out[f"batch_{b}_cpu"] = round(b / statistics.median(ts["localize"]["cpu"]), 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    for m in METHODS:
        parser.add_argument(f"--official-{m}", type=Path, help=f"folder with the official {m} model.py")
    parser.add_argument("--official-deps", type=Path, help="folder appended to sys.path for their imports")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per training step")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per variant (and localize calls)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--no-record", action="store_true", help="do not append to docs/benchmarks.md")
    args = parser.parse_args()
    if args.batch_size < CHECK_PAIRS or args.steps < 1:
        parser.error(f"--batch-size must be >= {CHECK_PAIRS} and --steps >= 1")
    for m in args.methods:
        folder = getattr(args, f"official_{m}")
        if folder is None or not (folder / "model.py").is_file():
            parser.error(f"--official-{m}: give a folder holding the official model.py (got {folder})")
    if args.threads:
        torch.set_num_threads(args.threads)
    result: dict[str, object] = {
        "weights": "random (seeded), copied into the official networks by the released key mapping",
        "batch_size": args.batch_size,
        "spectrogram": f"1 x 257 x {SPECT_FRAMES} (3 s at 16 kHz)",
        "timed_steps": args.steps,
        "torch_threads": torch.get_num_threads(),
        "load_avg_1min_before": round(os.getloadavg()[0], 2),
    }
    for m in args.methods:
        result[m] = bench_method(
            m, getattr(args, f"official_{m}"), args.official_deps, args.batch_size, args.steps
        )
        result[m]["load_avg_1min_after"] = round(os.getloadavg()[0], 2)
    result["target"] = f"ours >= {TARGET_SPEEDUP}x the official step (same weights and batch)"
    result["target_met"] = {
        m: {c: result[m][f"{c}_speedup_vs_official"] >= TARGET_SPEEDUP for c in ("wall", "cpu")}
        for m in args.methods
    }
    report("released_methods", result, record=not args.no_record)


if __name__ == "__main__":
    main()
