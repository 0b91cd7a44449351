"""Shown to learn: SSPL and its comparisons on SynthAV with SynthAV-pretrained frozen encoders.

For each SynthAV preset (``easy``: the sounding object alone; ``distractors``: 2-4 objects of distinct
categories), this script generates the set, pretrains the small encoders on its separate pretraining split,
scores the oracle query and the untrained model, trains each variant with model selection on the
validation split (the trainer keeps ``best.pt`` by validation cIoU@0.5), and evaluates the selected
checkpoint once on the test split. Optionally (``--negatives``) it runs the paper's Figure 2 experiment:
the contrastive baseline with all in-batch negatives vs. without same-class negatives, on a set whose
distractors may share the sounding object's category.

Everything is resumable, by the one rule of the SynthAV pipeline (:mod:`sspl.engine.synthav`): rerunning
keeps finished sets and encoders, resumes runs (a finished one trains no further, one of other settings
starts over) and scores every run again (the evaluations and diagnostics always describe the run in the
folder).

    python experiments/synthav_learning.py --out runs/synthav            # everything (~1.5 h on 2 cores)
    python experiments/synthav_learning.py --out runs/synthav --presets easy --variants sspl_nopcm

Runs are added to ``OUT/results.json``, so the table can be filled by several invocations (cheap variants
first, then the PCM ones).

Every trained variant also gets two diagnostics on the validation split: SSPL's loss with each scene's own
sound vs another scene's, and where the evaluated mask lies (sounding object, silent objects, background),
overall and per sounding category.

The released methods (``ezvsl``, ``slavc``, ``fnac``; issue 22) train as their official scripts train:
both small encoders trained from their SynthAV-pretrained weights (the official code fine-tunes the
ImageNet ResNet-18 and trains the audio one), Adam at the official 1e-4 with a constant rate, no weight
decay (FNAC: 1e-4), the official method options (tau 0.03, dim 512, dropouts 0.9 on the image map for
SLAVC and FNAC, momentum 0.999, FNAC's 5 warm-up epochs and weights 100), batch 32 and 20 epochs as every
SynthAV variant. Their maps are the audio-visual maps without object-guided localization
(``method_options.ogl: false``): OGL's object prior is the ImageNet ResNet-18 (always, in this project as in
their test code), which the SynthAV setting does not have; the table measures what the methods learn from
the sound. Their rates were not rescaled for SynthAV (no validation sweep yet).
One step at batch 32 costs 0.55 (EZ-VSL), 0.95 (SLAVC) and 0.6 (FNAC) CPU seconds on the 2-core CPU
(SSPL w/o PCM: 0.5), so a 20-epoch run of 800 scenes trains in a few CPU minutes.

Writes ``OUT/results.json`` (every number of docs/results.md), ``OUT/<preset>_learning_curves.png`` and
``OUT/<preset>_success_curves.png``, and prints the Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch
from torch.utils.data import default_collate

from sspl.data.datasets import PreparedDataset, load_samples
from sspl.data.synth import synth_config
from sspl.engine.checkpoint import find_checkpoint, load_checkpoint, restore_model
from sspl.engine.evaluate import evaluate
from sspl.engine.pretrain import ENCODERS_JSON_NAME
from sspl.engine.swap import audio_swap_test
from sspl.engine.synthav import (
    evaluate_synthav,
    evaluate_untrained,
    map_placement,
    oracle_result,
    prepare_synthav,
    resumable,
    synthav_config,
    train_synthav,
)
from sspl.io import atomic_save_image, atomic_save_json
from sspl.models.methods import get_method
from sspl.viz import learning_curves_plot, success_curves_plot

#: the official EZ-VSL / SLAVC / FNAC optimisation on the small encoders (both trained, Adam 1e-4)
RELEASED_METHOD_TRAINING = [
    "model.train_visual=true",
    "model.train_audio=true",
    "optim.optimizer=adam",
    "optim.lr=1e-4",
    "optim.weight_decay=0",
    "optim.schedule=constant",
    "method_options.ogl=false",  # OGL's object prior is ImageNet's ResNet-18: nothing SynthAV-trained
]
#: name -> (method, pcm, extra overrides, multiple of Table S1's learning rates)
VARIANTS = {
    "sspl_pcm": ("sspl", True, [], 1.0),
    "sspl_nopcm": ("sspl", False, [], 1.0),
    "sspl_pcm_nostopgrad": ("sspl", True, ["model.stop_grad=false"], 1.0),
    "sspl_nopcm_nostopgrad": ("sspl", False, ["model.stop_grad=false"], 1.0),
    "sspl_nopcm_softmax": ("sspl", False, ["model.scaling=softmax"], 1.0),
    # Table S1's rates times a multiple, picked on the validation split by experiments/synthav_lr_sweep.py
    "sspl_nopcm_lrx0.1": ("sspl", False, [], 0.1),
    "sspl_nopcm_lrx10": ("sspl", False, [], 10.0),
    "sspl_pcm_lrx10": ("sspl", True, [], 10.0),
    # + colour jitter (Table S2), picked on the validation split by synthav_lr_sweep.py --augmentations
    "sspl_nopcm_lrx10_jitter": ("sspl", False, ["data.augmentations=[crop,hflip,color_jitter]"], 10.0),
    "attention": ("attention", False, ["optim.lr=1e-3"], 1.0),
    "hardway": ("hardway", False, ["optim.lr=1e-3"], 1.0),
    # the released methods on the small SynthAV encoders, both trained as their official scripts train
    # theirs, at the official optimiser settings: Adam 1e-4, constant rate; FNAC with weight decay 1e-4
    # (its train_*.sh); maps without OGL (see RELEASED_METHOD_TRAINING)
    "ezvsl": ("ezvsl", False, RELEASED_METHOD_TRAINING, 1.0),
    "slavc": ("slavc", False, RELEASED_METHOD_TRAINING, 1.0),
    "fnac": ("fnac", False, [*RELEASED_METHOD_TRAINING, "optim.weight_decay=1e-4"], 1.0),
}
TRAIN_SEED = 1234  # synthav_config's default
#: what a plain run trains (w/ PCM without stop-grad costs as much as w/ PCM; ask for it by name)
DEFAULT_VARIANTS = ["sspl_nopcm", "sspl_nopcm_nostopgrad", "attention", "hardway", "sspl_pcm"]
LABELS = {
    "sspl_pcm": "SSPL w/ PCM",
    "sspl_nopcm": "SSPL w/o PCM",
    "sspl_pcm_nostopgrad": "SSPL w/ PCM, w/o stop-grad",
    "sspl_nopcm_nostopgrad": "SSPL w/o PCM, w/o stop-grad",
    "sspl_nopcm_softmax": "SSPL w/o PCM, softmax scaling (Table 5)",
    "sspl_nopcm_lrx0.1": "SSPL w/o PCM, Table S1 rates x 0.1",
    "sspl_nopcm_lrx10": "SSPL w/o PCM, Table S1 rates x 10",
    "sspl_pcm_lrx10": "SSPL w/ PCM, Table S1 rates x 10",
    "sspl_nopcm_lrx10_jitter": "SSPL w/o PCM, Table S1 rates x 10, + colour jitter",
    "attention": "Attention (contrastive)",
    "hardway": "HardWay (contrastive, hard negatives)",
    "ezvsl": "EZ-VSL (multiple-instance contrastive)",
    "slavc": "SLAVC (two projections, momentum targets)",
    "fnac": "FNAC (EZ-VSL + false-negative-aware terms)",
}

log = logging.getLogger("synthav_learning")


def _scores(result) -> dict:
    return {"ciou@0.5": result.ciou_success_rate, "auc": result.auc, "curve": list(result.success_curve)}


def prepare(out: Path, name: str, synth, pretrain_epochs: int) -> tuple[Path, Path]:
    """The set ``OUT/<name>/data`` and its encoders ``OUT/<name>/encoders`` (the SynthAV pipeline's first
    steps, :func:`sspl.engine.synthav.prepare_synthav`)."""
    data, enc = out / name / "data", out / name / "encoders"
    prepare_synthav(data, enc, synth, pretrain_epochs=pretrain_epochs)
    return data, enc


@torch.no_grad()
def audio_dependence(run: Path, data: Path, split: str = "val") -> dict:
    """Does the SSPL objective need the right sound? Its loss on two augmented views of each ``split`` scene
    (eval mode, the selected checkpoint) with the scene's own sound and with another scene's (the batch's
    sounds shifted by one). Equal losses mean the objective is met whatever the sound, so nothing in it
    pushes the map towards the sounding object."""
    model, config = restore_model(load_checkpoint(find_checkpoint(run)))
    method = get_method(config.method)
    items = PreparedDataset(
        load_samples(data, splits=[split]),
        mode="train",
        augmentations=config.data.augmentations,
        image_size=config.data.image_size,
        seed=0,
    )
    batch = default_collate([items[i] for i in range(len(items))])
    matched, _ = method.loss(model, batch, config)
    shifted, _ = method.loss(model, {**batch, "spect": batch["spect"].roll(1, dims=0)}, config)
    return {
        "split": split,
        "scenes": len(items),
        "loss_own_sound": float(matched),
        "loss_other_sound": float(shifted),
    }


def label(key: str) -> str:
    """``sspl_nopcm`` -> its table label; ``sspl_nopcm_seed7`` (another training seed) -> label + seed."""
    variant, _, seed = key.partition("_seed")
    return f"{LABELS[variant]}, training seed {seed}" if seed else LABELS[variant]


def run_variant(
    data: Path,
    enc: Path,
    run: Path,
    variant: str,
    epochs: int,
    extra: list[str],
    swap: bool = False,
    seed: int = TRAIN_SEED,
) -> dict:
    method, pcm, overrides, lr_scale = VARIANTS[variant]
    config = synthav_config(
        enc,
        method=method,
        pcm=pcm,
        epochs=epochs,
        seed=seed,
        lr_scale=lr_scale,
        overrides=[*overrides, *extra],
    )
    seconds_path = run / "train_seconds.json"
    resumed = resumable(config, run)
    tic = time.perf_counter()
    train_synthav(config, data, run)
    if not (resumed and seconds_path.is_file()):  # a resumed finished run trains nothing: keep its time
        atomic_save_json(seconds_path, {"seconds": time.perf_counter() - tic, "resumed": resumed})
    evaluate_synthav(
        config,
        data,
        enc,
        run,
        eval_dir=run / "test_eval",
        untrained_checkpoint=run / "untrained.pt",  # this variant at its seeded initialisation
        untrained_eval_dir=run / "untrained_test_eval",
    )
    report = json.loads((run / "test_eval" / "report.json").read_text())
    untrained = json.loads((run / "untrained_test_eval" / "report.json").read_text())
    history = json.loads((run / "history.json").read_text())
    row = {
        "ciou@0.5": report["ciou@0.5"],
        "auc": report["auc"],
        "curve": report["success_curve"],
        "untrained": {"ciou@0.5": untrained["ciou@0.5"], "auc": untrained["auc"]},
        "best_epoch": max((r for r in history if "val_ciou@0.5" in r), key=lambda r: r["val_ciou@0.5"])[
            "epoch"
        ],
        "train_seconds": json.loads(seconds_path.read_text())["seconds"],
        "history": history,
    }
    # the diagnostics, like every evaluation of the pipeline, score the run now in the folder
    if swap:  # does the map follow the sound? (scenes with distractors only)
        swap = audio_swap_test(run, data).summary()  # the same test as `sspl evaluate --swap`
        row["audio_swap"] = {
            "scenes": swap["trials"],
            "to_distractor_ciou@0.5": swap["to_distractor"],
            "to_original_ciou@0.5": swap["stays"],
            "follows_sound": swap["follows_sound"],
        }
        atomic_save_json(run / "audio_swap.json", row["audio_swap"])
    if method == "sspl":
        row["audio_dependence"] = audio_dependence(run, data)
        atomic_save_json(run / "audio_dependence.json", row["audio_dependence"])
    # where the mask lies, per sounding category (validation split)
    row["map_placement"] = {"split": "val", **map_placement(run, data, "val")}
    atomic_save_json(run / "map_placement.json", row["map_placement"])
    if method == "hardway":  # LVS reports the median threshold; give both
        m = evaluate(
            run, data, "synth", run / "test_eval_median", protocol="median", overwrite=True, progress=False
        )
        row["median_protocol"] = {"ciou@0.5": m.report["ciou@0.5"], "auc": m.report["auc"]}
    return row


def run_preset(out: Path, preset: str, args: argparse.Namespace) -> dict:
    synth = synth_config(preset, num=args.scenes, seed=args.seed, pretrain_num=args.pretrain_scenes)
    data, enc = prepare(out, preset, synth, args.pretrain_epochs)
    encoders = json.loads((enc / ENCODERS_JSON_NAME).read_text())["metrics"]
    oracle = oracle_result(enc, data, "test")
    untrained_dir = out / preset / "untrained"
    evaluate_untrained(
        synthav_config(enc, pcm=True), data, untrained_dir / "sspl_pcm.pt", untrained_dir / "eval"
    )
    u = json.loads((untrained_dir / "eval" / "report.json").read_text())
    result = {
        "synth": synth.to_json(),
        "encoders": encoders,
        "oracle": _scores(oracle),
        "untrained_sspl_pcm": {"ciou@0.5": u["ciou@0.5"], "auc": u["auc"], "curve": u["success_curve"]},
        "trivial": u["baselines"],
        "variants": {},
    }
    for variant in args.variants:
        # the default training seed keeps the plain name; others are separate runs beside it
        key = variant + seed_suffix(args.train_seed)
        log.info("%s: %s", preset, key)
        result["variants"][key] = run_variant(
            data,
            enc,
            out / preset / key,
            variant,
            args.epochs,
            [],
            swap=preset == "distractors",
            seed=args.train_seed,
        )
    return result


def run_negatives(out: Path, args: argparse.Namespace) -> dict:
    """Figure 2 of the paper on SynthAV: in-batch negatives that share the anchor's category are false
    negatives; excluding them (labels known) is the paper's 'w/o false negatives' case."""
    synth = synth_config(
        "distractors", num=args.scenes, seed=args.seed, pretrain_num=args.pretrain_scenes, share_category=True
    )
    data, enc = prepare(out, "shared_category", synth, args.pretrain_epochs)
    rows = {}
    for policy in ("all", "exclude-same-class"):
        run = out / "shared_category" / f"attention_{policy}"
        rows[policy] = run_variant(
            data, enc, run, "attention", args.epochs, [f"method_options.negatives={policy}"]
        )
    return {"synth": synth.to_json(), "oracle": _scores(oracle_result(enc, data, "test")), "attention": rows}


