"""The extended protocol's part of ``sspl evaluate``: confidences, the clips without a visible source,
the per-sample table and the saved maps (``--save-maps``).

:mod:`sspl.engine.evaluate` computes the maps and writes the outputs; this module turns maps into the
extended protocol's numbers (:func:`sspl.metrics_extended.evaluate_extended`).

**Confidence, a property of the method.** A model may define ``map_confidence(maps) -> B`` on its own
``B x h x w`` :meth:`localize` maps (a torch tensor in, one confidence per map out); a model without it
gets :data:`DEFAULT_CONFIDENCE`, SLAVC's rule for a cosine map (:func:`sspl.metrics_extended.slavc_confidence`
with the range ``[-1, 1]``). SSPL, HardWay and the other cosine-map methods use the default; Attention's
maps are softmax weights and define their own (``docs/protocols.md`` gives each choice and why).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, NamedTuple

import numpy as np
import torch

from ..data.annotations import Annotation
from ..data.lists import silent_pairs
from ..metrics import BASELINE_KINDS, EvalResult, Protocol, baseline_maps
from ..metrics_extended import ExtendedResult, evaluate_extended, slavc_confidence

__all__ = [
    "BASELINE_CONFIDENCE",
    "DEFAULT_CONFIDENCE",
    "SAVED_MAPS_NAME",
    "Scores",
    "extended_baselines",
    "extended_coverage",
    "extended_per_sample_csv",
    "map_confidences",
    "saved_maps_bytes",
    "score_extended",
    "with_silent_pairs",
]

SAVED_MAPS_NAME = "maps.npz"
#: what a model without ``map_confidence`` gets: SLAVC's confidence of a cosine map
DEFAULT_CONFIDENCE = "slavc_confidence(maps, value_range=(-1, 1))"
#: the trivial maps' confidence under the extended protocol: every clip claims a visible source
BASELINE_CONFIDENCE = 1.0


def map_confidences(
    model: torch.nn.Module, maps: Mapping[str, np.ndarray], batch_size: int = 256
) -> dict[str, float]:
    """Each map's confidence by the model's ``map_confidence`` hook, else by :data:`DEFAULT_CONFIDENCE`.

    Maps are grouped by shape and sent in batches of ``batch_size`` (the hook sees ``B x h x w`` float32
    tensors on the CPU); the result does not depend on the batching.
    """
    hook: Callable[[torch.Tensor], Any] | None = getattr(model, "map_confidence", None)
    out: dict[str, float] = {}
    by_shape: dict[tuple[int, ...], list[str]] = {}
    for i, m in maps.items():
        by_shape.setdefault(np.shape(m), []).append(i)
    for ids in by_shape.values():
        for start in range(0, len(ids), batch_size):
            chunk = ids[start : start + batch_size]
            batch = torch.from_numpy(np.stack([np.asarray(maps[i], dtype=np.float32) for i in chunk]))
            with torch.inference_mode():
                values = hook(batch) if hook is not None else slavc_confidence(batch, (-1.0, 1.0))
            values = torch.as_tensor(values).detach().cpu().double().reshape(-1)
            if values.numel() != len(chunk):
                raise ValueError(f"map_confidence returned {values.numel()} values for {len(chunk)} maps")
            out.update(zip(chunk, values.tolist()))
    return out


def with_silent_pairs(
    benchmark: str, annotations: Mapping[str, Annotation], box_format: str
) -> dict[str, Annotation]:
    """The benchmark's boxes plus an annotation without boxes for each of its extended set's clips without
    a visible source (Extended Flickr-SoundNet / VGG-SS: :func:`sspl.data.lists.silent_pairs`)."""
    out = dict(annotations)
    for pair in silent_pairs(benchmark):
        out.setdefault(pair.id, Annotation(pair.id, np.zeros((0, 4)), box_format))
    return out


def extended_coverage(benchmark: str, ids: Sequence[str]) -> dict[str, int] | None:
    """How many of the extended set's clips without a visible source are evaluated (Flickr, VGG-SS)."""
    if benchmark not in ("flickr", "vggss"):
        return None
    pairs = {p.id for p in silent_pairs(benchmark)}
    return {"silent_pairs": len(pairs), "evaluated_silent_pairs": len(pairs & set(ids))}


def extended_baselines(
    baseline_maps_by_kind: Mapping[str, Mapping[str, np.ndarray]],
    annotations: Mapping[str, Any],
    protocol: Protocol,
) -> dict[str, ExtendedResult]:
    """The trivial maps under the extended protocol, each clip with confidence :data:`BASELINE_CONFIDENCE`
    (a detector that always answers "visible": its precision and F1 are the floor of a method's)."""
    return {
        kind: evaluate_extended(
            maps, annotations, dict.fromkeys(maps, BASELINE_CONFIDENCE), protocol, warn_empty=False
        )
        for kind, maps in baseline_maps_by_kind.items()
    }


