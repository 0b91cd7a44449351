"""The localization evaluation protocol: ground-truth maps, cIoU, success curves, AUC, and baselines.

Everything the benchmarks define lives here, each choice a named parameter whose default is the SSPL
paper's (Song et al., CVPR 2022, Sec. 4.1; official ``eval_cal_ciou`` / ``testset_gt``):

1. The raw similarity map (``h x w``, 14 x 14 for VGG16 conv5_3) is upsampled to ``size x size``
   (224) by bilinear interpolation with half-pixel centres, in float32 (what OpenCV's ``INTER_LINEAR``
   computes; equality is proven on the official goldens in ``tests/test_metrics.py``);
   ``Protocol.align_corners`` switches to ``align_corners=True``, as EZ-VSL's evaluation upsamples.
2. It is min-max normalised to [0, 1].
3. It is thresholded into a mask: ``fixed`` keeps pixels ``>= 0.5`` (SSPL, Attention); ``median``
   keeps pixels ``>=`` the value at index ``size * size // 2`` of the sorted map (LVS, HardWay,
   EZ-VSL), i.e. about half of the image. That is the reference goldens' rule; LVS / HardWay's code
   keeps the pixels strictly above the value, which differs only by the few pixels equal to it.
4. The ground-truth map is built from boxes: Flickr ``consensus`` (every annotator's box adds 1, the
   sum is divided by 2 and capped at 1, so a pixel two annotators agree on counts fully), VGG-SS,
   AVSBench and SynthAV ``union`` (binary union of the boxes).
5. ``cIoU = sum(pred * gt) / (sum(gt) + sum(pred * (gt == 0)))``.
6. ``ciou@0.5`` is the fraction of samples with cIoU >= 0.5; the success curve is the fraction with
   cIoU >= ``0.05 * i`` for i = 0..20, and ``auc`` its trapezoidal area over those thresholds.
7. Every annotated sample must have a map and vice versa; a sample without boxes is an error. A
   sample whose published boxes are degenerate (cover no pixel) scores 0, as in the official code,
   and is reported (``Protocol.empty_gt``).

Constant maps: the official code divides by a zero range and gets NaN (which ``fixed`` turns into an
empty mask). Here a map with zero range normalises to all ones: a map that prefers no location claims
the whole image, under both threshold policies, so it scores exactly like the whole-image baseline and
never produces NaN. Real similarity maps are never exactly constant, so goldens are unaffected.

The trivial baselines' maps (:data:`BASELINE_KINDS`, :func:`baseline_maps`) are made in
:mod:`sspl.trivial_maps` and named here as well.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .errors import DataError
from .trivial_maps import BASELINE_KINDS, baseline_maps

__all__ = [
    "BASELINE_KINDS",
    "BENCHMARKS",
    "BOX_FORMATS",
    "EMPTY_GT_POLICIES",
    "GT_RULES",
    "THRESHOLD_POLICIES",
    "EvalResult",
    "Protocol",
    "auc",
    "baseline_maps",
    "ciou",
    "evaluate_maps",
    "gt_map_from_boxes",
    "normalize_map",
    "success_curve",
    "success_thresholds",
    "threshold_map",
    "upsample_map",
]

THRESHOLD_POLICIES = ("fixed", "median", "absolute")
GT_RULES = ("consensus", "union")
#: ``pixels256``: pixels of the 256 x 256 SoundNet-Flickr frame; ``normalized``: fractions of the
#: width/height (VGG-SS, SynthAV); ``pixels224``: pixels of a 224 x 224 frame (AVSBench).
BOX_FORMATS = ("pixels256", "normalized", "pixels224")
#: What a sample whose boxes cover no pixel scores: ``"zero"`` (as the official code computes) or
#: ``"error"``.
EMPTY_GT_POLICIES = ("zero", "error")

log = logging.getLogger(__name__)

_EVAL_CHUNK = 128  # maps upsampled at once: bounds memory (128 x 224 x 224 float32 = 25 MB)


# --------------------------------------------------------------------------- prediction side


def _as_float32(maps: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(maps, torch.Tensor):
        maps = maps.detach().cpu().numpy()
    return np.asarray(maps, dtype=np.float32)


def upsample_map(
    maps: np.ndarray | torch.Tensor, size: int = 224, *, align_corners: bool = False
) -> np.ndarray:
    """Bilinear upsampling in float32, with half-pixel centres (OpenCV ``INTER_LINEAR`` semantics) by default.

    Args:
        maps: ``h x w`` or ``N x h x w`` raw maps (e.g. 14 x 14 cosine similarities).
        size: output side in pixels.
        align_corners: map the corner pixels onto each other instead (``F.interpolate(...,
            align_corners=True)``, what EZ-VSL's evaluation uses).

    Returns:
        ``size x size`` or ``N x size x size`` float32 array. A constant map stays exactly constant,
        and a map already at ``size x size`` is returned unchanged.
    """
    m = _as_float32(maps)
    if m.ndim not in (2, 3):
        raise ValueError(f"maps must be h x w or N x h x w, got shape {m.shape}")
    x = torch.from_numpy(np.ascontiguousarray(m.reshape(-1, 1, *m.shape[-2:])))
    y = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=align_corners)
    return y.numpy().reshape(*m.shape[:-2], size, size)


def normalize_map(maps: np.ndarray | torch.Tensor) -> np.ndarray:
    """Min-max normalise each map to [0, 1] in float32: ``(m - min) / (max - min)``.

    Args:
        maps: ``H x W`` or ``N x H x W``.

    Returns:
        Same shape, float32. A map with zero range (constant) becomes all ones (see the module
        docstring for why), so the result never holds NaN.
    """
    m = _as_float32(maps)
    lo = m.min(axis=(-2, -1), keepdims=True)
    span = m.max(axis=(-2, -1), keepdims=True) - lo
    constant = span == 0
    out = (m - lo) / np.where(constant, np.float32(1), span)
    return np.where(constant, np.float32(1), out)


def threshold_map(maps: np.ndarray, policy: str = "fixed", value: float = 0.5) -> np.ndarray:
    """Turn normalised maps into boolean masks.

    Args:
        maps: ``H x W`` or ``N x H x W`` maps in [0, 1] (see ``normalize_map``).
        policy: ``"fixed"``: pixels ``>= value`` (SSPL). ``"median"``: pixels ``>=`` the element at
            index ``H * W // 2`` of the sorted map (LVS/HardWay/EZ-VSL); ``value`` is unused.
            ``"absolute"``: pixels ``>= value`` of maps that are *not* min-max normalised (scores already
            on a fixed scale: SLAVC's ``test.py`` default); :meth:`Protocol.mask` skips the normalisation.
        value: the fixed threshold.

    Returns:
        Boolean masks of the same shape.
    """
    m = np.asarray(maps)
    if policy in ("fixed", "absolute"):
        return m >= value
    if policy == "median":
        flat = m.reshape(-1, m.shape[-2] * m.shape[-1])
        k = flat.shape[1] // 2
        cut = np.partition(flat, k, axis=1)[:, k]
        return (flat >= cut[:, None]).reshape(m.shape)
    raise ValueError(f"unknown threshold policy {policy!r}; choose one of {THRESHOLD_POLICIES}")


# --------------------------------------------------------------------------- ground truth


def _box_to_pixels(box: Sequence[float], box_format: str, size: int) -> tuple[int, int, int, int]:
    """``[x1, y1, x2, y2]`` in ``box_format`` -> integer pixel bounds clamped to [0, size]."""
    if box_format == "pixels256":
        # Official Flickr rule: integer frame pixels rescaled and truncated, int(224 * int(v) / 256).
        coords = [int(size * int(v) / 256) for v in box]
    elif box_format == "normalized":
        # Official VGG-SS rule: int(224 * max(v, 0)); values above 1 are cut by the image border.
        coords = [int(size * min(max(v, 0.0), 1.0)) for v in box]
    elif box_format == "pixels224":
        coords = [int(size * float(v) / 224) for v in box]
    else:
        raise ValueError(f"unknown box format {box_format!r}; choose one of {BOX_FORMATS}")
    x1, y1, x2, y2 = (min(max(c, 0), size) for c in coords)
    return x1, y1, x2, y2


def gt_map_from_boxes(
    boxes: np.ndarray | Sequence[Sequence[float]],
    *,
    rule: str = "consensus",
    box_format: str = "pixels256",
    size: int = 224,
    consensus_divisor: float = 2,
    sample_id: str = "<unnamed>",
    allow_empty: bool = False,
) -> np.ndarray:
    """The ground-truth map of one sample: the single place where benchmark GT rules live.

    Boxes are ``[x1, y1, x2, y2]``; a box covers rows ``y1:y2`` and columns ``x1:x2`` (end excluded)
    after conversion to pixels of the ``size x size`` evaluation frame (coordinates are clamped to the
    frame; the official code relies on NumPy slicing for the upper bound, which is the same).

    Args:
        boxes: ``K x 4`` boxes; for Flickr all annotators' boxes together.
        rule: ``"consensus"``: sum of box masks divided by ``consensus_divisor``, capped at 1 (Flickr);
            ``"union"``: 1 inside any box (VGG-SS, AVSBench, SynthAV).
        box_format: ``"pixels256"``, ``"normalized"`` or ``"pixels224"`` (see ``BOX_FORMATS``).
        size: side of the evaluation frame.
        consensus_divisor: how many annotators must agree for a pixel to count fully (2 of 3).
        sample_id: named in error messages.
        allow_empty: return an all-zero map when the boxes cover no pixel (degenerate published
            boxes, see ``Protocol.empty_gt``) instead of raising.

    Returns:
        ``size x size`` float64 map with values in [0, 1] (0, 0.5, 1 for the Flickr consensus).

    Raises:
        DataError: when the sample has no box or a coordinate is not finite; and, unless
            ``allow_empty``, when the boxes cover no pixel.
    """
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        raise DataError(f"sample {sample_id}: no ground-truth boxes")
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise DataError(f"sample {sample_id}: boxes must be K x 4 [x1, y1, x2, y2], got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise DataError(f"sample {sample_id}: non-finite box coordinate in {arr.tolist()}")
    if rule not in GT_RULES:
        raise ValueError(f"unknown ground-truth rule {rule!r}; choose one of {GT_RULES}")
    gt = np.zeros((size, size), dtype=np.float64)
    for box in arr.tolist():
        x1, y1, x2, y2 = _box_to_pixels(box, box_format, size)
        gt[y1:y2, x1:x2] += 1
    if not gt.any() and not allow_empty:
        raise DataError(
            f"sample {sample_id}: its {len(arr)} box(es) cover no pixel at {size} x {size} "
            f"(format {box_format}): {arr.tolist()}"
        )
    if rule == "union":
        return (gt > 0).astype(np.float64)
    return np.minimum(gt / consensus_divisor, 1.0)


# --------------------------------------------------------------------------- scores


def ciou(pred_mask: np.ndarray, gt_map: np.ndarray) -> np.ndarray | float:
    """Consensus IoU: ``sum(pred * gt) / (sum(gt) + sum(pred * (gt == 0)))``.

    With a binary GT it is the ordinary IoU; with the Flickr consensus map, half-agreed pixels count
    half in both the intersection and the union.

    Args:
        pred_mask: ``H x W`` or ``N x H x W`` boolean (or 0/1) predicted masks.
        gt_map: ground-truth maps of the same shape, values in [0, 1], none all zero.

    Returns:
        A float for one map, an ``N`` float64 array for a batch.
    """
    pred = np.asarray(pred_mask, dtype=np.float64)
    gt = np.asarray(gt_map, dtype=np.float64)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")
    gt_sum = gt.sum(axis=(-2, -1))
    if np.any(gt_sum == 0):
        raise ValueError("an empty ground-truth map makes cIoU undefined")
    inter = (pred * gt).sum(axis=(-2, -1))
    union = gt_sum + (pred * (gt == 0)).sum(axis=(-2, -1))
    out = inter / union
    return float(out) if out.ndim == 0 else out


def success_thresholds(num_points: int = 21, step: float = 0.05) -> list[float]:
    """The cIoU thresholds of the success curve, ``step * i`` for i in 0..num_points-1."""
    return [step * i for i in range(num_points)]


def success_curve(cious: Iterable[float], num_points: int = 21, step: float = 0.05) -> list[float]:
    """Fraction of samples whose cIoU is ``>= step * i``, for i = 0..num_points-1.

    Args:
        cious: per-sample cIoU values (at least one).

    Returns:
        ``num_points`` success rates, non-increasing, the first 1.0.
    """
    values = np.asarray(list(cious), dtype=np.float64)
    if values.size == 0:
        raise ValueError("success curve of zero samples")
    return [float(np.sum(values >= t) / values.size) for t in success_thresholds(num_points, step)]


def auc(curve: Sequence[float], step: float = 0.05) -> float:
    """Trapezoidal area under a success curve sampled at ``x = step * i`` (sklearn ``auc`` semantics).

    With the default grid the x axis spans [0, 1], so the value is in [0, 1].
    """
    y = np.asarray(curve, dtype=np.float64)
    x = np.asarray(success_thresholds(len(y), step), dtype=np.float64)
    return float((np.diff(x) * (y[1:] + y[:-1]) / 2.0).sum())


# --------------------------------------------------------------------------- protocols


@dataclass(frozen=True)
class Protocol:
    """Every choice that defines a localization benchmark's numbers (defaults: SSPL on Flickr).

    Attributes:
        rule: ground-truth rule, ``"consensus"`` or ``"union"``.
        box_format: the format the benchmark's boxes come in (checked against the annotations).
        threshold: ``"fixed"`` or ``"median"`` (see ``threshold_map``).
        threshold_value: the fixed threshold on the normalised map.
        size: evaluation resolution (maps are upsampled to it, GT maps drawn at it).
        consensus_divisor: annotators that must agree for a pixel to count fully.
        ciou_threshold: the cIoU above which a sample counts as localized (``ciou@0.5``).
        curve_points: points of the success curve.
        curve_step: spacing of the success-curve thresholds.
        align_corners: upsample with ``align_corners=True`` (EZ-VSL's evaluation) instead of half-pixel
            centres (SSPL's and LVS's OpenCV ``INTER_LINEAR``; see ``upsample_map``).
        empty_gt: a sample whose boxes are present but cover no pixel (VGG-SS publishes two such
            degenerate boxes, one of them in the 4,692 clips SSPL evaluated) scores cIoU 0 under
            ``"zero"``: the official code divides 0 by the predicted area and gets 0, and we keep its
            numbers; such samples are listed in ``EvalResult.empty_gt_ids`` and logged. ``"error"``
            refuses them. A sample with no box at all is always an error.
    """

    rule: str = "consensus"
    box_format: str = "pixels256"
    threshold: str = "fixed"
    threshold_value: float = 0.5
    size: int = 224
    consensus_divisor: float = 2
    ciou_threshold: float = 0.5
    curve_points: int = 21
    curve_step: float = 0.05
    align_corners: bool = False
    empty_gt: str = "zero"

    def __post_init__(self) -> None:
        if self.rule not in GT_RULES:
            raise ValueError(f"unknown ground-truth rule {self.rule!r}; choose one of {GT_RULES}")
        if self.box_format not in BOX_FORMATS:
            raise ValueError(f"unknown box format {self.box_format!r}; choose one of {BOX_FORMATS}")
        if self.threshold not in THRESHOLD_POLICIES:
            raise ValueError(
                f"unknown threshold policy {self.threshold!r}; choose one of {THRESHOLD_POLICIES}"
            )
        if self.empty_gt not in EMPTY_GT_POLICIES:
            raise ValueError(f"unknown empty_gt policy {self.empty_gt!r}; choose one of {EMPTY_GT_POLICIES}")

    def with_threshold(self, policy: str) -> Protocol:
        """The same protocol with another threshold policy (one of :data:`THRESHOLD_POLICIES`)."""
        return replace(self, threshold=policy)

    def mask(self, maps: np.ndarray | torch.Tensor) -> np.ndarray:
        """The masks cIoU scores: raw ``h x w`` (or ``N x h x w``) maps upsampled to ``size``, min-max
        normalised (except under the ``absolute`` policy) and thresholded by this protocol's policy."""
        m = upsample_map(maps, self.size, align_corners=self.align_corners)
        if self.threshold != "absolute":
            m = normalize_map(m)
        return threshold_map(m, self.threshold, self.threshold_value)

    def describe(self) -> dict[str, Any]:
        """Plain dict of every parameter, for reports."""
        return asdict(self)


#: Named benchmark protocols; switch the threshold policy with ``Protocol.with_threshold``.
BENCHMARKS: dict[str, Protocol] = {
    "flickr": Protocol(rule="consensus", box_format="pixels256"),
    "vggss": Protocol(rule="union", box_format="normalized"),
    "avsbench": Protocol(rule="union", box_format="pixels224"),
    "synth": Protocol(rule="union", box_format="normalized"),
}


@dataclass
class EvalResult:
    """Scores of one evaluation.

    Attributes:
        cious: sample id -> cIoU, in the order the samples were evaluated (sorted ids).
        ciou_success_rate: fraction of samples with cIoU >= ``protocol.ciou_threshold``; reported
            under the name ``ciou@0.5`` (the field of Tables 1-2 of the paper).
        auc: area under the success curve.
        success_curve: the fraction of samples with cIoU >= each of ``success_thresholds``.
        success_thresholds: the cIoU thresholds of the curve.
        mean_ciou: the plain mean of the per-sample cIoU (not a paper metric; for diagnostics).
        num_samples: number of evaluated samples.
        protocol: ``Protocol.describe()`` of the protocol used.
        empty_gt_ids: samples whose boxes cover no pixel, scored 0 (see ``Protocol.empty_gt``).
    """

    cious: dict[str, float]
    ciou_success_rate: float
    auc: float
    success_curve: list[float]
    success_thresholds: list[float]
    mean_ciou: float
    num_samples: int
    protocol: dict[str, Any] = field(default_factory=dict)
    empty_gt_ids: list[str] = field(default_factory=list)

    @property
    def ciou_name(self) -> str:
        """The report name of ``ciou_success_rate``, e.g. ``"ciou@0.5"``."""
        return f"ciou@{self.protocol.get('ciou_threshold', 0.5):g}"

    def summary(self) -> dict[str, Any]:
        """Report dict: ``ciou@0.5``, ``auc``, the curve, sample count and protocol (no per-sample)."""
        return {
            self.ciou_name: self.ciou_success_rate,
            "auc": self.auc,
            "success_curve": list(self.success_curve),
            "success_thresholds": list(self.success_thresholds),
            "mean_ciou": self.mean_ciou,
            "num_samples": self.num_samples,
            "empty_gt_ids": list(self.empty_gt_ids),
            "protocol": dict(self.protocol),
        }


def _ids_message(ids: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(ids[:limit])
    return f"{shown}, ... ({len(ids)} in all)" if len(ids) > limit else shown


def _boxes_of(sample_id: str, annotation: Any, protocol: Protocol) -> np.ndarray:
    """Boxes of an ``Annotation`` (format checked against the protocol) or a plain ``K x 4`` array."""
    boxes = getattr(annotation, "boxes", None)
    if boxes is None:
        return np.asarray(annotation, dtype=np.float64)
    box_format = getattr(annotation, "box_format", protocol.box_format)
    if box_format != protocol.box_format:
        raise DataError(
            f"sample {sample_id}: annotation boxes are {box_format!r} but the protocol expects "
            f"{protocol.box_format!r}; evaluate with the protocol of the annotations' benchmark"
        )
    return np.asarray(boxes, dtype=np.float64)


def evaluate_maps(
    maps: Mapping[str, np.ndarray | torch.Tensor],
    annotations: Mapping[str, Any],
    protocol: Protocol | None = None,
    *,
    expected_count: int | None = None,
    warn_empty: bool = True,
) -> EvalResult:
    """Score raw localization maps against ground-truth boxes.

    Every sample is scored on its own (the result does not depend on how maps were batched by the
    model or here), in float32 for the maps as the official code does.

    Args:
        maps: sample id -> raw ``h x w`` map (any resolution; 14 x 14 for VGG16), NumPy or torch.
        annotations: sample id -> ``Annotation`` (see ``sspl.data.annotations``) or a ``K x 4`` box
            array in ``protocol.box_format``. Must hold exactly the ids of ``maps``.
        protocol: the benchmark protocol (default ``BENCHMARKS["flickr"]``, the SSPL protocol).
        expected_count: the dataset size; a different number of samples is an error, so an evaluation
            that silently skipped samples cannot be reported.
        warn_empty: log the samples whose boxes cover no pixel (off for the baselines of a run that
            already logged them).

    Returns:
        An ``EvalResult``.

    Raises:
        DataError: when ids of maps and annotations differ (listing them), the count differs from
            ``expected_count``, a map is not 2-D or not finite, or a sample's boxes are unusable.
    """
    protocol = protocol or BENCHMARKS["flickr"]
    no_annotation = sorted(set(maps) - set(annotations))
    no_map = sorted(set(annotations) - set(maps))
    if no_annotation or no_map:
        parts = []
        if no_map:
            parts.append(f"{len(no_map)} annotated sample(s) have no map: {_ids_message(no_map)}")
        if no_annotation:
            parts.append(f"{len(no_annotation)} map(s) have no annotation: {_ids_message(no_annotation)}")
        raise DataError("maps and annotations differ; " + "; ".join(parts))
    if expected_count is not None and len(maps) != expected_count:
        raise DataError(
            f"evaluated {len(maps)} samples but the dataset has {expected_count}; "
            "every sample must be evaluated"
        )
    if not maps:
        raise DataError("nothing to evaluate: no maps")

    ids = sorted(maps)
    scores: dict[str, float] = {}
    empty_gt: list[str] = []
    for start in range(0, len(ids), _EVAL_CHUNK):
        chunk = ids[start : start + _EVAL_CHUNK]
        raw = [_as_float32(maps[i]) for i in chunk]
        for i, m in zip(chunk, raw):
            if m.ndim != 2:
                raise DataError(f"sample {i}: map must be h x w, got shape {m.shape}")
            if not np.isfinite(m).all():
                raise DataError(f"sample {i}: map holds NaN or infinite values")
        # Maps of one shape are upsampled together; every step is per map, so grouping is invisible.
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for k, m in enumerate(raw):
            by_shape.setdefault(m.shape, []).append(k)
        masks: list[np.ndarray] = [np.empty(0)] * len(chunk)
        for positions in by_shape.values():
            for k, mask in zip(positions, protocol.mask(np.stack([raw[k] for k in positions]))):
                masks[k] = mask
        for i, mask in zip(chunk, masks):
            gt = gt_map_from_boxes(
                _boxes_of(i, annotations[i], protocol),
                rule=protocol.rule,
                box_format=protocol.box_format,
                size=protocol.size,
                consensus_divisor=protocol.consensus_divisor,
                sample_id=i,
                allow_empty=protocol.empty_gt == "zero",
            )
            if gt.any():
                scores[i] = ciou(mask, gt)
            else:
                scores[i] = 0.0
                empty_gt.append(i)
    if empty_gt and warn_empty:
        log.warning(
            "%d sample(s) have boxes covering no pixel and score cIoU 0: %s",
            len(empty_gt),
            _ids_message(empty_gt),
        )

    values = np.array([scores[i] for i in ids], dtype=np.float64)
    curve = success_curve(values, protocol.curve_points, protocol.curve_step)
    return EvalResult(
        cious=scores,
        ciou_success_rate=float(np.sum(values >= protocol.ciou_threshold) / values.size),
        auc=auc(curve, protocol.curve_step),
        success_curve=curve,
        success_thresholds=success_thresholds(protocol.curve_points, protocol.curve_step),
        mean_ciou=float(values.mean()),
        num_samples=len(ids),
        protocol=protocol.describe(),
        empty_gt_ids=empty_gt,
    )
