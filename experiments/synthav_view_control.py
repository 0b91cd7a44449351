"""Control: does SSPL localize on SynthAV when the two views do not share their background?

docs/results.md (section 3) explains SSPL's miss on SynthAV by its views: under the paper's crop + flip, every
region's frozen features agree across the two views (cosine 0.995-0.999), the background as much as the
sounding object, so SSPL's negative-free objective is met wherever the map points. This script tests that
explanation by changing that one thing. View 1 is the usual augmented frame; view 2 is the same augmentation
draw applied to a copy of the frame whose background is redrawn (another kind or colours of SynthAV
background, every object pixel and the sound unchanged). Attention on the background now pools features that
differ across the views; attention on an object does not. If the explanation is right, SSPL w/o PCM trained
this way localizes the sounding object. This is not the paper's method (its two views come from one frame):
it is a control, and its rows are never the SSPL result.

Everything else is ``synthav_learning.py``'s (imported): same data, encoders, seeds, epochs, model selection
on the validation split (cIoU@0.5 of the unchanged validation frames), one evaluation on the test split of
the unchanged test frames, and the same diagnostics, all measured with the paper's views (audio dependence
of the loss, where the mask lies, audio swap).

    python experiments/synthav_view_control.py --out runs/synthav
    python experiments/synthav_view_control.py --out runs/synthav --presets easy --variants sspl_nopcm --train-seed 1

Resumable: the redrawn frames and each finished run are kept. Writes ``OUT/view_control.json`` and prints the
table.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import torch

import sspl.engine.train as train_module
from sspl.data.datasets import PreparedDataset, Sample, sample_seed
from sspl.data.manifest import read_meta
from sspl.data.synth import (
    FRAME_SIZE,
    SynthConfig,
    encode_jpeg,
    load_scenes,
    render_background,
    render_scene,
    synth_config,
)
from sspl.engine.synthav import oracle_result
from sspl.errors import DataError
from sspl.io import atomic_save_json, atomic_write_bytes

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthav_learning import (
    TRAIN_SEED,
    experiment_parser,
    parse_experiment_args,
    prepare,
    run_variant,
    seed_suffix,
)

log = logging.getLogger("synthav_view_control")

VARIANTS = ["sspl_nopcm", "sspl_nopcm_lrx10"]  # Table S1's rates, and the rate picked on validation
ALT_STREAM = 7  # spawn key of the redrawn backgrounds: no SynthAV stream uses it
# view 2 is drawn for training and for the validation loss; the test frames are never touched
SPLITS = ("train", "val")


def redrawn_frame(config: SynthConfig, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Main scene ``index`` with its background redrawn: ``(frame, redrawn)``, both ``S x S x 3`` uint8.

    Object pixels are copied from the frame; the new background comes from its own seeded stream.
    """
    scene = render_scene(config, "main", index)
    rng = np.random.default_rng(np.random.SeedSequence(entropy=config.seed, spawn_key=(ALT_STREAM, index)))
    background, _ = render_background(rng, FRAME_SIZE)
    on_object = scene.masks.any(axis=0)
    redrawn = np.clip(np.round(background), 0, 255).astype(np.uint8)
    redrawn[on_object] = scene.image[on_object]
    return scene.image, redrawn


def write_redrawn(data: Path, out: Path) -> dict[str, Path]:
    """JPEGs of the redrawn frames of the train and val scenes of SynthAV set ``data``, in ``out``
    (kept when present). Returns ``id -> path``."""
    config = SynthConfig.from_json(read_meta(data)["synth"])
    scenes = load_scenes(data)
    paths, changed = {}, []
    for sid, scene in sorted(scenes.items()):
        if scene["split"] not in SPLITS:
            continue
        path = out / f"{sid}.jpg"
        if not path.is_file():
            frame, redrawn = redrawn_frame(config, int(sid.rsplit("_", 1)[1]))
            if (data / "frames" / f"{sid}.jpg").read_bytes() != encode_jpeg(frame):
                raise DataError(f"{data / 'frames' / sid}.jpg: differs from its render; regenerate {data}")
            changed.append(float(np.mean(np.any(frame != redrawn, axis=-1))))
            atomic_write_bytes(path, encode_jpeg(redrawn))
        paths[sid] = path
    if changed:
        log.info("redrew %d frames; mean share of pixels changed %.3f", len(changed), np.mean(changed))
    return paths


