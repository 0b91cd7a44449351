"""Seeded stand-ins for the released SLAVC / FNAC checkpoints, and the inputs their goldens were made on.

The released ``best.pth`` files are ~100-200 MB, so the tests do not store weights: they rebuild them
from this recipe, key by key in the official state dict's order (``keys.json`` beside each golden set),
from ``numpy.random.default_rng(seed)``:

- ``*.num_batches_tracked``: 0 (int64); ``*.running_mean``: U(-0.1, 0.1); ``*.running_var``: U(0.5, 1.5);
- tensors of 2+ dimensions: He normal, ``N(0, 2 / fan_in)`` with ``fan_in`` = the product of the
  trailing dimensions;
- other ``*.weight``: 1 + U(-0.1, 0.1); other ``*.bias``: U(-0.1, 0.1).

Values are drawn in float64 and stored as float32 (as the official models are). The golden-making
harness (see each golden folder's README) imported this module, so goldens and tests share the weights.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import torch

RELEASED = Path(__file__).parent / "data" / "released"


def _draw(rng: np.random.Generator, key: str, shape: list[int]) -> np.ndarray | None:
    if key.endswith("num_batches_tracked"):
        return None
    if key.endswith("running_mean"):
        return rng.uniform(-0.1, 0.1, shape)
    if key.endswith("running_var"):
        return rng.uniform(0.5, 1.5, shape)
    if len(shape) >= 2:
        return rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))
    if key.endswith("weight"):
        return 1.0 + rng.uniform(-0.1, 0.1, shape)
    return rng.uniform(-0.1, 0.1, shape)


def recipe_state_dict(keys: list[list], seed: int) -> dict[str, torch.Tensor]:
    """A state dict with the ``[key, shape]`` entries of ``keys``, filled in order by the recipe."""
    rng = np.random.default_rng(seed)
    state = {}
    for key, shape in keys:
        value = _draw(rng, key, shape)
        if value is None:
            state[key] = torch.zeros(shape, dtype=torch.int64)
        else:
            state[key] = torch.from_numpy(np.asarray(value, dtype=np.float64).astype(np.float32))
    return state


@functools.cache
def spec(method: str) -> dict:
    """The ``keys.json`` of a golden set (``slavc`` or ``fnac``): key lists and seeds."""
    return json.loads((RELEASED / method / "keys.json").read_text())


def released_state_dict(method: str) -> dict[str, torch.Tensor]:
    """The model state dict of the seeded stand-in for ``method``'s released checkpoint (``module.`` keys);
    a fresh copy of a cached one (drawing ~46 M numbers takes a few seconds)."""
    return {k: v.clone() for k, v in _released(method).items()}


@functools.cache
def _released(method: str) -> dict[str, torch.Tensor]:
    s = spec(method)
    return recipe_state_dict(s["model_keys"], s["model_seed"])


def saliency_state_dict(method: str) -> dict[str, torch.Tensor]:
    """Seeded weights of torchvision's ResNet-18 (no ``fc``), standing in for the ImageNet saliency model."""
    s = spec(method)
    return recipe_state_dict(s["saliency_keys"], s["saliency_seed"])


def write_released_checkpoint(method: str, path: Path, *, optimizer: bool = True) -> Path:
    """Write ``best.pth`` as the official training code saves it: ``{'model', 'optimizer', 'epoch', ...}``,
    the optimiser entry an ``Adam`` state dict recording the script's learning rate and weight decay
    (SLAVC 0, FNAC 1e-4; no ``state``: nothing reads it)."""
    extra = {
        "slavc": {"best_Precision": 0.0, "best_AP": 0.0, "best_F1": 0.0},
        "fnac": {"best_cIoU": 0.0, "best_Auc": 0.0},
    }[method]
    model = released_state_dict(method)
    group = {
        "lr": 1e-4,
        "betas": (0.9, 0.999),
        "eps": 1e-8,
        "weight_decay": {"slavc": 0, "fnac": 1e-4}[method],
    }
    ckpt = {"model": model, "epoch": 1, **extra}
    if optimizer:
        ckpt["optimizer"] = {
            "state": {},
            "param_groups": [{**group, "amsgrad": False, "params": list(range(10))}],
        }
    torch.save(ckpt, path)
    return path


def inputs(method: str, kind: str) -> dict[str, np.ndarray]:
    """Inputs of a golden run, regenerated from the seeds in ``keys.json``.

    ``kind``: ``train`` (frames ``B x 3 x 224 x 224`` ~ N(0, 1), spectrograms ``B x 1 x 257 x T`` ~
    N(0, 1), image-dropout masks, each Bernoulli(1 - p)) or ``test`` (frames and spectrograms).
    """
    s = spec(method)[kind]
    rng = np.random.default_rng(s["seed"])
    b, t = s["batch"], s["frames"]
    out = {
        "image": rng.standard_normal((b, 3, 224, 224)),
        "spec": rng.standard_normal((b, 1, 257, t)),
    }
    for i in range(s.get("dropout_masks", 0)):
        out[f"mask{i}"] = (rng.random((b, 512, 7, 7)) >= s["dropout_img"]).astype(np.float64)
    return out


def features(method: str) -> dict[str, np.ndarray]:
    """Small unit-norm features for the pure-loss goldens (``B x C x 7 x 7`` maps, ``B x C`` vectors)."""
    s = spec(method)["loss"]
    rng = np.random.default_rng(s["seed"])
    b, c = s["batch"], s["dim"]

    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    names = s["maps"] + s["vectors"]
    return {n: unit(rng.standard_normal((b, c, 7, 7) if n in s["maps"] else (b, c))) for n in names}


def our_state_dict(method: str) -> dict[str, torch.Tensor]:
    """The stand-in's weights under our names (the released format's renaming, ``module.`` dropped), with
    the saliency stand-in as ``saliency_encoder.*``."""
    from sspl.models.released import RELEASED_FORMATS, to_state_dict

    state = {k.removeprefix("module."): v for k, v in released_state_dict(method).items()}
    state = to_state_dict(RELEASED_FORMATS[method], state)
    return {**state, **{"saliency_encoder." + k: v for k, v in saliency_state_dict(method).items()}}
