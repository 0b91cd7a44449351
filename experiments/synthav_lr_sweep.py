"""Learning-rate sweep of SSPL on SynthAV, read on the validation split only.

Table S1's rates were tuned for ImageNet VGG16 features on SoundNet-Flickr; the SynthAV encoders are small
CNNs whose features have another scale. This sweep trains SSPL (w/ or w/o PCM) at a few multiples of those
rates on the data and encoders that ``synthav_learning.py`` prepared in ``OUT/<preset>``, and prints each
run's best validation cIoU@0.5 and AUC. The test split is never read here: a rate picked from this table is
then run once through ``synthav_learning.py`` (variant ``*_lrx<multiple>``). ``--augmentations`` trains with
other Table S2 augmentations than the default crop + horizontal flip (the paper's Table 4 ablation, on the
validation split). ``--no-background-class`` trains on encoders pretrained without a background class
(``sspl synth-pretrain --no-background-class``, made in ``OUT/<preset>/encoders_nobg`` on first use) and
adds the oracle query's validation cIoU@0.5 on the encoders used, so runs on different encoders can be read
against their own ceiling. ``--scenes N`` trains on a larger set of the same preset and generation seed
(``OUT/<preset>/data_sN``, made on first use, same SynthAV-pretrained encoders) and reads its own
validation split: does more data help? (the paper trains on 10k-144k clips, the learning check on 560).
``--batch-size 256`` trains with the paper's minibatch (supplement B.2) instead of the experiments' 32.

    python experiments/synthav_lr_sweep.py --out runs/synthav --preset easy --multiples 0.1 10
    python experiments/synthav_lr_sweep.py --out runs/synthav --preset easy --multiples 10 --augmentations crop
    python experiments/synthav_lr_sweep.py --out runs/synthav --preset easy --multiples 10 --no-background-class
    python experiments/synthav_lr_sweep.py --out runs/synthav --preset easy --multiples 10 --scenes 3200
    python experiments/synthav_lr_sweep.py --out runs/synthav --preset easy --multiples 1 10 --batch-size 256 --epochs 100

Resumable by the SynthAV pipeline's rule (:mod:`sspl.engine.synthav`): a finished run trains no further.
Writes ``OUT/<preset>/lr_sweep.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path

from sspl.data.synth import SynthConfig, generate_synth
from sspl.data.transforms import AUGMENTATIONS, DEFAULT_AUGMENTATIONS
from sspl.engine.synthav import oracle_result, prepare_synthav, synthav_config, train_synthav
from sspl.io import atomic_save_json

log = logging.getLogger("synthav_lr_sweep")

DEFAULT_EPOCHS = 20  # synthav_learning.py's schedule
DEFAULT_BATCH_SIZE = 32  # synthav_learning.py's minibatch
PRETRAIN_EPOCHS = 5  # synthav_learning.py's default


def run_name(
    pcm: bool,
    multiple: float,
    epochs: int,
    augmentations: tuple[str, ...] = DEFAULT_AUGMENTATIONS,
    background_class: bool = True,
    scenes: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> str:
    """``pcm_x10``; a schedule other than the experiments' 20 epochs is named too: ``pcm_x1_e48``,
    augmentations other than the default: ``nopcm_x10_aug-crop-hflip-translate``, encoders pretrained
    without a background class: ``nopcm_x10_nobg``, a larger set: ``nopcm_x10_s3200`` and another
    minibatch: ``nopcm_x1_e100_b256``."""
    name = f"{'pcm' if pcm else 'nopcm'}_x{multiple:g}"
    if epochs != DEFAULT_EPOCHS:
        name += f"_e{epochs}"
    if tuple(augmentations) != DEFAULT_AUGMENTATIONS:
        name += "_aug-" + "-".join(augmentations)
    if not background_class:
        name += "_nobg"
    if scenes is not None:
        name += f"_s{scenes}"
    if batch_size != DEFAULT_BATCH_SIZE:
        name += f"_b{batch_size}"
    return name


def dataset(out: Path, preset: str, scenes: int | None) -> Path:
    """The set of ``synthav_learning.py`` (``OUT/<preset>/data``), or one of ``scenes`` scenes with its other
    settings (preset, seed, split fractions) made here on first use, without a pretraining split of its own
    (one scene: the generator needs one; the encoders stay those pretrained on the original set's split)."""
    base = out / preset / "data"
    if scenes is None:
        return base
    data = out / preset / f"data_s{scenes}"
    meta = json.loads((base / "meta.json").read_text())
    config = dataclasses.replace(SynthConfig.from_json(meta["synth"]), num=scenes, pretrain_num=1)
    generate_synth(data, config, progress=False)  # resumes, or returns at once when finished
    return data


def encoders(out: Path, preset: str, background_class: bool) -> Path:
    """The encoders of ``synthav_learning.py`` (``OUT/<preset>/encoders``), or ones pretrained on the same
    split without a background class (made here on first use)."""
    if background_class:
        return out / preset / "encoders"
    enc, data = out / preset / "encoders_nobg", out / preset / "data"
    synth = SynthConfig.from_json(json.loads((data / "meta.json").read_text())["synth"])
    prepare_synthav(data, enc, synth, pretrain_epochs=PRETRAIN_EPOCHS, background_class=False)
    return enc


def sweep_run(
    out: Path,
    preset: str,
    pcm: bool,
    multiple: float,
    epochs: int,
    augmentations: tuple[str, ...] = DEFAULT_AUGMENTATIONS,
    background_class: bool = True,
    scenes: int | None = None,
    data: Path | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> tuple[str, dict]:
    """Trains one rate multiple (or reads it back) and returns its :func:`run_name` and validation summary.
    ``data``: the set :func:`dataset` returned for ``scenes`` (made here when not given)."""
    enc = encoders(out, preset, background_class)
    data = data or dataset(out, preset, scenes)
    config = synthav_config(
        enc,
        pcm=pcm,
        epochs=epochs,
        batch_size=batch_size,
        lr_scale=multiple,
        overrides=[f"data.augmentations=[{','.join(augmentations)}]"],
    )
    name = run_name(pcm, multiple, epochs, augmentations, background_class, scenes, batch_size)
    log.info("%s: %s", preset, name)
    run = out / preset / "lr_sweep" / name
    history_path = run / "history.json"
    train_synthav(config, data, run)  # the pipeline's resume rule: a finished run trains no further
    val = [r for r in json.loads(history_path.read_text()) if "val_ciou@0.5" in r]
    best = max(val, key=lambda r: r["val_ciou@0.5"])
    return name, {
        "multiple": multiple,
        "augmentations": list(augmentations),
        "lr": config.optim.lr,
        "lr_head": config.optim.lr_head,
        "best_val_ciou@0.5": best["val_ciou@0.5"],
        "best_val_auc": best["val_auc"],
        "best_epoch": best["epoch"],
        "untrained_val_ciou@0.5": val[0]["val_ciou@0.5"] if val[0]["epoch"] == 0 else None,
        "last_val_ciou@0.5": val[-1]["val_ciou@0.5"],
        "background_class": background_class,
        "scenes": scenes,
        "batch_size": batch_size,
        "oracle_val_ciou@0.5": oracle_result(enc, data, "val").ciou_success_rate,
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
    parser.add_argument(
        "--no-background-class",
        dest="background_class",
        action="store_false",
        help="use encoders pretrained without a background class (OUT/<preset>/encoders_nobg)",
    )
    parser.add_argument(
        "--scenes",
        type=int,
        default=None,
        help="train and validate on a set of this many scenes (OUT/<preset>/data_sN; default: the 800 of "
        "synthav_learning.py)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help=f"training minibatch (default {DEFAULT_BATCH_SIZE}; the paper's is 256)",
    )
    args = parser.parse_args()
    if args.batch_size < 1:
        parser.error(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.scenes is not None and args.scenes < 10:
        parser.error(f"--scenes must be at least 10 (train, val and test splits), got {args.scenes}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if not (args.out / args.preset / "encoders").is_dir():
        parser.error(f"{args.out / args.preset}: no prepared set; run experiments/synthav_learning.py first")
    path = args.out / args.preset / "lr_sweep.json"
    rows = json.loads(path.read_text()) if path.is_file() else {}
    data = dataset(args.out, args.preset, args.scenes)  # once: checking a finished set reads every file
    for multiple in args.multiples:
        key, row = sweep_run(
            args.out,
            args.preset,
            args.pcm,
            multiple,
            args.epochs,
            tuple(args.augmentations),
            args.background_class,
            args.scenes,
            data,
            args.batch_size,
        )
        rows[key] = row
        atomic_save_json(path, rows)
    print(
        "| run | lr | lr_head | best val cIoU@0.5 | best val AUC | best epoch | last val cIoU@0.5 "
        "| oracle val cIoU@0.5 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for key, r in sorted(rows.items()):
        oracle = r.get("oracle_val_ciou@0.5")  # absent in rows of earlier versions of this script
        print(
            f"| {key} | {r['lr']:.1e} | {r['lr_head']:.1e} | {r['best_val_ciou@0.5']:.3f} | "
            f"{r['best_val_auc']:.3f} | {r['best_epoch']} | {r['last_val_ciou@0.5']:.3f} | "
            + ("" if oracle is None else f"{oracle:.3f}")
            + " |"
        )


if __name__ == "__main__":
    main()
