"""EZ-VSL on the shared streams equals the official code (github.com/stoneMo/EZ-VSL, goldens made by running
it on seeded weights: tests/data/released/ezvsl/README.md): training loss, maps, the gradient of every
trained tensor, the test-time maps with and without object-guided localization, and their cIoU / AUC.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from released_recipe import IMAGENET_SEED, MODEL_SEED, gt_maps, inputs, seeded_state
from sspl.config import ConfigError, apply_overrides
from sspl.metrics import BENCHMARKS, auc, ciou, success_curve, threshold_map
from sspl.models.ezvsl import EZVSL, minmax_normalize, upsample_maps
from sspl.models.methods import get_method
from sspl.models.methods.ezvsl import max_mil_loss
from sspl.models.released import RELEASED_FORMATS, released_config, to_state_dict

GOLDEN = Path(__file__).parent / "data" / "released" / "ezvsl"
RTOL = 1e-4
FMT = RELEASED_FORMATS["ezvsl"]
CONFIG = released_config(FMT)


def official_shapes(model: EZVSL) -> dict[str, tuple[int, ...]]:
    """The official state-dict keys and shapes of our model (OGL's saliency network is not in the file)."""
    back = {ours: theirs for theirs, ours in FMT.prefixes}
    out = {}
    for key, value in model.state_dict().items():
        if key.startswith("saliency_encoder."):
            continue
        prefix = next((p for p in back if key.startswith(p)), None)
        out[back[prefix] + key[len(prefix) :] if prefix else key] = tuple(value.shape)
    return out


def imagenet_standin() -> dict[str, torch.Tensor]:
    """The seeded stand-in of torchvision's ImageNet ResNet-18 file (fc included, as published)."""
    shapes = {k: tuple(v.shape) for k, v in torchvision.models.resnet18(weights=None).state_dict().items()}
    return seeded_state(shapes, IMAGENET_SEED)


def build() -> EZVSL:
    model = get_method("ezvsl").build(CONFIG, pretrained=False)
    state = to_state_dict(FMT, seeded_state(official_shapes(model), MODEL_SEED))
    if model.saliency_encoder is not None:
        sal = {k: v for k, v in imagenet_standin().items() if not k.startswith("fc.")}
        state.update({f"saliency_encoder.{k}": v for k, v in sal.items()})
    model.load_state_dict(state)
    return model


@pytest.fixture(scope="module")
def golden():
    data = dict(np.load(GOLDEN / "ezvsl_golden.npz"))
    data.update(json.loads((GOLDEN / "ezvsl_golden.json").read_text()))
    return data


@pytest.fixture(scope="module")
def batch(golden):
    frames, spect = inputs()
    # the recipe draws the same inputs the official run saw
    assert float(frames.double().sum()) == pytest.approx(golden["frames_sum"], rel=1e-12)
    assert float(spect.double().sum()) == pytest.approx(golden["spect_sum"], rel=1e-12)
    return frames, spect


@pytest.fixture(scope="module")
def runs(batch):
    """Everything the official run computed, computed once by one model (a training forward moves the
    batch-norm statistics, so the test-time maps come first)."""
    frames, spect = batch
    model = build().eval()
    out = {}
    with torch.no_grad():
        out["raw"] = model.av_map(frames, spect)
        out["saliency"] = model.saliency_map(frames)
        out["fused"] = model.localize(frames, spect)  # OGL, alpha 0.4: what the official test.py scores
        model.ogl_alpha, model.upsample = None, "none"
        out["none"] = model.localize(frames[:2], spect[:2])
        out["method_loss"] = get_method("ezvsl").loss(
            model, {"frame_view1": frames[:2], "spect": spect[:2]}, CONFIG
        )
        out["eval_logits"] = model(frames[:2], spect[:2]).logits
    model.train()
    forward = model(frames, spect)
    loss = max_mil_loss(forward.logits)
    loss.backward()
    out["loss"], out["train_map"] = loss.item(), forward.av_map.detach()
    out["grads"] = {n: p.grad.double().norm().item() for n, p in model.named_parameters() if p.requires_grad}
    return out


def close(ours, theirs, rtol=RTOL):
    ours = ours.detach().numpy() if torch.is_tensor(ours) else np.asarray(ours)
    scale = np.abs(theirs).max()
    np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=rtol * scale)


