"""The extended protocol against goldens made by running SLAVC's ``utils.EvaluatorFull`` (tests/data/extended),
plus hand-computed cases and the errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sspl.data.annotations import Annotation
from sspl.errors import DataError
from sspl.metrics import BENCHMARKS
from sspl.metrics_extended import (
    SUBSETS,
    average_precision,
    evaluate_extended,
    extended_metrics,
    f1_scores,
    precision_recall,
    slavc_confidence,
    subset_indices,
)

DATA = Path(__file__).parent / "data" / "extended"


def _golden(name: str) -> dict:
    return json.loads((DATA / f"{name}_golden.json").read_text())


def _assert_matches_slavc(ours: dict, stats: dict) -> None:
    """Our metrics of every subset against SLAVC's ``finalize_stats`` (F1 compared as SLAVC prints it)."""
    assert {f"{k}@{t}" for k in SUBSETS for t in (50, 75)} == set(ours)
    for name, m in ours.items():
        for ours_key, slavc_key in (("precision", "Precision"), ("ap", "AP"), ("auc", "AUC")):
            expected = stats[f"{slavc_key}-{name}"]
            if expected is None:
                assert np.isnan(m[ours_key]), name
            else:
                assert m[ours_key] == pytest.approx(expected, abs=1e-12), (name, ours_key)
        expected_f1 = stats[f"F1-{name}"]
        if expected_f1 is None:
            assert m["f1"] == [] and m["num_samples"] == 0
        else:
            assert " ".join(f"{f * 100:.1f}" for f in m["f1"]) == expected_f1, name
            assert m["max_f1"] * 100 == pytest.approx(max(float(v) for v in expected_f1.split()), abs=0.05)


def test_metrics_of_given_lists_match_slavc():
    """437 samples (AP samples every second threshold), ties in confidence, cIoU exactly at 0.5 / 0.75,
    areas on the size boundaries."""
    g = _golden("lists")
    ours = extended_metrics(g["n_boxes"], g["ciou"], g["confidence"], g["area"])
    _assert_matches_slavc(ours, g["finalize_stats"])
    assert len(g["ciou"]) // 200 == 2 and ours["all@50"]["ap"] > 0.3


def _annotations(name: str) -> dict[str, Annotation]:
    boxes = json.loads((DATA / f"{name}_boxes.json").read_text())
    fmt = "pixels256" if name == "flickr" else "normalized"
    return {i: Annotation(i, np.array(b, dtype=np.float64).reshape(-1, 4), fmt) for i, b in boxes.items()}


@pytest.mark.parametrize(("name", "policy"), [("flickr", "fixed"), ("vggss", "median")])
def test_maps_to_metrics_match_slavc(name, policy):
    """Raw 14 x 14 maps, boxes (a third or a quarter of the clips without any, one degenerate box) and
    confidences: per-sample cIoU, box count, GT area and every metric equal SLAVC's."""
    inputs = np.load(DATA / f"{name}_inputs.npz")
    ids = [str(i) for i in inputs["ids"]]
    maps = dict(zip(ids, inputs["maps"]))
    conf = dict(zip(ids, inputs["confidence"].tolist()))
    protocol = BENCHMARKS[name].with_threshold(policy)
    result = evaluate_extended(maps, _annotations(name), conf, protocol, expected_count=len(ids))
    g = _golden(name)
    order = [g["ids"].index(i) for i in result.ids]
    assert result.n_boxes.tolist() == [g["n_boxes"][k] for k in order]
    assert result.areas.tolist() == [g["area"][k] for k in order]
    np.testing.assert_allclose(result.cious, [g["ciou"][k] for k in order], rtol=0, atol=1e-12)
    assert result.confidences.tolist() == [g["confidence"][k] for k in order]
    _assert_matches_slavc(result.metrics, g["finalize_stats"])
    summary = result.summary()
    stats = g["finalize_stats"]
    assert summary["ap"] == pytest.approx(stats["AP-all@50"], abs=1e-12)
    assert summary["precision"] == pytest.approx(stats["Precision-all@50"], abs=1e-12)
    assert summary["ciou@0.5"] == pytest.approx(stats["Precision-visible@50"], abs=1e-12)
    assert summary["auc"] == pytest.approx(stats["AUC-visible@50"], abs=1e-12)
    assert summary["num_silent"] == sum(n == 0 for n in g["n_boxes"]) > 0
    json.dumps(summary, allow_nan=False)  # an empty subset's NaN is written as null


def test_precision_recall_by_hand():
    # samples: visible+localized, visible+missed, silent, visible+localized (low confidence)
    n, c, conf = [1, 2, 0, 1], [0.9, 0.2, 0.0, 0.6], [0.9, 0.8, 0.7, 0.1]
    assert precision_recall(n, c, conf, 0.75) == (0.5, 0.5)  # tp 1, fp 1 (missed), fn 1
    assert precision_recall(n, c, conf, 0.0) == (0.5, 1.0)  # every sample detected: tp 2, fp 2
    assert precision_recall(n, c, conf, 0.95) == (1.0, 0.0)  # nothing detected: precision 1 by convention
    assert precision_recall([0, 0], [0, 0], [0.1, 0.2], 0.15) == (0.0, 1.0)  # no positive: recall 1
    # a mislocalized detection is a false positive, not a false negative: recall = tp / (tp + fn)
    # thresholds from the top, largest dropped: 0.8 (p 1/2, r 1/2), 0.7 (1/3, 1/2), 0.1 (1/2, 1);
    # interpolated precisions 1/2, 1/2, 1/2; area 1/2 * 0 + 1/2 * (1 - 1/2)
    assert average_precision(n, c, conf) == 0.25
    assert average_precision([1], [1.0], [0.5]) == 0.0
    thresholds, f1 = f1_scores(n, c, conf)
    assert thresholds == [0.1, 0.7, 0.8, 0.9]
    assert f1 == pytest.approx([2 / 3, 0.4, 0.5, 0.5])  # at 0.9: p 1, r 1/3


