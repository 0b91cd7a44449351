"""SynthAV frames through the shared evaluation transform, and the oracle query on frozen visual features.

The oracle query measures what the frozen visual features allow at best: the cosine map between the
feature at the sounding object's centre and every location. A localizer that found the right object from
the sound could at most produce that map, so its cIoU is the ceiling SSPL is compared with.

Frames are read with :func:`sspl.data.transforms.build_eval_transform` -- the transform every evaluation
uses -- and kept as uint8 (a quarter of the memory of float frames, which matters for the thousand frames
of encoder pretraining); :func:`normalize_frames` then applies that transform's normalisation per batch,
bit for bit.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms as T
from PIL import Image
from torch import nn

from ..data.manifest import ANNOTATIONS_NAME, read_manifest
from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_eval_transform
from ..errors import DataError

__all__ = ["EVAL_SIZE", "load_eval_frames", "load_synth_split", "normalize_frames", "oracle_query_maps"]

EVAL_SIZE = 224


def _eval_geometry(size: int) -> T.Compose:
    """The resize and centre crop of :func:`build_eval_transform` (PIL to PIL), without its conversion to
    a float tensor and its normalisation, which :func:`normalize_frames` applies per batch."""
    kept = [
        s for s in build_eval_transform(size=size).transforms if not isinstance(s, (T.ToTensor, T.Normalize))
    ]
    return T.Compose(kept)


def load_eval_frames(paths: Sequence[str | os.PathLike], size: int = EVAL_SIZE) -> torch.Tensor:
    """Load images with the evaluation transform's geometry: shorter side to ``size`` (bicubic), centre crop.

    Args:
        paths: image files.
        size: output side.

    Returns:
        ``N x 3 x size x size`` uint8; :func:`normalize_frames` of it is ``build_eval_transform(size=size)``
        of each image.
    """
    geometry = _eval_geometry(size)
    out = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as im:
                frame = geometry(im.convert("RGB"))
                out[i] = torch.from_numpy(np.asarray(frame).copy()).permute(2, 0, 1)
        except OSError as e:
            raise DataError(f"{path}: cannot read image ({e})") from e
    return out


def normalize_frames(frames: torch.Tensor) -> torch.Tensor:
    """``B x 3 x H x W`` uint8 -> float32 ImageNet-normalised (on the frames' device), as the evaluation
    transform's ``ToTensor`` and ``Normalize`` do."""
    mean = torch.tensor(IMAGENET_MEAN, device=frames.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=frames.device).view(1, 3, 1, 1)
    return (frames.float() / 255 - mean) / std


def load_synth_split(
    data_dir: str | os.PathLike, split: str = "test"
) -> tuple[list[str], torch.Tensor, np.ndarray]:
    """Frames and sounding-object boxes of one split of a SynthAV set, in manifest order; scenes without
    a visible source (no box) are left out.

    Args:
        data_dir: folder written by ``sspl synth``.
        split: ``train``, ``val``, ``test`` or ``pretrain``.

    Returns:
        ``(ids, frames, boxes)``: ``N`` ids, ``N x 3 x 224 x 224`` uint8 frames (evaluation transform),
        ``N x 4`` float boxes ``[x1, y1, x2, y2]`` normalised to [0, 1].
    """
    root = Path(data_dir)
    rows = [r for r in read_manifest(root) if r.ok and r.split == split]
    if not rows:
        raise DataError(f"{root}: no clip of split {split!r} in the manifest")
    ann_path = root / ANNOTATIONS_NAME
    if not ann_path.is_file():
        raise DataError(f"{ann_path}: missing; is {root} a SynthAV set written by `sspl synth`?")
    boxes_of = {a["file"]: a["bbox"] for a in json.loads(ann_path.read_text(encoding="utf-8"))}
    missing = [r.id for r in rows if r.id not in boxes_of]
    if missing:
        raise DataError(f"{ann_path}: no box for {len(missing)} clip(s), e.g. {missing[0]}")
    rows = [r for r in rows if boxes_of[r.id]]  # a scene without a visible source has no box to query
    if not rows:
        raise DataError(f"{root}: no clip of split {split!r} has a visible source")
    boxes_of = {r.id: boxes_of[r.id][0] for r in rows}
    frames = load_eval_frames([root / r.frame for r in rows])
    return [r.id for r in rows], frames, np.array([boxes_of[r.id] for r in rows], dtype=np.float64)


@torch.no_grad()
def oracle_query_maps(
    visual_encoder: nn.Module,
    frames: torch.Tensor,
    boxes: Sequence[Sequence[float]] | np.ndarray | torch.Tensor,
    *,
    batch_size: int = 64,
) -> torch.Tensor:
    """Cosine maps between the feature at each box's centre and every location of the frame's feature map.

    The query cell is the one containing the box centre: ``(floor(cy * h), floor(cx * w))``. The encoder is
    run in eval mode (its mode is restored afterwards).

    Args:
        visual_encoder: ``B x 3 x H x W -> B x C x h x w``.
        frames: ``B x 3 x H x W`` ImageNet-normalised float frames, or uint8 frames (normalised here).
        boxes: ``B x 4`` boxes ``[x1, y1, x2, y2]`` normalised to [0, 1] in the frame.
        batch_size: frames encoded at once.

    Returns:
        ``B x h x w`` float32 cosine similarities in [-1, 1] (on the CPU).
    """
    boxes_t = torch.as_tensor(np.asarray(boxes, dtype=np.float64)).reshape(-1, 4)
    if frames.dim() != 4 or frames.shape[1] != 3 or boxes_t.shape[0] != frames.shape[0]:
        raise ValueError(
            f"expected B x 3 x H x W frames and B x 4 boxes, got {tuple(frames.shape)} and "
            f"{tuple(boxes_t.shape)}"
        )
    param = next(iter(visual_encoder.parameters()), None)
    device = param.device if param is not None else frames.device
    was_training = visual_encoder.training
    visual_encoder.eval()
    maps = []
    try:
        for lo in range(0, frames.shape[0], batch_size):
            batch = frames[lo : lo + batch_size].to(device)
            if batch.dtype == torch.uint8:
                batch = normalize_frames(batch)
            feats = F.normalize(visual_encoder(batch).float(), dim=1)  # b x C x h x w
            _, _, h, w = feats.shape
            centre = boxes_t[lo : lo + batch_size]
            cx = ((centre[:, 0] + centre[:, 2]) / 2 * w).floor().long().clamp(0, w - 1)
            cy = ((centre[:, 1] + centre[:, 3]) / 2 * h).floor().long().clamp(0, h - 1)
            query = feats[torch.arange(feats.shape[0]), :, cy.to(device), cx.to(device)]  # b x C
            maps.append(torch.einsum("bc,bchw->bhw", query, feats).cpu())
    finally:
        visual_encoder.train(was_training)
    return torch.cat(maps)