def test_training_loss_map_and_every_gradient_equal_the_official(runs, golden):
    assert runs["loss"] == pytest.approx(golden["loss"], rel=RTOL)
    close(runs["train_map"], golden["savl_train"])  # batch norms in training mode use batch statistics
    rename = dict(FMT.prefixes)
    theirs = {}
    for name, norm in zip(golden["grad_names"], golden["grad_norms"], strict=True):
        prefix = next((p for p in rename if name.startswith(p)), "")
        theirs[rename.get(prefix, "") + name[len(prefix) :]] = norm
    assert sorted(runs["grads"]) == sorted(theirs)  # the same trained tensors (OGL's network is frozen)
    for name, norm in runs["grads"].items():
        assert norm == pytest.approx(theirs[name], rel=RTOL), name


def test_the_method_loss_is_the_multiple_instance_loss_of_the_models_maps(runs):
    loss, extra = runs["method_loss"]
    logits = runs["eval_logits"].double()  # 2 x 2 x 7 x 7, [i, j] = audio j on frame i
    scores = logits.flatten(2).amax(dim=2)
    by_hand = -scores.log_softmax(1).diagonal().mean() - scores.log_softmax(0).diagonal().mean()
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-5)
    assert extra["pos_max_cos"] == pytest.approx(scores.diagonal().mean().item() * 0.03, rel=1e-5)


def _maps_like_official(maps: torch.Tensor) -> np.ndarray:
    return minmax_normalize(maps).numpy()


