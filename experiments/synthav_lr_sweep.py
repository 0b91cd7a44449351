"""Learning-rate sweep of SSPL on SynthAV, read on the validation split only.

Table S1's rates were tuned for ImageNet VGG16 features on SoundNet-Flickr; the SynthAV encoders are small
CNNs whose features have another scale. This sweep trains SSPL (w/ or w/o PCM) at a few multiples of those
rates on the data and encoders that ``synthav_learning.py`` prepared in ``OUT/<preset>``, and prints each
run's best validation cIoU@0.5 and AUC. The test split is never read here: a rate picked from this table is
then run once through ``synthav_learning.py`` (variant ``*_lrx<multiple>``). ``--augmentations`` trains with
other Table S2 augmentations than the default crop + horizontal flip (the paper's Table 4 ablation, on the
validation split).

    python experiments/synthav_lr_sweep.py --out runs/synthav --preset easy --multiples 0.1 10
    python experiments/synthav_lr_sweep.py --out runs/synthav --preset easy --multiples 10 --augmentations crop

Resumable: a finished run is read back, not retrained. Writes ``OUT/<preset>/lr_sweep.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from sspl.data.transforms import AUGMENTATIONS, DEFAULT_AUGMENTATIONS
from sspl.engine.checkpoint import CHECKPOINT_DIR, LAST
from sspl.engine.synthav import synthav_config
from sspl.engine.train import train
from sspl.io import atomic_save_json

log = logging.getLogger("synthav_lr_sweep")

DEFAULT_EPOCHS = 20  # synthav_learning.py's schedule


def run_name(
    pcm: bool, multiple: float, epochs: int, augmentations: tuple[str, ...] = DEFAULT_AUGMENTATIONS
) -> str:
    """``pcm_x10``; a schedule other than the experiments' 20 epochs is named too: ``pcm_x1_e48``, and
    augmentations other than the default: ``nopcm_x10_aug-crop-hflip-translate``."""
    name = f"{'pcm' if pcm else 'nopcm'}_x{multiple:g}"
    if epochs != DEFAULT_EPOCHS:
        name += f"_e{epochs}"
    if tuple(augmentations) != DEFAULT_AUGMENTATIONS:
        name += "_aug-" + "-".join(augmentations)
    return name


def sweep_run(
    out: Path,
    preset: str,
    pcm: bool,
    multiple: float,
    epochs: int,
    augmentations: tuple[str, ...] = DEFAULT_AUGMENTATIONS,
) -> dict:
    """Trains one rate multiple (or reads it back) and returns its validation summary."""
    config = synthav_config(
        out / preset / "encoders",
        pcm=pcm,
        epochs=epochs,
        lr_scale=multiple,
        overrides=[f"data.augmentations=[{','.join(augmentations)}]"],
    )
    run = out / preset / "lr_sweep" / run_name(pcm, multiple, epochs, augmentations)
    history_path = run / "history.json"
    done = history_path.is_file() and max(r["epoch"] for r in json.loads(history_path.read_text())) >= epochs
    if not done:
        resume = (run / CHECKPOINT_DIR / LAST).is_file()
        train(config, out / preset / "data", run, resume=resume, overwrite=not resume, progress=False)
    val = [r for r in json.loads(history_path.read_text()) if "val_ciou@0.5" in r]
    best = max(val, key=lambda r: r["val_ciou@0.5"])
    return {
        "multiple": multiple,
        "augmentations": list(augmentations),
        "lr": config.optim.lr,
        "lr_head": config.optim.lr_head,
        "best_val_ciou@0.5": best["val_ciou@0.5"],
        "best_val_auc": best["val_auc"],
        "best_epoch": best["epoch"],
        "untrained_val_ciou@0.5": val[0]["val_ciou@0.5"] if val[0]["epoch"] == 0 else None,
        "last_val_ciou@0.5": val[-1]["val_ciou@0.5"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("runs/synthav"), help="synthav_learning.py's --out")
    parser.add_argument("--preset", default="easy", choices=["easy", "distractors"])
    parser.add_argument("--pcm", action="store_true", help="sweep SSPL w/ PCM (default: w/o PCM)")
    parser.add_argument("--multiples", type=float, nargs="+", default=[0.1, 10.0], help="of Table S1's rates")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    parser.add_argument(
        "--augmentations",
        nargs="+",
        default=list(DEFAULT_AUGMENTATIONS),
        choices=AUGMENTATIONS,
        help="Table S2 augmentations to train with (default: crop hflip, the paper's)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if not (args.out / args.preset / "encoders").is_dir():
        parser.error(f"{args.out / args.preset}: no prepared set; run experiments/synthav_learning.py first")
    path = args.out / args.preset / "lr_sweep.json"
    rows = json.loads(path.read_text()) if path.is_file() else {}
    for multiple in args.multiples:
        augmentations = tuple(args.augmentations)
        key = run_name(args.pcm, multiple, args.epochs, augmentations)
        log.info("%s: %s", args.preset, key)
        rows[key] = sweep_run(args.out, args.preset, args.pcm, multiple, args.epochs, augmentations)
        atomic_save_json(path, rows)
    print("| run | lr | lr_head | best val cIoU@0.5 | best val AUC | best epoch | last val cIoU@0.5 |")
    print("|---|---|---|---|---|---|---|")
    for key, r in sorted(rows.items()):
        print(
            f"| {key} | {r['lr']:.1e} | {r['lr_head']:.1e} | {r['best_val_ciou@0.5']:.3f} | "
            f"{r['best_val_auc']:.3f} | {r['best_epoch']} | {r['last_val_ciou@0.5']:.3f} |"
        )


if __name__ == "__main__":
    main()
