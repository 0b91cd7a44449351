"""How the trainer's data loaders batch prepared items and start their workers, and how a batch goes to
the device: shared by the trainer (:mod:`sspl.engine.train`) and the loader benchmark."""

from __future__ import annotations

from typing import Any

import torch

from ..errors import DataError

__all__ = ["collate_samples", "to_device", "worker_init"]


def collate_samples(items: list[dict]) -> dict:
    """One batch of :class:`~sspl.data.datasets.PreparedDataset` items: tensors stacked, integers as a
    tensor, anything else (ids) as a list."""
    out: dict[str, Any] = {}
    for key in items[0]:
        values = [it[key] for it in items]
        if isinstance(values[0], torch.Tensor):
            shapes = sorted({tuple(v.shape) for v in values})
            if len(shapes) > 1:  # the stft front end's T follows each clip's sample rate
                ids = [it.get("id") for it in items]
                raise DataError(
                    f"{key} of the clips {ids} differ in shape ({shapes}); with model.audio_frontend=stft "
                    "every clip of a training set needs the same sample rate"
                )
            out[key] = torch.stack(values)
        elif isinstance(values[0], int):
            out[key] = torch.tensor(values)
        else:
            out[key] = values
    return out


def worker_init(_: int) -> None:
    """A loader worker's start: one intra-op thread per worker (the workers are the parallelism)."""
    torch.set_num_threads(1)


def to_device(batch: dict, device: torch.device, channels_last: bool) -> dict:
    """The batch's tensors on ``device``; frames and feature views channels-last when asked."""
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            v = v.to(device, non_blocking=True)
            if channels_last and v.dim() == 4 and k.startswith(("frame", "feat_view")):
                v = v.contiguous(memory_format=torch.channels_last)
        out[k] = v
    return out
