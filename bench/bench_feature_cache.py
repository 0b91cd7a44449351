"""The visual-feature cache (``sspl train --cache-visual``) against exact training: accuracy and speed.

1. Data and encoders, kept in ``--work-dir`` and reused by later runs (not part of the measurement): a
   SynthAV set (``--preset``, ``--scenes`` main scenes, ``--pretrain-scenes`` pretraining scenes) and the
   small encoders pretrained on it (``pretrain_synth_encoders``). ``--prepare-only`` stops here.
2. SSPL w/o PCM trained twice per seed with the library's SynthAV settings (``synthav_config``: the small
   frozen encoders, Table S1 rates, batch 32), same seed and epochs: exact (pixel views) and cached
   (``data.cache_visual``); both with the exact audio cache. Each is evaluated on the test split with
   ``sspl.engine.evaluate.evaluate(..., benchmark="synth")``, beside the untrained model and the oracle
   query on the same encoders. Step speed is the trainer's logged pairs/s (loader included).
3. How close the feature-space views are to the pixel views' features (mean cosine per cell over seeded
   draws) for the pretrained small CNN and for VGG16 with random He-normal weights, and what the float16
   storage changes (relative error of the features, change of the loss on a training batch).
4. The trainer's step on the full-size model (VGG16 + VGGish, random weights, batch ``--vgg-batch``),
   exact vs on cached features, with and without PCM.

The cache is recommended only if the cached run's cIoU@0.5 is within noise of the exact run's: within
twice the standard error of the difference (binomial over the test scenes; with several ``--seeds``, the
spread over seeds if larger). Run on an idle machine (check ``uptime``).

    python bench/bench_feature_cache.py --work-dir DIR --prepare-only            # once, ~4 min on 2 cores
    python bench/bench_feature_cache.py --work-dir DIR [--epochs 8] [--seeds 1234] [--no-record]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import torch
import torch.nn.functional as F

from _common import report
from bench_train_step import OursStep, make_batch, recipe_model, time_interleaved
from sspl.config import Config, SSPLConfig
from sspl.data.datasets import load_samples
from sspl.data.feature_cache import CACHE_DTYPE, FeatureCropFlip, build_visual_cache, resize_transform
from sspl.data.synth import PRESETS, generate_synth, synth_config
from sspl.data.transforms import build_train_transform
from sspl.engine.evaluate import evaluate
from sspl.engine.pretrain import load_synth_encoders, pretrain_synth_encoders
from sspl.engine.synthav import oracle_result, save_untrained, synthav_config
from sspl.engine.train import train
from sspl.models.methods import get_method
from sspl.models.sspl import SSPL

NOISE_FACTOR = 2.0  # "within noise": |difference| <= 2 standard errors


# --------------------------------------------------------------------------------------------------
# 1. data and encoders
# --------------------------------------------------------------------------------------------------


def prepare(work: Path, preset: str, scenes: int, pretrain_scenes: int, pretrain_epochs: int) -> dict:
    data, enc = work / "synth", work / "encoders"
    info: dict[str, object] = {}
    if not (data / "manifest.csv").is_file():
        t0 = time.perf_counter()
        generate_synth(
            data, synth_config(preset, num=scenes, pretrain_num=pretrain_scenes, seed=0), progress=False
        )
        info["generate_s"] = round(time.perf_counter() - t0, 1)
    meta = json.loads((data / "meta.json").read_text())["synth"]
    if (meta["num"], meta["pretrain_num"], meta["min_objects"]) != (
        scenes,
        pretrain_scenes,
        synth_config(preset, num=1).min_objects,
    ):
        raise SystemExit(f"{data} holds another SynthAV set ({meta}); use another --work-dir")
    if not (enc / "encoders.json").is_file():
        t0 = time.perf_counter()
        pretrain_synth_encoders(data, enc, epochs=pretrain_epochs, progress=False)
        info["pretrain_s"] = round(time.perf_counter() - t0, 1)
    encoders = json.loads((enc / "encoders.json").read_text())
    info["pretrain_metrics"] = encoders["metrics"]
    info["scenes"] = {"preset": preset, "main": scenes, "pretrain": pretrain_scenes}
    return info


# --------------------------------------------------------------------------------------------------
# 2. exact vs cached training on SynthAV
# --------------------------------------------------------------------------------------------------


def run_config(enc: Path, epochs: int, seed: int, cached: bool) -> Config:
    extra = ["data.cache_audio=true"] + (["data.cache_visual=true"] if cached else [])
    return synthav_config(enc, pcm=False, epochs=epochs, seed=seed, overrides=extra)


def train_and_evaluate(cfg: Config, data: Path, run: Path) -> dict:
    t0 = time.perf_counter()
    result = train(cfg, data, run, overwrite=True, progress=False)
    train_s = time.perf_counter() - t0
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    speeds = [r["pairs_per_s"] for r in records if r.get("type") == "train"]
    rep = evaluate(run, data, "synth", run / "eval", progress=False).report
    return {
        "ciou@0.5": rep["ciou@0.5"],
        "auc": round(rep["auc"], 4),
        "num_test": rep["num_samples"],
        "best_epoch": result.best_epoch,
        "train_s": round(train_s, 1),
        "pairs_per_s_median": round(statistics.median(speeds), 1),
        "baselines": rep["baselines"],
    }


def references(enc: Path, data: Path, tmp: Path, seed: int) -> dict:
    oracle = oracle_result(enc, data, "test")
    untrained = save_untrained(run_config(enc, 1, seed, cached=False), tmp / "untrained.pt")
    rep = evaluate(untrained, data, "synth", tmp / "untrained_eval", progress=False).report
    return {
        "oracle_query": {"ciou@0.5": oracle.ciou_success_rate, "auc": round(oracle.auc, 4)},
        "untrained": {"ciou@0.5": rep["ciou@0.5"], "auc": round(rep["auc"], 4)},
    }


def compare(runs: dict[str, list[dict]]) -> dict:
    exact = [r["ciou@0.5"] for r in runs["exact"]]
    cached = [r["ciou@0.5"] for r in runs["cached"]]
    n = runs["exact"][0]["num_test"]
    p = statistics.mean(exact)
    binomial = math.sqrt(2 * max(p * (1 - p), 1 / n) / n) / math.sqrt(len(exact))
    spread = (
        math.sqrt(statistics.variance(exact) / len(exact) + statistics.variance(cached) / len(cached))
        if len(exact) > 1
        else 0.0
    )
    se = max(binomial, spread)
    delta = statistics.mean(cached) - p
    within = abs(delta) <= NOISE_FACTOR * se
    return {
        "delta_ciou@0.5_cached_minus_exact": round(delta, 4),
        "delta_auc_cached_minus_exact": round(
            statistics.mean(r["auc"] for r in runs["cached"])
            - statistics.mean(r["auc"] for r in runs["exact"]),
            4,
        ),
        "standard_error_of_delta": round(se, 4),
        "noise_rule": f"|delta| <= {NOISE_FACTOR} x SE (binomial over {n} test scenes"
        + (f", or the spread over {len(exact)} seeds if larger)" if len(exact) > 1 else "; one seed)"),
        "within_noise": within,
    }


# --------------------------------------------------------------------------------------------------
# 3. fidelity of the feature-space views and of float16 storage
# --------------------------------------------------------------------------------------------------


@torch.no_grad()
def view_fidelity(encoder: torch.nn.Module, samples: list, tmp: Path, draws: int = 4) -> dict:
    """Mean cosine (per cell) between a cached feature view and the encoder on the same pixel view."""
    cache = build_visual_cache(encoder, samples, tmp, batch_size=8)
    views, pixels = FeatureCropFlip.for_cache(cache), build_train_transform()
    cos, aligned = [], []
    for k, s in enumerate(samples):
        image, full = s.load_frame(), cache[s.id].float()
        for d in range(draws):
            torch.manual_seed(1000 * k + d)
            exact = encoder(pixels(image)[None])[0]
            torch.manual_seed(1000 * k + d)
            i, j, flip = views.draw()
            c = F.cosine_similarity(views.view(full, i, j, flip), exact, dim=0).mean().item()
            cos.append(c)
            if i % 16 == 0 and j % 16 == 0:
                aligned.append(c)
    return {
        "mean_cosine": round(statistics.mean(cos), 4),
        "min_cosine": round(min(cos), 4),
        "views": len(cos),
        "mean_cosine_stride_aligned": round(statistics.mean(aligned), 4) if aligned else None,
    }


@torch.no_grad()
def fp16_effect(cfg: Config, samples: list, tmp: Path) -> dict:
    """What float16 storage changes: the features (relative to each map's largest value), and the loss of
    one training batch built from the same view draws on float16 vs float32 features."""
    torch.manual_seed(cfg.train.seed)
    method = get_method("sspl")
    model = method.build(cfg).train()
    cache = build_visual_cache(model.visual_encoder, samples, tmp)
    resize = resize_transform(cache.image_size)
    full32 = {s.id: model.visual_encoder(resize(s.load_frame())[None])[0] for s in samples}
    rel = max(((cache[i].float() - f).abs().max() / f.abs().max()).item() for i, f in full32.items())
    views = FeatureCropFlip.for_cache(cache)
    emb = model.encode_audio(torch.stack([s.load_spect() for s in samples]))

    def batch_of(features: dict) -> dict:
        pairs = []
        for k, s in enumerate(samples):
            torch.manual_seed(k)  # the same draws for both precisions
            pairs.append((views(features[s.id]), views(features[s.id])))
        return {
            "feat_view1": torch.stack([a for a, _ in pairs]),
            "feat_view2": torch.stack([b for _, b in pairs]),
            "audio_emb": emb,
        }

    loss16, _ = method.loss(model, batch_of({s.id: cache[s.id] for s in samples}), cfg)
    loss32, _ = method.loss(model, batch_of(full32), cfg)
    return {
        "dtype": CACHE_DTYPE.__name__,
        "max_error_relative_to_map_max": float(f"{rel:.3g}"),
        "loss_fp32_views": round(loss32.item(), 6),
        "loss_abs_diff_fp16_vs_fp32_views": float(f"{abs(loss16.item() - loss32.item()):.3g}"),
    }


# --------------------------------------------------------------------------------------------------
# 4. full-size step speed
# --------------------------------------------------------------------------------------------------


def vgg16_step_speed(batch_size: int, steps: int) -> dict:
    """The trainer's full-size step, exact vs cached audio vs cached visual features (and audio)."""
    return {("w_pcm" if pcm else "wo_pcm"): _vgg16_setting(pcm, batch_size, steps) for pcm in (False, True)}


def _vgg16_setting(pcm: bool, batch_size: int, steps: int) -> dict:
    cpu, cfg = torch.device("cpu"), Config()
    torch.manual_seed(0)
    model = SSPL(SSPLConfig(pcm=pcm, visual_weights=None, audio_weights=None))
    batch = make_batch(batch_size, cpu, torch.Generator().manual_seed(0))
    exact = OursStep(model, cfg, cpu, cached_audio=False, amp=None)
    audio = OursStep(model, cfg, cpu, cached_audio=True, amp=None)
    visual = OursStep(model, cfg, cpu, cached_audio=False, amp=None)
    with torch.no_grad():
        feats = [
            visual.model.encode_visual(batch[k]).to(torch.float16) for k in ("frame_view1", "frame_view2")
        ]
        emb = visual.model.encode_audio(batch["spect"])
    # What the loader delivers with --cache-visual --cache-audio (the trainer makes the views channels-last).
    fmt = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    cached = {
        "feat_view1": feats[0].contiguous(memory_format=fmt),
        "feat_view2": feats[1].contiguous(memory_format=fmt),
    }
    cached["audio_emb"] = emb
    exact_batch, audio_batch = exact.prepare(batch), audio.prepare(batch)
    for step, b in ((exact, exact_batch), (audio, audio_batch), (visual, cached)):
        step(b)  # warm-up
    seconds = time_interleaved(
        {
            "exact": lambda: exact(exact_batch),
            "cached_audio": lambda: audio(audio_batch),
            "cached_visual_and_audio": lambda: visual(cached),
        },
        steps,
        cpu,
    )
    return {
        "step_s": {k: round(v, 3) for k, v in seconds.items()},
        "pairs_per_s": {k: round(batch_size / v, 2) for k, v in seconds.items()},
        "speedup_cached_visual_vs_exact": round(seconds["exact"] / seconds["cached_visual_and_audio"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work-dir", required=True, help="keeps the SynthAV set, the encoders and the runs")
    parser.add_argument("--preset", default="distractors", choices=sorted(PRESETS), help="SynthAV preset")
    parser.add_argument("--scenes", type=int, default=600, help="main SynthAV scenes (train/val/test)")
    parser.add_argument("--pretrain-scenes", type=int, default=600, help="encoder pretraining scenes")
    parser.add_argument("--pretrain-epochs", type=int, default=5)
    parser.add_argument("--prepare-only", action="store_true", help="generate data and encoders, then stop")
    parser.add_argument("--epochs", type=int, default=8, help="SSPL training epochs (each run)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1234], help="training seeds (both modes)")
    parser.add_argument("--vgg-batch", type=int, default=16, help="batch of the full-size step timing")
    parser.add_argument("--vgg-steps", type=int, default=2, help="timed full-size steps per variant")
    parser.add_argument("--no-vgg", action="store_true", help="skip the full-size step timing")
    parser.add_argument("--no-record", action="store_true", help="do not append to docs/benchmarks.md")
    args = parser.parse_args()

    work = Path(args.work_dir)
    result: dict[str, object] = {"load_avg_1min_before": round(os.getloadavg()[0], 2)}
    result["data"] = prepare(work, args.preset, args.scenes, args.pretrain_scenes, args.pretrain_epochs)
    if args.prepare_only:
        print(json.dumps(result))
        return
    data, enc = work / "synth", work / "encoders"
    result["settings"] = (
        f"synthav_config(pcm=False, epochs={args.epochs}) + data.cache_audio=true; cached adds "
        "data.cache_visual=true; cIoU@0.5/AUC on the test split, synth protocol"
    )
    with tempfile.TemporaryDirectory(prefix="sspl-bench-fcache-") as tmp:
        tmp = Path(tmp)
        result["reference"] = references(enc, data, tmp, args.seeds[0])
        runs: dict[str, list[dict]] = {"exact": [], "cached": []}
        for seed in args.seeds:
            for mode in ("exact", "cached"):
                cfg = run_config(enc, args.epochs, seed, cached=mode == "cached")
                row = train_and_evaluate(cfg, data, work / "runs" / f"{mode}_seed{seed}")
                runs[mode].append({"seed": seed, **row})
        result["runs"] = runs
        result["comparison"] = compare(runs)
        result["speedup_training_pairs_per_s"] = round(
            statistics.mean(r["pairs_per_s_median"] for r in runs["cached"])
            / statistics.mean(r["pairs_per_s_median"] for r in runs["exact"]),
            2,
        )

        train_samples = load_samples(data, splits=["train"])[:16]
        small, _ = load_synth_encoders(enc)
        result["view_fidelity"] = {
            "small_cnn_pretrained": view_fidelity(small, train_samples, tmp / "fid_small"),
            "vgg16_random_he_normal": view_fidelity(
                recipe_model(pcm=False).visual_encoder.eval(), train_samples[:6], tmp / "fid_vgg"
            ),
        }
        result["float16_storage"] = fp16_effect(
            run_config(enc, 1, args.seeds[0], cached=True), train_samples, tmp / "fp16"
        )
    if not args.no_vgg:
        result["vgg16_full_size_step"] = {
            "batch_size": args.vgg_batch,
            "weights": "random init: the speed does not depend on the values",
            **vgg16_step_speed(args.vgg_batch, args.vgg_steps),
        }
    comparison = result["comparison"]
    exact_ciou = statistics.mean(r["ciou@0.5"] for r in runs["exact"])
    untrained = result.get("reference", {}).get("untrained", {}).get("ciou@0.5")
    # Two runs that learned nothing agree for the wrong reason: no verdict unless exact training learned.
    learned = (
        untrained is not None
        and exact_ciou - untrained > NOISE_FACTOR * comparison["standard_error_of_delta"]
    )
    if not learned:
        result["statement"] = (
            "inconclusive: exact training did not beat the untrained model by more than the noise here, so "
            "agreement with it says nothing; rerun with more scenes or epochs"
        )
    else:
        result["statement"] = "recommended only if within noise: " + (
            "the cached run's cIoU@0.5 is within noise of exact training here, so --cache-visual is a usable "
            "speed mode on this setting"
            if comparison["within_noise"]
            else "the cached run's cIoU@0.5 is NOT within noise of exact training here: not recommended; "
            "train exactly"
        )
    result["load_avg_1min_after"] = round(os.getloadavg()[0], 2)
    report("feature_cache", result, record=not args.no_record)


if __name__ == "__main__":
    main()