def test_subsets_by_area():
    n, areas = [1, 1, 1, 1, 0, 2], [1023, 1024, 9216, 20736, 0, 0]
    assert subset_indices("small", n, areas).tolist() == [0, 5]
    assert subset_indices("medium", n, areas).tolist() == [1]
    assert subset_indices("large", n, areas).tolist() == [2]
    assert subset_indices("huge", n, areas).tolist() == [3]
    assert subset_indices("visible", n, areas).tolist() == [0, 1, 2, 3, 5]
    with pytest.raises(ValueError, match="unknown subset"):
        subset_indices("tiny", n, areas)


def test_slavc_confidence_by_hand():
    """Mean of the top quarter of (cos + 1) / 2 on the bicubic 224 x 224 map; a fixed range, not per map."""
    assert slavc_confidence(np.full((14, 14), 0.5, np.float32)) == pytest.approx(0.75)
    assert slavc_confidence(np.full((7, 7), -1.0, np.float32)) == pytest.approx(
        0.0, abs=1e-6
    )  # float32 weights
    left_right = np.zeros((2, 2), np.float32)
    left_right[:, 1] = 1.0
    conf = slavc_confidence(left_right, size=4)  # 4 x 4 with align_corners: the last column is the source's
    assert conf == pytest.approx(1.0)  # the top quarter (4 of 16) is the right column, cosine 1
    both = slavc_confidence(np.stack([left_right, left_right * 0.5]), size=4)
    assert both.shape == (2,) and both[1] == pytest.approx(0.75)
    assert slavc_confidence(np.full((3, 3), 0.5), value_range=(0.0, 1.0), size=8) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="high > low"):
        slavc_confidence(left_right, value_range=(1.0, 1.0))


def _tiny():
    maps = {
        "a": np.eye(4, dtype=np.float32),
        "b": np.ones((4, 4), np.float32),
        "s": np.zeros((4, 4), np.float32),
    }
    ann = {
        "a": Annotation("a", [[0.0, 0.0, 0.5, 0.5]], "normalized"),
        "b": Annotation("b", [[0.0, 0.0, 1.0, 1.0]], "normalized"),
        "s": Annotation("s", np.zeros((0, 4)), "normalized"),
    }
    return maps, ann, {"a": 0.9, "b": 0.5, "s": 0.7}


def test_tiny_extended_result_by_hand():
    maps, ann, conf = _tiny()
    result = evaluate_extended(maps, ann, conf, BENCHMARKS["vggss"])
    assert result.ids == ["a", "b", "s"]
    assert result.n_boxes.tolist() == [1, 1, 0]
    # b: a constant map claims the whole image = its box; a: the diagonal band against the top-left box
    assert result.cious[1] == 1.0 and result.cious[2] == 0.0
    s = result.summary()
    assert s["num_visible"] == 2 and s["num_silent"] == 1
    assert result.cious[0] < 0.5  # a is missed
    assert s["precision"] == pytest.approx(1 / 3)  # every sample detected: b right, a missed, s silent
    assert s["ciou@0.5"] == 0.5 and s["auc"] == result.visible.auc


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m, a, c: c.pop("s"), "maps and confidences differ in 1 sample"),
        (lambda m, a, c: a.pop("a"), "maps and annotations differ in 1 sample"),
        (lambda m, a, c: c.update(s=float("nan")), "non-finite confidence: s"),
        (lambda m, a, c: m.update(s=np.full((4, 4), np.inf, np.float32)), "sample s: map must be a finite"),
        (
            lambda m, a, c: a.update(a=Annotation("a", np.zeros((0, 4)), "normalized"), b=a["s"]),
            "none of the 3 samples has a box",
        ),
        (
            lambda m, a, c: a.update(a=Annotation("a", [[0, 0, 9, 9]], "pixels256")),
            "protocol expects 'normalized'",
        ),
    ],
)
def test_errors(change, message):
    maps, ann, conf = _tiny()
    change(maps, ann, conf)
    with pytest.raises(DataError, match=message):
        evaluate_extended(maps, ann, conf, BENCHMARKS["vggss"])


def test_count_must_match_the_dataset():
    maps, ann, conf = _tiny()
    with pytest.raises(DataError, match="evaluated 3 samples but the dataset has 4"):
        evaluate_extended(maps, ann, conf, BENCHMARKS["vggss"], expected_count=4)


def test_slavc_confidence_matches_slavcs_test_script():
    """SLAVC's ``test.validate`` run on seeded 7 x 7 cosine maps divided by tau (tests/data/extended): its
    ``conf_av`` equals ours on the plain cosine maps, up to float32 rounding of the 1/tau scaling."""
    g = json.loads((DATA / "confidence_golden.json").read_text())
    ours = slavc_confidence(np.array(g["maps"], dtype=np.float32))
    np.testing.assert_allclose(ours, g["confidence"], rtol=0, atol=1e-7)  # measured: equal to the bit
    assert np.ptp(g["confidence"]) > 0.05  # the maps differ enough for the test to tell them apart
    scaled = slavc_confidence(np.array(g["maps"], dtype=np.float32) / g["tau"], (-1 / g["tau"], 1 / g["tau"]))
    np.testing.assert_allclose(scaled, g["confidence"], rtol=0, atol=1e-7)
