"""SLAVC's and FNAC's test-time maps and their cIoU / AUC equal the official test.py and evaluators
(float32, as they run), on the seeded weights of official-format checkpoints (see
tests/data/released/*/README.md)."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import torch

from slavc_fnac_recipe import RELEASED, inputs, our_state_dict
from sspl.metrics import Protocol, evaluate_maps, gt_map_from_boxes, normalize_map
from sspl.models.methods import get_method
from sspl.models.methods.slavc import slavc_scores, upsample
from test_released_models import config

IDS = ["s0", "s1", "s2"]


@functools.cache
def _model(method: str, **options):
    model = get_method(method).build(config(method, **options), pretrained=False)
    model.load_state_dict(our_state_dict(method))
    return model.eval()


def _stats(method: str) -> dict:
    return json.loads((RELEASED / method / "test_stats.json").read_text())


def _frames_spect(method: str):
    x = inputs(method, "test")
    return torch.from_numpy(x["image"]).float(), torch.from_numpy(x["spec"]).float()


def _close(ours, theirs, rtol=1e-5, atol=1e-6):
    np.testing.assert_allclose(np.asarray(ours, dtype=np.float64), theirs, rtol=rtol, atol=atol)


def _gts(stats: dict) -> list[np.ndarray]:
    return [gt_map_from_boxes(b, rule="consensus", box_format="pixels256") for b in stats["boxes256"]]


@pytest.mark.parametrize("tag,momentum_map", [("script", False), ("relative_mom", True)])
def test_slavc_test_time_maps_equal_official_test_py(tag, momentum_map):
    gold, stats = np.load(RELEASED / "slavc" / "test.npz"), _stats("slavc")
    model = _model("slavc")
    model.options.momentum_map = momentum_map
    frames, spect = _frames_spect("slavc")
    with torch.no_grad():
        raw = model.av_map(frames, spect)
        fused = model.localize(frames, spect)  # alpha 0.9, bicubic with aligned corners
        av = slavc_scores(upsample(raw, (224, 224), "bicubic-align-corners"), None, 0.03, 0.9)
        obj = (
            upsample(model.saliency_encoder(frames).abs().mean(1), (224, 224), "bicubic-align-corners") / 2.5
        )
    _close(raw, gold[f"{tag}_raw"])
    relative = tag == "relative_mom"
    for name, scores in (("av", av), ("obj", obj), ("av_obj", fused)):
        pred = normalize_map(scores) if relative else scores.numpy()
        _close(pred[:, ::8, ::8], gold[f"{tag}_{name}_pred_stride8"])
        _close(pred.sum(axis=(1, 2)), gold[f"{tag}_{name}_pred_sum"], rtol=1e-5)
    np.testing.assert_array_equal([g.sum() for g in _gts(stats)], gold["gt_sum"])


@pytest.mark.parametrize("tag", ["script", "relative_mom"])
def test_slavc_ciou_and_auc_equal_official_evaluator(tag):
    stats = _stats("slavc")
    model = _model("slavc")
    model.options.momentum_map = tag == "relative_mom"
    frames, spect = _frames_spect("slavc")
    with torch.no_grad():
        fused = model.localize(frames, spect).numpy()
    theirs = stats[tag]["av_obj"]
    # the extended protocol's confidence: the mean of the top quarter of the fused scores
    _close(model.map_confidence(torch.from_numpy(fused)), theirs["conf"], rtol=1e-5)
    # official default: the fused scores thresholded at 0.5 as they are (sspl's absolute policy);
    # --relative_prediction: per-map min-max, threshold at the median (sspl's median policy)
    policy = "absolute" if tag == "script" else "median"
    result = evaluate_maps(
        dict(zip(IDS, fused)), dict(zip(IDS, stats["boxes256"])), Protocol(threshold=policy)
    )
    np.testing.assert_allclose(list(result.cious.values()), theirs["ciou"], rtol=1e-6)
    assert result.ciou_success_rate == pytest.approx(float(theirs["metrics"]["Precision-visible@50"]))
    assert result.auc == pytest.approx(float(theirs["metrics"]["AUC-visible@50"]))


@pytest.mark.parametrize("run,upsample", [("validate", "bilinear-align-corners"), ("validate2", "bicubic")])
def test_fnac_test_time_maps_ciou_and_auc_equal_official_test_py(run, upsample):
    from sspl.models.ezvsl import minmax_normalize, upsample_maps

    gold, stats = np.load(RELEASED / "fnac" / "test.npz"), _stats("fnac")
    model = _model("fnac")
    model.upsample = upsample
    frames, spect = _frames_spect("fnac")
    with torch.no_grad():
        raw = model.av_map(frames, spect)
        fused = model.localize(frames, spect)  # OGL, alpha 0.4
        av = minmax_normalize(upsample_maps(raw, (224, 224), upsample))
        obj = minmax_normalize(
            upsample_maps(model.saliency_map(frames), (224, 224), "bilinear-align-corners")
        )
    _close(raw, gold["raw"])
    for name, pred in (("av", av), ("obj", obj), ("av_obj", fused)):
        _close(pred[:, ::8, ::8], gold[f"{run}_{name}_pred_stride8"])
        _close(pred.sum(dim=(1, 2)), gold[f"{run}_{name}_pred_sum"], rtol=1e-5)
        # the evaluator: median threshold on the normalised map, cIoU, cIoU@0.5 and AUC
        result = evaluate_maps(
            dict(zip(IDS, pred.numpy())), dict(zip(IDS, stats["boxes256"])), Protocol(threshold="median")
        )
        theirs = stats[f"{run}_{name}"]
        np.testing.assert_allclose(list(result.cious.values()), theirs["ciou"], rtol=1e-6)
        assert result.ciou_success_rate == pytest.approx(theirs["ap50"])
        assert result.auc == pytest.approx(theirs["auc"])
        assert result.mean_ciou == pytest.approx(theirs["mean_ciou"])
