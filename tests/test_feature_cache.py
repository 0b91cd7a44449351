"""The optional visual-feature cache (``data.cache_visual``): what it stores, how its views relate to
the pixel views, and the trainer with the flag (runs, resumes bit-for-bit, refuses wrong settings)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision.transforms import functional as TF

from sspl.cli import main as cli_main
from sspl.config import Config, ConfigError, apply_overrides
from sspl.data.datasets import PreparedDataset, Sample
from sspl.data.feature_cache import (
    FeatureCropFlip,
    VisualFeatureCache,
    build_visual_cache,
    check_cache_visual_config,
    resize_transform,
    visual_cache_dir,
)
from sspl.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_train_transform
from sspl.engine.checkpoint import load_checkpoint
from sspl.engine.train import train
from sspl.models.small import SmallVisualCNN
from sspl.models.sspl import SSPL

SMALL = [
    "model.visual_encoder=small_cnn",
    "model.audio_encoder=small_cnn",
    "model.visual_channels=32",
    "model.visual_weights=null",
    "model.audio_weights=null",
    "model.proj_dim=64",
    "model.pred_hidden=16",
    "model.transform_hidden=32",
    "model.pcm=false",
    "train.batch_size=4",
    "train.max_steps_per_epoch=2",
    "train.log_every=1",
    "data.num_workers=0",
    "optim.lr_head=1e-3",
    "optim.lr=1e-3",
]


def frame_samples(folder: Path, count: int, size: int = 256) -> list[Sample]:
    """Random-noise frames (only the frame file is read by the cache)."""
    rng = np.random.default_rng(0)
    samples = []
    for k in range(count):
        path = folder / f"f{k}.jpg"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path, quality=95)
        samples.append(Sample(f"clip{k}", path, folder / "none.npy", folder / "none.wav"))
    return samples


class Patchify(nn.Module):
    """Stride-16 16 x 16 patch embedding with left-right symmetric kernels: no padding, no overlap and
    flip-equivariant, so a crop at a multiple of 16 is exactly a window of the full image's map."""

    stride = 16

    def __init__(self, channels: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, channels, 16, stride=16)
        with torch.no_grad():
            self.conv.weight.copy_(0.5 * (self.conv.weight + self.conv.weight.flip(-1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def pixel_view(image: Image.Image, i: int, j: int, flip: bool) -> torch.Tensor:
    """The official pixel pipeline at given draws: Resize(246) -> crop(i, j, 224) -> flip -> normalise."""
    resized = TF.resize(image, 246, interpolation=TF.InterpolationMode.BICUBIC)
    crop = TF.crop(resized, i, j, 224, 224)
    if flip:
        crop = TF.hflip(crop)
    return TF.normalize(TF.to_tensor(crop), IMAGENET_MEAN, IMAGENET_STD)


# --------------------------------------------------------------------------------------------------
# the cache and its views
# --------------------------------------------------------------------------------------------------


def test_cached_features_are_the_encoder_on_the_crop_resize(tmp_path):
    samples = frame_samples(tmp_path, 5)
    encoder = SmallVisualCNN(16).eval()
    folder = visual_cache_dir(tmp_path / "cache", encoder)
    cache = build_visual_cache(encoder, samples, folder, batch_size=2)
    # 246 -> 123 -> 62 -> 31 -> 16 for the small CNN; a 224 view is 14 cells of 16 pixels
    assert cache.shape == (5, 16, 16, 16) and cache.resized_hw == (246, 246)
    assert cache.window == 14 and cache.stride == 16
    with torch.no_grad():
        frames = torch.stack([resize_transform()(s.load_frame()) for s in samples])
        expected = encoder(frames)
    for k, s in enumerate(samples):
        got = cache[s.id]
        assert got.dtype == torch.float16 and got.shape == (16, 16, 16)
        # float16 storage: relative rounding at most 2^-11 of each value
        torch.testing.assert_close(got.float(), expected[k], rtol=2**-11, atol=1e-6)


def test_cache_is_reused_and_rebuilt_when_a_frame_or_the_encoder_changes(tmp_path):
    samples = frame_samples(tmp_path, 3)
    encoder = SmallVisualCNN(8).eval()
    folder = visual_cache_dir(tmp_path / "cache", encoder)
    build_visual_cache(encoder, samples, folder)
    features = folder / "features.npy"
    first = features.stat().st_mtime_ns
    assert build_visual_cache(encoder, samples, folder).matches(samples)
    assert features.stat().st_mtime_ns == first  # reused, not recomputed

    Image.new("RGB", (256, 256), (200, 10, 10)).save(samples[1].frame)
    with pytest.raises(Exception, match="changed since the visual cache was built"):
        VisualFeatureCache(folder).check(samples)
    rebuilt = build_visual_cache(encoder, samples, folder)
    with torch.no_grad():
        red = encoder(resize_transform()(samples[1].load_frame())[None])[0]
    torch.testing.assert_close(rebuilt[samples[1].id].float(), red, rtol=2**-11, atol=1e-6)

    other = SmallVisualCNN(8).eval()  # other weights: another folder
    assert visual_cache_dir(tmp_path / "cache", other) != folder


def test_feature_views_draw_what_the_pixel_pipeline_draws(tmp_path):
    image = frame_samples(tmp_path, 1)[0].load_frame()
    pixels = build_train_transform()  # the default: crop + hflip
    views = FeatureCropFlip((246, 246), window=14, stride=16)
    flips = set()
    for seed in range(20):
        torch.manual_seed(seed)
        expected = pixels(image)
        torch.manual_seed(seed)
        i, j, flip = views.draw()
        flips.add(flip)
        assert torch.equal(expected, pixel_view(image, i, j, flip)), seed
    assert flips == {True, False}


def test_feature_views_equal_pixel_views_where_the_crop_is_stride_aligned(tmp_path):
    samples = frame_samples(tmp_path, 1)
    image = samples[0].load_frame()
    encoder = Patchify().eval()
    cache = build_visual_cache(encoder, samples, tmp_path / "cache")
    assert cache.shape[-2:] == (15, 15) and cache.window == 14
    views = FeatureCropFlip.for_cache(cache)
    full = cache[samples[0].id].float()
    for i in (0, 16):  # offsets 0..22 are drawn; 0 and 16 are the multiples of the stride
        for j in (0, 16):
            for flip in (False, True):
                with torch.no_grad():
                    exact = encoder(pixel_view(image, i, j, flip)[None])[0]
                torch.testing.assert_close(views.view(full, i, j, flip), exact, rtol=2e-3, atol=2e-3)
    # Other offsets are rounded half up to the nearest cell and kept inside the map.
    assert [views.cells(i, i, (15, 15))[0] for i in (0, 7, 8, 16, 22)] == [0, 0, 1, 1, 1]


def test_dataset_serves_feature_views_for_training_only(tmp_path):
    samples = frame_samples(tmp_path, 2)
    cache = build_visual_cache(SmallVisualCNN(8).eval(), samples, tmp_path / "cache")
    embeddings = {s.id: torch.zeros(3, 128) for s in samples}
    ds = PreparedDataset(samples, mode="train", seed=1, audio_embeddings=embeddings, visual_features=cache)
    item = ds[0]
    assert "frame_view1" not in item
    assert item["feat_view1"].shape == item["feat_view2"].shape == (8, 14, 14)
    assert torch.equal(ds[0]["feat_view1"], item["feat_view1"])  # seeded per (seed, epoch, index)
    with pytest.raises(ValueError, match="exact frames"):
        PreparedDataset(samples, mode="eval", visual_features=cache)
    with pytest.raises(ValueError, match="augmentations"):
        PreparedDataset(samples, augmentations=["crop", "hflip", "grayscale"], visual_features=cache)


def test_model_on_precomputed_features_equals_the_model_on_frames():
    torch.manual_seed(0)
    model = SSPL(apply_overrides(Config(), SMALL).model).eval()
    v1, v2 = torch.randn(2, 3, 3, 224, 224).unbind(0)
    spect = torch.randn(3, 3, 96, 64)
    with torch.no_grad():
        exact = model.training_loss(v1, v2, spect)
        f1, f2 = model.encode_visual(v1), model.encode_visual(v2)
        cached = model.training_loss(None, None, spect, visual_features=(f1, f2))
    torch.testing.assert_close(cached, exact, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="not both"):
        model(v1, v2, spect, visual_features=(f1, f2))


# --------------------------------------------------------------------------------------------------
# training with the flag
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> Path:
    from sspl.data.synth import generate_synth, synth_config

    out = tmp_path_factory.mktemp("synth") / "set"
    generate_synth(out, synth_config("easy", num=16, seed=5, pretrain_num=0), workers=1, progress=False)
    return out


def test_training_with_cache_visual_runs_and_resumes_bit_for_bit(synth_dir, tmp_path):
    cfg = apply_overrides(Config(), [*SMALL, "data.cache_visual=true", "train.epochs=2"])
    full = train(cfg, synth_dir, tmp_path / "full", progress=False)
    assert full.steps == 4
    index = json.loads(next((tmp_path / "full" / "cache").glob("visual_*/index.json")).read_text())
    assert index["window"] == 14 and len(index["ids"]) == len(index["frames"]) > 0
    assert all(math.isfinite(r["val_loss"]) for r in full.history)  # validation ran, on exact frames

    one = apply_overrides(cfg, ["train.epochs=1"])
    train(one, synth_dir, tmp_path / "split", progress=False)
    resumed = train(cfg, synth_dir, tmp_path / "split", resume=True, progress=False)
    assert resumed.steps == 4
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "split" / "checkpoints" / "last.pt")["model"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_training_with_cache_audio_is_the_exact_run(synth_dir, tmp_path):
    # The frozen audio encoder's embeddings are computed once: the same numbers, so the same run.
    exact = apply_overrides(Config(), [*SMALL, "train.epochs=2"])
    train(exact, synth_dir, tmp_path / "exact", progress=False)
    cached = train(
        apply_overrides(exact, ["data.cache_audio=true"]), synth_dir, tmp_path / "cached", progress=False
    )
    assert any((tmp_path / "cached" / "cache").rglob("*")) and not (tmp_path / "exact" / "cache").exists()
    a = load_checkpoint(tmp_path / "exact" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "cached" / "checkpoints" / "last.pt")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert a["trainer"]["history"] == b["trainer"]["history"] == cached.history


def test_cached_training_differs_from_exact_training(synth_dir, tmp_path):
    # The feature views are an approximation: a run with the flag is not the exact run.
    exact = train(
        apply_overrides(Config(), [*SMALL, "train.epochs=1"]), synth_dir, tmp_path / "e", progress=False
    )
    cached = train(
        apply_overrides(Config(), [*SMALL, "train.epochs=1", "data.cache_visual=true"]),
        synth_dir,
        tmp_path / "c",
        progress=False,
    )
    assert exact.history[0]["val_loss"] == cached.history[0]["val_loss"]  # same start, exact validation
    assert exact.history[-1]["train_loss"] != cached.history[-1]["train_loss"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["data.augmentations=[crop,hflip,grayscale]"], "draws only the crop and hflip augmentations"),
        (["model.train_visual=true"], "needs a frozen visual encoder"),
        (["--method", "attention"], "implemented for method sspl only"),
    ],
)
def test_cli_refuses_cache_visual_with_wrong_settings(synth_dir, tmp_path, capsys, extra, message):
    run = tmp_path / "run"
    code = cli_main(
        [
            "train",
            "--data",
            str(synth_dir),
            "--run-dir",
            str(run),
            "--cache-visual",
            "--no-progress",
            *extra,
            *SMALL,
        ]
    )
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not run.exists()  # refused before the run dir is touched


def test_check_accepts_the_default_augmentations_in_any_order():
    check_cache_visual_config(apply_overrides(Config(), ["data.augmentations=[hflip,crop]"]))
    with pytest.raises(ConfigError, match="data.augmentations"):
        check_cache_visual_config(apply_overrides(Config(), ["data.augmentations=[crop]"]))
