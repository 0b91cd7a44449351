"""The released EZ-VSL / SLAVC / FNAC audio front end (sspl.spectrogram) against their own
``load_spectrogram`` run on real files at 16, 22.05, 44.1 and 48 kHz (tests/data/released/README.md)."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from sspl.audio import AudioDecodeError
from sspl.spectrogram import (
    centre_clip,
    clip_window,
    decode_s16_mono,
    load_centre_clip,
    load_spectrogram,
    log_spectrogram,
    num_frames,
    tukey_window,
)

DATA = Path(__file__).resolve().parent / "data"
#: name -> (file, native rate); the goldens hold the official output of each
FILES = {
    "10006434483.wav": (DATA / "prepare" / "10006434483.wav", 22050),  # real Flickr, 5 s mono s16
    "demo__multiple__6DR8dA9TDOc1.mp4": (DATA / "localize" / "demo__multiple__6DR8dA9TDOc1.mp4", 16000),
    "tone_1.3s_16k.wav": (DATA / "audio" / "tone_1.3s_16k.wav", 16000),  # float WAV, short: tiled
    "guitar_44100_stereo.m4a": (DATA / "released" / "guitar_44100_stereo.m4a", 44100),
    "multi_48000_stereo_2s.mp3": (DATA / "released" / "multi_48000_stereo_2s.mp3", 48000),  # short: tiled
    "single_48000_mono.ogg": (DATA / "released" / "single_48000_mono.ogg", 48000),
    "siren_16000_mono_1.5s.wav": (DATA / "released" / "siren_16000_mono_1.5s.wav", 16000),  # short: tiled
}


@pytest.fixture(scope="module")
def golden():
    with np.load(DATA / "released" / "spectrogram_golden.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.mark.parametrize("name", sorted(FILES))
def test_decoded_clip_is_theirs_bit_for_bit(name, golden):
    wave, rate = load_centre_clip(FILES[name][0])
    assert rate == FILES[name][1] == int(golden[f"{name}/rate"])
    assert wave.dtype == np.float64 and wave.shape == (int(golden[f"{name}/wave_len"]),) == (3 * rate,)
    np.testing.assert_array_equal(wave[:256], golden[f"{name}/wave_head"])
    np.testing.assert_array_equal(wave[-256:], golden[f"{name}/wave_tail"])
    assert hashlib.sha256(wave.astype("<f8").tobytes()).hexdigest() == str(golden[f"{name}/wave_sha256"])


def _check_against_golden(spect: np.ndarray, name: str, golden: dict, rtol: float, atol: float) -> None:
    cols = golden[f"{name}/columns"]
    np.testing.assert_allclose(spect[:, cols], golden[f"{name}/spect_columns"], rtol=rtol, atol=atol)
    np.testing.assert_allclose(spect.mean(1), golden[f"{name}/spect_bin_mean"], rtol=rtol, atol=atol)
    np.testing.assert_allclose(spect.mean(0), golden[f"{name}/spect_frame_mean"], rtol=rtol, atol=atol)


@pytest.mark.parametrize("name", sorted(FILES))
def test_spectrogram_is_theirs_in_float64_and_float32(name, golden):
    path, rate = FILES[name]
    spect = load_spectrogram(path, dtype=torch.float64)
    assert spect.shape == (1, 257, num_frames(3 * rate)) and spect.dtype == torch.float64
    _check_against_golden(spect[0].numpy(), name, golden, rtol=0, atol=1e-12)  # rounding only
    wave, _ = load_centre_clip(path)
    spect32 = log_spectrogram(torch.from_numpy(wave).float(), rate)
    assert spect32.dtype == torch.float32
    _check_against_golden(spect32[0].double().numpy(), name, golden, rtol=1e-4, atol=0)


def test_frame_counts_per_rate():
    assert [num_frames(3 * r) for r in (16000, 22050, 44100, 48000)] == [200, 276, 554, 603]


def test_a_batch_equals_its_clips_one_by_one():
    names = [n for n, (_, rate) in FILES.items() if rate == 16000]
    waves = [load_centre_clip(FILES[n][0])[0] for n in names]
    for dtype in (torch.float64, torch.float32):
        batch = log_spectrogram(torch.from_numpy(np.stack(waves)).to(dtype), 16000)
        assert batch.shape == (len(names), 1, 257, 200) and batch.dtype == dtype
        for i, wave in enumerate(waves):
            one = log_spectrogram(torch.from_numpy(wave).to(dtype), 16000)
            torch.testing.assert_close(batch[i], one, rtol=1e-6 if dtype == torch.float32 else 1e-12, atol=0)


def test_tukey_window_by_hand():
    w = tukey_window()
    # periodic: the symmetric 513-point window without its last sample; the cosine tapers span
    # alpha * 512 / 2 = 64 samples at each end
    assert w.shape == (512,) and w[0] == 0.0 and np.all(w[64:449] == 1.0)
    assert w[32] == pytest.approx(0.5 * (1 + math.cos(math.pi * (-1 + 2 * 32 / 0.25 / 512))))
    assert w[32] == pytest.approx(0.5) and w[480] == pytest.approx(0.5)
    np.testing.assert_allclose(w[1:64], w[511:448:-1], rtol=0, atol=1e-15)  # symmetric about 256


def test_density_scaling_and_one_sided_doubling_by_hand():
    """A full-scale cosine at bin 32 of 16 kHz: the PSD is |X|^2 / (rate * sum(w^2)), doubled."""
    rate, n = 16000, 512
    t = np.arange(n)
    wave = np.cos(2 * np.pi * 32 * t / n)
    w = tukey_window()
    segment = wave - wave.mean()
    expect = np.abs(np.fft.rfft(segment * w)) ** 2 / (rate * (w**2).sum())
    expect[1:-1] *= 2
    got = log_spectrogram(wave, rate)[0, :, 0].numpy()
    np.testing.assert_allclose(got, np.log(expect + 1e-7) / 12, rtol=0, atol=1e-12)
    # a constant is removed by the detrend: every bin sits at the floor log(1e-7) / 12
    np.testing.assert_allclose(log_spectrogram(np.full(n, 0.3), rate).numpy(), math.log(1e-7) / 12)


def test_in_memory_clip_rule_matches_the_file_rule_for_pcm_files():
    """For PCM WAV (frames start at 0) the array rule and the seek-based decoder cut the same samples."""
    for name in ("10006434483.wav", "siren_16000_mono_1.5s.wav"):
        wave, rate, t0 = decode_s16_mono(FILES[name][0])
        assert t0 == 0.0
        np.testing.assert_array_equal(centre_clip(wave, rate), load_centre_clip(FILES[name][0])[0])


def test_clip_window_is_centred_tiled_and_not_normalised():
    wave = np.arange(10, dtype=np.float64) / 100
    np.testing.assert_array_equal(clip_window(wave, 2, 2.5, seconds=2.0), wave[3:7])
    np.testing.assert_array_equal(clip_window(wave, 2, 0.0, seconds=2.0), wave[0:4])  # shifted inside
    short = clip_window(wave[:3], 2, 0.7, seconds=2.0)  # 3 samples tiled to 6, then 4 of them
    assert short.shape == (4,) and set(short) <= set(wave[:3])


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such audio file"):
        load_centre_clip(tmp_path / "missing.wav")
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not audio at all" * 10)
    with pytest.raises(AudioDecodeError, match="junk.wav: cannot open container"):
        load_spectrogram(junk)
    with pytest.raises(ValueError, match="need at least 512 samples"):
        log_spectrogram(np.zeros(100), 16000)
    with pytest.raises(ValueError, match="sample rate must be positive"):
        log_spectrogram(np.zeros(1000), 0)
