"""``sspl evaluate``: one evaluator for the field's protocols, with the trivial baselines beside every number.

Maps come from any checkpoint ``sspl.load`` reads (ours or the official SSPL files); scores come from
:func:`sspl.metrics.evaluate_maps` with the benchmark's :class:`~sspl.metrics.Protocol`. The run fails if
the number of evaluated samples differs from the dataset size, listing what is missing, and by default
when clips of the split failed to prepare (the number would then not be the benchmark's).
"""

from __future__ import annotations

import csv
import io
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..data.annotations import BUNDLED_ANNOTATIONS, load_annotations, subset_annotations
from ..data.datasets import PreparedDataset, load_samples
from ..data.lists import canonical_id, test_ids
from ..data.manifest import ANNOTATIONS_NAME, ManifestRow, read_manifest
from ..data.preprocess import Preprocess
from ..errors import DataError
from ..io import atomic_save_json, atomic_write_bytes, atomic_write_text, output_folder_blocked
from ..metrics import BASELINE_KINDS, BENCHMARKS, EvalResult, Protocol, baseline_maps, evaluate_maps
from ..metrics_extended import ExtendedResult
from ..outputs import LOCK_NAME, check_output_folder, output_lock, remove_stale_temps, remove_written
from ..paths import is_plain_name
from .extended import (
    SAVED_MAPS_NAME,
    Scores,
    extended_coverage,
    map_confidences,
    saved_maps_bytes,
    score_extended,
    with_silent_pairs,
)
from .loading import load
from .overlays import write_overlays
from .swap import run_swaps, swap_trials

__all__ = ["EvaluationReport", "benchmark_coverage", "compute_maps", "evaluate", "evaluated_notes"]

log = logging.getLogger(__name__)

#: ``--upsample`` choices: OpenCV's half-pixel bilinear (SSPL, LVS) or ``align_corners=True`` (EZ-VSL).
UPSAMPLING = ("half-pixel", "align-corners")
#: ``--protocol`` choices: the standard protocol's threshold policies, or the extended protocol
#: (:mod:`sspl.metrics_extended`), which binarises maps by ``--threshold``.
PROTOCOLS = ("fixed", "median", "absolute", "extended")


@dataclass
class EvaluationReport:
    """What ``evaluate`` wrote: the model's result, the baselines' and the report dict (under the extended
    protocol ``result`` and ``baselines`` are the visible clips' standard results, and ``extended`` the
    extended protocol's result)."""

    result: EvalResult
    baselines: dict[str, EvalResult]
    report: dict
    out_dir: Path
    extended: ExtendedResult | None = None


def _collate(items: list[dict]) -> list[dict]:
    """A batch as sub-batches of equal spectrogram shapes: one, unless the ``stft`` front end meets clips of
    different sample rates (``1 x 257 x T``, ``T`` set by the rate), which are then run apart, as the
    released models' own evaluation (batch size 1) runs them."""
    shapes = list(dict.fromkeys(tuple(it["spect"].shape) for it in items))
    groups = [[it for it in items if tuple(it["spect"].shape) == shape] for shape in shapes]
    return [
        {
            "id": [it["id"] for it in group],
            "frame": torch.stack([it["frame"] for it in group]),
            "spect": torch.stack([it["spect"] for it in group]),
        }
        for group in groups
    ]


