"""Datasets over a prepared folder (written by ``sspl prepare`` or ``sspl synth``).

Every reader of the project ends in the same typed :class:`Sample`; :class:`PreparedDataset` turns
samples into tensors for training (two augmented views) or evaluation (one evaluation view).

Training augmentations are drawn from a generator seeded by ``(seed, epoch, index)`` alone, so a sample's
views do not depend on the number of loader workers, on the process (DDP rank) that loads it, or on
whether the run was resumed: this is what makes resumption bit-for-bit.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from ..config import AUDIO_FRONTENDS, TEST_TRANSFORMS
from ..errors import DataError
from .feature_cache import CACHE_AUGMENTATIONS, FeatureCropFlip, VisualFeatureCache
from .manifest import (
    NATIVE_AUDIO_DIR,
    NATIVE_FRAME_SUFFIXES,
    NATIVE_FRAMES_DIR,
    ManifestRow,
    read_manifest,
    read_meta,
)
from .spec_augment import apply_spec_masks
from .transforms import TwoViews, build_eval_transform, build_train_transform

__all__ = [
    "NATIVE_FRAME_TRANSFORMS",
    "PreparedDataset",
    "Sample",
    "label_index",
    "load_samples",
    "sample_seed",
]

#: the image transforms of the released EZ-VSL / SLAVC / FNAC models, whose code reads each frame at its
#: original size: with them a dataset reads ``sspl prepare --native-frames``'s frame where the folder has it
NATIVE_FRAME_TRANSFORMS = ("resize",)


@dataclass(frozen=True)
class Sample:
    """One prepared clip.

    Attributes:
        id: clip id.
        frame: path of the 256 x 256 JPEG frame (the source-size frame is :attr:`native_frame`).
        spect: path of the ``P x 96 x 64`` log-mel patches (``.npy``).
        audio: path of the 16 kHz WAV.
        label: class name ("" when unlabelled).
        split: "train", "val", "test", "pretrain" or "".
    """

    id: str
    frame: Path
    spect: Path
    audio: Path
    label: str = ""
    split: str = ""

    @classmethod
    def from_row(cls, root: Path, row: ManifestRow) -> Sample:
        """The sample of a done row of :func:`~sspl.data.manifest.read_manifest`, which refuses a row whose
        id is not a plain file name or whose paths lead outside ``root``."""
        return cls(row.id, root / row.frame, root / row.spect, root / row.audio, row.label, row.split)

    def load_frame(self, native: bool = False) -> Image.Image:
        """The frame as RGB, read as the released models' code reads one (``Image.open(path).convert('RGB')``):
        with ``native``, the source-size frame of ``sspl prepare --native-frames`` when the folder has it,
        else the 256 x 256 ``frame``. A missing or unreadable file is a DataError naming it."""
        path = (self.native_frame if native else None) or self.frame
        try:
            with Image.open(path) as img:
                return img.convert("RGB")
        except FileNotFoundError:
            raise DataError(f"{path}: frame of clip {self.id} is missing") from None
        except (UnidentifiedImageError, OSError) as e:
            raise DataError(f"{path}: cannot read frame of clip {self.id} ({e})") from e

    @property
    def native_frame(self) -> Path | None:
        """Where ``sspl prepare --native-frames`` kept the clip's source-size frame, or None without one."""
        folder = self.frame.parent.parent / NATIVE_FRAMES_DIR
        for suffix in NATIVE_FRAME_SUFFIXES:
            path = folder / f"{self.id}{suffix}"
            if path.is_file():
                return path
        return None

    @property
    def native_audio(self) -> Path:
        """Where ``sspl prepare --native-audio`` keeps the clip's native-rate window (may not exist)."""
        return self.audio.parent.parent / NATIVE_AUDIO_DIR / f"{self.id}.wav"

    def load_stft(self) -> torch.Tensor:
        """``1 x 257 x T`` float32 log-spectrogram of the released models (:mod:`sspl.spectrogram`) of
        the native-rate window when the folder has it, else of the 16 kHz ``audio`` file (whose clip was
        normalised to [-1, 1] and resampled: not what the released models heard). A missing or
        undecodable file is a DataError naming it."""
        from ..spectrogram import load_spectrogram

        path = self.native_audio if self.native_audio.is_file() else self.audio
        try:
            return load_spectrogram(path)
        except FileNotFoundError:
            raise DataError(f"{path}: audio of clip {self.id} is missing") from None
        except (DataError, ValueError) as e:
            raise DataError(f"{path}: cannot compute the spectrogram of clip {self.id} ({e})") from e

    def load_spect(self) -> torch.Tensor:
        """``P x 96 x 64`` float32 log-mel patches; a missing, unreadable or non-finite file is a DataError
        naming it."""
        try:
            arr = np.load(self.spect, allow_pickle=False)
        except FileNotFoundError:
            raise DataError(f"{self.spect}: log-mel of clip {self.id} is missing") from None
        except EOFError as e:  # numpy's error for an empty file
            raise DataError(f"{self.spect}: cannot read log-mel of clip {self.id} (empty file)") from e
        except (ValueError, OSError) as e:
            raise DataError(f"{self.spect}: cannot read log-mel of clip {self.id} ({e})") from e
        if arr.ndim != 3 or arr.shape[1:] != (96, 64):
            raise DataError(f"{self.spect}: expected P x 96 x 64 log-mel patches, got shape {arr.shape}")
        try:
            with np.errstate(over="ignore"):  # a value beyond float32 becomes infinite: refused below
                values = np.ascontiguousarray(arr, dtype=np.float32)
        except (TypeError, ValueError) as e:  # e.g. an array of text
            raise DataError(
                f"{self.spect}: log-mel of clip {self.id} holds {arr.dtype} values, not numbers"
            ) from e
        bad = np.count_nonzero(~np.isfinite(values))
        if bad:  # else a NaN surfaces later as a "non-finite loss" that blames the learning rates
            raise DataError(
                f"{self.spect}: log-mel of clip {self.id} holds {bad} non-finite value(s) (NaN or infinity); "
                "the file is damaged: prepare the clip again"
            )
        return torch.from_numpy(values)


