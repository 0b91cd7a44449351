"""Does the map follow the sound? Every method this project trains on SynthAV easy / distractors / extended,
scored by cIoU@0.5 and AUC (scenes with a visible source), AP and max-F1 (the extended protocol: every test
scene, those without a visible source included) and the audio-swap follow rate, trivial maps beside.

For each preset the set is generated and its small encoders pretrained (the SynthAV pipeline,
:mod:`sspl.engine.synthav`, resumable: finished sets, encoders and runs are kept), each variant trained with
model selection on the validation split (cIoU on its scenes with a visible source) and its selected
checkpoint scored once on the test split:

- ``ciou@0.5`` / ``auc``: the ``synth`` protocol on the test scenes whose sound has a visible source (all
  of them in ``easy`` and ``distractors``; half of them in ``extended``), the numbers ``sspl evaluate``
  gives on a set without hidden sources;
- ``ap`` / ``max_f1``: read from the ``report.json`` of ``sspl evaluate --protocol extended`` (the extended
  evaluator of issue 23) on the whole test split; "n/a" while that evaluator is not in this checkout;
- ``follows``: the audio-swap test (:mod:`sspl.engine.swap`, the one behind ``sspl evaluate --swap``): the
  share of trials where the map is on the sounding object with its own sound and on a silent distractor
  with that distractor's sound; beside it the shares that move to the distractor / stay. ``easy`` scenes
  have no distractor, so no trial.

The trivial maps (whole image, centre box, random) get the same columns; they do not hear the sound, so
their follow rate measures the test itself (0 expected).

    # the full table (hours on 2 CPU cores; run it on a free machine)
    python experiments/synthav_extended_table.py --out runs/synthav_extended
    # one small configuration, to check the script (minutes)
    python experiments/synthav_extended_table.py --out /tmp/xt --presets extended --variants sspl_nopcm \\
        --scenes 80 --pretrain-scenes 60 --epochs 1 --pretrain-epochs 1

Writes ``OUT/extended_table.json`` (rows are added, so the table can be filled by several invocations) and
prints the Markdown table.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sspl.data.annotations import load_annotations, subset_annotations
from sspl.data.datasets import PreparedDataset, load_samples
from sspl.data.synth import load_scenes, synth_config
from sspl.engine.evaluate import compute_maps, evaluate
from sspl.engine.loading import load
from sspl.engine.swap import audio_swap_test
from sspl.engine.synthav import prepare_synthav, synthav_config, train_synthav
from sspl.errors import DataError
from sspl.io import atomic_save_json
from sspl.metrics import BENCHMARKS, evaluate_maps
from sspl.trivial_maps import BASELINE_KINDS, baseline_maps

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthav_learning import LABELS, TRAIN_SEED, VARIANTS

log = logging.getLogger("synthav_extended_table")

PRESETS = ("easy", "distractors", "extended")
#: the project's methods at their SynthAV settings (synthav_learning.py's variants of the same name)
TABLE_VARIANTS = ("sspl_pcm", "sspl_nopcm", "attention", "hardway", "ezvsl", "slavc", "fnac")


class TrivialLocalizer(nn.Module):
    """A trivial map (:func:`sspl.trivial_maps.baseline_maps`) as a localizer: it never hears the sound.
    The random map is drawn afresh for every frame and sound (seeded by the call count)."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))  # compute_maps reads the device from it
        self.kind, self.calls = kind, 0

    def localize(self, frames: torch.Tensor, spect: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        ids = [f"{self.calls}_{i}" for i in range(len(frames))]
        return torch.from_numpy(np.stack(list(baseline_maps(ids, self.kind).values())))


def visible_test_scores(run: Path, data: Path) -> dict:
    """cIoU@0.5 and AUC of the run and the trivial maps on the test scenes with a visible source."""
    scenes = load_scenes(data)
    samples = [s for s in load_samples(data, splits=["test"]) if scenes[s.id]["sounding"] is not None]
    ids = [s.id for s in samples]
    gt = subset_annotations(load_annotations(data), ids)
    model, preprocess = load(run)
    maps = compute_maps(model, PreparedDataset(samples, mode="eval", image_size=preprocess.image_size))
    protocol = BENCHMARKS["synth"]
    scores = {"model": evaluate_maps(maps, gt, protocol, expected_count=len(ids))}
    for kind in BASELINE_KINDS:
        scores[kind] = evaluate_maps(baseline_maps(ids, kind), gt, protocol, expected_count=len(ids))
    return {
        k: {"ciou@0.5": r.ciou_success_rate, "auc": r.auc, "scenes": r.num_samples} for k, r in scores.items()
    }


def extended_protocol_scores(run: Path, data: Path) -> dict:
    """``ap`` and ``max_f1`` of the run and the trivial maps from ``sspl evaluate --protocol extended``'s
    report.json (None where the extended evaluator is not in this checkout)."""
    try:
        report = evaluate(
            run,
            data,
            "synth",
            run / "test_eval_extended",
            protocol="extended",
            threshold="fixed",  # every method binarised alike, as the visible-scene columns (synth protocol)
            overwrite=True,
            progress=False,
        ).report
    except DataError as e:
        if "protocol" not in str(e):
            raise
        log.warning("no extended protocol here (%s): AP and max-F1 left out", e)
        return {}
    rows = {"model": report, **report.get("baselines", {})}
    return {k: {"ap": r.get("ap"), "max_f1": r.get("max_f1")} for k, r in rows.items()}


def swap_scores(model: str | Path | nn.Module, data: Path) -> dict | None:
    """The audio-swap rates on the test split (None when no scene has a distractor, as in ``easy``)."""
    try:
        s = audio_swap_test(model, data).summary()
    except DataError as e:
        log.info("no swap test: %s", e)
        return None
    return {k: s[k] for k in ("trials", "follows_sound", "to_distractor", "stays")}


def run_preset(out: Path, preset: str, args: argparse.Namespace, table: dict, path: Path) -> None:
    """Train and score every variant on one preset; the table is saved at ``path`` after each variant, so
    an interrupted invocation keeps what it scored (finished runs are reused by the next one)."""
    synth = synth_config(preset, num=args.scenes, seed=args.seed, pretrain_num=args.pretrain_scenes)
    data, enc = out / preset / "data", out / preset / "encoders"
    prepare_synthav(data, enc, synth, pretrain_epochs=args.pretrain_epochs)
    rows = table.setdefault(preset, {})
    subset = [f"data.max_train={args.max_train}"] if args.max_train else []
    for variant in args.variants:
        method, pcm, overrides, lr_scale = VARIANTS[variant]
        config = synthav_config(
            enc, method=method, pcm=pcm, epochs=args.epochs, seed=args.train_seed, lr_scale=lr_scale,
            overrides=[*overrides, *subset],
        )  # fmt: skip
        key = f"{variant}@{args.max_train}" if args.max_train else variant
        run = out / preset / (f"{variant}_e{args.epochs}" + (f"_n{args.max_train}" if args.max_train else ""))
        log.info("%s: %s", preset, key)
        train_synthav(config, data, run)
        visible = visible_test_scores(run, data)
        extended = extended_protocol_scores(run, data)
        rows[key] = {**visible["model"], **extended.get("model", {}), "swap": swap_scores(run, data)}
        for kind in BASELINE_KINDS:  # the same for every variant: written once per preset
            swap = swap_scores(TrivialLocalizer(kind), data)
            rows[f"trivial:{kind}"] = {**visible[kind], **extended.get(kind, {}), "swap": swap}
        rows[key]["epochs"] = args.epochs
        atomic_save_json(path, table)


def _label(key: str) -> str:
    """A row's name: the variant's label, with the training subset of ``--max-train`` runs."""
    if key.startswith("trivial:"):
        return f"{key.split(':')[1]} (trivial)"
    variant, _, max_train = key.partition("@")
    return LABELS[variant] + (f", {max_train} training scenes" if max_train else "")


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def markdown(table: dict) -> str:
    lines = []
    for preset in sorted(table, key=lambda p: PRESETS.index(p) if p in PRESETS else len(PRESETS)):
        rows = table[preset]
        # the methods in the table's order, then the trivial maps
        order = [*TABLE_VARIANTS, *(f"trivial:{kind}" for kind in BASELINE_KINDS)]
        rank = {k: (order.index(k.split("@")[0]), "@" in k) for k in rows}  # a subset run after its variant
        rows = {k: rows[k] for k in sorted(rows, key=rank.get)}
        lines += [
            f"### SynthAV `{preset}` (test split)",
            "",
            "| map | cIoU@0.5 | AUC | AP | max-F1 | swap: follows (to distractor / stays) |",
            "|---|---|---|---|---|---|",
        ]
        for key, r in rows.items():
            name = _label(key)
            s = r.get("swap")
            swap = f"{s['follows_sound']:.3f} ({s['to_distractor']:.3f} / {s['stays']:.3f})" if s else "-"
            lines.append(
                f"| {name} | {r['ciou@0.5']:.3f} | {r['auc']:.3f} | {_cell(r.get('ap'))} | "
                f"{_cell(r.get('max_f1'))} | {swap} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("runs/synthav_extended"))
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=PRESETS)
    parser.add_argument("--variants", nargs="+", default=list(TABLE_VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--scenes", type=int, default=800)
    parser.add_argument("--pretrain-scenes", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0, help="SynthAV generation seed")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--pretrain-epochs", type=int, default=5)
    parser.add_argument("--train-seed", type=int, default=TRAIN_SEED)
    parser.add_argument(
        "--max-train",
        type=int,
        help="train on this many of the training scenes (data.max_train; rows named so, runs in *_nN)",
    )
    args = parser.parse_args()
    if args.epochs < 1 or args.pretrain_epochs < 1 or (args.max_train is not None and args.max_train < 1):
        parser.error("--epochs, --pretrain-epochs and --max-train must be positive")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "extended_table.json"
    table = json.loads(path.read_text()) if path.is_file() else {}
    for preset in args.presets:
        run_preset(args.out, preset, args, table, path)
    print(markdown(table))


if __name__ == "__main__":
    main()
