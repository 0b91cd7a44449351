"""Optional cache of a frozen visual encoder's features, with crop and flip drawn in feature space.

With a frozen visual encoder, the encoder's forward pass is most of a training step that it does not
learn from (VGG16 is about 40% of a CPU step). ``data.cache_visual`` (``sspl train --cache-visual``)
computes it once per training frame instead:

- build (once per run, in ``RUN/cache/visual_<key>/``): each frame gets the first step of the crop
  augmentation, the shorter side resized to ``int(size * 1.1)`` (246 for 224, bicubic), then ImageNet
  normalisation and the encoder in eval mode: a ``C x Hf x Wf`` map (15 x 15 for VGG16, 16 x 16 for the
  SynthAV small CNN), stored as float16 (a relative rounding of at most 2^-11, far below the crop
  approximation below). The folder's key is a hash of the encoder's class and weights; each entry is
  keyed by the clip id and a hash of its frame file, so a changed encoder or frame is never served stale.
- per step, each view repeats the pixel pipeline's random draws, with the same generator calls in the
  same order, so a given seed gives the cached run the crops and flips of the exact run:
  ``crop`` draws the pixel offset ``(i, j)`` of the ``size x size`` window in the resized frame as
  ``RandomCrop`` does, and the view is the ``size / stride`` (14 x 14) window of the map at
  ``(round(i / stride), round(j / stride))``, kept inside the map; ``hflip`` flips that window along
  its width with probability 0.5.

It is an approximation of the features of the pixel view: the offset is rounded to the stride (exact
when it is a multiple of 16), cells near the window's border see image content beyond the crop where
the encoder would have seen its zero padding, and a flipped feature map equals the features of the
flipped image only for a flip-equivariant encoder. It is therefore opt-in, valid only for exactly the
default augmentations (``crop``, ``hflip``) and a frozen encoder, and evaluation and validation always
encode exact frames. ``bench/bench_feature_cache.py`` measures its effect on SynthAV cIoU/AUC.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from ..config import Config, ConfigError
from ..errors import DataError, SSPLError
from ..io import atomic_open, atomic_save_json
from .transforms import CROP_RESIZE_FACTOR, HFLIP_P, IMAGENET_MEAN, IMAGENET_STD

if TYPE_CHECKING:  # datasets imports this module
    from .datasets import Sample

__all__ = [
    "CACHE_AUGMENTATIONS",
    "CACHE_DTYPE",
    "FeatureCropFlip",
    "VisualFeatureCache",
    "build_visual_cache",
    "check_cache_visual_config",
    "encoder_fingerprint",
    "frame_digest",
    "resize_transform",
    "visual_cache_dir",
]

#: The only augmentations that have a feature-space equivalent here.
CACHE_AUGMENTATIONS = ("crop", "hflip")
CACHE_DTYPE = np.float16
FEATURES_NAME = "features.npy"
INDEX_NAME = "index.json"
CACHE_VERSION = 1


def check_cache_visual_config(config: Config) -> None:
    """Refuse ``data.cache_visual`` where feature-space views cannot stand in for the pixel views.

    Raises:
        ConfigError: another method than ``sspl``, a trained visual encoder, or augmentations other
            than exactly ``crop`` and ``hflip``.
    """
    if config.method != "sspl":
        raise ConfigError(
            f"data.cache_visual is implemented for method sspl only, not {config.method!r}; "
            "drop --cache-visual (data.cache_visual=false)"
        )
    if config.model.train_visual:
        raise ConfigError(
            "data.cache_visual needs a frozen visual encoder, but model.train_visual is true; "
            "drop --cache-visual or set model.train_visual=false"
        )
    if sorted(config.data.augmentations) != sorted(CACHE_AUGMENTATIONS):
        raise ConfigError(
            f"data.cache_visual draws only the crop and hflip augmentations in feature space, but "
            f"data.augmentations={list(config.data.augmentations)}; use data.augmentations=[crop,hflip] "
            "or drop --cache-visual"
        )


def encoder_fingerprint(encoder: nn.Module) -> str:
    """SHA-256 (hex) of an encoder's class and state dict (names, dtypes, shapes and values)."""
    h = hashlib.sha256(f"{type(encoder).__module__}.{type(encoder).__qualname__}".encode())
    for name, tensor in encoder.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def frame_digest(path: str | os.PathLike) -> str:
    """BLAKE2b (hex, 16 bytes) of a frame file's bytes; a missing file is a DataError naming it."""
    try:
        return hashlib.blake2b(Path(path).read_bytes(), digest_size=16).hexdigest()
    except FileNotFoundError:
        raise DataError(f"{path}: frame file is missing") from None


