"""Table S2 augmentations, the evaluation preset, and the evaluation-crop mapping."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from sspl.data import transforms as tf

DRAWS = 400  # binomial std of a rate over 400 draws is <= 0.025; the tolerances below are ~3 std


def _image(width: int, height: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def _raw(augmentations, size=32):
    """The training transform without normalisation, as uint8 H x W x C arrays (easy to compare)."""
    t = tf.build_train_transform(augmentations=augmentations, size=size, mean=(0, 0, 0), std=(1, 1, 1))
    return lambda img: np.round(t(img).permute(1, 2, 0).numpy() * 255).astype(np.uint8)


def _draw(augmentations, img, n=DRAWS):
    torch.manual_seed(0)
    run = _raw(augmentations, size=img.width)
    return [run(img) for _ in range(n)]


def test_default_is_the_official_pipeline():
    official = T.Compose(
        [
            T.Resize(int(224 * 1.1), InterpolationMode.BICUBIC),
            T.RandomCrop(224),
            T.RandomHorizontalFlip(),
            T.CenterCrop(224),
            T.ToTensor(),
            T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )
    img = _image(256, 256)
    ours = tf.build_train_transform()
    for seed in range(3):
        torch.manual_seed(seed)
        expected = official(img)
        torch.manual_seed(seed)
        assert torch.equal(ours(img), expected)


def test_crop_is_a_window_of_the_enlarged_image():
    img = _image(256, 256)
    enlarged = np.asarray(img.resize((246, 246), Image.Resampling.BICUBIC))
    torch.manual_seed(0)
    run = _raw(("crop",), size=224)
    for _ in range(3):
        out = run(img)
        assert out.shape == (224, 224, 3)
        windows = [
            (y, x)
            for y in range(23)
            for x in range(23)
            if np.array_equal(enlarged[y : y + 224, x : x + 224], out)
        ]
        assert len(windows) == 1
    # Non-square input: shorter side to 246, crop 224 x 224.
    assert tf.build_train_transform()(_image(320, 200)).shape == (3, 224, 224)


@pytest.mark.parametrize(("name", "flip"), [("hflip", np.fliplr), ("vflip", np.flipud)])
def test_flips_really_flip_half_of_the_time(name, flip):
    img = _image(32, 32)
    original = np.asarray(img)
    outs = _draw((name,), img)
    flipped = [np.array_equal(o, flip(original)) for o in outs]
    assert all(f or np.array_equal(o, original) for f, o in zip(flipped, outs))
    assert np.mean(flipped) == pytest.approx(0.5, abs=0.08)


def test_rotation_is_a_multiple_of_90_degrees():
    img = _image(32, 32)
    rotations = [np.rot90(np.asarray(img), k) for k in range(4)]
    outs = _draw(("rotate",), img)
    which = [next(k for k in range(4) if np.array_equal(o, rotations[k])) for o in outs]
    counts = np.bincount(which, minlength=4) / len(which)
    np.testing.assert_allclose(counts, 0.25, atol=0.07)
    with pytest.raises(ValueError, match="multiples of 90"):
        tf.RandomRotation90((0, 45))


def test_grayscale_makes_channels_equal_with_p_0_2():
    img = _image(32, 32)
    outs = _draw(("grayscale",), img)
    gray = [bool((o[..., 0] == o[..., 1]).all() and (o[..., 1] == o[..., 2]).all()) for o in outs]
    assert all(g or np.array_equal(o, np.asarray(img)) for g, o in zip(gray, outs))
    assert np.mean(gray) == pytest.approx(0.2, abs=0.07)


@pytest.mark.parametrize(("name", "p"), [("color_jitter", 0.8), ("blur", 0.5)])
def test_photometric_augmentations_apply_with_their_probability(name, p):
    img = _image(32, 32)
    outs = _draw((name,), img)
    changed = [not np.array_equal(o, np.asarray(img)) for o in outs]
    assert np.mean(changed) == pytest.approx(p, abs=0.08)
    assert all(o.shape == (32, 32, 3) for o in outs)


def test_translation_shifts_by_at_most_a_fifth():
    img = _image(40, 40)
    original = np.asarray(img).astype(np.int16)
    shifts = []
    for out in _draw(("translate",), img, n=40):
        found = None
        for dy in range(-8, 9):
            for dx in range(-8, 9):
                moved = np.zeros_like(original)
                src = original[max(0, -dy) : 40 - max(0, dy), max(0, -dx) : 40 - max(0, dx)]
                moved[max(0, dy) : 40 - max(0, -dy), max(0, dx) : 40 - max(0, -dx)] = src
                if np.array_equal(moved, out):
                    found = (dx, dy)
        assert found is not None
        shifts.append(found)
    assert max(abs(s) for pair in shifts for s in pair) <= 8  # 0.2 * 40
    assert len(set(shifts)) > 10  # it really moves, in both directions
    assert min(dx for dx, _ in shifts) < 0 < max(dx for dx, _ in shifts)


def test_all_eight_compose_and_unknown_names_fail():
    out = tf.build_train_transform(augmentations=tf.AUGMENTATIONS)(_image(300, 256))
    assert out.shape == (3, 224, 224) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="unknown augmentation"):
        tf.build_train_transform(augmentations=("crop", "mixup"))
    with pytest.raises(ValueError, match="twice"):
        tf.build_train_transform(augmentations=("hflip", "hflip"))


def test_two_views_are_drawn_independently():
    img = _image(256, 256)
    views = tf.TwoViews(tf.build_train_transform())
    torch.manual_seed(1)
    v1, v2 = views(img)
    assert v1.shape == v2.shape == (3, 224, 224)
    assert not torch.equal(v1, v2)
    torch.manual_seed(1)
    again = views(img)
    assert torch.equal(again[0], v1) and torch.equal(again[1], v2)


def test_eval_transform_is_deterministic_and_the_reference_composition():
    img = _image(320, 240)
    reference = T.Compose(
        [
            T.Resize(224, InterpolationMode.BICUBIC),
            T.CenterCrop(224),
            T.ToTensor(),
            T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )
    ours = tf.build_eval_transform()
    out = ours(img)
    assert out.shape == (3, 224, 224)
    assert torch.equal(out, ours(img)) and torch.equal(out, reference(img))


@pytest.mark.parametrize(
    ("width", "height"), [(320, 240), (240, 320), (500, 200), (1000, 563), (256, 256), (224, 224)]
)
def test_eval_crop_mapping_matches_the_pixels(width, height):
    mapping = tf.eval_crop_to_original(width, height)
    resized = T.Resize(224, InterpolationMode.BICUBIC)(Image.new("RGB", (width, height)))
    assert (mapping.resized_width, mapping.resized_height) == resized.size

    # A white rectangle inside the crop region lands where the mapping says.
    x0, y0, x1, y1 = mapping.crop_box
    rect = np.array([x0 + 0.3 * (x1 - x0), y0 + 0.2 * (y1 - y0), x0 + 0.7 * (x1 - x0), y0 + 0.6 * (y1 - y0)])
    rect = np.round(rect).astype(int)
    canvas = np.zeros((height, width, 3), np.uint8)
    canvas[rect[1] : rect[3], rect[0] : rect[2]] = 255
    crop = np.asarray(T.CenterCrop(224)(T.Resize(224, InterpolationMode.BICUBIC)(Image.fromarray(canvas))))
    rows, cols = np.nonzero(crop[..., 0] > 127)
    found = np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], dtype=float)
    tolerance = 1.0 + max(mapping.scale_x, mapping.scale_y)  # one resampled pixel at either edge
    np.testing.assert_allclose(mapping.to_original(found), rect, atol=tolerance)
    np.testing.assert_allclose(mapping.to_crop(rect), found, atol=1.5)
    np.testing.assert_allclose(mapping.to_crop(mapping.to_original(found)), found, atol=1e-9)
    np.testing.assert_allclose(mapping.to_original([[0, 0], [224, 224]]).ravel(), mapping.crop_box)


def test_eval_crop_mapping_by_hand():
    # 500 x 200: shorter side 200 -> 224, longer 500 -> int(224 * 500 / 200) = 560; crop starts at
    # round((560 - 224) / 2) = 168 resized pixels = 150 original pixels.
    m = tf.eval_crop_to_original(500, 200)
    assert (m.resized_width, m.resized_height) == (560, 224)
    assert m.offset_x == pytest.approx(150.0) and m.offset_y == 0.0
    assert m.scale_x == pytest.approx(500 / 560) and m.scale_y == pytest.approx(200 / 224)
    assert m.crop_box == pytest.approx((150.0, 0.0, 350.0, 200.0))
    with pytest.raises(ValueError, match="positive"):
        tf.eval_crop_to_original(0, 10)
