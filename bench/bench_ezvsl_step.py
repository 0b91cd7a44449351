"""EZ-VSL's training step, ours beside the official code's, and the localize speed of a released model.

The official step is the official code itself, imported from ``--official`` (a folder holding the files of
github.com/stoneMo/EZ-VSL: ``model.py``, ``utils.py``; torchvision's ``resnet18(pretrained=True)`` is served
without a download, the weights are replaced anyway): ``loss, _ = model(image, spec)``, ``zero_grad``,
``backward``, Adam at 1e-4 over the trainable parameters, exactly the loop of its ``train.py``. Ours is the
trainer's step function (``sspl.engine.train.train_step``: the ``ezvsl`` method's loss, finite-loss check,
backward, gradient norm, AdamW with weight decay 0 = Adam, channels-last frames as the trainer uses). Both
start from the same weights (ours, copied into theirs by the released-format table) on the same random
batch (frames B x 3 x 224 x 224, spectrograms B x 1 x 257 x 200); the first step of each is the check that
they compute the same loss (1e-5 relative) and the warm-up. Then the timed steps alternate and the median is
reported. Localize: ``model.localize`` with object-guided localization (two ResNet-18 image passes and one
audio pass per clip) in maps/s on 8 clips at once.

Target (issue 22): ours at least as fast as the official step on this CPU. Run on an idle machine.

    python bench/bench_ezvsl_step.py --official /path/to/EZ-VSL [--batch-size 8] [--steps 3] [--no-record]
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


def official_model(folder: Path, ours_state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """The official ``EZVSL(tau=0.03, dim=512)`` holding our weights (official key names)."""
    plain = torchvision.models.resnet18
    torchvision.models.resnet18 = lambda pretrained=False, **kw: plain(weights=None)
    sys.path.insert(0, str(folder))
    import model as official

    net = official.EZVSL(0.03, 512)
    back = {ours: theirs for theirs, ours in RELEASED_FORMATS["ezvsl"].prefixes}
    state = {}
    for key, value in ours_state.items():
        prefix = next((p for p in back if key.startswith(p)), None)
        state[back[prefix] + key[len(prefix) :] if prefix else key] = value.clone()
    net.load_state_dict(state)
    return net


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--official", required=True, type=Path, help="folder with the official EZ-VSL files")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--no-record", action="store_true", help="do not append to docs/benchmarks.md")
    args = parser.parse_args()
    if args.batch_size < 2 or args.steps < 1:
        parser.error("--batch-size must be >= 2 (the negatives) and --steps >= 1")

    cfg = apply_overrides(
        released_config(RELEASED_FORMATS["ezvsl"]), ["method_options.ogl=false", "optim.weight_decay=0"]
    )
    method = get_method("ezvsl")
    torch.manual_seed(0)
    ours = method.build(cfg, pretrained=False).train()
    theirs = official_model(args.official, ours.state_dict()).train()
    ours = ours.to(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(1)
    frames = torch.randn(args.batch_size, 3, 224, 224, generator=g)
    spect = torch.randn(args.batch_size, 1, 257, 200, generator=g)
    batch = {"frame_view1": frames.contiguous(memory_format=torch.channels_last), "spect": spect}

    opt = build_optimisation(method, ours, cfg, steps_per_epoch=1, device=torch.device("cpu"))
    adam = torch.optim.Adam(filter(lambda p: p.requires_grad, theirs.parameters()), lr=1e-4)
    env = DistEnv(device=torch.device("cpu"))

    def official_step() -> float:
        loss, _ = theirs(frames.float(), spect.float())
        adam.zero_grad()
        loss.backward()
        adam.step()
        return loss.item()

    def ours_step() -> float:
        return float(train_step(ours, method, batch, cfg, opt, env).loss)

    first = {"official": official_step(), "ours": ours_step()}
    rel = abs(first["ours"] - first["official"]) / abs(first["official"])
    if rel > 1e-5:
        raise SystemExit(f"the first steps differ ({first}): not the same computation")
    load_before = round(os.getloadavg()[0], 2)
    times: dict[str, list[float]] = {"official": [], "ours": []}
    for _ in range(args.steps):
        for name, step in (("official", official_step), ("ours", ours_step)):
            t0 = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t0)
    median = {k: statistics.median(v) for k, v in times.items()}

    localizer = method.build(apply_overrides(cfg, ["method_options.ogl=true"]), pretrained=False).eval()
    clips = min(8, args.batch_size)
    with torch.inference_mode():
        localizer.localize(frames[:2], spect[:2])  # warm-up
        t0 = time.perf_counter()
        localizer.localize(frames[:clips], spect[:clips])
        localize_s = time.perf_counter() - t0
    result = {
        "batch_size": args.batch_size,
        "timed_steps": args.steps,
        "torch_threads": torch.get_num_threads(),
        "first_loss": first,
        "first_loss_rel_diff": rel,
        "s_per_step": {k: round(v, 3) for k, v in median.items()},
        "pairs_per_s": {k: round(args.batch_size / v, 2) for k, v in median.items()},
        "speedup_vs_official": round(median["official"] / median["ours"], 3),
        "target": "ours at least as fast as the official step (speedup >= 1)",
        "target_met": median["official"] / median["ours"] >= 1.0,
        "localize_ogl_maps_per_s": round(clips / localize_s, 2),
        "load_avg_1min_before": load_before,
        "load_avg_1min_after": round(os.getloadavg()[0], 2),
    }
    report("ezvsl_train_step", result, record=not args.no_record)


if __name__ == "__main__":
    main()
