"""Official SLAVC and FNAC ``best.pth`` files (written in their format from seeded weights) are recognised
and load as they are: the maps of the loaded model equal the official code's (goldens in
tests/data/released/*)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from slavc_fnac_recipe import RELEASED, inputs, write_released_checkpoint
from sspl.config import Config
from sspl.errors import WeightsError
from sspl.models.released import load_released, read_released


def _frames_spect(method: str):
    x = inputs(method, "test")
    return torch.from_numpy(x["image"]).float(), torch.from_numpy(x["spec"]).float()


def test_official_slavc_file_is_recognised_and_loads_with_its_momentum_encoder(tmp_path):
    momentum_map, tag = (
        True,
        "relative_mom",
    )  # the map of the momentum encoder, read from the file's momentum_*
    path = write_released_checkpoint("slavc", tmp_path / "best.pth")
    assert read_released(path)[0].name == "slavc"
    # without OGL nothing is downloaded (its ImageNet network is not in the file)
    base = Config(method="slavc", method_options={"ogl": False, "momentum_map": momentum_map})
    model, cfg = load_released(path, config=base, download=False)
    assert (
        cfg.method == "slavc" and cfg.model.audio_frontend == "stft" and cfg.data.test_transform == "resize"
    )
    frames, spect = _frames_spect("slavc")
    with torch.no_grad():
        raw = model.av_map(frames, spect)
    np.testing.assert_allclose(
        raw.numpy(), np.load(RELEASED / "slavc" / "test.npz")[f"{tag}_raw"], rtol=1e-5, atol=1e-6
    )


def test_official_fnac_file_is_told_from_ezvsl_by_its_recorded_weight_decay(tmp_path):
    path = write_released_checkpoint("fnac", tmp_path / "best.pth")
    assert read_released(path)[0].name == "fnac"
    model, cfg = load_released(
        path, config=Config(method="fnac", method_options={"ogl": False}), download=False
    )
    assert cfg.method == "fnac"
    frames, spect = _frames_spect("fnac")
    gold = np.load(RELEASED / "fnac" / "test.npz")["raw"]
    with torch.no_grad():
        np.testing.assert_allclose(model.av_map(frames, spect).numpy(), gold, rtol=1e-5, atol=1e-6)
    # without the optimizer entry the keys alone cannot tell FNAC from EZ-VSL: it loads as EZ-VSL, whose
    # network and test-time map FNAC shares, so the maps are the same
    bare = write_released_checkpoint("fnac", tmp_path / "bare.pth", optimizer=False)
    assert read_released(bare)[0].name == "ezvsl"
    model, _ = load_released(
        bare, config=Config(method="fnac", method_options={"ogl": False}), download=False
    )
    with torch.no_grad():
        np.testing.assert_allclose(model.av_map(frames, spect).numpy(), gold, rtol=1e-5, atol=1e-6)


def test_a_slavc_file_missing_a_momentum_tensor_is_refused_in_one_line(tmp_path):
    path = write_released_checkpoint("slavc", tmp_path / "best.pth")
    ckpt = torch.load(path, weights_only=True)
    del ckpt["model"]["module.momentum_aud_proj2.bias"]
    torch.save(ckpt, path)
    with pytest.raises(WeightsError, match=r"best.pth: slavc checkpoint does not fit the model") as info:
        load_released(path, config=Config(method="fnac", method_options={"ogl": False}), download=False)
    assert "\n" not in str(info.value)


@pytest.fixture
def imagenet_standin(tmp_path, monkeypatch):
    """Install ``method``'s seeded saliency stand-in as the cached torchvision ``resnet18-f37072fd.pth``
    (its digest made the pinned one), so that OGL loads it without a download."""
    import dataclasses

    from slavc_fnac_recipe import saliency_state_dict
    from sspl import weights

    def install(method: str) -> None:
        cache = tmp_path / f"cache-{method}"
        cache.mkdir()
        monkeypatch.setenv("SSPL_CACHE", str(cache))
        monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
        monkeypatch.delenv("SSPL_RESNET18_WEIGHTS", raising=False)
        standin = tmp_path / f"standin-{method}.pth"
        torch.save(saliency_state_dict(method), standin)
        digest = weights.sha256_file(standin)
        known = dataclasses.replace(
            weights.KNOWN_WEIGHTS["imagenet-resnet18"], sha256_prefix=digest[:8], sha256=digest
        )
        monkeypatch.setitem(weights.KNOWN_WEIGHTS, "imagenet-resnet18", known)
        (cache / known.filename).write_bytes(standin.read_bytes())

    return install


@pytest.mark.parametrize("method,golden", [("slavc", "script_av_obj"), ("fnac", "validate_av_obj")])
def test_sspl_load_gives_the_official_test_time_map_with_object_guidance(
    tmp_path, imagenet_standin, method, golden
):
    import sspl

    imagenet_standin(method)
    path = write_released_checkpoint(method, tmp_path / "best.pth")
    model, preprocess = sspl.load(path, device="cpu")
    assert (preprocess.audio_frontend, preprocess.test_transform) == ("stft", "resize")
    assert model.threshold_protocol == "median"
    frames, spect = _frames_spect(method)
    with torch.no_grad():
        fused = model.localize(frames, spect).numpy()  # SLAVC: alpha 0.9, bicubic; FNAC: alpha 0.4, bilinear
    gold = np.load(RELEASED / method / "test.npz")
    np.testing.assert_allclose(fused[:, ::8, ::8], gold[f"{golden}_pred_stride8"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fused.sum(axis=(1, 2)), gold[f"{golden}_pred_sum"], rtol=1e-5)


def test_cli_localize_with_an_official_slavc_checkpoint(tmp_path, imagenet_standin):
    from PIL import Image

    from sspl.cli import main

    imagenet_standin("slavc")
    path = write_released_checkpoint("slavc", tmp_path / "best.pth")
    image = tmp_path / "frame.png"
    Image.fromarray(np.random.default_rng(0).uniform(0, 255, (180, 300, 3)).astype(np.uint8)).save(image)
    sound = RELEASED / "single_48000_mono.ogg"
    out = tmp_path / "out"
    args = [
        "localize",
        "--checkpoint",
        str(path),
        "--image",
        str(image),
        "--audio",
        str(sound),
        "--out",
        str(out),
    ]
    assert main([*args, "--no-progress", "--device", "cpu"]) == 0
    heat = np.load(out / "frame_map.npy")
    assert heat.shape == (224, 224) and np.isfinite(heat).all()
    assert (out / "frame_overlay.png").is_file()


def test_cli_evaluate_an_official_slavc_checkpoint_with_its_absolute_threshold(tmp_path, imagenet_standin):
    import json
    import shutil

    from sspl.cli import main
    from sspl.data.datasets import PreparedDataset, load_samples
    from sspl.data.prepare import prepare
    from sspl.metrics import ciou, gt_map_from_boxes, normalize_map

    imagenet_standin("slavc")
    path = write_released_checkpoint("slavc", tmp_path / "best.pth")
    flickr_id, data = "10006434483", RELEASED.parent / "prepare"  # a real Flickr frame and its track
    src, native = tmp_path / "src", tmp_path / "native"
    src.mkdir()
    for ext in ("jpg", "wav"):
        shutil.copy(data / f"{flickr_id}.{ext}", src / f"{flickr_id}.{ext}")
    assert prepare(src, native, workers=1, progress=False, layout="pairs", native_audio=True).done == 1
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps([{"file": flickr_id, "class": "x", "bbox": [[0.2, 0.1, 0.7, 0.9]]}]))
    out = tmp_path / "eval"
    args = ["evaluate", "--checkpoint", str(path), "--data", str(native), "--benchmark", "vggss"]
    args += ["--annotations", str(boxes), "--split", "all", "--protocol", "absolute", "--out", str(out)]
    assert main([*args, "--no-progress"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["protocol"]["threshold"] == "absolute" and report["num_samples"] == 1
    # by hand: the official scores of the clip as the released model sees it, >= 0.5 as they are
    import sspl

    model, pre = sspl.load(path, device="cpu")
    samples = load_samples(native)
    item = PreparedDataset(
        samples, mode="eval", audio_frontend=pre.audio_frontend, test_transform=pre.test_transform
    )[0]
    with torch.no_grad():
        scores = model.localize(item["frame"][None], item["spect"][None])[0].numpy()
    gt = gt_map_from_boxes(np.array([[0.2, 0.1, 0.7, 0.9]]), box_format="normalized", rule="union")
    assert report["mean_ciou"] == pytest.approx(ciou(scores >= 0.5, gt), rel=1e-6)
    # not min-max normalised first (with seeded weights the object scores exceed 0.5 everywhere)
    assert report["mean_ciou"] != pytest.approx(ciou(normalize_map(scores) >= 0.5, gt), rel=1e-3)