def plots(out: Path, preset: str, result: dict) -> None:
    histories = {label(v): r["history"] for v, r in result["variants"].items()}
    if histories:
        atomic_save_image(
            out / f"{preset}_learning_curves.png",
            learning_curves_plot(
                histories,
                references={"oracle query (test)": result["oracle"]["ciou@0.5"]},
                title=f"SynthAV {preset}: validation cIoU@0.5",
            ),
        )
    curves = {label(v): r["curve"] for v, r in result["variants"].items()}
    curves["untrained"] = result["untrained_sspl_pcm"]["curve"]
    curves["oracle query"] = result["oracle"]["curve"]
    atomic_save_image(
        out / f"{preset}_success_curves.png", success_curves_plot(curves, title=f"SynthAV {preset}: test")
    )


def placement_markdown(preset: str, variants: dict) -> list[str]:
    """Where each variant's evaluated mask lies on the validation split, overall and per sounding category
    (the share of the mask on the sounding object's box)."""
    placed = {v: row["map_placement"] for v, row in variants.items() if "map_placement" in row}
    if not placed:
        return []
    categories = sorted({c for p in placed.values() for c in p["by_category"]})
    lines = [
        f"#### SynthAV `{preset}`: where the mask lies (validation split, share of the mask)",
        "",
        "| map | on sounding object | on silent objects | on background | mask / frame | "
        + " | ".join(categories)
        + " |",
        "|---|---|---|---|---|" + "---|" * len(categories),
    ]
    for v, p in placed.items():
        per_category = [
            f"{p['by_category'][c]['on_sounding']:.2f}" if c in p["by_category"] else "" for c in categories
        ]
        lines.append(
            f"| {label(v)} | {p['on_sounding']:.2f} | {p['on_silent']:.2f} | {p['on_background']:.2f} | "
            f"{p['mask_area']:.2f} | " + " | ".join(per_category) + " |"
        )
    return [*lines, ""]


