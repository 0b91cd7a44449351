"""SLAVC's or FNAC's training step, ours beside the official code's, and the localize speed of a released model.

The official step is the official code itself, imported from ``--official`` (a folder holding the files of
github.com/stoneMo/SLAVC or github.com/OpenNLPLab/FNAC_AVL: ``model.py`` and its imports; torchvision's
``resnet18(pretrained=True)`` is served without a download, the weights are replaced anyway), the loop of
its ``train.py``: SLAVC ``loss, _ = model(image, spec)`` (which updates the momentum encoder first), FNAC
``losses, _ = model(image, spec)`` and ``losses[0] + 100 * (losses[1] + losses[2] + losses[3])`` (after its
warm-up); ``zero_grad``, ``backward``, ``Adam`` at 1e-4 over the trainable parameters (weight decay 0 /
1e-4). Ours is the trainer's step function (``sspl.engine.train.train_step``: the method's ``before_step``
hook, its loss, the finite-loss check, backward, gradient norm, ``optim.optimizer=adam`` with the same
weight decay, channels-last frames as the trainer uses). Both start from the same weights (ours, copied into
theirs by the released-format table) on the same random batch (frames B x 3 x 224 x 224, spectrograms
B x 1 x 257 x 200), with the official dropouts (image 0.9). Dropout masks differ, so the check that both
compute the same thing is a forward in eval mode (same loss to 1e-4 relative in float32: FNAC weighs its
terms by 100 and ours runs channels-last, other convolution kernels). The timed steps alternate
after one warm-up step each and the median is reported. Localize: ``model.localize`` with object-guided
localization in maps/s on up to 8 clips at once.

Target (issue 22): ours at least as fast as the official step on this CPU. Run on an idle machine.

    python bench/bench_slavc_fnac_step.py --method slavc --official /path/to/SLAVC [--batch-size 8] [--steps 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torchvision

from _common import report
from sspl.config import apply_overrides
from sspl.engine.distributed import DistEnv
from sspl.engine.step import build_optimisation
from sspl.engine.train import train_step
from sspl.models.methods import get_method
from sspl.models.released import RELEASED_FORMATS, released_config

WEIGHT_DECAY = {"slavc": 0.0, "fnac": 1e-4}  # the official training scripts'


def official_model(method: str, folder: Path, ours_state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """The official model (the training scripts' settings) holding our weights (official key names)."""
    plain = torchvision.models.resnet18
    torchvision.models.resnet18 = lambda pretrained=False, **kw: plain(weights=None)
    sys.path.insert(0, str(folder))
    import model as official

    if method == "slavc":
        net = official.SLAVC(0.03, 512, 0.9, 0.0, 0.999, 0.999, True)
    else:
        net = official.FNAC(0.03, 512, 0.9, 0.0)
    back = {ours: theirs for theirs, ours in RELEASED_FORMATS[method].prefixes}
    state = {}
    for key, value in ours_state.items():
        if key.startswith("saliency_encoder."):
            continue
        prefix = next((p for p in back if key.startswith(p)), None)
        state[back[prefix] + key[len(prefix) :] if prefix else key] = value.clone()
    net.load_state_dict(state)
    return net


def official_loss(
    method: str, net: torch.nn.Module, frames: torch.Tensor, spect: torch.Tensor
) -> torch.Tensor:
    if method == "slavc":
        return net(frames, spect, mode="train" if net.training else "test")[0]
    losses = net(frames, spect)[0]
    return losses[0] + 100 * losses[1] + 100 * losses[2] + 100 * losses[3]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--method", required=True, choices=["slavc", "fnac"])
    parser.add_argument("--official", required=True, type=Path, help="folder with the official files")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--no-record", action="store_true", help="do not append to docs/benchmarks.md")
    args = parser.parse_args()
    if args.batch_size < 2 or args.steps < 1:
        parser.error("--batch-size must be >= 2 (the negatives) and --steps >= 1")

    m = args.method
    overrides = ["method_options.ogl=false", "optim.optimizer=adam", f"optim.weight_decay={WEIGHT_DECAY[m]}"]
    cfg = apply_overrides(released_config(RELEASED_FORMATS[m]), overrides)
    method = get_method(m)
    torch.manual_seed(0)
    ours = method.build(cfg, pretrained=False)
    theirs = official_model(m, args.official, ours.state_dict())
    ours = ours.to(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(1)
    frames = torch.randn(args.batch_size, 3, 224, 224, generator=g)
    spect = torch.randn(args.batch_size, 1, 257, 200, generator=g)
    batch = {"frame_view1": frames.contiguous(memory_format=torch.channels_last), "spect": spect, "epoch": 10}

    with torch.no_grad():  # the same computation: eval mode (no dropout, no momentum update)
        check = {
            "official": official_loss(m, theirs.eval(), frames, spect).item(),
            "ours": method.loss(ours.eval(), batch, cfg)[0].item(),
        }
    rel = abs(check["ours"] - check["official"]) / abs(check["official"])
    if rel > 1e-4:  # float32; FNAC's terms weigh 100, and ours runs channels-last (other conv kernels)
        raise SystemExit(f"the eval-mode losses differ ({check}): not the same computation")
    ours.train()
    theirs.train()
    opt = build_optimisation(method, ours, cfg, steps_per_epoch=1, device=torch.device("cpu"))
    adam = torch.optim.Adam(
        [p for p in theirs.parameters() if p.requires_grad], lr=1e-4, weight_decay=WEIGHT_DECAY[m]
    )
    env = DistEnv(device=torch.device("cpu"))

    def official_step() -> None:
        loss = official_loss(m, theirs, frames, spect)
        adam.zero_grad()
        loss.backward()
        adam.step()

    def ours_step() -> None:
        train_step(ours, method, batch, cfg, opt, env)

    official_step(), ours_step()  # warm-up
    load_before = round(os.getloadavg()[0], 2)
    times: dict[str, list[float]] = {"official": [], "ours": []}
    for _ in range(args.steps):
        for name, step in (("official", official_step), ("ours", ours_step)):
            t0 = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t0)
    median = {k: statistics.median(v) for k, v in times.items()}
    result = _result(args, check, rel, median, load_before, _localize_s(method, cfg, frames, spect))
    report(f"{m}_train_step", result, record=not args.no_record)


def _localize_s(method, cfg, frames: torch.Tensor, spect: torch.Tensor) -> tuple[int, float]:
    """Clips and seconds of one object-guided ``localize`` call (after a warm-up call)."""
    localizer = method.build(apply_overrides(cfg, ["method_options.ogl=true"]), pretrained=False).eval()
    clips = min(8, len(frames))
    with torch.inference_mode():
        localizer.localize(frames[:2], spect[:2])
        t0 = time.perf_counter()
        localizer.localize(frames[:clips], spect[:clips])
        return clips, time.perf_counter() - t0


def _result(
    args, check: dict, rel: float, median: dict, load_before: float, localize: tuple[int, float]
) -> dict:
    return {
        "batch_size": args.batch_size,
        "timed_steps": args.steps,
        "torch_threads": torch.get_num_threads(),
        "eval_loss": check,
        "eval_loss_rel_diff": rel,
        "s_per_step": {k: round(v, 3) for k, v in median.items()},
        "pairs_per_s": {k: round(args.batch_size / v, 2) for k, v in median.items()},
        "speedup_vs_official": round(median["official"] / median["ours"], 3),
        "target": "ours at least as fast as the official step (speedup >= 1)",
        "target_met": median["official"] / median["ours"] >= 1.0,
        "localize_ogl_maps_per_s": round(localize[0] / localize[1], 2),
        "load_avg_1min_before": load_before,
        "load_avg_1min_after": round(os.getloadavg()[0], 2),
    }


if __name__ == "__main__":
    main()
