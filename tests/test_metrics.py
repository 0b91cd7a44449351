"""The evaluation protocol: exact agreement with the official code's goldens, hand-computed cases,
and the trivial baselines."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from sspl import metrics
from sspl.data.annotations import load_annotations
from sspl.errors import DataError
from sspl.metrics import BENCHMARKS, Protocol

CASES = {
    "flickr_fixed05": ("flickr", "fixed"),
    "flickr_median": ("flickr", "median"),
    "vggss_fixed05": ("vggss", "fixed"),
    "vggss_median": ("vggss", "median"),
}


@pytest.fixture(scope="module")
def golden(request):
    root = request.config.rootpath / "tests" / "data" / "metrics"
    npz = np.load(root / "metrics_golden.npz")
    names = [str(n) for n in npz["names"]]
    return {
        "maps": dict(zip(names, npz["heatmaps"])),
        "names": names,
        "cious": {case: npz[f"ciou_{case}"] for case in CASES},
        "summary": json.loads((root / "metrics_golden_summary.json").read_text()),
        "annotations": {
            "flickr": load_annotations(root / "flickr_annotations"),
            "vggss": load_annotations(root / "vggss_style_boxes.json"),
        },
    }


@pytest.mark.parametrize("case", sorted(CASES))
def test_reproduces_the_official_evaluation_exactly(golden, case):
    benchmark, policy = CASES[case]
    protocol = BENCHMARKS[benchmark].with_threshold(policy)
    result = metrics.evaluate_maps(
        golden["maps"], golden["annotations"][benchmark], protocol, expected_count=60
    )
    per_sample = np.array([result.cious[n] for n in golden["names"]])
    np.testing.assert_array_equal(per_sample, golden["cious"][case])
    expected = golden["summary"][case]
    summary = result.summary()
    assert summary["ciou@0.5"] == expected["ciou@0.5"]
    assert summary["auc"] == expected["auc"]
    assert summary["success_curve"] == expected["success_curve"]
    assert summary["num_samples"] == 60 and summary["protocol"]["threshold"] == policy


def test_upsampling_is_bilinear_with_half_pixel_centres():
    # 2 x 2 -> 4 x 4: output pixel j samples source x = (j + 0.5) / 2 - 0.5, clamped to the border,
    # i.e. x in {0, 0.25, 0.75, 1}; the map value is x + 2 y.
    up = metrics.upsample_map(np.array([[0, 1], [2, 3]], dtype=np.float32), size=4)
    axis = np.array([0, 0.25, 0.75, 1.0])
    np.testing.assert_array_equal(up, axis[None, :] + 2 * axis[:, None])
    assert up.dtype == np.float32
    constant = metrics.upsample_map(np.full((14, 14), 0.123, np.float32))
    assert constant.shape == (224, 224) and np.ptp(constant) == 0


def test_normalize_and_constant_map_rule():
    m = metrics.normalize_map(np.array([[1.0, 3.0], [2.0, 5.0]]))
    np.testing.assert_allclose(m, [[0.0, 0.5], [0.25, 1.0]])
    constant = metrics.normalize_map(np.full((2, 3, 3), -0.7, np.float32))
    assert np.all(constant == 1.0)  # a map preferring no location claims the whole image, no NaN
    for policy in metrics.THRESHOLD_POLICIES:
        assert metrics.threshold_map(constant, policy).all()


def test_median_threshold_keeps_the_upper_half():
    m = np.arange(16, dtype=np.float32).reshape(4, 4) / 15
    mask = metrics.threshold_map(m, "median")
    # Index 16 // 2 = 8 of the sorted map is 8 / 15: values 8..15 are kept.
    np.testing.assert_array_equal(mask.ravel(), np.arange(16) >= 8)
    np.testing.assert_array_equal(metrics.threshold_map(m, "fixed", 0.5).ravel(), np.arange(16) >= 7.5)
    with pytest.raises(ValueError, match="unknown threshold policy"):
        metrics.threshold_map(m, "mean")


def test_flickr_consensus_ground_truth_by_hand():
    # 256-pixel boxes map to 224 pixels by int(224 * v / 256): 128 -> 112, 64 -> 56, 256 -> 224.
    boxes = [[0, 0, 128, 128], [64, 64, 256, 256], [0, 0, 64, 64]]
    gt = metrics.gt_map_from_boxes(boxes, rule="consensus", box_format="pixels256")
    assert gt.shape == (224, 224)
    assert gt[0, 0] == 1.0  # two annotators agree (boxes 1 and 3)
    assert gt[60, 60] == 1.0  # boxes 1 and 2
    assert gt[100, 20] == 0.5 and gt[200, 200] == 0.5  # one annotator only
    assert gt[150, 20] == 0.0
    assert gt[111, 111] == 1.0 and gt[112, 112] == 0.5  # end coordinate excluded
    # Three overlapping boxes still count 1 (capped).
    capped = metrics.gt_map_from_boxes([[0, 0, 256, 256]] * 3, rule="consensus", box_format="pixels256")
    assert capped.max() == 1.0 and capped.min() == 1.0


def test_union_ground_truth_and_box_formats():
    union = metrics.gt_map_from_boxes(
        [[0.5, -0.2, 1.02, 0.25], [0.75, 0.0, 1.0, 0.5]], rule="union", box_format="normalized"
    )
    assert set(np.unique(union)) == {0.0, 1.0}
    assert union[:56, 112:].all() and union[56:112, 168:].all()
    assert union.sum() == 56 * 112 + 56 * 56
    pixels = metrics.gt_map_from_boxes([[21.0, 72.0, 196.0, 140.0]], rule="union", box_format="pixels224")
    assert pixels.sum() == (196 - 21) * (140 - 72) and pixels[72, 21] == 1 and pixels[140, 21] == 0


@pytest.mark.parametrize(
    ("boxes", "message"),
    [
        ([], "no ground-truth boxes"),
        ([[10, 10, 10, 50]], "cover no pixel"),
        ([[0, 0, np.nan, 1]], "non-finite"),
    ],
)
def test_ground_truth_errors_name_the_sample(boxes, message):
    with pytest.raises(DataError, match=f"sample clip_7: .*{message}"):
        metrics.gt_map_from_boxes(boxes, sample_id="clip_7")


def test_ciou_by_hand():
    gt = np.zeros((20, 20))
    gt[:10, :10] = 1  # 100 pixels
    pred = np.zeros((20, 20), bool)
    assert metrics.ciou(gt > 0, gt) == 1.0
    assert metrics.ciou(pred, gt) == 0.0
    pred[:10, :5] = True
    assert metrics.ciou(pred, gt) == 0.5  # 50 / 100
    pred[:] = False
    pred[:10, :] = True
    assert metrics.ciou(pred, gt) == 0.5  # 100 / (100 + 100 outside)
    disjoint = np.zeros((20, 20), bool)
    disjoint[15:, 15:] = True
    assert metrics.ciou(disjoint, gt) == 0.0
    # Consensus: 10 pixels agreed (1), 10 half-agreed (0.5); the union counts the GT mass 15.
    consensus = np.zeros((20, 20))
    consensus[0, :10] = 1
    consensus[1, :10] = 0.5
    assert metrics.ciou(consensus > 0, consensus) == 1.0
    assert metrics.ciou(consensus == 1, consensus) == 10 / 15
    batch = metrics.ciou(np.stack([gt > 0, disjoint]), np.stack([gt, gt]))
    np.testing.assert_array_equal(batch, [1.0, 0.0])
    with pytest.raises(ValueError, match="empty ground-truth"):
        metrics.ciou(pred, np.zeros((20, 20)))


def test_success_curve_and_auc_by_hand():
    curve = metrics.success_curve([0.0, 0.5, 1.0])
    assert len(curve) == 21
    assert curve[0] == 1.0 and curve[1:11] == [2 / 3] * 10 and curve[11:] == [1 / 3] * 10
    # Trapezoids of width 0.05: (1 + 2/3)/2 + 9 * 2/3 + (2/3 + 1/3)/2 + 9 * 1/3 = 62/6.
    assert metrics.auc(curve) == pytest.approx(0.05 * 62 / 6, abs=1e-12)
    assert metrics.auc([1.0] * 21) == pytest.approx(1.0, abs=1e-12)
    assert metrics.success_thresholds()[10] == 0.5 and metrics.success_thresholds()[-1] == 1.0


def test_perfect_and_disjoint_maps_through_the_whole_protocol():
    protocol = BENCHMARKS["vggss"]
    box = np.array([[0.25, 0.25, 0.75, 0.75]])
    perfect = np.zeros((224, 224), np.float32)
    perfect[56:168, 56:168] = 1
    disjoint = np.zeros((224, 224), np.float32)
    disjoint[:40, :40] = 1
    result = metrics.evaluate_maps({"a": perfect, "b": disjoint}, {"a": box, "b": box}, protocol)
    assert result.cious == {"a": 1.0, "b": 0.0}
    assert result.summary()["ciou@0.5"] == 0.5 and result.num_samples == 2
    assert result.success_curve[0] == 1.0 and result.success_curve[1] == 0.5


def test_evaluation_does_not_depend_on_batching():
    rng = np.random.default_rng(0)
    ids = [f"s{i:03d}" for i in range(130)]  # more than one evaluation chunk (128)
    maps = {
        i: rng.standard_normal((14, 14) if k % 3 else (7, 7)).astype(np.float32) for k, i in enumerate(ids)
    }
    corners = rng.uniform(0, 0.5, (130, 2))
    boxes = {i: np.concatenate([c, c + 0.4])[None] for i, c in zip(ids, corners)}
    for policy in metrics.THRESHOLD_POLICIES:
        protocol = BENCHMARKS["vggss"].with_threshold(policy)
        together = metrics.evaluate_maps(maps, boxes, protocol).cious
        alone = {i: metrics.evaluate_maps({i: maps[i]}, {i: boxes[i]}, protocol).cious[i] for i in ids}
        assert together == alone


def test_evaluation_refuses_incomplete_or_mismatched_input(golden):
    maps, annotations = golden["maps"], golden["annotations"]["flickr"]
    partial = {k: v for k, v in maps.items() if k not in ("sample003", "sample017")}
    with pytest.raises(DataError, match=r"2 annotated sample\(s\) have no map: sample003, sample017"):
        metrics.evaluate_maps(partial, annotations)
    with pytest.raises(DataError, match=r"1 map\(s\) have no annotation: extra"):
        metrics.evaluate_maps({**maps, "extra": maps["sample000"]}, annotations)
    with pytest.raises(DataError, match="evaluated 60 samples but the dataset has 61"):
        metrics.evaluate_maps(maps, annotations, expected_count=61)
    with pytest.raises(DataError, match="'pixels256' but the protocol expects 'normalized'"):
        metrics.evaluate_maps(maps, annotations, BENCHMARKS["vggss"])
    broken = {**maps, "sample005": np.full((14, 14), np.nan, np.float32)}
    with pytest.raises(DataError, match="sample sample005: map holds NaN"):
        metrics.evaluate_maps(broken, annotations)


def test_degenerate_boxes_score_zero_and_are_reported(caplog):
    maps = {"ok": np.eye(14, dtype=np.float32), "flat": np.eye(14, dtype=np.float32)}
    boxes = {"ok": np.array([[0.0, 0.0, 1.0, 1.0]]), "flat": np.array([[0.27, 1.0, 0.75, 1.0]])}
    result = metrics.evaluate_maps(maps, boxes, BENCHMARKS["vggss"])
    assert result.cious["flat"] == 0.0 and result.empty_gt_ids == ["flat"]
    assert "flat" in caplog.text
    strict = replace(BENCHMARKS["vggss"], empty_gt="error")
    with pytest.raises(DataError, match="sample flat: its 1 box"):
        metrics.evaluate_maps(maps, boxes, strict)
    with pytest.raises(DataError, match="sample ok: no ground-truth boxes"):
        metrics.evaluate_maps(maps, {**boxes, "ok": np.zeros((0, 4))}, BENCHMARKS["vggss"])


def test_protocol_presets_and_validation():
    assert BENCHMARKS["flickr"] == Protocol()  # the SSPL defaults
    assert (BENCHMARKS["vggss"].rule, BENCHMARKS["vggss"].box_format) == ("union", "normalized")
    assert (BENCHMARKS["avsbench"].rule, BENCHMARKS["avsbench"].box_format) == ("union", "pixels224")
    assert BENCHMARKS["synth"].threshold == "fixed" and BENCHMARKS["synth"].rule == "union"
    with pytest.raises(ValueError, match="unknown threshold policy"):
        Protocol(threshold="otsu")


LEFT_HALF = np.array([[0.0, 0.0, 0.5, 1.0]])  # 112 x 224 pixels: half of the image


@pytest.mark.parametrize(
    ("kind", "policy", "expected"),
    [
        ("whole", "fixed", 0.5),  # predicts everything: 25088 / 50176
        ("whole", "median", 0.5),
        # Centre box 158 x 158 at rows/cols 33..190: 79 columns inside the GT, 79 outside.
        ("center", "fixed", (79 * 158) / (112 * 224 + 79 * 158)),
        # Median keeps the 160 x 160 centred square (rows/cols 32..191): 80 columns in, 80 out.
        ("center", "median", (80 * 160) / (112 * 224 + 80 * 160)),
    ],
)
def test_trivial_baselines_on_a_toy_case(kind, policy, expected):
    ids = ["x", "y"]
    maps = metrics.baseline_maps(ids, kind)
    protocol = BENCHMARKS["vggss"].with_threshold(policy)
    result = metrics.evaluate_maps(maps, dict.fromkeys(ids, LEFT_HALF), protocol)
    assert result.cious == {"x": expected, "y": expected}
    # cIoU@0.5 counts a cIoU of exactly 0.5 as a success (">=", as the official code)
    assert result.ciou_success_rate == (1.0 if expected >= 0.5 else 0.0)


def test_random_baseline_is_seeded_per_sample():
    ids = [f"r{i}" for i in range(60)]
    first = metrics.baseline_maps(ids, "random", seed=1)
    assert all(
        np.array_equal(first[i], v) for i, v in metrics.baseline_maps(ids[::-1], "random", seed=1).items()
    )
    assert not np.array_equal(first["r0"], metrics.baseline_maps(["r0"], "random", seed=2)["r0"])
    assert not np.array_equal(first["r0"], first["r1"])
    # Under `median` a random map keeps a random half of the pixels: about 1/4 of the image inside
    # the left-half GT and 1/4 outside, so cIoU ~ 0.25 / (0.5 + 0.25) = 1/3.
    protocol = BENCHMARKS["vggss"].with_threshold("median")
    result = metrics.evaluate_maps(first, dict.fromkeys(ids, LEFT_HALF), protocol)
    assert result.mean_ciou == pytest.approx(1 / 3, abs=0.03)
    with pytest.raises(ValueError, match="unknown baseline"):
        metrics.baseline_maps(ids, "oracle")


def test_align_corners_upsampling_keeps_the_corner_values():
    raw = np.arange(16, dtype=np.float32).reshape(4, 4)
    aligned = metrics.upsample_map(raw, 8, align_corners=True)
    # align_corners=True puts output corners on input corners, and steps by (4 - 1) / (8 - 1) input pixels.
    assert aligned[0, 0] == 0 and aligned[-1, -1] == 15 and aligned[0, -1] == 3
    np.testing.assert_allclose(aligned[0, 1], 3 / 7, rtol=1e-6)
    half = metrics.upsample_map(raw, 8)  # half-pixel: output pixel 0 sits at input -0.25, clamped to 0
    assert half[0, 0] == 0 and half[0, 1] == pytest.approx(0.25) and half[0, -1] == 3
    # the protocol switch reaches the mask, and the default is unchanged
    proto = metrics.BENCHMARKS["vggss"]
    assert not proto.align_corners and proto.describe()["align_corners"] is False
    peak = np.zeros((14, 14), np.float32)
    peak[0, 0] = 1
    default_mask = proto.mask(peak)
    aligned_mask = replace(proto, align_corners=True).mask(peak)
    assert default_mask.sum() != aligned_mask.sum()
    np.testing.assert_array_equal(
        aligned_mask, metrics.normalize_map(metrics.upsample_map(peak, 224, align_corners=True)) >= 0.5
    )
