"""The released EZ-VSL / SLAVC / FNAC models' inputs through the data paths: ``model.audio_frontend=stft``
(prepared clips, ``sspl prepare --native-audio``, localize) and ``data.test_transform=resize``."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from sspl import config as config_mod
from sspl.audio import load_audio
from sspl.config import Config, ConfigError, DataConfig, SSPLConfig
from sspl.data.datasets import PreparedDataset, load_samples
from sspl.data.loader import collate_samples
from sspl.data.manifest import read_meta
from sspl.data.prepare import prepare
from sspl.data.preprocess import Preprocess
from sspl.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_eval_transform, eval_crop_to_original
from sspl.data.video import video_info
from sspl.engine.evaluate import compute_maps
from sspl.errors import DataError
from sspl.spectrogram import clip_window, decode_s16_mono, load_centre_clip, load_spectrogram, log_spectrogram

DATA = Path(__file__).resolve().parent / "data"
FLICKR_ID = "10006434483"


def _gradient_image(width: int = 300, height: int = 180) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // width, y * 255 // height, (x * y) % 256], -1).astype(np.uint8)
    return Image.fromarray(rgb)


# --------------------------------------------------------------------------------------------------
# The test image transform
# --------------------------------------------------------------------------------------------------


def test_resize_transform_is_their_resize_of_the_whole_frame():
    img = _gradient_image()
    got = build_eval_transform(mode="resize")(img)
    resized = TF.resize(img, [224, 224], interpolation=TF.InterpolationMode.BICUBIC)
    assert resized.size == (224, 224)
    expect = TF.normalize(TF.to_tensor(resized), IMAGENET_MEAN, IMAGENET_STD)
    assert got.shape == (3, 224, 224)
    torch.testing.assert_close(got, expect, rtol=0, atol=0)
    # PIL's own bicubic resize of the whole frame (their Resize((224, 224), Image.BICUBIC) on a PIL image)
    pil = TF.normalize(TF.to_tensor(img.resize((224, 224), Image.BICUBIC)), IMAGENET_MEAN, IMAGENET_STD)
    torch.testing.assert_close(got, pil, rtol=0, atol=0)


def test_crop_transform_is_unchanged_and_differs_from_resize_on_a_wide_frame():
    img = _gradient_image()
    crop = build_eval_transform()(img)
    short_side = TF.resize(img, 224, interpolation=TF.InterpolationMode.BICUBIC)  # 373 x 224
    expect = TF.normalize(TF.to_tensor(TF.center_crop(short_side, 224)), IMAGENET_MEAN, IMAGENET_STD)
    torch.testing.assert_close(crop, expect, rtol=0, atol=0)
    assert not torch.allclose(crop, build_eval_transform(mode="resize")(img))
    with pytest.raises(ValueError, match="eval transform 'pad': choose from crop, resize"):
        build_eval_transform(mode="pad")


def test_resize_mapping_covers_the_whole_frame():
    m = eval_crop_to_original(300, 180, mode="resize")
    assert m.crop_box == (0.0, 0.0, 300.0, 180.0)
    np.testing.assert_allclose(m.to_original([[112, 112], [224, 0]]), [[150, 90], [300, 0]])
    np.testing.assert_allclose(m.to_crop(m.to_original([[10.5, 200.25]])), [[10.5, 200.25]])
    crop = eval_crop_to_original(300, 180)  # SSPL's: a centre square of the wide frame
    assert crop.crop_box[0] > 0 and crop.crop_box[2] < 300


# --------------------------------------------------------------------------------------------------
# Preprocess
# --------------------------------------------------------------------------------------------------


def test_preprocess_defaults_are_sspl_and_follow_the_config(monkeypatch):
    pre = Preprocess()
    assert (pre.audio_frontend, pre.test_transform, pre.stft) == ("vggish", "crop", False)
    # an stft config needs an audio encoder that takes spectrograms; none is registered in this module's
    # scope, so the patch-encoder list is narrowed for the test
    monkeypatch.setattr(config_mod, "PATCH_AUDIO_ENCODERS", ("small_cnn",))
    cfg = Config(
        model=SSPLConfig(audio_frontend="stft"), data=DataConfig(test_transform="resize", image_size=160)
    )
    pre = Preprocess.from_config(cfg)
    assert (pre.image_size, pre.audio_frontend, pre.test_transform) == (160, "stft", "resize")
    with pytest.raises(ConfigError, match="data.cache_audio caches the vggish front end's patch embeddings"):
        Config(model=SSPLConfig(audio_frontend="stft"), data=DataConfig(cache_audio=True))
    with pytest.raises(ValueError, match="audio_frontend 'mel'"):
        Preprocess(audio_frontend="mel")


def test_preprocess_stft_audio_is_the_official_input():
    pre = Preprocess(audio_frontend="stft", test_transform="resize")
    path = DATA / "released" / "guitar_44100_stereo.m4a"
    got = pre.audio_file(path)
    assert got.shape == (1, 257, 554) and got.dtype == torch.float32
    torch.testing.assert_close(got, load_spectrogram(path), rtol=0, atol=0)
    wave, rate = pre.load_audio(path)  # native rate, 16-bit mono
    assert rate == 44100
    np.testing.assert_array_equal(wave, decode_s16_mono(path)[0])
    expect = log_spectrogram(clip_window(wave, rate, 1.25), rate).float()
    torch.testing.assert_close(pre.audio_at(wave, 1.25, rate), expect, rtol=0, atol=0)
    # the in-memory rule on a PCM file's samples is the file rule
    flickr = DATA / "prepare" / f"{FLICKR_ID}.wav"
    torch.testing.assert_close(pre.audio(*pre.load_audio(flickr)), load_spectrogram(flickr), rtol=0, atol=0)


def test_preprocess_vggish_is_unchanged():
    pre = Preprocess()
    wave, rate = load_audio(DATA / "prepare" / f"{FLICKR_ID}.wav", 16000)
    assert pre.audio(wave, rate).shape == (3, 96, 64)
    with pytest.raises(ValueError, match="the vggish front end takes 16000 Hz audio, got 44100"):
        pre.audio_at(wave, 1.0, 44100)


# --------------------------------------------------------------------------------------------------
# Prepared clips
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A pairs-layout folder (the real Flickr frame + its 22.05 kHz track) prepared without and with
    ``--native-audio``."""
    src = tmp_path_factory.mktemp("src")
    shutil.copy(DATA / "prepare" / f"{FLICKR_ID}.jpg", src / f"{FLICKR_ID}.jpg")
    shutil.copy(DATA / "prepare" / f"{FLICKR_ID}.wav", src / f"{FLICKR_ID}.wav")
    plain, native = tmp_path_factory.mktemp("plain"), tmp_path_factory.mktemp("native")
    assert prepare(src, plain, workers=1, progress=False, layout="pairs").done == 1
    assert prepare(src, native, workers=1, progress=False, layout="pairs", native_audio=True).done == 1
    return plain, native, src


