"""FNAC's spectrogram masks (:mod:`sspl.data.spec_augment`): where the bands fall, how wide they are, and
the configuration that turns them on."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sspl.config import Config, ConfigError, DataConfig, apply_overrides, load_config
from sspl.data import spec_augment
from sspl.data.spec_augment import MASK_MAX_WIDTH, apply_spec_masks

BINS, FRAMES = 257, 200  # 3 s at 16 kHz
CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def _bands(masked: torch.Tensor) -> tuple[list[int], list[int]]:
    """Rows (frequency bins) and columns (time frames) that are all zero in a masked all-ones input."""
    zero = masked[0] == 0
    return torch.nonzero(zero.all(1)).flatten().tolist(), torch.nonzero(zero.all(0)).flatten().tolist()


def test_fixed_bands_zero_exactly_those_bins_and_frames(monkeypatch):
    bands = iter([(3, 7), (190, 199)])  # the frequency band, then the time band: FNAC's order
    monkeypatch.setattr(spec_augment, "draw_band", lambda start_range: next(bands))
    spect = torch.arange(BINS * FRAMES, dtype=torch.float32).reshape(1, BINS, FRAMES) + 1
    out = apply_spec_masks(spect, ["freq_mask", "time_mask"])
    expect = spect.clone()
    expect[0, 3:7, :] = 0
    expect[0, :, 190:199] = 0
    torch.testing.assert_close(out, expect, rtol=0, atol=0)
    assert spect.min() == 1  # the input is left as it was


def test_band_starts_and_widths_follow_fnac_s_draws():
    torch.manual_seed(0)
    ones = torch.ones(1, BINS, FRAMES)
    freq_starts, freq_widths, time_widths, empty_time = [], [], [], 0
    for _ in range(3000):
        rows, _ = _bands(apply_spec_masks(ones, ["freq_mask"]))
        if rows:
            assert rows == list(range(rows[0], rows[-1] + 1))  # one band
            freq_starts.append(rows[0])
        freq_widths.append(len(rows))
        _, cols = _bands(apply_spec_masks(ones, ["time_mask"]))
        time_widths.append(len(cols))
        empty_time += not cols
    # widths 0 .. 9, each about a tenth of the draws
    assert set(freq_widths) == set(range(MASK_MAX_WIDTH)) == set(time_widths)
    # the frequency band starts over the time axis's length: never at or past T = 200 of the 257 bins
    assert max(freq_starts) < FRAMES and max(freq_starts) >= FRAMES - 5
    # the time band starts over the 257 bins: at or past T = 200 it masks nothing, (57 / 257) of the draws
    # on top of the width-0 tenth
    expect_empty = 57 / 257 + (200 / 257) * 0.1
    assert abs(empty_time / 3000 - expect_empty) < 0.03


def test_names_are_checked():
    with pytest.raises(ValueError, match="unknown audio augmentation"):
        apply_spec_masks(torch.ones(1, 4, 4), ["blur"])
    with pytest.raises(ConfigError, match=r"data.audio_augmentations=\['freq_mask', 'freq_mask'\]"):
        DataConfig(audio_augmentations=["freq_mask", "freq_mask"])
    with pytest.raises(ConfigError, match="model.audio_frontend='vggish' has none"):
        apply_overrides(Config(), ["data.audio_augmentations=[freq_mask,time_mask]"])
    for path in sorted(CONFIGS.glob("fnac_*.yaml")):  # FNAC's official training masks every clip
        assert load_config(path).data.audio_augmentations == ["freq_mask", "time_mask"], path.name
    assert load_config(CONFIGS / "ezvsl_flickr10k.yaml").data.audio_augmentations == []


def test_sspl_train_builds_fnac_s_training_set_with_the_masks():
    from sspl.engine import train as train_engine
    from sspl.engine.distributed import DistEnv
    from sspl.engine.train_data import Splits

    splits = Splits(train=[], val=[], labels={}, val_annotations=None, protocol_name="vggss")
    for name, masks in (("fnac_flickr10k", ("freq_mask", "time_mask")), ("ezvsl_flickr10k", ())):
        cfg = load_config(CONFIGS / f"{name}.yaml")
        built, *_ = train_engine._train_loader(cfg, splits, DistEnv(), None, None)
        assert built.audio_augmentations == masks, name
