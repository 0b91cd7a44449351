"""``sspl prepare --native-frames``: each clip's frame kept at its source size, and the released EZ-VSL /
SLAVC / FNAC models' views taken from it exactly as their code takes them (``Image.open(path).convert('RGB')``,
then ``Resize((224, 224), BICUBIC)`` to evaluate, ``Resize(246, BICUBIC)`` -> ``RandomCrop(224)`` -> flip to
train), while SSPL keeps reading the 256 x 256 ``frames/<id>.jpg``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from sspl.cli import main
from sspl.config import Config
from sspl.data.annotations import Annotation
from sspl.data.datasets import PreparedDataset, load_samples, sample_seed
from sspl.data.manifest import read_meta
from sspl.data.prepare import prepare
from sspl.data.preprocess import Preprocess
from sspl.data.video import decode_frame_at, video_info, write_synthetic_video
from sspl.engine import train as train_engine
from sspl.engine.distributed import DistEnv
from sspl.engine.train_data import Splits
from sspl.errors import DataError
from sspl.metrics import BENCHMARKS, evaluate_maps
from sspl.models.released import RELEASED_FORMATS, released_config

IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
#: the released models' test and training transforms, written out as their code writes them
THEIR_TEST = T.Compose(
    [T.Resize((224, 224), InterpolationMode.BICUBIC), T.ToTensor(), T.Normalize(*IMAGENET)]
)
THEIR_TRAIN = T.Compose(
    [
        T.Resize(int(224 * 1.1), InterpolationMode.BICUBIC),
        T.RandomCrop((224, 224)),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(*IMAGENET),
    ]
)
SSPL_TEST = T.Compose(
    [T.Resize(224, InterpolationMode.BICUBIC), T.CenterCrop(224), T.ToTensor(), T.Normalize(*IMAGENET)]
)


def _their_read(path: Path) -> Image.Image:
    with Image.open(path) as img:
        return img.convert("RGB")


def _tone(path: Path, seconds: float = 4.0, rate: int = 16000) -> None:
    sf.write(path, 0.3 * np.sin(2 * np.pi * 440 * np.arange(int(seconds * rate)) / rate), rate)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> dict[str, Path]:
    """Image + audio pairs prepared without and with ``--native-frames``: ``shot``, a non-square 96 x 64
    JPEG photo with EXIF orientation 6 (turn a quarter clockwise); ``flat``, a 90 x 50 RGBA PNG whose
    transparent half hides red."""
    src = tmp_path_factory.mktemp("src")
    y, x = np.mgrid[0:64, 0:96]
    pixels = np.stack([x * 255 // 96, y * 255 // 64, (x * y) % 256], -1).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(src / "shot.jpg", quality=90, exif=exif)
    rgba = np.zeros((50, 90, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:, 45:, 3] = 255
    rgba[:, 45:, 1] = 200
    Image.fromarray(rgba, "RGBA").save(src / "flat.png")
    for name in ("shot", "flat"):
        _tone(src / f"{name}.wav")
    plain, native = tmp_path_factory.mktemp("plain"), tmp_path_factory.mktemp("native")
    assert prepare(src, plain, workers=1, progress=False, layout="pairs").done == 2
    assert prepare(src, native, workers=1, progress=False, layout="pairs", native_frames=True).done == 2
    return {"src": src, "plain": plain, "native": native}


def test_native_frames_are_the_source_images_as_their_code_reads_them(pairs):
    src, plain, native = pairs["src"], pairs["plain"], pairs["native"]
    assert read_meta(native)["native_frames"] is True and read_meta(plain)["native_frames"] is False
    assert not (plain / "frames_native").exists()
    assert sorted(p.name for p in (native / "frames_native").iterdir()) == ["flat.png", "shot.jpg"]
    # the JPEG's own bytes: no re-encode, its EXIF orientation left unapplied, as Image.open leaves it
    assert (native / "frames_native" / "shot.jpg").read_bytes() == (src / "shot.jpg").read_bytes()
    assert _their_read(native / "frames_native" / "shot.jpg").size == (96, 64)
    # SSPL's frame is the photo turned upright (portrait), squeezed to 256 x 256
    sspl_frame = np.asarray(_their_read(native / "frames" / "shot.jpg"), dtype=np.float32)
    assert sspl_frame.shape == (256, 256, 3)
    assert sspl_frame[:, :40, 1].mean() > sspl_frame[:, -40:, 1].mean() + 100  # green grew downwards
    # another format: the pixels of convert('RGB'), which drops the alpha channel (the hidden red shows)
    kept = np.asarray(Image.open(native / "frames_native" / "flat.png"))
    np.testing.assert_array_equal(kept, np.asarray(_their_read(src / "flat.png")))
    assert kept.shape == (50, 90, 3) and (kept[:, :45] == (255, 0, 0)).all()


def test_a_video_frame_is_kept_losslessly_at_its_size(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    write_synthetic_video(src / "clip.mp4", seconds=3.0, width=80, height=48, seed=1)
    out = tmp_path / "out"
    assert prepare(src, out, workers=1, progress=False, native_frames=True).done == 1
    decoded, _ = decode_frame_at(src / "clip.mp4", video_info(src / "clip.mp4").middle)
    kept = Image.open(out / "frames_native" / "clip.png")
    assert kept.size == (80, 48)
    np.testing.assert_array_equal(np.asarray(kept), np.asarray(decoded.convert("RGB")))


@pytest.mark.parametrize("released", sorted(RELEASED_FORMATS))
def test_released_models_evaluate_the_original_image_resized_at_once(pairs, released):
    preprocess = Preprocess.from_config(released_config(RELEASED_FORMATS[released]))
    for name, sample in zip(("flat", "shot"), load_samples(pairs["native"])):
        item = PreparedDataset([sample], mode="eval", test_transform=preprocess.test_transform)[0]
        expect = THEIR_TEST(_their_read(pairs["src"] / f"{name}.{'png' if name == 'flat' else 'jpg'}"))
        torch.testing.assert_close(item["frame"], expect, rtol=0, atol=0)
    # without native frames the same model sees the 256 x 256 frame: not their input
    plain = load_samples(pairs["plain"])[1]
    item = PreparedDataset([plain], mode="eval", test_transform=preprocess.test_transform)[0]
    torch.testing.assert_close(item["frame"], THEIR_TEST(_their_read(plain.frame)), rtol=0, atol=0)
    assert (item["frame"] - THEIR_TEST(_their_read(pairs["src"] / "shot.jpg"))).abs().max() > 0.5


def test_released_training_views_come_from_the_original_image(pairs):
    seed, fmt = 7, RELEASED_FORMATS["ezvsl"]
    cfg = released_config(fmt)
    samples = load_samples(pairs["native"])
    ds = PreparedDataset(
        samples,
        mode="train",
        augmentations=cfg.data.augmentations,
        seed=seed,
        test_transform=cfg.data.test_transform,
    )
    original = _their_read(pairs["src"] / "shot.jpg")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(sample_seed(seed, 0, 1))
        expect = THEIR_TRAIN(original), THEIR_TRAIN(original)
    item = ds[1]
    assert item["id"] == "shot"
    torch.testing.assert_close(item["frame_view1"], expect[0], rtol=0, atol=0)
    torch.testing.assert_close(item["frame_view2"], expect[1], rtol=0, atol=0)
    # `sspl train` builds its training set so, from the config's test transform
    splits = Splits(train=samples, val=[], labels={}, val_annotations=None, protocol_name="vggss")
    cfg.train.seed = seed
    built, *_ = train_engine._train_loader(cfg, splits, DistEnv(), None, None)
    torch.testing.assert_close(built[1]["frame_view1"], expect[0], rtol=0, atol=0)


def test_sspl_keeps_reading_the_256_frame(pairs):
    preprocess = Preprocess.from_config(Config())
    assert preprocess.test_transform == "crop"
    sample = load_samples(pairs["native"])[1]
    assert sample.native_frame == pairs["native"] / "frames_native" / "shot.jpg"
    item = PreparedDataset([sample], mode="eval", test_transform=preprocess.test_transform)[0]
    torch.testing.assert_close(item["frame"], SSPL_TEST(_their_read(sample.frame)), rtol=0, atol=0)
    train = PreparedDataset([sample], mode="train", seed=3)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(sample_seed(3, 0, 0))
        view = THEIR_TRAIN(_their_read(sample.frame))  # the same draws, from the 256 x 256 frame
    torch.testing.assert_close(train[0]["frame_view1"], view, rtol=0, atol=0)


def test_ciou_of_a_map_from_a_non_square_native_frame_is_the_official_evaluators(tmp_path):
    """The released models' map covers the whole original frame; the official evaluator scales the
    normalised VGG-SS boxes to 224 x 224 and thresholds the map at its median: so does ours."""
    src = tmp_path / "src"
    src.mkdir()
    # a bright object at normalised [0.125, 0.25, 0.875, 1.0], more than half the frame (the median rule)
    pixels = np.zeros((192, 320, 3), np.uint8)
    pixels[48:192, 40:280] = 255
    Image.fromarray(pixels).save(src / "wide.png")
    _tone(src / "wide.wav")
    out = tmp_path / "out"
    assert prepare(src, out, workers=1, progress=False, layout="pairs", native_frames=True).done == 1
    item = PreparedDataset(load_samples(out), mode="eval", test_transform="resize")[0]
    score_map = item["frame"].mean(0).numpy()  # 224 x 224: a "model" that sees the bright object
    box = [0.125, 0.25, 0.875, 1.0]
    result = evaluate_maps(
        {"wide": score_map},
        {"wide": Annotation("wide", np.array([box]), "normalized")},
        BENCHMARKS["vggss"].with_threshold("median"),
    )
    # the official rule, written out: gt from (clip(box) * 224).astype(int), map >= its median element
    x1, y1, x2, y2 = (np.clip(np.array(box), 0, 1) * 224).astype(int)
    gt = np.zeros((224, 224))
    gt[y1:y2, x1:x2] = 1
    median = np.sort(score_map.flatten())[224 * 224 // 2]
    infer = (score_map >= median).astype(float)
    official = np.sum(infer * gt) / (np.sum(gt) + np.sum(infer * (gt == 0)))
    assert result.cious["wide"] == pytest.approx(official, abs=1e-12)
    assert official > 0.9  # the object sits where its box says on the squeezed frame


def test_resuming_with_another_native_frames_setting_is_refused(pairs, tmp_path):
    src, plain, native = pairs["src"], pairs["plain"], pairs["native"]
    with pytest.raises(DataError, match="prepared with native_frames=True, not False"):
        prepare(src, native, workers=1, progress=False, layout="pairs")
    with pytest.raises(DataError, match="prepared with native_frames=False, not True"):
        prepare(src, plain, workers=1, progress=False, layout="pairs", native_frames=True)
    # a folder prepared before the option existed has no key: it was prepared without native frames
    old = tmp_path / "old"
    assert prepare(src, old, workers=1, progress=False, layout="pairs").done == 2
    meta = json.loads((old / "meta.json").read_text())
    del meta["native_frames"]
    (old / "meta.json").write_text(json.dumps(meta))
    assert prepare(src, old, workers=1, progress=False, layout="pairs").skipped == 2


def test_cli_native_frames(pairs, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["prepare", str(pairs["src"]), str(out), "--layout", "pairs", "--workers", "1", "--no-progress"]
    assert main([*args, "--native-frames"]) == 0
    assert (out / "frames_native" / "shot.jpg").read_bytes() == (pairs["src"] / "shot.jpg").read_bytes()
    assert read_meta(out)["native_frames"] is True