def test_prepare_native_audio_keeps_their_clip_exactly(prepared):
    plain, native, src = prepared
    assert read_meta(native)["native_audio"] is True and read_meta(plain)["native_audio"] is False
    assert not (plain / "audio_native").exists()
    kept = native / "audio_native" / f"{FLICKR_ID}.wav"
    wave, rate = load_centre_clip(kept)
    expect, expect_rate = load_centre_clip(DATA / "prepare" / f"{FLICKR_ID}.wav")
    assert rate == expect_rate == 22050
    np.testing.assert_array_equal(wave, expect)  # 16-bit samples, stored losslessly
    with pytest.raises(
        DataError, match="prepared with native_audio=True, not False"
    ):  # resumed: same settings
        prepare(src, native, workers=1, progress=False, layout="pairs")


def test_dataset_stft_spect_is_the_front_end_of_the_clip_audio(prepared):
    plain, native, _ = prepared
    for folder, source in (
        (native, DATA / "prepare" / f"{FLICKR_ID}.wav"),  # the released models' input, exactly
        (plain, plain / "audio" / f"{FLICKR_ID}.wav"),  # the 16 kHz normalised clip
    ):
        samples = load_samples(folder)
        item = PreparedDataset(samples, mode="eval", audio_frontend="stft", test_transform="resize")[0]
        torch.testing.assert_close(item["spect"], load_spectrogram(source), rtol=0, atol=0)
        train = PreparedDataset(samples, mode="train", audio_frontend="stft")[0]
        torch.testing.assert_close(train["spect"], item["spect"], rtol=0, atol=0)
    assert PreparedDataset(load_samples(native), mode="eval")[0]["spect"].shape == (3, 96, 64)  # vggish
    assert item["spect"].shape == (1, 257, 200)  # 16 kHz
    shapes = {
        folder: PreparedDataset(load_samples(folder), mode="eval", audio_frontend="stft")[0]["spect"].shape
        for folder in prepared[:2]
    }
    assert shapes[native] == (1, 257, 276)  # 22.05 kHz


