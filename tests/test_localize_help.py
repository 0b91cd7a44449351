"""What `sspl localize --help` and the README say about the sound of `--image`, checked against what runs:
the map of an image is the map of the centre 3 s of its sound."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import sspl
from sspl.api import Preprocess
from sspl.cli import main
from sspl.models.methods import get_method

ROOT = Path(__file__).resolve().parents[1]


def _words(text: str) -> str:
    return re.sub(r"\s+", " ", text)


@pytest.fixture(scope="module")
def localize_help() -> str:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
        main(["localize", "--help"])
    assert exit_.value.code == 0
    return _words(out.getvalue())


def test_help_of_image_and_audio_says_the_centre_3_s_are_used(localize_help):
    assert (
        "--image FILE image file (any mode and size); needs --audio, of which the centre 3 s are localized"
        in (localize_help)
    )
    assert (
        "With --image: required, and only its centre 3 s are used (the official clip rule; a shorter sound is "
        "repeated to fill 3 s), so trim it to the moment to localize." in localize_help
    )
    assert "or in an image with a sound file (the map of the centre 3 s of the sound)" in localize_help


def test_readme_says_it_in_the_localize_section():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Localize sounds in your own media", 1)[1].split("\n## ", 1)[0]
    assert "`--image` localizes the centre 3 s of the sound" in _words(section)


def test_an_image_is_localized_with_the_centre_3_s_of_its_sound(small_cnn_config):
    torch.manual_seed(0)
    model = get_method("sspl").build(small_cnn_config, pretrained=False).eval()
    preprocess = Preprocess()
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8))
    rate = 16000
    t = np.arange(3 * rate) / rate
    centre = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    noise = (0.5 * rng.standard_normal(3 * rate)).astype(np.float32)
    long_sound = np.concatenate([noise, centre, noise[::-1]])  # 9 s: only the middle 3 s are the tone
    whole = sspl.localize_image(model, preprocess, image, (long_sound, rate)).raw_map
    middle = sspl.localize_image(model, preprocess, image, (centre, rate)).raw_map
    start = sspl.localize_image(model, preprocess, image, (noise, rate)).raw_map
    np.testing.assert_allclose(whole, middle, atol=1e-5)
    assert np.abs(whole - start).max() > 1e-3  # the sound matters: another 3 s give another map