def load_samples(
    root: str | os.PathLike, *, splits: Sequence[str] | None = None, ids: Iterable[str] | None = None
) -> list[Sample]:
    """The finished clips of a prepared folder, optionally restricted to splits and/or ids (sorted by id).

    Raises:
        DataError: the folder is not prepared, or an id asked for is not a finished clip (names them).
    """
    root = Path(root)
    try:
        read_meta(root)
        rows = read_manifest(root)
    except (FileNotFoundError, ValueError) as e:
        raise DataError(str(e)) from e
    done = [r for r in rows if r.ok]
    if splits is not None:
        done = [r for r in done if r.split in splits]
    if ids is not None:
        wanted = list(dict.fromkeys(ids))
        by_id = {r.id: r for r in done}
        missing = [i for i in wanted if i not in by_id]
        if missing:
            shown = ", ".join(missing[:10]) + (f", ... ({len(missing)} in all)" if len(missing) > 10 else "")
            raise DataError(f"{root}: {len(missing)} requested clip(s) are not prepared: {shown}")
        done = [by_id[i] for i in wanted]
    return [Sample.from_row(root, r) for r in sorted(done, key=lambda r: r.id)]


def label_index(samples: Iterable[Sample]) -> dict[str, int]:
    """Class name -> index, over the non-empty labels in sorted order."""
    return {name: i for i, name in enumerate(sorted({s.label for s in samples if s.label}))}


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of the augmentation draws of item ``index`` in ``epoch`` of a dataset seeded ``seed``
    (independent of the worker that loads it, so the views do not depend on ``num_workers``)."""
    digest = hashlib.blake2b(f"{seed}/{epoch}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF


class PreparedDataset(Dataset):
    """Tensors of prepared clips.

    Args:
        samples: the clips (see :func:`load_samples`).
        mode: ``"train"`` -> ``frame_view1``, ``frame_view2`` (two independent augmented views);
            ``"eval"`` -> ``frame`` (the evaluation view).
        augmentations: Table S2 augmentation names for training.
        image_size: network input size.
        seed: seed of the augmentations (combined with the epoch and the index).
        labels: class name -> index (``label`` is -1 for unlabelled clips).
        audio_embeddings: optional ``id -> P x D`` cached audio encoder outputs; when given, items carry
            ``audio_emb`` instead of ``spect``.
        visual_features: optional cache of a frozen visual encoder's features (training only, and only
            with the ``crop`` and ``hflip`` augmentations); when given, training items carry the two views
            in feature space, ``feat_view1`` and ``feat_view2`` (``C x h x w`` float16), instead of frames.
        audio_frontend: ``vggish`` (``spect`` is the stored ``P x 96 x 64`` log-mel) or ``stft`` (``spect``
            is the released models' ``1 x 257 x T`` log-spectrogram, :meth:`Sample.load_stft`; clips of one
            batch must share a sample rate, as in their code).
        audio_augmentations: masks drawn on each training clip's ``stft`` spectrogram
            (:func:`~sspl.data.spec_augment.apply_spec_masks`), seeded like the frame views.
        test_transform: the evaluation view: ``crop`` or ``resize`` (:func:`build_eval_transform`). It also
            says which frame file both modes read: with :data:`NATIVE_FRAME_TRANSFORMS` (the released
            models') the source-size frame where the folder has one (:meth:`Sample.load_frame`), so their
            views are taken from the original image as in their code; else the 256 x 256 ``frame``.
            ``visual_features`` always hold the features of the 256 x 256 frames.

    Items are dicts with ``id`` (str), ``index`` (int), ``label`` (int), ``spect`` (``P x 96 x 64`` or
    ``1 x 257 x T``) or ``audio_emb`` (``P x D``), and the frame tensor(s) (``3 x S x S``) or feature views.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        *,
        mode: str = "train",
        augmentations: Sequence[str] = ("crop", "hflip"),
        image_size: int = 224,
        seed: int = 0,
        labels: dict[str, int] | None = None,
        audio_embeddings: dict[str, torch.Tensor] | None = None,
        visual_features: VisualFeatureCache | None = None,
        audio_frontend: str = "vggish",
        test_transform: str = "crop",
        audio_augmentations: Sequence[str] = (),
    ) -> None:
        if mode not in ("train", "eval"):
            raise ValueError(f"mode must be 'train' or 'eval', got {mode!r}")
        if audio_frontend not in AUDIO_FRONTENDS or test_transform not in TEST_TRANSFORMS:
            raise ValueError(
                f"audio_frontend {audio_frontend!r} / test_transform {test_transform!r}: choose from "
                f"{', '.join(AUDIO_FRONTENDS)} / {', '.join(TEST_TRANSFORMS)}"
            )
        if audio_augmentations and (audio_frontend != "stft" or mode != "train"):
            raise ValueError("audio_augmentations mask the stft spectrogram of training clips only")
        if audio_frontend == "stft" and audio_embeddings is not None:
            raise ValueError(
                "audio_embeddings cache the vggish front end's patches, not the stft spectrogram"
            )
        if visual_features is not None:
            if mode != "train":
                raise ValueError(
                    "visual_features are for training views only; evaluation encodes exact frames"
                )
            if sorted(augmentations) != sorted(CACHE_AUGMENTATIONS):
                raise ValueError(
                    f"visual_features support exactly the augmentations {CACHE_AUGMENTATIONS}, got {list(augmentations)}"
                )
            if visual_features.image_size != image_size:
                raise ValueError(
                    f"visual_features were built for image_size {visual_features.image_size}, not {image_size}"
                )
        self.samples = list(samples)
        self.mode = mode
        self.seed = seed
        self.epoch = 0
        self.labels = labels or {}
        self.audio_embeddings = audio_embeddings
        self.visual_features = visual_features
        self.audio_frontend = audio_frontend
        self.audio_augmentations = tuple(audio_augmentations)
        self.native_frames = test_transform in NATIVE_FRAME_TRANSFORMS
        if visual_features is not None:
            self.transform = TwoViews(FeatureCropFlip.for_cache(visual_features))
        elif mode == "train":
            self.transform = TwoViews(
                build_train_transform(augmentations=tuple(augmentations), size=image_size)
            )
        else:
            self.transform = build_eval_transform(size=image_size, mode=test_transform)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of ``epoch``."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def load_audio(self, sample: Sample) -> torch.Tensor:
        """The network input of ``sample``'s sound in this dataset's front end (before any mask)."""
        return sample.load_stft() if self.audio_frontend == "stft" else sample.load_spect()

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        item: dict = {"id": sample.id, "index": index, "label": self.labels.get(sample.label, -1)}
        if self.audio_embeddings is not None:
            item["audio_emb"] = self.audio_embeddings[sample.id]
        else:
            item["spect"] = self.load_audio(sample)
        if self.mode == "train":
            cached = self.visual_features is not None
            source = self.visual_features[sample.id] if cached else sample.load_frame(self.native_frames)
            # Seeded per sample; fork_rng keeps the caller's global RNG stream untouched. Feature views
            # draw the same numbers as pixel views, so both see the same crops and flips.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(sample_seed(self.seed, self.epoch, index))
                views = self.transform(source)
                if self.audio_augmentations:
                    item["spect"] = apply_spec_masks(item["spect"], self.audio_augmentations)
            prefix = "feat_view" if cached else "frame_view"
            item[f"{prefix}1"], item[f"{prefix}2"] = views
        else:
            item["frame"] = self.transform(sample.load_frame(self.native_frames))
        return item
