"""Image transforms: the eight augmentations of the paper's Table S2, the evaluation preset, and the
mapping between the evaluation crop and the original image.

Training (``build_train_transform``) draws, in this fixed order whatever order the names are given in:

=================  ===========================================================================  =====
name               operation (Table S2 parameters)                                              p
=================  ===========================================================================  =====
``crop``           resize shorter side to ``int(size * 1.1)`` (bicubic), random ``size`` crop    1.0
``hflip``          horizontal flip                                                              0.5
``vflip``          vertical flip                                                                0.5
``translate``      random translation up to (0.2, 0.2) of width/height, black fill               1.0
``rotate``         rotation by 0, 90, 180 or 270 degrees (exact: a transpose, no resampling)    1.0
``color_jitter``   brightness 0.4, contrast 0.4, saturation 0.4, hue 0.1                         0.8
``grayscale``      grayscale, kept as 3 channels                                                0.2
``blur``           Gaussian blur, sigma uniform in [0.1, 2.0) (PIL radius, as SimSiam)          0.5
=================  ===========================================================================  =====

then a centre ``size`` crop, ``ToTensor`` and ImageNet normalisation. Spatial operations come first,
then the photometric ones in SimSiam's order (jitter, grayscale, blur). Without ``crop`` the image is
resized to ``size`` on its shorter side instead. The default ``("crop", "hflip")`` is the official
SSPL pipeline: Resize(246, bicubic) -> RandomCrop(224) -> RandomHorizontalFlip -> CenterCrop(224).

All random draws use torch's generator, so ``torch.manual_seed`` (and the data loader's per-worker
seeding) makes them reproducible.

Evaluation (``build_eval_transform``), one of :data:`TEST_TRANSFORMS`: ``crop`` (SSPL) resizes the
shorter side to ``size`` (bicubic) and takes the centre crop; ``resize`` (the EZ-VSL / SLAVC / FNAC test
transform, ``Resize((224, 224), BICUBIC)``) squeezes the whole frame to ``size x size``; both end in
ImageNet normalisation. ``eval_crop_to_original`` maps points and boxes between the network input and the
original image, for drawing heat maps on the original frame.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageFilter
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from ..config import AUGMENTATIONS, TEST_TRANSFORMS  # the names; this module implements them

__all__ = [
    "AUGMENTATIONS",
    "CROP_RESIZE_FACTOR",
    "DEFAULT_AUGMENTATIONS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "TEST_TRANSFORMS",
    "CropMapping",
    "RandomGaussianBlur",
    "RandomRotation90",
    "TwoViews",
    "build_eval_transform",
    "build_train_transform",
    "eval_crop_to_original",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Table S2: the crop is taken from the image resized to ``int(size * 1.1)`` on its shorter side.
CROP_RESIZE_FACTOR = 1.1
HFLIP_P = 0.5
VFLIP_P = 0.5
TRANSLATE_MAX_FRACTION = (0.2, 0.2)
ROTATION_ANGLES_DEGREES = (0, 90, 180, 270)
COLOR_JITTER_P = 0.8
COLOR_JITTER_STRENGTH = (0.4, 0.4, 0.4, 0.1)  # brightness, contrast, saturation, hue
GRAYSCALE_P = 0.2
BLUR_P = 0.5
BLUR_SIGMA_RANGE = (0.1, 2.0)

#: Names in the order they are applied.
DEFAULT_AUGMENTATIONS = ("crop", "hflip")


_ROTATE_TRANSPOSE = {
    90: Image.Transpose.ROTATE_90,
    180: Image.Transpose.ROTATE_180,
    270: Image.Transpose.ROTATE_270,
}


class RandomRotation90:
    """Rotate a PIL image by a multiple of 90 degrees drawn uniformly from ``angles``.

    Implemented as a transpose, so pixels are moved, never resampled (a non-square image swaps its
    width and height).
    """

    def __init__(self, angles: Sequence[int] = ROTATION_ANGLES_DEGREES) -> None:
        bad = [a for a in angles if a % 90 != 0]
        if bad or not angles:
            raise ValueError(f"angles must be multiples of 90 degrees, got {list(angles)}")
        self.angles = tuple(int(a) % 360 for a in angles)

    def __call__(self, img: Image.Image) -> Image.Image:
        angle = self.angles[int(torch.randint(len(self.angles), ()).item())]
        return img.copy() if angle == 0 else img.transpose(_ROTATE_TRANSPOSE[angle])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(angles={self.angles})"


class RandomGaussianBlur:
    """With probability ``p``, blur a PIL image with a Gaussian of radius sigma ~ U[lo, hi)."""

    def __init__(self, sigma: tuple[float, float] = BLUR_SIGMA_RANGE, p: float = BLUR_P) -> None:
        self.sigma = sigma
        self.p = p

    def __call__(self, img: Image.Image) -> Image.Image:
        if torch.rand(()).item() >= self.p:
            return img
        lo, hi = self.sigma
        sigma = lo + (hi - lo) * torch.rand(()).item()
        return img.filter(ImageFilter.GaussianBlur(radius=sigma))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sigma={self.sigma}, p={self.p})"


def _augmentation(name: str, size: int) -> list[Callable]:
    if name == "crop":
        return [
            T.Resize(int(size * CROP_RESIZE_FACTOR), interpolation=InterpolationMode.BICUBIC),
            T.RandomCrop(size),
        ]
    if name == "hflip":
        return [T.RandomHorizontalFlip(HFLIP_P)]
    if name == "vflip":
        return [T.RandomVerticalFlip(VFLIP_P)]
    if name == "translate":
        return [T.RandomAffine(degrees=0, translate=TRANSLATE_MAX_FRACTION)]
    if name == "rotate":
        return [RandomRotation90()]
    if name == "color_jitter":
        return [T.RandomApply([T.ColorJitter(*COLOR_JITTER_STRENGTH)], p=COLOR_JITTER_P)]
    if name == "grayscale":
        return [T.RandomGrayscale(GRAYSCALE_P)]
    if name == "blur":
        return [RandomGaussianBlur()]
    raise ValueError(f"unknown augmentation {name!r}; choose from {AUGMENTATIONS}")


def build_train_transform(
    *,
    augmentations: Sequence[str] = DEFAULT_AUGMENTATIONS,
    size: int = 224,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> T.Compose:
    """Training transform: the chosen Table S2 augmentations, then centre crop and normalisation.

    Args:
        augmentations: names from ``AUGMENTATIONS`` (order does not matter; see the module docstring).
        size: output side in pixels.
        mean, std: normalisation constants (ImageNet by default).

    Returns:
        A callable mapping a PIL RGB image to a ``3 x size x size`` float tensor.

    Raises:
        ValueError: for an unknown or repeated augmentation name.
    """
    names = list(augmentations)
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise ValueError(f"unknown augmentation(s) {unknown}; choose from {AUGMENTATIONS}")
    if len(set(names)) != len(names):
        raise ValueError(f"augmentation listed twice in {names}")
    steps: list[Callable] = []
    if "crop" not in names:
        steps.append(T.Resize(size, interpolation=InterpolationMode.BICUBIC))
    for name in AUGMENTATIONS:
        if name in names:
            steps.extend(_augmentation(name, size))
    steps += [T.CenterCrop(size), T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(steps)


def build_eval_transform(
    *,
    size: int = 224,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    mode: str = "crop",
) -> T.Compose:
    """Evaluation transform: ``crop`` (shorter side to ``size``, bicubic, centre crop) or ``resize`` (the
    whole image to ``size x size``, bicubic, no crop), then normalisation.

    Returns:
        A deterministic callable mapping a PIL RGB image to a ``3 x size x size`` float tensor.
    """
    if mode not in TEST_TRANSFORMS:
        raise ValueError(f"eval transform {mode!r}: choose from {', '.join(TEST_TRANSFORMS)}")
    if mode == "resize":
        spatial = [T.Resize((size, size), interpolation=InterpolationMode.BICUBIC)]
    else:
        spatial = [T.Resize(size, interpolation=InterpolationMode.BICUBIC), T.CenterCrop(size)]
    return T.Compose([*spatial, T.ToTensor(), T.Normalize(mean, std)])


class TwoViews:
    """Apply a random transform twice to the same image: two independently drawn views.

    Example:
        >>> views = TwoViews(build_train_transform())
        >>> v1, v2 = views(image)  # each 3 x 224 x 224
    """

    def __init__(self, transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.transform = transform

    def __call__(self, img: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(img), self.transform(img)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transform!r})"


@dataclass(frozen=True)
class CropMapping:
    """Affine map between the evaluation crop and the original image: ``original = crop * scale +
    offset``, per axis, in continuous pixel coordinates (pixel ``i`` spans ``[i, i + 1)``).

    Attributes:
        width, height: the original image size.
        size: side of the evaluation crop.
        resized_width, resized_height: the image size after resizing the shorter side to ``size``.
        scale_x, scale_y: original pixels per crop pixel (they differ slightly when the longer side
            was rounded down).
        offset_x, offset_y: where the crop's top-left corner lies in the original image.
    """

    width: int
    height: int
    size: int
    resized_width: int
    resized_height: int
    scale_x: float
    scale_y: float
    offset_x: float
    offset_y: float

    @property
    def crop_box(self) -> tuple[float, float, float, float]:
        """The evaluation crop as ``(x1, y1, x2, y2)`` in original pixels."""
        return (
            self.offset_x,
            self.offset_y,
            self.offset_x + self.size * self.scale_x,
            self.offset_y + self.size * self.scale_y,
        )

    def _apply(self, coords: np.ndarray | Sequence, forward: bool) -> np.ndarray:
        arr = np.asarray(coords, dtype=np.float64)
        if arr.shape[-1] not in (2, 4):
            raise ValueError(f"expected ... x 2 points or ... x 4 boxes, got shape {arr.shape}")
        scale = np.array([self.scale_x, self.scale_y] * (arr.shape[-1] // 2))
        offset = np.array([self.offset_x, self.offset_y] * (arr.shape[-1] // 2))
        return arr * scale + offset if forward else (arr - offset) / scale

    def to_original(self, coords: np.ndarray | Sequence) -> np.ndarray:
        """Crop coordinates -> original image coordinates.

        Args:
            coords: ``... x 2`` points ``(x, y)`` or ``... x 4`` boxes ``(x1, y1, x2, y2)``.
        """
        return self._apply(coords, forward=True)

    def to_crop(self, coords: np.ndarray | Sequence) -> np.ndarray:
        """Original image coordinates -> crop coordinates (the inverse of ``to_original``; values may
        fall outside ``[0, size]`` for content the centre crop cut off)."""
        return self._apply(coords, forward=False)


def eval_crop_to_original(width: int, height: int, size: int = 224, mode: str = "crop") -> CropMapping:
    """Where the network input of ``build_eval_transform(mode=mode)`` lies in a ``width x height`` image.

    ``crop`` follows torchvision exactly: the shorter side becomes ``size`` and the longer
    ``int(size * long / short)``; the centre crop starts at ``round((resized - size) / 2)``. ``resize``
    covers the whole image: ``width / size`` and ``height / size`` original pixels per input pixel.

    Returns:
        The ``CropMapping`` (scale and offset per axis).
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width} x {height}")
    if mode not in TEST_TRANSFORMS:
        raise ValueError(f"eval transform {mode!r}: choose from {', '.join(TEST_TRANSFORMS)}")
    if mode == "resize":
        return CropMapping(width, height, size, size, size, width / size, height / size, 0.0, 0.0)
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    resized_w, resized_h = (new_short, new_long) if width <= height else (new_long, new_short)
    left = int(round((resized_w - size) / 2.0))
    top = int(round((resized_h - size) / 2.0))
    scale_x, scale_y = width / resized_w, height / resized_h
    return CropMapping(
        width=width,
        height=height,
        size=size,
        resized_width=resized_w,
        resized_height=resized_h,
        scale_x=scale_x,
        scale_y=scale_y,
        offset_x=left * scale_x,
        offset_y=top * scale_y,
    )
