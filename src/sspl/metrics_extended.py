"""The extended protocol: does the map say *whether* the sound has a visible source, not only where?

Mo & Morgado (NeurIPS 2022, "A Closer Look at Weakly-Supervised Audio-Visual Source Localization")
extend Flickr-SoundNet and VGG-SS with clips whose sound has no visible source (a frame paired with
another clip's sound, or an off-screen sound) and score every method as a detector: each sample gets
a *confidence* that a sounding object is visible, and a detection counts as correct only if the
sample has a visible source and the map localizes it (cIoU >= 0.5). The numbers are those of SLAVC's
``utils.EvaluatorFull`` (github.com/stoneMo/SLAVC), reproduced here exactly (goldens made by running
it: ``tests/data/extended/``):

- per sample: the cIoU of the binarised map (:func:`sspl.metrics.evaluate_maps`; 0 for a clip without a box,
  whose cIoU no metric reads), the number of boxes (0: no visible source), the ground-truth area
  (pixels of the ``224 x 224`` GT map, Flickr consensus pixels counting 1/2) and the confidence;
- ``precision``: with every sample detected, the fraction of samples that are visible *and* localized
  (:func:`precision_recall` at a confidence threshold below every confidence);
- ``ap``: the area under the precision-recall curve swept over the confidences
  (:func:`average_precision`, with SLAVC's sampling of thresholds and interpolation);
- ``f1``: F1 at every ``max(1, N // 10)``-th confidence in increasing order (:func:`f1_scores`), and
  ``max_f1`` their maximum (the number the paper tabulates);
- ``auc`` and ``ciou@0.5`` on the visible samples only (the standard protocol's numbers, so the two
  protocols agree on the clips they share);
- the same for the subsets ``all``, ``visible`` and the visible samples by GT area (``small`` < 32^2
  <= ``medium`` < 96^2 <= ``large`` < 144^2 <= ``huge``), at cIoU thresholds 0.5 and 0.75.

The confidence is each method's (the ``map_confidence`` hook of a model; default
:func:`slavc_confidence`, SLAVC's rule for a cosine-similarity map; ``docs/protocols.md`` says why).
Binarising the map follows the benchmark's standard :class:`~sspl.metrics.Protocol` (min-max
normalised, then ``fixed`` >= 0.5 or ``median``; ``median`` is SLAVC's ``--relative_prediction``),
so the visible-subset numbers equal the standard protocol's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .errors import DataError
from .metrics import Protocol, auc, evaluate_maps, gt_map_from_boxes, success_curve

__all__ = [
    "EXTENDED_CIOU_THRESHOLDS",
    "SIZE_SUBSETS",
    "SUBSETS",
    "ExtendedResult",
    "average_precision",
    "evaluate_extended",
    "extended_metrics",
    "f1_scores",
    "precision_recall",
    "score_samples",
    "slavc_confidence",
    "subset_indices",
    "visible_auc",
]

#: GT-area subsets of the visible samples, ``name -> [low, high)`` in pixels of the 224 x 224 map.
SIZE_SUBSETS: dict[str, tuple[float, float]] = {
    "small": (0, 32**2),
    "medium": (32**2, 96**2),
    "large": (96**2, 144**2),
    "huge": (144**2, 10000**2),
}
SUBSETS = ("all", "visible", *SIZE_SUBSETS)
#: the cIoU thresholds SLAVC reports every metric at (``@50``, ``@75``).
EXTENDED_CIOU_THRESHOLDS = (0.5, 0.75)


# --------------------------------------------------------------------------- confidence


def slavc_confidence(
    maps: np.ndarray | torch.Tensor,
    value_range: tuple[float, float] = (-1.0, 1.0),
    *,
    size: int = 224,
    top_fraction: float = 0.25,
) -> np.ndarray:
    """SLAVC's per-sample confidence: the mean of the highest quarter of the map's scores.

    The map is upsampled to ``size x size`` (bicubic, ``align_corners=True``, as SLAVC's ``test.py``),
    scaled to [0, 1] by the *fixed* range its values can take (never per map: a per-map min-max would
    give every map the same top), and the top ``int(size * size * top_fraction)`` values are averaged.
    For a cosine map (``value_range=(-1, 1)``) the score is ``(cos + 1) / 2``: the confidence is high
    when some quarter of the frame matches the sound well. SLAVC's maps are cosines divided by a
    temperature with range ``+-1/tau``, which gives the same scores.

    Args:
        maps: ``h x w`` or ``N x h x w`` raw maps.
        value_range: ``(low, high)`` of the map's values.

    Returns:
        ``N`` float32 confidences (a 0-d array for one map).
    """
    x = torch.as_tensor(maps).detach().float().cpu()
    single = x.ndim == 2
    if x.ndim not in (2, 3):
        raise ValueError(f"maps must be h x w or N x h x w, got shape {tuple(x.shape)}")
    low, high = value_range
    if not high > low:
        raise ValueError(f"value_range must be (low, high) with high > low, got {value_range}")
    up = F.interpolate(x.reshape(-1, 1, *x.shape[-2:]), size=(size, size), mode="bicubic", align_corners=True)
    scores = ((up.numpy().reshape(up.shape[0], -1) - np.float32(low)) / np.float32(high - low)).astype(
        np.float32
    )
    k = max(1, int(scores.shape[1] * top_fraction))
    n = scores.shape[1]
    # the top k values in increasing order, exactly the last k of a full sort (so the float32 mean is too)
    top = np.sort(np.partition(scores, n - k, axis=1)[:, n - k :], axis=1)
    out = top.mean(axis=1, dtype=np.float32)
    return out[0] if single else out


# --------------------------------------------------------------------------- detection metrics


def _arrays(n_boxes, cious, confidences) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = np.asarray(n_boxes, dtype=np.int64).reshape(-1)
    c = np.asarray(cious, dtype=np.float64).reshape(-1)
    conf = np.asarray(confidences, dtype=np.float64).reshape(-1)
    if not len(n) == len(c) == len(conf):
        raise ValueError(f"n_boxes, cious and confidences differ in length ({len(n)}, {len(c)}, {len(conf)})")
    return n, c, conf


def precision_recall(
    n_boxes: Sequence[int] | np.ndarray,
    cious: Sequence[float] | np.ndarray,
    confidences: Sequence[float] | np.ndarray,
    confidence_threshold: float,
    ciou_threshold: float = 0.5,
) -> tuple[float, float]:
    """Precision and recall of the detections ``confidence >= confidence_threshold``.

    A detection is a true positive when the sample has a visible source (``n_boxes > 0``) and its
    cIoU is ``>= ciou_threshold``, otherwise a false positive (a silent clip detected, or a visible one
    mislocalized); a visible sample not detected is a false negative. With no detection the precision
    is 1, with no positive the recall is 1 (SLAVC's conventions).
    """
    n, c, conf = _arrays(n_boxes, cious, confidences)
    detected = conf >= confidence_threshold
    visible = n > 0
    true_pos = int(np.sum(detected & visible & (c >= ciou_threshold)))
    false_pos = int(np.sum(detected)) - true_pos
    false_neg = int(np.sum(visible & ~detected))
    precision = 1.0 if true_pos + false_pos == 0 else true_pos / (true_pos + false_pos)
    recall = 1.0 if true_pos + false_neg == 0 else true_pos / (true_pos + false_neg)
    return precision, recall


def average_precision(
    n_boxes: Sequence[int] | np.ndarray,
    cious: Sequence[float] | np.ndarray,
    confidences: Sequence[float] | np.ndarray,
    ciou_threshold: float = 0.5,
    *,
    max_points: int = 200,
) -> float:
    """SLAVC's AP: precision-recall swept over the confidences, interpolated precision times recall steps.

    The thresholds are the sorted confidences without the largest, taken from the top down every
    ``max(1, N // max_points)``-th; at each the precision is replaced by the highest precision at that
    recall or beyond, and the area is the sum of ``precision * (next recall - recall)``. (So the recall
    between 0 and the first threshold's adds nothing, and one sample gives 0.)
    """
    n, c, conf = _arrays(n_boxes, cious, confidences)
    step = max(1, len(conf) // max_points)
    curve = [precision_recall(n, c, conf, t, ciou_threshold) for t in np.sort(conf)[:-1][::-step]]
    precisions = [p for p, _ in curve]
    recalls = [r for _, r in curve]
    best = [max(precisions[i:]) for i in range(len(precisions))]
    return float(sum([best[i] * (recalls[i + 1] - recalls[i]) for i in range(len(best) - 1)]))


def f1_scores(
    n_boxes: Sequence[int] | np.ndarray,
    cious: Sequence[float] | np.ndarray,
    confidences: Sequence[float] | np.ndarray,
    ciou_threshold: float = 0.5,
    *,
    points: int = 10,
) -> tuple[list[float], list[float]]:
    """F1 at every ``max(1, N // points)``-th confidence in increasing order (SLAVC's F1 list).

    Returns:
        ``(thresholds, f1)``; ``max(f1)`` is the paper's max-F1.
    """
    n, c, conf = _arrays(n_boxes, cious, confidences)
    thresholds = [float(t) for t in np.sort(conf)[:: max(1, len(conf) // points)]]
    f1 = []
    for t in thresholds:
        p, r = precision_recall(n, c, conf, t, ciou_threshold)
        f1.append(2 * r * p / (r + p) if r + p > 0 else 0.0)
    return thresholds, f1


def visible_auc(
    n_boxes: Sequence[int] | np.ndarray,
    cious: Sequence[float] | np.ndarray,
    step: float = 0.05,
    points: int = 21,
) -> float:
    """Area under the success curve of the visible samples (NaN when there is none)."""
    n = np.asarray(n_boxes).reshape(-1)
    visible = np.asarray(cious, dtype=np.float64).reshape(-1)[n > 0]
    if visible.size == 0:
        return float("nan")
    return auc(success_curve(visible, points, step), step)


def subset_indices(
    subset: str, n_boxes: Sequence[int] | np.ndarray, areas: Sequence[float] | np.ndarray
) -> np.ndarray:
    """Indices of the samples of a subset of :data:`SUBSETS` (sizes: visible samples by GT area)."""
    n = np.asarray(n_boxes).reshape(-1)
    a = np.asarray(areas, dtype=np.float64).reshape(-1)
    if subset == "all":
        return np.arange(len(n))
    if subset == "visible":
        return np.flatnonzero(n > 0)
    if subset in SIZE_SUBSETS:
        low, high = SIZE_SUBSETS[subset]
        return np.flatnonzero((n > 0) & (a >= low) & (a < high))
    raise ValueError(f"unknown subset {subset!r}; choose one of {SUBSETS}")


def extended_metrics(
    n_boxes: Sequence[int] | np.ndarray,
    cious: Sequence[float] | np.ndarray,
    confidences: Sequence[float] | np.ndarray,
    areas: Sequence[float] | np.ndarray,
    ciou_thresholds: Sequence[float] = EXTENDED_CIOU_THRESHOLDS,
) -> dict[str, dict[str, Any]]:
    """Every metric of every subset, keyed as SLAVC's ``finalize_stats`` names them (``all@50`` ...).

    Returns:
        ``"<subset>@<100 * threshold>"`` -> ``precision``, ``ap``, ``f1`` (list), ``f1_thresholds``,
        ``max_f1``, ``auc`` and ``num_samples``; an empty subset has NaN metrics and empty lists.
    """
    n, c, conf = _arrays(n_boxes, cious, confidences)
    a = np.asarray(areas, dtype=np.float64).reshape(-1)
    out: dict[str, dict[str, Any]] = {}
    for threshold in ciou_thresholds:
        for subset in SUBSETS:
            idx = subset_indices(subset, n, a)
            name = f"{subset}@{int(threshold * 100)}"
            if idx.size == 0:
                nan = float("nan")
                out[name] = dict(
                    precision=nan, ap=nan, f1=[], f1_thresholds=[], max_f1=nan, auc=nan, num_samples=0
                )
                continue
            sn, sc, sconf = n[idx], c[idx], conf[idx]
            thresholds, f1 = f1_scores(sn, sc, sconf, threshold)
            out[name] = {
                "precision": precision_recall(sn, sc, sconf, -np.inf, threshold)[0],
                "ap": average_precision(sn, sc, sconf, threshold),
                "f1": f1,
                "f1_thresholds": thresholds,
                "max_f1": max(f1),
                "auc": visible_auc(sn, sc),
                "num_samples": int(idx.size),
            }
    return out


# --------------------------------------------------------------------------- maps -> per-sample scores


def _json_number(value: Any) -> Any:
    """NaN (an empty subset's metric) as ``None``, so reports stay valid JSON."""
    if isinstance(value, float) and np.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_number(v) for k, v in value.items()}
    return value


@dataclass
class ExtendedResult:
    """Scores of one evaluation under the extended protocol.

    Attributes:
        ids: sample ids, sorted (the order of every array here).
        cious: per-sample cIoU (0 for a sample without a visible source).
        confidences: per-sample confidence (float64).
        n_boxes: per-sample number of boxes (0: no visible source).
        areas: per-sample ground-truth area in pixels of the ``size x size`` map (0 when no box).
        metrics: :func:`extended_metrics` of the samples.
        visible: the standard protocol's result on the visible samples (``ciou@0.5``, ``auc``, curve).
        protocol: the standard protocol's parameters, plus the cIoU thresholds of ``metrics``.
    """

    ids: list[str]
    cious: np.ndarray
    confidences: np.ndarray
    n_boxes: np.ndarray
    areas: np.ndarray
    metrics: dict[str, dict[str, Any]]
    visible: Any
    protocol: dict[str, Any] = field(default_factory=dict)

    @property
    def main(self) -> dict[str, Any]:
        """The metrics of all samples at the protocol's cIoU threshold (``all@50``)."""
        return self.metrics[f"all@{int(self.protocol.get('ciou_threshold', 0.5) * 100)}"]

    def summary(self) -> dict[str, Any]:
        """Report dict: ``ap``, ``max_f1``, ``precision``, ``f1`` (all samples, cIoU >= 0.5), the visible
        subset's standard summary (``ciou@0.5``, ``auc``, curve), counts, and every subset's metrics."""
        main = self.main
        visible = self.visible.summary()
        return _json_number(
            {
                "ap": main["ap"],
                "max_f1": main["max_f1"],
                "precision": main["precision"],
                "f1": main["f1"],
                "f1_thresholds": main["f1_thresholds"],
                **visible,
                "num_samples": len(self.ids),
                "num_visible": int(np.sum(self.n_boxes > 0)),
                "num_silent": int(np.sum(self.n_boxes == 0)),
                "subsets": self.metrics,
                "protocol": {"name": "extended", **self.protocol},
            }
        )


def _boxes(sample_id: str, annotation: Any, protocol: Protocol) -> np.ndarray:
    """``K x 4`` boxes of an ``Annotation`` (its format checked) or of a plain array; K may be 0."""
    box_format = getattr(annotation, "box_format", protocol.box_format)
    if box_format != protocol.box_format:
        raise DataError(
            f"sample {sample_id}: annotation boxes are {box_format!r} but the protocol expects "
            f"{protocol.box_format!r}; evaluate with the protocol of the annotations' benchmark"
        )
    boxes = np.asarray(getattr(annotation, "boxes", annotation), dtype=np.float64)
    return boxes.reshape(-1, 4) if boxes.size == 0 else boxes


def _same_ids(
    maps: Mapping[str, Any], annotations: Mapping[str, Any], confidences: Mapping[str, Any]
) -> None:
    for name, other in (("annotation", annotations), ("confidence", confidences)):
        differ = sorted(set(maps) ^ set(other))
        if differ:
            shown = ", ".join(differ[:10]) + (f", ... ({len(differ)} in all)" if len(differ) > 10 else "")
            raise DataError(f"maps and {name}s differ in {len(differ)} sample(s): {shown}")


def score_samples(
    annotations: Mapping[str, Any], ids: Sequence[str], cious: Mapping[str, float], protocol: Protocol
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(n_boxes, cious, areas)`` arrays in the order of ``ids``: the visible samples' cIoU from
    ``cious``, 0 for the others; the GT area drawn by the protocol's rule."""
    n_boxes, values, areas = [], [], []
    for i in ids:
        boxes = _boxes(i, annotations[i], protocol)
        n_boxes.append(len(boxes))
        if len(boxes) == 0:
            values.append(0.0)
            areas.append(0.0)
            continue
        gt = gt_map_from_boxes(
            boxes,
            rule=protocol.rule,
            box_format=protocol.box_format,
            size=protocol.size,
            consensus_divisor=protocol.consensus_divisor,
            sample_id=i,
            allow_empty=True,
        )
        values.append(float(cious[i]))
        areas.append(float(gt.sum()))
    return np.array(n_boxes, dtype=np.int64), np.array(values), np.array(areas)


def evaluate_extended(
    maps: Mapping[str, np.ndarray | torch.Tensor],
    annotations: Mapping[str, Any],
    confidences: Mapping[str, float],
    protocol: Protocol,
    *,
    expected_count: int | None = None,
    ciou_thresholds: Sequence[float] = EXTENDED_CIOU_THRESHOLDS,
    warn_empty: bool = True,
) -> ExtendedResult:
    """Score maps and confidences under the extended protocol.

    Args:
        maps: sample id -> raw ``h x w`` map.
        annotations: sample id -> ``Annotation`` or ``K x 4`` boxes in ``protocol.box_format``; zero
            boxes mark a sample without a visible source (a missing id is still an error).
        confidences: sample id -> confidence that a sounding object is visible (finite).
        protocol: the benchmark's standard protocol: GT rule, box format and how maps are binarised.
        expected_count: the dataset size (a different number of samples is an error).
        ciou_thresholds: the cIoU thresholds of the subset metrics; must include
            ``protocol.ciou_threshold``.

    Raises:
        DataError: ids of maps, annotations and confidences differ; a confidence is not finite; no
            sample has a visible source; or what :func:`sspl.metrics.evaluate_maps` refuses.
    """
    _same_ids(maps, annotations, confidences)
    if expected_count is not None and len(maps) != expected_count:
        raise DataError(f"evaluated {len(maps)} samples but the dataset has {expected_count}")
    ids = sorted(maps)
    conf = np.array([float(confidences[i]) for i in ids], dtype=np.float64)
    bad = [i for i, c in zip(ids, conf) if not np.isfinite(c)]
    if bad:
        raise DataError(f"{len(bad)} sample(s) have a non-finite confidence: {', '.join(bad[:10])}")
    visible_ids = [i for i in ids if _boxes(i, annotations[i], protocol).size]
    if not visible_ids:
        raise DataError(
            f"none of the {len(ids)} samples has a box: the extended protocol needs samples with a visible source"
        )
    visible = evaluate_maps(
        {i: maps[i] for i in visible_ids},
        {i: annotations[i] for i in visible_ids},
        protocol,
        warn_empty=warn_empty,
    )
    for i in ids:  # the silent samples' maps are checked as the visible ones are
        m = np.asarray(maps[i])
        if m.ndim != 2 or not np.isfinite(m).all():
            raise DataError(f"sample {i}: map must be a finite h x w array, got shape {m.shape}")
    n_boxes, cious, areas = score_samples(annotations, ids, visible.cious, protocol)
    if protocol.ciou_threshold not in ciou_thresholds:
        ciou_thresholds = (protocol.ciou_threshold, *ciou_thresholds)
    return ExtendedResult(
        ids=ids,
        cious=cious,
        confidences=conf,
        n_boxes=n_boxes,
        areas=areas,
        metrics=extended_metrics(n_boxes, cious, conf, areas, ciou_thresholds),
        visible=visible,
        protocol={**protocol.describe(), "ciou_thresholds": list(ciou_thresholds)},
    )