def check_maps(kind: str, pred: np.ndarray, golden: dict) -> None:
    """The normalised 224 x 224 maps, their median thresholds, cIoU, cIoU@0.5 and AUC, as the official."""
    close(pred[:, ::7, ::7], golden[f"{kind}_maps_sub"])
    close(pred.astype(np.float64).sum(axis=(1, 2)), golden[f"{kind}_sums"])
    thr = np.sort(pred.reshape(len(pred), -1), axis=1)[:, 224 * 224 // 2]
    close(thr, golden[f"{kind}_thr"])
    cious = ciou(threshold_map(pred, "median"), gt_maps())
    np.testing.assert_allclose(cious, golden[f"{kind}_ciou"], rtol=1e-6)
    stats = [np.mean(cious >= 0.5), cious.mean(), auc(success_curve(cious))]
    np.testing.assert_allclose(stats, golden[f"{kind}_stats"], rtol=1e-6)


def test_test_time_maps_with_object_guided_localization_equal_the_official(runs, golden):
    close(runs["raw"], golden["savl_eval"])
    av = upsample_maps(runs["raw"], (224, 224), "bilinear-align-corners")
    check_maps("av", _maps_like_official(av), golden)
    obj = upsample_maps(runs["saliency"], (224, 224), "bilinear-align-corners")
    check_maps("obj", _maps_like_official(obj), golden)
    assert runs["fused"].shape == (4, 224, 224)
    check_maps("av_obj", runs["fused"].numpy(), golden)


def test_the_evaluator_scores_the_raw_map_as_the_official_test_script(runs, golden):
    # sspl evaluate --upsample align-corners --protocol median on the 7 x 7 map: the official "AV" numbers
    proto = replace(BENCHMARKS["flickr"].with_threshold("median"), align_corners=True)
    np.testing.assert_allclose(ciou(proto.mask(runs["raw"]), gt_maps()), golden["av_ciou"], rtol=1e-6)


def test_bicubic_validation_maps_equal_the_official_training_script(runs, golden):
    pred = _maps_like_official(upsample_maps(runs["raw"], (224, 224), "bicubic"))
    check_maps("val_bicubic", pred, golden)
    cious = ciou(threshold_map(pred, "median"), gt_maps())
    # train.py's validate returns (cIoU@0.5, AUC)
    np.testing.assert_allclose(
        [np.mean(cious >= 0.5), auc(success_curve(cious))], golden["val_cIoU_AUC"], rtol=1e-6
    )


def test_raw_maps_without_ogl_keep_the_feature_resolution(runs):
    assert runs["none"].shape == (2, 7, 7)
    torch.testing.assert_close(runs["none"], runs["raw"][:2])


def test_without_ogl_no_saliency_network_is_built():
    cfg = apply_overrides(CONFIG, ["method_options.ogl=false"])
    model = get_method("ezvsl").build(cfg, pretrained=False)
    assert model.saliency_encoder is None
    assert not any(k.startswith("saliency_encoder.") for k in model.state_dict())


@pytest.mark.parametrize("method", ["ezvsl", "slavc", "fnac"])
def test_options_are_checked(method):
    cfg = CONFIG
    for bad, match in [
        ("tau=0", "tau=0.0: must be > 0"),
        ("dim=0", "dim=0: must be >= 1"),
        ("ogl_alpha=2", r"ogl_alpha=2.0: must be in \[0, 1\]"),
        ("upsample=nearest", "upsample='nearest': choose from"),
        ("upsample=none", "OGL mixes maps at the frame size"),
        ("nonsense=1", "unknown method_options key"),
    ]:
        with pytest.raises(ConfigError, match=match):
            get_method(method).build(apply_overrides(cfg, [f"method_options.{bad}"]), pretrained=False)


@pytest.mark.parametrize(
    ("name", "train_list", "epochs"),
    [
        ("flickr10k", "flickr_10k", 100),
        ("flickr144k", "flickr_144k", 20),
        ("vggsound10k", "vggss_10k", 100),
        ("vggsound144k", "vggss_144k", 20),
        ("vggsoundfull", None, 20),
        ("vggsoundheard", "vggss_heard", 20),
    ],
)
def test_each_official_training_script_has_its_config(name, train_list, epochs):
    from sspl.config import load_config
    from sspl.models.methods.ezvsl import EZVSLOptions
    from sspl.models.methods.negatives import parse_method_options

    cfg = load_config(Path(__file__).parents[1] / "configs" / f"ezvsl_{name}.yaml")
    assert (cfg.method, cfg.data.train_list, cfg.train.epochs) == ("ezvsl", train_list, epochs)
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.train.batch_size) == (1e-4, 0.0, 128)
    assert cfg.data.augmentations == ["crop", "hflip"] and cfg.data.test_transform == "resize"
    released = released_config(FMT)
    assert cfg.model == replace(released.model, visual_weights="imagenet")
    assert parse_method_options(EZVSLOptions, cfg) == EZVSLOptions()  # tau 0.03, dim 512, OGL alpha 0.4


def test_the_extended_confidence_is_slavcs_rule_on_the_cosine():
    from sspl.metrics_extended import slavc_confidence

    cos = torch.rand(3, 7, 7, generator=torch.Generator().manual_seed(0)) * 2 - 1
    raw = get_method("ezvsl").build(apply_overrides(CONFIG, ["method_options.ogl=false"]), pretrained=False)
    np.testing.assert_allclose(
        raw.map_confidence(cos / raw.tau).numpy(), slavc_confidence(cos, (-1.0, 1.0)), rtol=1e-5
    )
    fused = get_method("ezvsl").build(CONFIG, pretrained=False)  # OGL: min-max maps in [0, 1]
    maps = (cos + 1) / 2
    np.testing.assert_allclose(fused.map_confidence(maps).numpy(), slavc_confidence(maps, (0.0, 1.0)))
    assert not np.allclose(fused.map_confidence(maps).numpy(), slavc_confidence(maps, (-1.0, 1.0)))
