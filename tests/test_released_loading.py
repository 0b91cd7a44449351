"""Official SLAVC and FNAC ``best.pth`` files (written in their format from seeded weights) are recognised
and load as they are: the maps of the loaded model equal the official code's (goldens in
tests/data/released/*)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from slavc_fnac_recipe import RELEASED, inputs, write_released_checkpoint
from sspl.config import Config
from sspl.errors import WeightsError
from sspl.models.released import load_released, read_released


def _frames_spect(method: str):
    x = inputs(method, "test")
    return torch.from_numpy(x["image"]).float(), torch.from_numpy(x["spec"]).float()


@pytest.mark.parametrize("momentum_map,tag", [(False, "script"), (True, "relative_mom")])
def test_official_slavc_file_is_recognised_and_loads_with_its_momentum_encoder(tmp_path, momentum_map, tag):
    path = write_released_checkpoint("slavc", tmp_path / "best.pth")
    assert read_released(path)[0].name == "slavc"
    # without OGL nothing is downloaded (its ImageNet network is not in the file)
    base = Config(method="slavc", method_options={"ogl": False, "momentum_map": momentum_map})
    model, cfg = load_released(path, config=base, download=False)
    assert (
        cfg.method == "slavc" and cfg.model.audio_frontend == "stft" and cfg.data.test_transform == "resize"
    )
    frames, spect = _frames_spect("slavc")
    with torch.no_grad():
        raw = model.av_map(frames, spect)
    np.testing.assert_allclose(
        raw.numpy(), np.load(RELEASED / "slavc" / "test.npz")[f"{tag}_raw"], rtol=1e-5, atol=1e-6
    )


def test_official_fnac_file_is_told_from_ezvsl_by_its_recorded_weight_decay(tmp_path):
    path = write_released_checkpoint("fnac", tmp_path / "best.pth")
    assert read_released(path)[0].name == "fnac"
    model, cfg = load_released(
        path, config=Config(method="fnac", method_options={"ogl": False}), download=False
    )
    assert cfg.method == "fnac"
    frames, spect = _frames_spect("fnac")
    gold = np.load(RELEASED / "fnac" / "test.npz")["raw"]
    with torch.no_grad():
        np.testing.assert_allclose(model.av_map(frames, spect).numpy(), gold, rtol=1e-5, atol=1e-6)
    # without the optimizer entry the keys alone cannot tell FNAC from EZ-VSL: it loads as EZ-VSL, whose
    # network and test-time map FNAC shares, so the maps are the same
    bare = write_released_checkpoint("fnac", tmp_path / "bare.pth", optimizer=False)
    assert read_released(bare)[0].name == "ezvsl"
    model, _ = load_released(
        bare, config=Config(method="fnac", method_options={"ogl": False}), download=False
    )
    with torch.no_grad():
        np.testing.assert_allclose(model.av_map(frames, spect).numpy(), gold, rtol=1e-5, atol=1e-6)


def test_a_slavc_file_missing_a_momentum_tensor_is_refused_in_one_line(tmp_path):
    path = write_released_checkpoint("slavc", tmp_path / "best.pth")
    ckpt = torch.load(path, weights_only=True)
    del ckpt["model"]["module.momentum_aud_proj2.bias"]
    torch.save(ckpt, path)
    with pytest.raises(WeightsError, match=r"best.pth: slavc checkpoint does not fit the model") as info:
        load_released(path, config=Config(method="fnac", method_options={"ogl": False}), download=False)
    assert "\n" not in str(info.value)
