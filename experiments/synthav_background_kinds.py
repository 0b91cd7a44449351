"""SSPL on SynthAV with encoders whose pretraining splits the background by kind.

The default SynthAV visual encoder learns the background as one class, so every background cell of every
scene maps to one feature cluster: a query that lands there finds "the background" in all scenes, and SSPL's
objective is met as well there as on the sounding object (docs/results.md, section 3). ImageNet features,
the paper's, have no background class but do tell one kind of background from another (grass, sky, water).
This script pretrains the encoders with the background split into SynthAV's three kinds (``sspl
synth-pretrain --background-kinds``: noise, gradient, stripes), then trains SSPL w/o PCM on them with the
settings picked before on validation (10x Table S1's rates, crop + flip) and model selection on the
validation split, and evaluates the selected checkpoint once on the test split, beside the oracle query,
the untrained model and the trivial maps on the same encoders. Same sets as ``synthav_learning.py`` (it is
imported: same data folders, the same per-run diagnostics).

    python experiments/synthav_background_kinds.py --out runs/synthav --epochs 80
    python experiments/synthav_background_kinds.py --out runs/synthav --epochs 80 --presets easy --train-seed 1

Resumable like ``synthav_learning.py``. Writes ``OUT/background_kinds.json`` and prints the table.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from sspl.data.synth import synth_config
from sspl.engine.synthav import oracle_result, prepare_synthav
from sspl.io import atomic_save_json

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthav_learning import TRAIN_SEED, experiment_parser, parse_experiment_args, run_variant, seed_suffix

log = logging.getLogger("synthav_background_kinds")

VARIANT = "sspl_nopcm_lrx10"  # the rate picked on validation by synthav_lr_sweep.py


def run_preset(out: Path, preset: str, epochs: int, pretrain_epochs: int, seed: int = TRAIN_SEED) -> dict:
    data, enc = out / preset / "data", out / preset / "encoders_kinds"
    synth = synth_config(preset, num=800, seed=0, pretrain_num=600)
    encoders = prepare_synthav(data, enc, synth, pretrain_epochs=pretrain_epochs, background_kinds=True)
    run = out / preset / "kinds" / f"{VARIANT}_e{epochs}{seed_suffix(seed)}"
    row = run_variant(data, enc, run, VARIANT, epochs, [], swap=preset == "distractors", seed=seed)
    report = json.loads((run / "test_eval" / "report.json").read_text())
    oracle = oracle_result(enc, data, "test")
    return {
        **{k: v for k, v in row.items() if k != "history"},
        "val_curve": [(r["epoch"], r["val_ciou@0.5"]) for r in row["history"] if "val_ciou@0.5" in r],
        "oracle": {"ciou@0.5": oracle.ciou_success_rate, "auc": oracle.auc},
        "oracle_val_ciou@0.5": oracle_result(enc, data, "val").ciou_success_rate,
        "trivial": report["baselines"],
        "encoders": encoders["metrics"],
        "epochs": epochs,
    }


def main() -> None:
    args = parse_experiment_args(experiment_parser(__doc__, epochs=80))
    path = args.out / "background_kinds.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    for preset in args.presets:
        log.info("%s: %s on background-kind encoders, %d epochs", preset, VARIANT, args.epochs)
        key = f"{preset}_e{args.epochs}{seed_suffix(args.train_seed)}"
        results[key] = run_preset(args.out, preset, args.epochs, args.pretrain_epochs, args.train_seed)
        atomic_save_json(path, results)
    print("| preset | cIoU@0.5 | AUC | untrained | oracle | / oracle | best epoch | train s | trivial best |")
    print("|---|---|---|---|---|---|---|---|---|")
    for key, r in results.items():
        trivial = max(v["ciou@0.5"] for v in r["trivial"].values())
        print(
            f"| {key} | {r['ciou@0.5']:.3f} | {r['auc']:.3f} | {r['untrained']['ciou@0.5']:.3f} | "
            f"{r['oracle']['ciou@0.5']:.3f} | {r['ciou@0.5'] / r['oracle']['ciou@0.5']:.2f} | {r['best_epoch']} | "
            f"{r['train_seconds'] or 0:.0f} | {trivial:.3f} |"
        )


if __name__ == "__main__":
    main()