def test_training_spectrograms_get_fnac_s_masks_seeded_like_the_views(prepared):
    samples = load_samples(prepared[1])
    plain = PreparedDataset(samples, mode="train", audio_frontend="stft")[0]["spect"]
    masks = ("freq_mask", "time_mask")
    masked = [
        PreparedDataset(samples, mode="train", audio_frontend="stft", audio_augmentations=masks, seed=s)[0]
        for s in (0, 0, 1)
    ]
    torch.testing.assert_close(masked[0]["spect"], masked[1]["spect"], rtol=0, atol=0)  # reproducible
    torch.testing.assert_close(masked[0]["frame_view1"], masked[1]["frame_view1"], rtol=0, atol=0)
    changed = [m["spect"] != plain for m in masked]
    assert all(bool(c.any()) for c in changed) and not torch.equal(changed[0], changed[2])
    for m, c in zip(masked, changed, strict=True):
        assert (m["spect"][c] == 0).all()  # only zeros are written
    with pytest.raises(ValueError, match="stft spectrogram of training clips only"):
        PreparedDataset(samples, mode="eval", audio_frontend="stft", audio_augmentations=masks)


def test_dataset_resize_view_is_the_transform_of_the_frame(prepared):
    samples = load_samples(prepared[0])
    item = PreparedDataset(samples, mode="eval", test_transform="resize")[0]
    torch.testing.assert_close(item["frame"], build_eval_transform(mode="resize")(samples[0].load_frame()))


def test_clips_of_different_rates_batch_apart_in_evaluation_and_are_refused_in_training(prepared):
    plain, native, _ = prepared
    ds = PreparedDataset(load_samples(plain) + load_samples(native), mode="eval", audio_frontend="stft")

    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))
            self.shapes = []

        def localize(self, frames, spect):
            self.shapes.append(tuple(spect.shape))
            return spect.mean((1, 2, 3))[:, None, None].expand(-1, 2, 2) + self.w

    model = Recorder()
    maps = compute_maps(model, ds, batch_size=4)
    assert sorted(model.shapes) == [(1, 1, 257, 200), (1, 1, 257, 276)] and len(maps) == 1  # one id
    with pytest.raises(DataError, match="every clip of a training set needs the same sample rate"):
        collate_samples([ds[0], ds[1]])


# --------------------------------------------------------------------------------------------------
# sspl localize with the released models' preprocessing
# --------------------------------------------------------------------------------------------------


class _Recorder(torch.nn.Module):
    """A stand-in localizer: records its inputs, returns a 7 x 7 map of their means."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.inputs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def localize(self, frames, spect):
        self.inputs.append((frames.clone(), spect.clone()))
        return (frames.mean((1, 2, 3)) + spect.mean((1, 2, 3)))[:, None, None].expand(-1, 7, 7) + self.w


def test_localize_image_feeds_their_spectrogram_and_whole_frame():
    from sspl.localize import localize_image

    model = _Recorder().eval()
    pre = Preprocess(audio_frontend="stft", test_transform="resize")
    img, sound = _gradient_image(), DATA / "released" / "single_48000_mono.ogg"
    result = localize_image(model, pre, img, sound)
    frames, spect = model.inputs[0]
    torch.testing.assert_close(spect, load_spectrogram(sound)[None], rtol=0, atol=0)  # 1 x 1 x 257 x 603
    torch.testing.assert_close(frames, build_eval_transform(mode="resize")(img)[None], rtol=0, atol=0)
    assert result.crop_box == (0.0, 0.0, 300.0, 180.0) and not np.isnan(result.heatmap).any()


def test_localize_video_gives_each_frame_its_native_rate_window():
    from sspl.localize import localize_video

    video = DATA / "localize" / "demo__multiple__6DR8dA9TDOc1.mp4"  # AAC 16 kHz stereo
    model = _Recorder().eval()
    pre = Preprocess(audio_frontend="stft", test_transform="resize")
    result = localize_video(model, pre, video, fps=1.0, progress=False)
    spects = torch.cat([s for _, s in model.inputs])
    assert spects.shape == (len(result.timestamps), 1, 257, 200)
    wave, rate = pre.load_audio(video)
    t0 = video_info(video).audio_start
    for t, spect in zip(result.timestamps, spects):
        torch.testing.assert_close(spect, pre.audio_at(wave, t - t0, rate), rtol=0, atol=0)
