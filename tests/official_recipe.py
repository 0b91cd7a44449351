"""Rebuild the official-format SSPL weights from the recipe of the reference README.

Part ``i`` (frame, sound, pcm, ssl_head) is filled key by key, in the official order, from
``numpy.random.default_rng(seed_base + i)`` (``seed_base`` = 20220619) with the rules of the README.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

KEYS_FILE = Path(__file__).parent / "data" / "reference" / "official_state_dict_keys.json"
_RATE_PREFIX = {"a0.": 1.0, "b0.": 0.5}


def _draw(rng: np.random.Generator, key: str, shape: list[int], part: str) -> np.ndarray | None:
    if key.endswith("num_batches_tracked"):
        return None
    if key.endswith("running_mean"):
        return rng.uniform(-0.1, 0.1, shape)
    if key.endswith("running_var"):
        return rng.uniform(0.5, 1.5, shape)
    if part == "pcm" and key[:3] in _RATE_PREFIX:
        return _RATE_PREFIX[key[:3]] + rng.uniform(-0.2, 0.2, shape)
    if len(shape) >= 2:
        return rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))
    if key.endswith("weight"):
        return 1.0 + rng.uniform(-0.1, 0.1, shape)
    return rng.uniform(-0.1, 0.1, shape)


def official_parts() -> dict[str, dict[str, torch.Tensor]]:
    """The four official state dicts (``frame``, ``sound``, ``pcm``, ``ssl_head``) of the recipe."""
    spec = json.loads(KEYS_FILE.read_text())
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for i, part in enumerate(spec["order"]):
        rng = np.random.default_rng(spec["seed_base"] + i)
        state = {}
        for key, shape, dtype in spec["keys"][part]:
            value = _draw(rng, key, shape, part)
            if value is None:
                state[key] = torch.zeros(shape, dtype=torch.int64)
            else:
                state[key] = torch.from_numpy(np.asarray(value, dtype=np.float64).astype(dtype))
        parts[part] = state
    return parts


def write_official_checkpoint(folder: Path, *, pcm: bool = True, module_prefix: bool = False) -> Path:
    """Write ``frame_best.pth`` etc. as the official training code would (optionally DDP-prefixed)."""
    folder.mkdir(parents=True, exist_ok=True)
    names = {
        "frame": "frame_best.pth",
        "sound": "sound_best.pth",
        "pcm": "pcm_best.pth",
        "ssl_head": "ssl_head_best.pth",
    }
    for part, state in official_parts().items():
        if part == "pcm" and not pcm:
            continue
        if module_prefix and part != "frame":
            state = {"module." + k: v for k, v in state.items()}
        torch.save(state, folder / names[part])
    return folder
