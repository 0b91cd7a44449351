"""Released checkpoints load as they are (issue 22): a file in the official EZ-VSL format (``{'model':
state_dict with 'module.' prefixes, 'optimizer', 'epoch', ...}``, seeded weights) goes through ``sspl.load``,
``sspl localize --checkpoint`` and the released-model names of ``sspl weights``, with its preprocessing; an
unknown file is one line naming the formats known.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import sspl
from released_recipe import MODEL_SEED, inputs, seeded_state
from sspl import weights
from sspl.errors import WeightsError
from sspl.models.ezvsl import EZVSL
from sspl.models.released import RELEASED_FORMATS, detect_format, read_released
from sspl.released_models import RELEASED_MODELS
from test_ezvsl import GOLDEN, build, check_maps, imagenet_standin, official_shapes

DATA = Path(__file__).parent / "data"
FLICKR_ID = "10006434483"  # a real Flickr frame and its 22.05 kHz track (tests/data/prepare)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """An official-format EZ-VSL ``best.pth`` and the ImageNet ResNet-18 stand-in OGL loads."""
    root = tmp_path_factory.mktemp("released")
    shapes = official_shapes(build())
    state = seeded_state(shapes, MODEL_SEED)
    model = {f"module.{k}": v for k, v in state.items()}
    params = [v for k, v in state.items() if "running" not in k and "num_batches" not in k]
    optimizer = torch.optim.Adam(params, lr=1e-4).state_dict()
    ckpt = root / "best.pth"
    torch.save({"model": model, "optimizer": optimizer, "epoch": 20, "best_cIoU": 0.8, "best_Auc": 0.6}, ckpt)
    imagenet = root / "resnet18-standin.pth"
    torch.save(imagenet_standin(), imagenet)
    return ckpt, imagenet


@pytest.fixture
def cache(tmp_path, monkeypatch, files):
    """A cache holding the stand-in as torchvision's resnet18-f37072fd.pth (its digest made the pinned one)."""
    monkeypatch.setenv("SSPL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.delenv("SSPL_RESNET18_WEIGHTS", raising=False)
    digest = weights.sha256_file(files[1])
    known = dataclasses.replace(
        weights.KNOWN_WEIGHTS["imagenet-resnet18"], sha256_prefix=digest[:8], sha256=digest
    )
    monkeypatch.setitem(weights.KNOWN_WEIGHTS, "imagenet-resnet18", known)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / known.filename).write_bytes(files[1].read_bytes())
    return tmp_path / "cache"


def test_the_format_is_told_by_its_keys(files):
    fmt, state = read_released(files[0])
    assert fmt is RELEASED_FORMATS["ezvsl"] and "imgnet.conv1.weight" in state  # module. removed
    slavc_like = {**state, "img_proj1.weight": state["img_proj.weight"]}
    assert detect_format(slavc_like) is None or detect_format(slavc_like).name != "ezvsl"


def test_sspl_load_reads_an_official_checkpoint_with_its_preprocessing(files, cache):
    model, preprocess = sspl.load(files[0], device="cpu")
    assert isinstance(model, EZVSL) and not model.training
    assert (preprocess.audio_frontend, preprocess.test_transform, preprocess.image_size) == (
        "stft",
        "resize",
        224,
    )
    assert model.threshold_protocol == "median"
    frames, spect = inputs()
    with torch.no_grad():
        fused = model.localize(frames, spect)
    golden = dict(np.load(GOLDEN / "ezvsl_golden.npz"))
    check_maps("av_obj", fused.numpy(), golden)  # the official test.py's maps, from the official file


def test_offline_without_the_ogl_weights_says_how_to_get_them(files, tmp_path, monkeypatch):
    monkeypatch.setenv("SSPL_CACHE", str(tmp_path / "empty"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.delenv("SSPL_RESNET18_WEIGHTS", raising=False)
    url = (tmp_path / "no-such-server" / "resnet18-f37072fd.pth").as_uri()
    known = dataclasses.replace(weights.KNOWN_WEIGHTS["imagenet-resnet18"], url=url)
    monkeypatch.setitem(weights.KNOWN_WEIGHTS, "imagenet-resnet18", known)
    with pytest.raises(WeightsError, match=r"cannot download resnet18-f37072fd\.pth .*Offline\?"):
        sspl.load(files[0], device="cpu")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (
            {"model": {"module.encoder.weight": torch.zeros(2)}},
            "a 'model' state dict whose keys match no known",
        ),
        ({"state": 1}, "not a checkpoint of a known format"),
        (torch.zeros(3), "not a checkpoint of a known format"),
    ],
)
def test_an_unknown_file_is_one_line_naming_the_known_formats(tmp_path, content, match):
    path = tmp_path / "mystery.pth"
    torch.save(content, path)
    with pytest.raises(WeightsError, match=match) as e:
        sspl.load(path, device="cpu")
    message = str(e.value)
    assert "\n" not in message and str(path) in message
    assert "ezvsl: EZ-VSL" in message and "sspl train" in message and "official SSPL" in message