class RedrawnView2(PreparedDataset):
    """Training items whose ``frame_view2`` is the same augmentation draw as usual, of the redrawn frame."""

    def __init__(self, samples, *, redrawn: dict[str, Path], **kwargs) -> None:
        super().__init__(samples, **kwargs)
        if self.mode != "train" or self.visual_features is not None:
            raise ValueError("RedrawnView2 replaces pixel training views only")
        missing = [s.id for s in self.samples if s.id not in redrawn]
        if missing:
            raise DataError(f"no redrawn frame for {len(missing)} clips, e.g. {missing[:3]}")
        self.redrawn = redrawn

    def __getitem__(self, index: int) -> dict:
        item = super().__getitem__(index)
        sample = self.samples[index]
        alt = Sample(sample.id, self.redrawn[sample.id], sample.spect, sample.audio).load_frame()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, self.epoch, index))  # the draw of the usual views
            _, item["frame_view2"] = self.transform(alt)
        return item


def _trainer_datasets(redrawn: dict[str, Path]):
    """What the trainer builds instead of PreparedDataset: redrawn view 2 for its training views (the
    training set and the validation loss), the plain dataset for the frames it localizes."""

    def make(samples, *, mode: str = "train", **kwargs):
        if mode == "train":
            return RedrawnView2(samples, redrawn=redrawn, mode=mode, **kwargs)
        return PreparedDataset(samples, mode=mode, **kwargs)

    return make


def run_preset(
    out: Path, preset: str, variants: list[str], epochs: int, pretrain_epochs: int, seed: int = TRAIN_SEED
) -> dict:
    data, enc = prepare(out, preset, synth_config(preset, num=800, seed=0, pretrain_num=600), pretrain_epochs)
    redrawn = write_redrawn(data, out / preset / "view_control" / "frames_redrawn")
    oracle = oracle_result(enc, data, "test")
    rows = {}
    for variant in variants:
        run = out / preset / "view_control" / f"{variant}_e{epochs}{seed_suffix(seed)}"
        log.info(
            "%s: %s, view 2 with a redrawn background, %d epochs, seed %d", preset, variant, epochs, seed
        )
        with mock.patch.object(train_module, "PreparedDataset", _trainer_datasets(redrawn)):
            row = run_variant(data, enc, run, variant, epochs, [], swap=preset == "distractors", seed=seed)
        rows[variant] = {
            **{k: v for k, v in row.items() if k != "history"},
            "val_curve": [(r["epoch"], r["val_ciou@0.5"]) for r in row["history"] if "val_ciou@0.5" in r],
            "best_val_ciou@0.5": max(r["val_ciou@0.5"] for r in row["history"] if "val_ciou@0.5" in r),
        }
    return {"oracle": {"ciou@0.5": oracle.ciou_success_rate, "auc": oracle.auc}, "variants": rows}


def main() -> None:
    parser = experiment_parser(__doc__, epochs=20)
    parser.add_argument("--variants", nargs="+", default=VARIANTS, choices=VARIANTS)
    args = parse_experiment_args(parser)
    path = args.out / "view_control.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    for preset in args.presets:
        key = f"{preset}_e{args.epochs}{seed_suffix(args.train_seed)}"
        previous = results.get(key, {}).get("variants", {})
        results[key] = run_preset(
            args.out, preset, args.variants, args.epochs, args.pretrain_epochs, args.train_seed
        )
        results[key]["variants"] = {**previous, **results[key]["variants"]}
        atomic_save_json(path, results)
    print(
        "| preset | variant | test cIoU@0.5 | AUC | untrained | / oracle | best epoch (val) | train s "
        "| val loss own / another sound | mask on object / silent / background | swap: to distractor / stays |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for key, r in results.items():
        for variant, v in r["variants"].items():
            dep, place = v["audio_dependence"], v["map_placement"]
            swap = v.get("audio_swap")
            print(
                f"| {key} | {variant} | {v['ciou@0.5']:.3f} | {v['auc']:.3f} | {v['untrained']['ciou@0.5']:.3f} | "
                f"{v['ciou@0.5'] / r['oracle']['ciou@0.5']:.2f} | {v['best_epoch']} ({v['best_val_ciou@0.5']:.3f}) | "
                f"{v['train_seconds'] or 0:.0f} | {dep['loss_own_sound']:.4f} / {dep['loss_other_sound']:.4f} | "
                + " / ".join(f"{place[f'on_{k}']:.2f}" for k in ("sounding", "silent", "background"))
                + " | "
                + (
                    f"{swap['to_distractor_ciou@0.5']:.3f} / {swap['to_original_ciou@0.5']:.3f} |"
                    if swap
                    else " |"
                )
            )


if __name__ == "__main__":
    main()