def resize_transform(size: int = 224) -> T.Compose:
    """The crop augmentation's resize (shorter side to ``int(size * 1.1)``, bicubic) and normalisation.

    Returns:
        A callable mapping a PIL RGB image to a ``3 x H' x W'`` float tensor (246 x 246 for a square frame).
    """
    return T.Compose(
        [
            T.Resize(int(size * CROP_RESIZE_FACTOR), interpolation=InterpolationMode.BICUBIC),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def visual_cache_dir(cache_root: str | os.PathLike, encoder: nn.Module, image_size: int = 224) -> Path:
    """The cache folder of ``encoder``'s features at ``image_size``: ``cache_root/visual_<key>``."""
    key = hashlib.sha256(f"{encoder_fingerprint(encoder)}/{image_size}".encode()).hexdigest()[:16]
    return Path(cache_root) / f"visual_{key}"


class VisualFeatureCache:
    """Read access to a built cache: clip id -> ``C x Hf x Wf`` float16 feature map.

    The features file is memory-mapped on first access in each process (data loader workers share the
    page cache instead of copying the array).

    Attributes:
        folder: the cache folder.
        ids: clip ids in storage order.
        image_size: the network input size the features are for (224).
        resized_hw: ``(H', W')`` of the resized frames (246 x 246).
        window: side of a view in cells (``size / stride``: 14).
        stride: input pixels per feature cell (16).
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        index_path = self.folder / INDEX_NAME
        try:
            index = json.loads(index_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(f"{index_path}: missing; the visual feature cache was not built") from None
        except json.JSONDecodeError as e:
            raise DataError(f"{index_path}: unreadable visual cache index ({e}); delete the folder") from e
        if index.get("version") != CACHE_VERSION:
            raise DataError(f"{index_path}: cache version {index.get('version')}, expected {CACHE_VERSION}")
        self.index = index
        self.ids: list[str] = list(index["ids"])
        self.digests: list[str] = list(index["frames"])
        self.image_size = int(index["image_size"])
        self.resized_hw = tuple(index["resized_hw"])
        self.window = int(index["window"])
        self.stride = float(index["stride"])
        self.shape = tuple(index["shape"])
        self._row = {i: k for k, i in enumerate(self.ids)}
        self._array: np.ndarray | None = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_array"] = None  # each process maps the file itself
        return state

    def _features(self) -> np.ndarray:
        if self._array is None:
            path = self.folder / FEATURES_NAME
            try:
                array = np.load(path, mmap_mode="r", allow_pickle=False)
            except (FileNotFoundError, ValueError, OSError, EOFError) as e:
                raise DataError(
                    f"{path}: cannot read the visual feature cache ({e}); delete the folder"
                ) from e
            if array.shape != self.shape:
                raise DataError(
                    f"{path}: shape {array.shape}, its index says {self.shape}; delete the folder"
                )
            self._array = array
        return self._array

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, sample_id: object) -> bool:
        return sample_id in self._row

    def __getitem__(self, sample_id: str) -> torch.Tensor:
        """``C x Hf x Wf`` float16 features of the clip's resized frame."""
        row = self._row.get(sample_id)
        if row is None:
            raise KeyError(f"clip {sample_id!r} is not in the visual feature cache {self.folder}")
        return torch.from_numpy(np.array(self._features()[row]))

    def matches(self, samples: Sequence[Sample]) -> bool:
        """Whether the cache holds exactly ``samples`` with their current frame files."""
        if [s.id for s in samples] != self.ids:
            return False
        return all(frame_digest(s.frame) == d for s, d in zip(samples, self.digests))

    def check(self, samples: Sequence[Sample]) -> None:
        """Raise a DataError unless every sample is cached with its current frame file."""
        missing = [s.id for s in samples if s.id not in self._row]
        if missing:
            raise DataError(
                f"{self.folder}: visual cache lacks {len(missing)} clip(s) (e.g. {missing[:3]}); delete it to rebuild"
            )
        stale = [s.id for s in samples if frame_digest(s.frame) != self.digests[self._row[s.id]]]
        if stale:
            raise DataError(
                f"{self.folder}: {len(stale)} frame(s) changed since the visual cache was built "
                f"(e.g. {stale[:3]}); delete it to rebuild"
            )


class _ResizedFrames(Dataset):
    def __init__(self, samples: Sequence[Sample], size: int) -> None:
        self.samples = list(samples)
        self.transform = resize_transform(size)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor]:
        return index, self.transform(self.samples[index].load_frame())


def _encoder_window(encoder: nn.Module, image_size: int, device: torch.device) -> int:
    """Cells per side of the encoder's map for a ``image_size`` input (the view window)."""
    probe = torch.zeros(1, 3, image_size, image_size, device=device)
    h, w = encoder(probe).shape[-2:]
    if h != w or h < 1:
        raise SSPLError(
            f"the visual encoder maps {image_size} x {image_size} to {h} x {w}; need a square map"
        )
    return int(h)


@torch.inference_mode()
def build_visual_cache(
    encoder: nn.Module,
    samples: Sequence[Sample],
    folder: str | os.PathLike,
    *,
    image_size: int = 224,
    batch_size: int = 32,
    num_workers: int = 0,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> VisualFeatureCache:
    """Encode every sample's resized frame once (unless ``folder`` already holds exactly them) and open it.

    Args:
        encoder: the frozen visual encoder, ``B x 3 x H x W -> B x C x h x w`` (run in eval mode).
        samples: the training clips; all frames must resize to one size (prepared frames are 256 x 256).
        folder: the cache folder (see :func:`visual_cache_dir`); written atomically, index last.
        image_size: network input size (the views are ``image_size / stride`` cells wide).
        batch_size: frames per encoder call.
        num_workers: data loader workers decoding and resizing frames.
        device: where to run the encoder (default: where its parameters are).
        progress: show a progress bar.

    Returns:
        The opened :class:`VisualFeatureCache`.

    Raises:
        DataError: unreadable frames, frames of different sizes.
        SSPLError: features outside the float16 range.
    """
    folder = Path(folder)
    if (folder / INDEX_NAME).is_file():
        try:
            cache = VisualFeatureCache(folder)
            if cache.image_size == image_size and cache.matches(samples):
                return cache
        except DataError:
            pass  # unreadable or stale: rebuilt below
    if not samples:
        raise DataError("no frames to cache")
    if device is None:
        device = next(encoder.parameters()).device
    device = torch.device(device)
    was_training = encoder.training
    encoder.eval()
    try:
        window = _encoder_window(encoder, image_size, device)
        digests = [frame_digest(s.frame) for s in samples]
        loader = DataLoader(
            _ResizedFrames(samples, image_size),
            batch_size=batch_size,
            num_workers=num_workers,
            collate_fn=list,
        )
        if progress:
            from tqdm import tqdm

            loader = tqdm(loader, desc="visual cache", unit="batch", dynamic_ncols=True)
        folder.mkdir(parents=True, exist_ok=True)
        shape, resized_hw = _write_features(folder / FEATURES_NAME, loader, samples, encoder, device)
        assert shape is not None and resized_hw is not None
        if min(shape[-2:]) < window:
            raise SSPLError(
                f"feature map {shape[-2:]} of the resized frames is smaller than a view ({window})"
            )
        atomic_save_json(
            folder / INDEX_NAME,
            {
                "version": CACHE_VERSION,
                "encoder": encoder_fingerprint(encoder),
                "encoder_class": type(encoder).__name__,
                "image_size": image_size,
                "resized_hw": list(resized_hw),
                "window": window,
                "stride": image_size / window,
                "dtype": np.dtype(CACHE_DTYPE).name,
                "shape": list(shape),
                "ids": [s.id for s in samples],
                "frames": digests,
            },
            indent=0,
        )
    finally:
        encoder.train(was_training)
    return VisualFeatureCache(folder)


def _write_features(
    path: Path, loader: Iterable, samples: Sequence[Sample], encoder: nn.Module, device: torch.device
) -> tuple[tuple[int, ...] | None, tuple[int, int] | None]:
    """Encode the loader's ``(index, resized frame)`` batches into the ``.npy`` file ``path`` (written
    atomically, header first); returns the array's shape and the resized frames' size."""
    shape: tuple[int, ...] | None = None
    resized_hw: tuple[int, int] | None = None
    with atomic_open(path, "wb") as f:
        for items in loader:
            for index, frame in items:
                if resized_hw is None:
                    resized_hw = tuple(frame.shape[-2:])
                elif tuple(frame.shape[-2:]) != resized_hw:
                    raise DataError(
                        f"{samples[index].frame}: resizes to {tuple(frame.shape[-2:])}, the first frame to "
                        f"{resized_hw}; the visual cache needs frames of one size (prepared frames are "
                        "256 x 256)"
                    )
            frames = torch.stack([frame for _, frame in items]).to(device)
            feats = encoder(frames).float().cpu().numpy()  # B x C x Hf x Wf
            stored = feats.astype(CACHE_DTYPE)
            finite = np.isfinite(stored).reshape(len(items), -1).all(axis=1)
            if not finite.all():
                bad = samples[items[int(np.flatnonzero(~finite)[0])][0]]
                raise SSPLError(
                    f"{bad.frame}: visual features are not finite or exceed the float16 range "
                    f"(max |x| {np.abs(feats).max():.3g}); train without --cache-visual"
                )
            if shape is None:
                shape = (len(samples), *stored.shape[1:])
                header = {
                    "descr": np.lib.format.dtype_to_descr(np.dtype(CACHE_DTYPE)),
                    "fortran_order": False,
                    "shape": shape,
                }
                np.lib.format.write_array_header_1_0(f, header)
            f.write(np.ascontiguousarray(stored).tobytes())
    return shape, resized_hw


class FeatureCropFlip:
    """One training view in feature space: the crop window, then the horizontal flip.

    Draws exactly what ``RandomCrop(size)`` on the resized frame and ``RandomHorizontalFlip(0.5)`` draw,
    in that order, from torch's generator; the pixel offset becomes a cell offset (divided by the stride,
    rounded half up, kept inside the map).

    Args:
        resized_hw: ``(H', W')`` of the resized frame the pixel crop would be drawn from.
        window: view side in cells (14).
        stride: pixels per cell (16).
        size: pixel crop side (224).
        hflip_p: flip probability.
    """

    def __init__(
        self,
        resized_hw: tuple[int, int],
        window: int,
        stride: float,
        size: int = 224,
        hflip_p: float = HFLIP_P,
    ) -> None:
        self.resized_hw = tuple(resized_hw)
        self.window = window
        self.stride = stride
        self.size = size
        self.hflip_p = hflip_p

    @classmethod
    def for_cache(cls, cache: VisualFeatureCache) -> FeatureCropFlip:
        """The view transform matching a cache's frames and encoder."""
        return cls(cache.resized_hw, cache.window, cache.stride, cache.image_size)

    def draw(self) -> tuple[int, int, bool]:
        """The pixel pipeline's draws for one view: crop offset ``(i, j)`` in the resized frame, and flip."""
        i, j, _, _ = T.RandomCrop.get_params(torch.empty(0, *self.resized_hw), (self.size, self.size))
        flip = bool(torch.rand(1) < self.hflip_p)
        return i, j, flip

    def cells(self, i: int, j: int, map_hw: tuple[int, int]) -> tuple[int, int]:
        """(top, left) cell of the window for pixel offset ``(i, j)``: divided by the stride, rounded half
        up, kept inside a ``map_hw`` map."""
        top = min(max(int(np.floor(i / self.stride + 0.5)), 0), map_hw[0] - self.window)
        left = min(max(int(np.floor(j / self.stride + 0.5)), 0), map_hw[1] - self.window)
        return top, left

    def view(self, features: torch.Tensor, i: int, j: int, flip: bool) -> torch.Tensor:
        """``C x Hf x Wf`` -> the ``C x window x window`` view for pixel offset ``(i, j)`` and ``flip``."""
        top, left = self.cells(i, j, tuple(features.shape[-2:]))
        out = features[..., top : top + self.window, left : left + self.window]
        return out.flip(-1) if flip else out.contiguous()

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        """``C x Hf x Wf`` -> one random ``C x window x window`` view."""
        return self.view(features, *self.draw())

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(resized_hw={self.resized_hw}, window={self.window}, "
            f"stride={self.stride:g}, size={self.size}, hflip_p={self.hflip_p})"
        )