@torch.inference_mode()
def compute_maps(
    model: torch.nn.Module,
    dataset: PreparedDataset,
    *,
    batch_size: int = 32,
    num_workers: int = 0,
    device: torch.device | None = None,
    cycles: int | None = None,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Raw localization maps of every clip of an evaluation dataset (id -> ``h x w`` float32)."""
    device = device or next(model.parameters()).device
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=_collate)
    maps: dict[str, np.ndarray] = {}
    kwargs = {"cycles": cycles} if cycles is not None else {}
    iterator = loader
    if progress:
        from tqdm import tqdm

        iterator = tqdm(loader, desc="localize", unit="batch", dynamic_ncols=True)
    for batches in iterator:
        for batch in batches:
            out = model.localize(batch["frame"].to(device), batch["spect"].to(device), **kwargs)
            maps.update(zip(batch["id"], out.float().cpu().numpy()))
    return maps


def _annotations_for(benchmark: str, data_dir: Path, annotations: str | os.PathLike | None):
    if annotations is not None:
        return load_annotations(annotations)
    if (data_dir / ANNOTATIONS_NAME).is_file():
        return load_annotations(data_dir)
    if benchmark in BUNDLED_ANNOTATIONS:
        return load_annotations(benchmark)
    raise DataError(
        f"{data_dir}: no {ANNOTATIONS_NAME} and no bundled boxes for benchmark {benchmark!r}; pass --annotations"
    )


def _annotations_source(benchmark: str, data_dir: Path, annotations: str | os.PathLike | None) -> str:
    if annotations is not None:
        return str(annotations)
    if (data_dir / ANNOTATIONS_NAME).is_file():
        return str(data_dir / ANNOTATIONS_NAME)
    return f"the bundled {benchmark} boxes"


def _check_box_format(gt: dict, benchmark: str, source: str) -> None:
    """Boxes in another benchmark's format mean the wrong ``--benchmark``: say which one fits."""
    expected = BENCHMARKS[benchmark].box_format
    found = sorted({getattr(a, "box_format", expected) for a in gt.values()} - {expected})
    if found:
        fits = [name for name, p in BENCHMARKS.items() if p.box_format in found]
        raise DataError(
            f"{source}: boxes are {' and '.join(map(repr, found))}, but --benchmark {benchmark} expects "
            f"{expected!r}; evaluate with --benchmark {' or '.join(fits)}"
        )


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Fail before the model pass, not after it, when ``out_dir`` cannot take this evaluation's outputs:
    it cannot be a folder, nothing can be written there, or it holds files and ``overwrite`` is off."""
    blocked = output_folder_blocked(out_dir)
    if blocked:
        raise DataError(blocked)
    check_output_folder(out_dir, "--out")
    held = _held(out_dir)
    if held and not overwrite:
        shown = ", ".join(held[:5]) + (f", ... ({len(held)} in all)" if len(held) > 5 else "")
        raise FileExistsError(
            f"{out_dir}: not empty (holds {shown}); choose another --out, or pass --overwrite to replace an "
            "earlier evaluation's outputs (other files are left alone)"
        )


def _held(out_dir: Path) -> list[str]:
    """What ``out_dir`` holds, but its lock file (sorted names)."""
    if not out_dir.is_dir():
        return []
    return sorted(p.name for p in out_dir.iterdir() if p.name != LOCK_NAME)


#: the files every evaluation writes (``overlays/<id>.png`` beside them, for the ids of per_sample.csv)
_OUTPUTS = (
    "report.json",
    "per_sample.csv",
    "success_curve.png",
    "index.html",
    "swap_per_sample.csv",
    SAVED_MAPS_NAME,
)


def _earlier_outputs(out_dir: Path) -> list[str]:
    """The files an earlier evaluation wrote in ``out_dir``: :data:`_OUTPUTS` and the overlays of the ids
    its ``per_sample.csv`` lists (an id that is not a plain file name names no overlay of ours)."""
    try:
        with open(out_dir / "per_sample.csv", newline="", encoding="utf-8") as f:
            ids = [row[0] for row in list(csv.reader(f))[1:] if row]
    except (OSError, UnicodeDecodeError, csv.Error):  # none, or not one an evaluation wrote
        ids = []
    return [*_OUTPUTS, *(f"overlays/{i}.png" for i in ids if is_plain_name(i))]


def _replace_earlier(out_dir: Path, overwrite: bool) -> None:
    """Under the output lock: check ``out_dir`` again (another command may have written since the first
    check), then delete an earlier evaluation's outputs and the temporary files a killed one left."""
    _check_out_dir(out_dir, overwrite)
    earlier = _earlier_outputs(out_dir)
    overlays = [Path(name).name for name in earlier if name.startswith("overlays/")]
    # per_sample.csv last: while it is there, an interrupted clean-up still knows the overlays
    remove_written(out_dir, [name for name in earlier if name != "per_sample.csv"])
    remove_written(out_dir, ["per_sample.csv"])
    remove_stale_temps(out_dir, _OUTPUTS)
    remove_stale_temps(out_dir / "overlays", overlays)


def _pick_split(data_dir: Path, split: str | None) -> list:
    if split is None:
        return load_samples(data_dir)
    samples = load_samples(data_dir, splits=[split])
    if not samples and split == "test":
        everything = load_samples(data_dir)
        if everything and all(s.split == "" for s in everything):
            log.info("%s has no split column values: evaluating all %d clips", data_dir, len(everything))
            return everything
    if not samples:
        raise DataError(f"{data_dir}: no finished clips in split {split!r}")
    return samples


def _not_prepared(data_dir: Path, split: str | None) -> list[ManifestRow]:
    """The split's manifest rows that did not finish preparing or were refused (sorted by id)."""
    rows = read_manifest(data_dir)
    if split is not None and any(r.split == split for r in rows):
        rows = [r for r in rows if r.split == split]
    return sorted((r for r in rows if not r.ok), key=lambda r: r.id)


def _check_cycles(model: torch.nn.Module, cycles: int | None) -> None:
    if cycles is None:
        return
    if cycles < 0:
        raise DataError(f"cycles must be >= 0, got {cycles}")
    pcm = getattr(model, "pcm", None)
    if pcm is None:
        raise DataError(
            f"--cycles {cycles}: the checkpoint's model has no PCM, so there are no cycles to choose"
        )
    if cycles > pcm.cycles:
        raise DataError(
            f"--cycles {cycles}: the checkpoint's model has {pcm.cycles} PCM cycles (0..{pcm.cycles})"
        )


def _per_sample_csv(result: EvalResult, baselines: dict[str, EvalResult]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["id", "ciou", *[f"ciou_{k}" for k in baselines]])
    for sample_id, value in result.cious.items():
        writer.writerow(
            [sample_id, f"{value:.6f}", *[f"{b.cious[sample_id]:.6f}" for b in baselines.values()]]
        )
    return buf.getvalue()


def _check_options(
    benchmark: str, protocol: str | None, threshold: str | None, upsample: str, save_overlays: int
) -> None:
    """Refuse unknown options before any work."""
    if benchmark not in BENCHMARKS:
        raise DataError(f"unknown benchmark {benchmark!r}; choose from {', '.join(BENCHMARKS)}")
    if protocol is not None and protocol not in PROTOCOLS:
        raise DataError(f"unknown protocol {protocol!r}; choose {', '.join(PROTOCOLS)}")
    if threshold is not None and (protocol != "extended" or threshold not in ("fixed", "median", "absolute")):
        raise DataError(
            f"threshold {threshold!r}: choose fixed, median or absolute, with --protocol extended only"
        )
    if upsample not in UPSAMPLING:
        raise DataError(f"unknown upsampling {upsample!r}; choose {' or '.join(UPSAMPLING)}")
    if save_overlays < 0:
        raise DataError(f"save_overlays (--save-overlays) must be at least 0, got {save_overlays}")


def threshold_policy(protocol: str | None, threshold: str | None, model: torch.nn.Module) -> str:
    """How maps are binarised: the given threshold (extended protocol) or standard protocol, else the
    model's own ``threshold_protocol`` (``median`` for EZ-VSL), else ``fixed``."""
    own = getattr(model, "threshold_protocol", "fixed")
    if protocol == "extended":
        return threshold or own
    return protocol or own


def _score_standard(maps, gt, proto, ids: list[str], confidences) -> Scores:
    """The model and the trivial maps under the standard protocol (``confidences`` unused)."""
    result = evaluate_maps(maps, gt, proto, expected_count=len(ids))
    baselines = {
        kind: evaluate_maps(baseline_maps(ids, kind), gt, proto, expected_count=len(ids), warn_empty=False)
        for kind in BASELINE_KINDS
    }
    floors = {k: {b.ciou_name: b.ciou_success_rate, "auc": b.auc} for k, b in baselines.items()}
    return Scores(result, baselines, result.summary(), floors, _per_sample_csv(result, baselines), result)


def evaluate(
    checkpoint: str | os.PathLike,
    data_dir: str | os.PathLike,
    benchmark: str,
    out_dir: str | os.PathLike,
    *,
    protocol: str | None = None,
    upsample: str = "half-pixel",
    split: str | None = "test",
    annotations: str | os.PathLike | None = None,
    batch_size: int = 32,
    num_workers: int = 0,
    device: str | torch.device | None = None,
    cycles: int | None = None,
    save_overlays: int = 0,
    allow_missing: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    overlay_colorbar: bool = True,
    threshold: str | None = None,
    save_maps: bool = False,
    swap: bool = False,
    swap_seed: int = 0,
) -> EvaluationReport:
    """Evaluate a checkpoint on a prepared test set.

    Args:
        checkpoint: run directory, checkpoint file, or official SSPL checkpoint folder.
        data_dir: prepared folder of the test clips.
        benchmark: ``flickr``, ``vggss``, ``avsbench`` or ``synth`` (sets the GT rule and box format).
        out_dir: where ``report.json``, ``per_sample.csv`` and the plots go.
        protocol: threshold policy, ``fixed`` (min-max >= 0.5: SSPL), ``median`` (LVS/HardWay/EZ-VSL) or
            ``absolute`` (the map as it is >= 0.5: SLAVC's fixed-scale scores);
            or ``extended``: the extended protocol (:mod:`sspl.metrics_extended`: AP, max-F1 and precision
            over every clip, cIoU and AUC over those with a visible source), which accepts clips without
            boxes (and, for Flickr and VGG-SS, knows the extended sets' clips without a visible source).
            ``None``: the model's ``threshold_protocol`` (``median`` for EZ-VSL), else ``fixed``.
        upsample: ``half-pixel`` (OpenCV's bilinear: SSPL, LVS) or ``align-corners`` (EZ-VSL), how the
            map is upsampled to 224 before thresholding.
        split: manifest split to evaluate (``None``: every clip).
        annotations: boxes file/folder; default: the prepared folder's ``annotations.json``, else the
            bundled boxes of the benchmark.
        cycles: PCM cycles at test time (paper Fig. 6); default all.
        save_overlays: draw this many samples' maps with boxes and the evaluated mask, on the frame the
            model read (:mod:`sspl.engine.overlays`: a released model's source-size frame where the folder has it).
        overlay_colorbar: give those overlays a colour bar.
        allow_missing: evaluate the prepared clips even if others of the split failed to prepare; they
            are listed under ``not_evaluated`` in the report (default: refuse, naming them). A clip whose
            manifest row is refused (an id that is not a plain file name, a path leading outside the
            folder) counts as one that failed, its reason logged with the manifest line.
        overwrite: write into a non-empty ``out_dir``, deleting an earlier evaluation's outputs there
            (its reports, plots, page and the overlays of the clips its ``per_sample.csv`` lists) and
            nothing else; without it a non-empty ``out_dir`` is refused before any work.
        threshold: how the extended protocol binarises maps, ``fixed`` (default) or ``median``; the
            standard protocol takes it from ``protocol`` (giving another is an error).
        save_maps: also write ``maps.npz`` (raw maps, evaluated masks, confidences, cIoU, boxes; see
            :func:`sspl.engine.extended.saved_maps_bytes`), so the run can be scored again elsewhere.
        swap: also run the audio-swap test (:mod:`sspl.engine.swap`) on the split: its rates go to the
            report's ``swap`` section, its trials to ``swap_per_sample.csv``. Needs per-object boxes
            (``scenes.json``), checked before any map.
        swap_seed: seeds the swap test's choice of distractor and donor clip.

    Returns:
        An :class:`EvaluationReport`.

    Raises:
        DataError: unusable data or options, clips that failed to prepare (unless ``allow_missing``),
            or clips without a map or boxes (each names the clips).
        FileExistsError: ``out_dir`` is not empty and ``overwrite`` is off.
        PermissionError: nothing can be written in ``out_dir`` (checked before any work).
        OutputInUseError: another command is writing into ``out_dir``.
    """
    _check_options(benchmark, protocol, threshold, upsample, save_overlays)
    extended = protocol == "extended"
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    _check_out_dir(out_dir, overwrite)
    samples = _pick_split(data_dir, split)
    not_prepared = _check_prepared(data_dir, split, allow_missing)
    gt = _annotations_for(benchmark, data_dir, annotations)
    if extended and benchmark in ("flickr", "vggss"):
        gt = with_silent_pairs(benchmark, gt, BENCHMARKS[benchmark].box_format)
    gt = subset_annotations(gt, [s.id for s in samples], allow_empty=extended)
    _check_box_format(gt, benchmark, _annotations_source(benchmark, data_dir, annotations))
    swaps = swap_trials(data_dir, samples, seed=swap_seed) if swap else None  # before any map: fail early
    model, preprocess = load(checkpoint, device=device)
    policy = threshold_policy(protocol, threshold, model)
    _check_cycles(model, cycles)
    dataset = PreparedDataset(
        samples,
        mode="eval",
        image_size=preprocess.image_size,
        audio_frontend=preprocess.audio_frontend,
        test_transform=preprocess.test_transform,
    )
    maps = compute_maps(
        model, dataset, batch_size=batch_size, num_workers=num_workers, cycles=cycles, progress=progress
    )
    missing = sorted({s.id for s in samples} - set(maps))
    if missing:
        raise DataError(f"{len(missing)} clip(s) produced no map: {', '.join(missing[:10])}")
    proto = replace(BENCHMARKS[benchmark].with_threshold(policy), align_corners=upsample == "align-corners")
    ids = [s.id for s in samples]
    confidences = map_confidences(model, maps) if extended or save_maps else {}
    scored = (score_extended if extended else _score_standard)(maps, gt, proto, ids, confidences)
    result, baselines = scored.result, scored.baselines
    swapped = swaps and run_swaps(model, swaps, proto, preprocess, batch_size, num_workers, cycles)
    coverage = _coverage(benchmark, ids, data_dir)
    report = {
        **scored.summary,
        "benchmark": benchmark,
        "checkpoint": str(checkpoint),
        "data": str(data_dir),
        "split": split,
        "pcm_cycles": cycles,
        "not_evaluated": not_prepared,
        "benchmark_coverage": coverage,
        "baselines": scored.baseline_summary,
        **({"extended_coverage": extended_coverage(benchmark, ids)} if extended else {}),
        **({"swap": swapped.summary()} if swapped else {}),
    }
    blob = saved_maps_bytes(ids, maps, confidences, gt, proto, scored.scores) if save_maps else None
    with output_lock(out_dir, "sspl evaluate"):
        _replace_earlier(out_dir, overwrite)
        # per_sample.csv first: it lists the ids whose overlays a rerun with --overwrite may remove
        atomic_write_text(out_dir / "per_sample.csv", scored.per_sample)
        if blob is not None:
            atomic_write_bytes(out_dir / SAVED_MAPS_NAME, blob)
        if swapped:
            atomic_write_text(out_dir / "swap_per_sample.csv", swapped.to_csv())
        _plots(
            out_dir,
            result,
            baselines,
            maps,
            samples,
            gt,
            proto,
            save_overlays,
            benchmark,
            report,
            overlay_colorbar,
            preprocess,
        )
        atomic_save_json(out_dir / "report.json", report)  # last: its presence means the evaluation finished
    return EvaluationReport(result, baselines, report, out_dir, scored.extended)


def _check_prepared(data_dir: Path, split: str | None, allow_missing: bool) -> list[str]:
    """The ids of the split's clips that failed to prepare; refused unless ``allow_missing``."""
    failed = _not_prepared(data_dir, split)
    not_prepared = [r.id for r in failed]
    if not_prepared and not allow_missing:
        why = next((f", e.g. {r.error}" for r in failed if r.error), "")
        raise DataError(
            f"{data_dir}: {len(not_prepared)} clip(s) of the split failed to prepare "
            f"({', '.join(not_prepared[:10])}){why}; a score without them is not the benchmark's. Prepare "
            "them again, or pass --allow-missing to evaluate the rest (they are listed in report.json)"
        )
    return not_prepared


def _coverage(benchmark: str, ids: list[str], data_dir: Path) -> dict | None:
    """:func:`benchmark_coverage`, with a warning when the paper's test clips are not all there."""
    coverage = benchmark_coverage(benchmark, ids)
    if coverage and coverage["evaluated_sspl_test_ids"] < coverage["sspl_test_ids"]:
        log.warning(
            "%s: %d of the %d %s test clips the paper evaluates are in this evaluation; the score is not "
            "the benchmark's and cannot be compared with published numbers",
            data_dir,
            coverage["evaluated_sspl_test_ids"],
            coverage["sspl_test_ids"],
            benchmark,
        )
    return coverage


def benchmark_coverage(benchmark: str, ids: list[str]) -> dict | None:
    """How much of a benchmark's test set a list of clip ids covers (Flickr and VGG-SS; else None).

    Returns:
        ``test_ids`` / ``sspl_test_ids``: the sizes of the full test set and of the subset the SSPL paper
        evaluates (Flickr 250 / 249, VGG-SS 5,158 / 4,692); ``evaluated_test_ids`` /
        ``evaluated_sspl_test_ids``: how many of each are among ``ids`` (VGG-Sound starts padded or not).
    """
    if benchmark not in ("flickr", "vggss"):
        return None
    have = {canonical_id(i) for i in ids}
    full, sspl = test_ids(benchmark, "full"), test_ids(benchmark, "sspl")
    return {
        "test_ids": len(full),
        "evaluated_test_ids": sum(canonical_id(t) in have for t in full),
        "sspl_test_ids": len(sspl),
        "evaluated_sspl_test_ids": sum(canonical_id(t) in have for t in sspl),
    }


def evaluated_notes(report: dict, protocol: Protocol) -> list[str]:
    """What an evaluation scored, in words: the checkpoint, the data and split, the sample count and the
    protocol (the head of its page)."""
    skipped = len(report.get("not_evaluated") or [])
    threshold = {
        "fixed": f"a fixed threshold of {protocol.threshold_value:g} on the min-max normalised map",
        "median": "the median of each map as its threshold",
    }.get(protocol.threshold, f"a threshold of {protocol.threshold_value:g} on the map's own scores")
    return [
        f"Checkpoint: {report['checkpoint']}.",
        f"Data: {report['data']}, split {report['split'] or 'all'}: {report['num_samples']} samples evaluated"
        + (f", {skipped} that failed to prepare left out." if skipped else "."),
        f"Protocol ({report['benchmark']}): maps upsampled to {protocol.size} x {protocol.size} "
        f"({'align-corners' if protocol.align_corners else 'half-pixel'} bilinear), masked with {threshold}; "
        f"ground truth: the {protocol.rule} of the boxes ({protocol.box_format}); a sample counts as localized "
        f"when its cIoU is at least {protocol.ciou_threshold:g} (cIoU@{protocol.ciou_threshold:g}); AUC: the "
        f"area under the success rate over cIoU thresholds 0 to 1 in steps of {protocol.curve_step:g}.",
    ]


def _plots(
    out_dir,
    result,
    baselines,
    maps,
    samples,
    gt,
    proto,
    save_overlays: int,
    benchmark: str,
    report: dict,
    colorbar: bool,
    preprocess: Preprocess,
) -> None:
    from .. import viz
    from ..io import atomic_save_image

    curves = {
        "model": result.success_curve,
        **{f"{k} (baseline)": b.success_curve for k, b in baselines.items()},
    }
    plot = viz.success_curves_plot(curves, step=proto.curve_step, title=f"{benchmark}: success rate vs cIoU")
    atomic_save_image(out_dir / "success_curve.png", plot)
    if save_overlays <= 0:
        return
    drawn = samples[:save_overlays]
    images = write_overlays(out_dir, drawn, maps, gt, result.cious, proto, preprocess, colorbar)
    table = [{"": "model", "ciou@0.5": result.ciou_success_rate, "auc": result.auc}] + [
        {"": f"{k} (baseline)", "ciou@0.5": b.ciou_success_rate, "auc": b.auc} for k, b in baselines.items()
    ]
    viz.write_html_report(
        out_dir / "index.html",
        f"Evaluation on {benchmark}",
        [
            {"title": "What was evaluated", "notes": evaluated_notes(report, proto)},
            {"title": "Metrics", "table": table, "images": [("success_curve.png", "success rate vs cIoU")]},
            {
                "title": "Samples",
                "images": images,
                "notes": "Heat map of the raw similarity map; white outline: the evaluated mask; green: ground truth.",
            },
        ],
    )
