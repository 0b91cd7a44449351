"""Seeded stand-ins for the released models' weights and inputs (EZ-VSL, SLAVC, FNAC goldens).

Every tensor is drawn from ``numpy.random.default_rng([seed, crc32(official key)])``, so a state dict is
the same whatever order its keys come in, and the official code (run in a temporary folder to make the
goldens, see ``tests/data/released/ezvsl/README.md``) and these tests build the very same weights. Rules:
batch-norm running means U(-0.1, 0.1), variances U(0.5, 1.5), weights U(0.5, 1.5), biases U(-0.1, 0.1);
matrices and kernels normal with std ``sqrt(2 / fan_in)``; ``num_batches_tracked`` 0.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch

#: seeds of the goldens: the trained model, the ImageNet stand-in of OGL's saliency network, the inputs
MODEL_SEED, IMAGENET_SEED, INPUT_SEED = 22, 23, 24
#: batch of the goldens: frames B x 3 x 224 x 224, spectrograms B x 1 x 257 x T
BATCH, SPECT_T = 4, 200


def draw(key: str, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """The stand-in value of one official state-dict entry."""
    rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
    if key.endswith("num_batches_tracked"):
        return torch.zeros((), dtype=torch.long)
    if key.endswith("running_mean"):
        value = rng.uniform(-0.1, 0.1, shape)
    elif key.endswith("running_var"):
        value = rng.uniform(0.5, 1.5, shape)
    elif len(shape) >= 2:
        value = rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))
    elif key.endswith("weight"):
        value = rng.uniform(0.5, 1.5, shape)
    else:
        value = rng.uniform(-0.1, 0.1, shape)
    return torch.from_numpy(np.asarray(value, dtype=np.float32))


def seeded_state(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    """Stand-in values for every official key of ``shapes`` (key -> shape)."""
    return {k: draw(k, tuple(s), seed) for k, s in shapes.items()}


def inputs(seed: int = INPUT_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """The goldens' batch: ``BATCH x 3 x 224 x 224`` frames and ``BATCH x 1 x 257 x SPECT_T`` spectrograms."""
    rng = np.random.default_rng(seed)
    frames = rng.standard_normal((BATCH, 3, 224, 224)).astype(np.float32)
    spect = rng.standard_normal((BATCH, 1, 257, SPECT_T)).astype(np.float32)
    return torch.from_numpy(frames), torch.from_numpy(spect)


def gt_maps() -> np.ndarray:
    """``BATCH x 224 x 224`` ground-truth maps: one box per clip, the last clip two boxes (a 0.5 / 1 map
    as Flickr's consensus rule gives)."""
    gt = np.zeros((BATCH, 224, 224))
    for i in range(BATCH):
        gt[i, 20 + 15 * i : 150 + 10 * i, 30 + 20 * i : 200 - 5 * i] = 1.0
    gt[-1] *= 0.5
    gt[-1, 100:180, 60:220] = 1.0
    return gt