def extended_per_sample_csv(result: ExtendedResult, baselines: Mapping[str, ExtendedResult]) -> str:
    """``id, ciou, confidence, n_boxes, area`` and the baselines' cIoU, one row per sample."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["id", "ciou", "confidence", "n_boxes", "area", *[f"ciou_{k}" for k in baselines]])
    for k, sample_id in enumerate(result.ids):
        writer.writerow(
            [
                sample_id,
                f"{result.cious[k]:.6f}",
                repr(float(result.confidences[k])),
                int(result.n_boxes[k]),
                f"{result.areas[k]:g}",
                *[f"{b.cious[k]:.6f}" for b in baselines.values()],
            ]
        )
    return buf.getvalue()


def saved_maps_bytes(
    ids: Sequence[str],
    maps: Mapping[str, np.ndarray],
    confidences: Mapping[str, float],
    annotations: Mapping[str, Any],
    protocol: Protocol,
    scores: EvalResult | ExtendedResult,
) -> bytes:
    """The ``--save-maps`` file: everything an outside evaluator needs to score the run again.

    Arrays (``N`` = samples, in the order of ``ids``): ``ids`` (str), ``raw_maps`` (``N x h x w`` float32,
    what the model returned), ``masks`` (the evaluated maps: the binarised ``size x size`` masks cIoU
    scores, bit-packed along the last axis: ``np.unpackbits(masks, axis=-1)[..., :size]``),
    ``confidence`` (float64), ``ciou`` (float64), ``n_boxes`` (int64), ``boxes`` (``sum(n_boxes) x 4``
    float64, each sample's boxes in turn, in ``box_format``), and ``protocol`` (JSON text of the protocol).
    """
    ids = list(ids)
    raw = np.stack([np.asarray(maps[i], dtype=np.float32) for i in ids])
    masks = np.packbits(protocol.mask(raw), axis=-1)
    boxes = [
        np.asarray(getattr(annotations[i], "boxes", annotations[i]), dtype=np.float64).reshape(-1, 4)
        for i in ids
    ]
    if isinstance(scores, ExtendedResult):
        by_id = dict(zip(scores.ids, scores.cious.tolist()))
    else:
        by_id = scores.cious
    cious = [by_id[i] for i in ids]
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        ids=np.array(ids, dtype=str),
        raw_maps=raw,
        masks=masks,
        confidence=np.array([confidences[i] for i in ids], dtype=np.float64),
        ciou=np.array(cious, dtype=np.float64),
        n_boxes=np.array([len(b) for b in boxes], dtype=np.int64),
        boxes=np.concatenate(boxes) if boxes else np.zeros((0, 4)),
        protocol=np.array(json.dumps({**protocol.describe(), "box_format": protocol.box_format})),
    )
    return buf.getvalue()


class Scores(NamedTuple):
    """One protocol's scores of an evaluation, in the shapes ``sspl evaluate`` writes them.

    Attributes:
        result: the model's standard result (under the extended protocol: the visible samples' curve and
            numbers, with every sample's cIoU), for the plots.
        baselines: the trivial maps' standard results, likewise.
        summary: the report's metrics.
        baseline_summary: the report's ``baselines`` entry.
        per_sample: the text of ``per_sample.csv``.
        scores: what ``--save-maps`` records the cIoU of.
        extended: the extended result (None under the standard protocol).
    """

    result: EvalResult
    baselines: dict[str, EvalResult]
    summary: dict[str, Any]
    baseline_summary: dict[str, dict[str, Any]]
    per_sample: str
    scores: EvalResult | ExtendedResult
    extended: ExtendedResult | None = None


def score_extended(
    maps: Mapping[str, np.ndarray],
    annotations: Mapping[str, Any],
    protocol: Protocol,
    ids: Sequence[str],
    confidences: Mapping[str, float],
) -> Scores:
    """The model and the trivial maps (:func:`extended_baselines`) under the extended protocol."""
    result = evaluate_extended(maps, annotations, confidences, protocol, expected_count=len(ids))
    floors = extended_baselines({k: baseline_maps(ids, k) for k in BASELINE_KINDS}, annotations, protocol)
    every = dict(zip(result.ids, result.cious.tolist()))
    return Scores(
        result=replace(result.visible, cious=every),
        baselines={
            k: replace(b.visible, cious=dict(zip(b.ids, b.cious.tolist()))) for k, b in floors.items()
        },
        summary=result.summary(),
        baseline_summary={
            k: {
                b.visible.ciou_name: b.visible.ciou_success_rate,
                "auc": b.visible.auc,
                **{m: b.main[m] for m in ("ap", "max_f1", "precision")},
            }
            for k, b in floors.items()
        },
        per_sample=extended_per_sample_csv(result, floors),
        scores=result,
        extended=result,
    )
