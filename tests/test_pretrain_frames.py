"""Encoder pretraining and the oracle read frames exactly as every evaluation does (issue 21).

Pretraining once had its own resize (the longer side rounded, not truncated as torchvision's ``Resize``
does): on a 320 x 240 frame its normalised input differed from ``build_eval_transform``'s by up to 3.8.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sspl.data.transforms import build_eval_transform
from sspl.engine.oracle import load_eval_frames, normalize_frames


@pytest.mark.parametrize("size", [(320, 240), (240, 320), (301, 227), (256, 256)])
def test_pretraining_input_is_the_shared_evaluation_transform(tmp_path, size):
    rng = np.random.default_rng(0)
    path = tmp_path / "frame.png"
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    frames = load_eval_frames([path])
    assert frames.dtype == torch.uint8 and frames.shape == (1, 3, 224, 224)
    with Image.open(path) as im:
        expected = build_eval_transform()(im.convert("RGB"))
    assert torch.equal(normalize_frames(frames)[0], expected)