def test_a_file_of_another_size_is_refused_naming_the_tensor(files, tmp_path, cache):
    ckpt = torch.load(files[0], weights_only=True)
    ckpt["model"]["module.img_proj.weight"] = torch.zeros(128, 512, 1, 1)
    path = tmp_path / "other.pth"
    torch.save(ckpt, path)
    with pytest.raises(WeightsError, match=r"other\.pth: ezvsl checkpoint does not fit .*img_proj\.weight"):
        sspl.load(path, device="cpu")


def test_a_released_model_is_found_by_name_where_sspl_weights_says(files, cache, capsys):
    from sspl.cli import main

    with pytest.raises(
        WeightsError, match=r"ezvsl-flickr10k: the released model is not downloaded; get best\.pth"
    ):
        sspl.load("ezvsl-flickr10k", device="cpu")
    assert main(["weights", "--released", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["command"], summary["count"], summary["listed"]) == ("weights", 0, 11)
    listed = summary["released"]
    assert set(listed) == set(RELEASED_MODELS) and len(listed) == 11
    entry = listed["ezvsl-flickr10k"]
    assert entry["published"] == "Flickr SoundNet cIoU@0.5 81.93, AUC 62.58" and not entry["found"]
    assert entry["page"].startswith(
        "https://drive.google.com/drive/folders/1I9nyn8VGU4HFEBDpEUpqFz1ywWcqzC6C"
    )
    assert {m["method"] for m in listed.values()} == {"ezvsl", "slavc", "fnac"}
    target = Path(entry["path"])
    target.parent.mkdir(parents=True)
    target.write_bytes(files[0].read_bytes())
    model, _ = sspl.load("ezvsl-flickr10k", device="cpu")
    assert isinstance(model, EZVSL)
    assert main(["weights"]) == 0
    out = capsys.readouterr().out
    assert "ezvsl-flickr10k    ezvsl trained on Flickr 10k" in out and f"found at {target}" in out


def test_cli_localize_with_a_released_checkpoint(files, cache, tmp_path, capsys):
    from sspl.cli import main

    image = tmp_path / "frame.png"
    Image.fromarray((np.random.default_rng(0).uniform(0, 255, (180, 300, 3))).astype(np.uint8)).save(image)
    out = tmp_path / "out"
    sound = DATA / "released" / "single_48000_mono.ogg"
    args = ["localize", "--checkpoint", str(files[0]), "--image", str(image), "--audio", str(sound)]
    assert main([*args, "--out", str(out), "--no-progress", "--device", "cpu"]) == 0
    heat = np.load(out / "frame_map.npy")
    assert heat.shape == (224, 224) and 0 <= heat.min() and heat.max() <= 1  # OGL's fused map
    assert (out / "frame_overlay.png").is_file()


def test_cli_evaluate_a_released_checkpoint_uses_its_inputs_and_median_threshold(files, cache, tmp_path):
    from sspl.cli import main
    from sspl.data.datasets import PreparedDataset, load_samples
    from sspl.data.prepare import prepare
    from sspl.metrics import ciou, gt_map_from_boxes, threshold_map

    src, native = tmp_path / "src", tmp_path / "native"
    src.mkdir()
    for ext in ("jpg", "wav"):
        shutil.copy(DATA / "prepare" / f"{FLICKR_ID}.{ext}", src / f"{FLICKR_ID}.{ext}")
    assert prepare(src, native, workers=1, progress=False, layout="pairs", native_audio=True).done == 1
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps([{"file": FLICKR_ID, "class": "x", "bbox": [[0.2, 0.1, 0.7, 0.9]]}]))
    out = tmp_path / "eval"
    args = ["evaluate", "--checkpoint", str(files[0]), "--data", str(native), "--benchmark", "vggss"]
    rc = main([*args, "--annotations", str(boxes), "--split", "all", "--out", str(out), "--no-progress"])
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    assert report["protocol"]["threshold"] == "median" and report["num_samples"] == 1
    # by hand: the model's map of the clip as the released model sees it, thresholded at its median
    model, pre = sspl.load(files[0], device="cpu")
    item = PreparedDataset(
        load_samples(native),
        mode="eval",
        audio_frontend=pre.audio_frontend,
        test_transform=pre.test_transform,
    )[0]
    with torch.no_grad():
        fused = model.localize(item["frame"][None], item["spect"][None])[0].numpy()
    gt = gt_map_from_boxes(np.array([[0.2, 0.1, 0.7, 0.9]]), box_format="normalized", rule="union")
    assert report["mean_ciou"] == pytest.approx(ciou(threshold_map(fused, "median"), gt), rel=1e-6)