def markdown(results: dict) -> str:
    lines = []
    for preset, r in results.get("presets", {}).items():
        oracle = r["oracle"]["ciou@0.5"]
        lines += [
            f"### SynthAV `{preset}` (test split, {r['synth']['num']} scenes in all)",
            "",
            "| map | cIoU@0.5 | AUC | untrained cIoU@0.5 | / oracle | best epoch | train s | swap: to distractor / stays | val loss: own / another sound |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for v, row in r["variants"].items():
            swap = row.get("audio_swap")
            swap_cell = (
                f"{swap['to_distractor_ciou@0.5']:.3f} / {swap['to_original_ciou@0.5']:.3f}" if swap else ""
            )
            dep = row.get("audio_dependence")
            dep_cell = f"{dep['loss_own_sound']:.4f} / {dep['loss_other_sound']:.4f}" if dep else ""
            lines.append(
                f"| {label(v)} | {row['ciou@0.5']:.3f} | {row['auc']:.3f} | {row['untrained']['ciou@0.5']:.3f} | "
                + (f"{row['ciou@0.5'] / oracle:.2f} | " if oracle > 0 else "- | ")
                + f"{row['best_epoch']} | {row['train_seconds'] or float('nan'):.0f} | {swap_cell} | {dep_cell} |"
            )
            if "median_protocol" in row:
                m = row["median_protocol"]
                lines.append(
                    f"| {label(v)}, median threshold | {m['ciou@0.5']:.3f} | {m['auc']:.3f} | | | | | | |"
                )
        lines.append(f"| oracle query | {oracle:.3f} | {r['oracle']['auc']:.3f} | | 1.00 | | | | |")
        for kind, b in r["trivial"].items():
            lines.append(f"| {kind} (trivial) | {b['ciou@0.5']:.3f} | {b['auc']:.3f} | | | | | | |")
        lines.append("")
        lines += placement_markdown(preset, r["variants"])
    if "negatives" in results:
        n = results["negatives"]
        lines += [
            "### False negatives (paper Fig. 2): Attention on distractors that may share the category",
            "",
            "| negatives | cIoU@0.5 | AUC | untrained cIoU@0.5 | best epoch |",
            "|---|---|---|---|---|",
        ]
        for policy, row in n["attention"].items():
            lines.append(
                f"| {policy} | {row['ciou@0.5']:.3f} | {row['auc']:.3f} | {row['untrained']['ciou@0.5']:.3f} | "
                f"{row['best_epoch']} |"
            )
        lines.append(f"| oracle query | {n['oracle']['ciou@0.5']:.3f} | {n['oracle']['auc']:.3f} | | |")
        lines.append("")
    return "\n".join(lines)


def experiment_parser(doc: str, epochs: int) -> argparse.ArgumentParser:
    """The options of every SynthAV experiment script: ``--out``, ``--presets``, ``--epochs``,
    ``--pretrain-epochs`` and ``--train-seed``; read them with :func:`parse_experiment_args`."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/synthav"))
    parser.add_argument(
        "--presets", nargs="+", default=["easy", "distractors"], choices=["easy", "distractors"]
    )
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--pretrain-epochs", type=int, default=5)
    parser.add_argument(
        "--train-seed",
        type=int,
        default=TRAIN_SEED,
        help=f"SSPL training seed (default {TRAIN_SEED}; runs of other seeds are named ..._seedN)",
    )
    return parser


def parse_experiment_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    args = parser.parse_args()
    if args.epochs < 1 or args.pretrain_epochs < 1:
        parser.error("--epochs and --pretrain-epochs must be positive")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    return args


def seed_suffix(seed: int) -> str:
    """``""`` for the default training seed, else ``_seedN``: how runs and result keys name the seed."""
    return "" if seed == TRAIN_SEED else f"_seed{seed}"


def main() -> None:
    parser = experiment_parser(__doc__, epochs=20)
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS))
    parser.add_argument("--negatives", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--scenes", type=int, default=800)
    parser.add_argument("--pretrain-scenes", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0, help="SynthAV generation seed")
    args = parse_experiment_args(parser)
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    results.update({"torch": torch.__version__, "threads": torch.get_num_threads()})
    results.setdefault("presets", {})
    for preset in args.presets:
        previous = results["presets"].get(preset, {}).get("variants", {})
        results["presets"][preset] = run_preset(args.out, preset, args)
        # variants of earlier invocations stay (one table, filled by several runs of the script)
        results["presets"][preset]["variants"] = {**previous, **results["presets"][preset]["variants"]}
        plots(args.out, preset, results["presets"][preset])
        atomic_save_json(results_path, results)
    if args.negatives:
        results["negatives"] = run_negatives(args.out, args)
        atomic_save_json(results_path, results)
    print(markdown(results))


if __name__ == "__main__":
    main()
