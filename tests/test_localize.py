"""Localization of images and videos: the map on the original frame, streaming, the written outputs,
and the `sspl localize` command with good and bad inputs.

The model is the tiny small_cnn SSPL with random weights: these tests check the plumbing (which
frame gets which audio window, where the map lands, what the files hold), not accuracy.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

import sspl
import sspl.localize as localize_mod
from sspl.api import Preprocess
from sspl.audio import clip_at, load_audio, waveform_to_examples
from sspl.cli import main
from sspl.config import Config, SSPLConfig
from sspl.data.video import VideoDecodeError, iter_frames, video_info, write_synthetic_video
from sspl.engine.checkpoint import save_checkpoint
from sspl.errors import DataError, WeightsError
from sspl.localize import (
    PREFETCH_BATCHES,
    localize_image,
    localize_video,
    project_map,
    write_image_outputs,
    write_video_outputs,
)
from sspl.metrics import normalize_map, upsample_map
from sspl.models.methods import get_method

REAL_CLIP = "demo__multiple__6DR8dA9TDOc1.mp4"


@pytest.fixture(scope="module")
def config() -> Config:
    return Config(
        model=SSPLConfig(
            visual_encoder="small_cnn",
            audio_encoder="small_cnn",
            visual_channels=128,
            audio_dim=128,
            visual_weights=None,
            audio_weights=None,
        )
    )


@pytest.fixture(scope="module")
def model(config):
    torch.manual_seed(0)
    return get_method("sspl").build(config, pretrained=False).eval()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, model, config) -> Path:
    run = tmp_path_factory.mktemp("run")
    save_checkpoint(run / "checkpoints" / "best.pt", model=model, config=config, epoch=0, step=0)
    return run


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    """Small generated inputs shared by the tests (written once)."""
    folder = tmp_path_factory.mktemp("media")
    rng = np.random.default_rng(0)
    wav = folder / "tone.wav"
    t = np.arange(int(1.5 * 22050)) / 22050
    sf.write(wav, (0.3 * np.sin(2 * np.pi * 330 * t) + 0.02 * rng.standard_normal(t.size)), 22050)
    image = folder / "frame.png"
    Image.fromarray(rng.integers(0, 256, (170, 250, 3), dtype=np.uint8)).save(image)
    return {
        "wav": wav,
        "image": image,
        "video": write_synthetic_video(folder / "clip.mp4", seconds=2.0, fps=25),
        "silent_video": write_synthetic_video(folder / "mute.mp4", seconds=2.0, fps=25, audio=None),
    }


def _direct_map(model, preprocess, image, spect) -> np.ndarray:
    with torch.inference_mode():
        return model.localize(preprocess.image(image)[None], spect[None])[0].numpy()


# --------------------------------------------------------------------------------------------------
# The map on the original frame
# --------------------------------------------------------------------------------------------------


def test_project_map_of_a_224_frame_is_the_evaluated_map():
    raw = np.random.default_rng(1).standard_normal((14, 14)).astype(np.float32)
    heat = project_map(raw, Preprocess().crop_mapping(224, 224))
    np.testing.assert_allclose(heat, normalize_map(upsample_map(raw)), atol=1e-6)


def test_project_map_on_a_wide_frame_has_no_prediction_outside_the_crop():
    mapping = Preprocess().crop_mapping(640, 360)
    raw = np.zeros((14, 14), np.float32)
    raw[3, 10] = 1.0  # one hot cell
    heat = project_map(raw, mapping)
    assert heat.shape == (360, 640)
    x1, _, x2, _ = mapping.crop_box
    centres = np.arange(640) + 0.5
    inside = (centres >= x1) & (centres < x2)
    assert np.isnan(heat[:, ~inside]).all()
    assert np.isfinite(heat[:, inside]).all()
    assert heat[:, inside].min() == 0 and heat[:, inside].max() == 1
    # The peak lands where the crop mapping puts the centre of cell (row 3, column 10).
    peak_y, peak_x = np.unravel_index(np.nanargmax(heat), heat.shape)
    expect_x, expect_y = mapping.to_original([(10 + 0.5) * 16, (3 + 0.5) * 16])
    assert abs(peak_x + 0.5 - expect_x) <= mapping.scale_x
    assert abs(peak_y + 0.5 - expect_y) <= mapping.scale_y


def test_project_map_batches_and_constant_maps():
    mapping = Preprocess().crop_mapping(100, 300)
    raws = np.random.default_rng(2).standard_normal((3, 14, 14)).astype(np.float32)
    batch = project_map(raws, mapping)
    for heat, raw in zip(batch, raws):
        np.testing.assert_array_equal(heat, project_map(raw, mapping))
    flat = project_map(np.full((14, 14), 0.3, np.float32), mapping)
    assert np.nanmin(flat) == np.nanmax(flat) == 1.0


# --------------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "P"])
def test_localize_image_any_mode_and_aspect(model, media, mode):
    preprocess = Preprocess()
    image = Image.open(media["image"]).convert(mode)  # 250 x 170
    wave, rate = sf.read(media["wav"], dtype="float32")
    result = localize_image(model, preprocess, image, (wave, rate))

    expected = _direct_map(model, preprocess, image, preprocess.audio(wave, rate))
    np.testing.assert_allclose(result.raw_map, expected, atol=1e-5)
    assert result.heatmap.shape == (170, 250)
    x1, y1, x2, y2 = result.crop_box
    assert (y1, y2) == (0, 170) and 0 < x1 < x2 < 250  # the centre square of a wide frame
    assert (
        np.isnan(result.heatmap[:, : int(x1)]).all()
        and np.isfinite(result.heatmap[:, int(x1) + 1 : int(x2)]).all()
    )
    assert result.overlay().size == (250, 170)
    assert result.overlay(colorbar=True).height == 170 and result.overlay(colorbar=True).width > 250


def test_localize_image_from_files_and_checkpoint(model, run_dir, media):
    direct = localize_image(model, Preprocess(), media["image"], media["wav"])
    wave, rate = load_audio(media["wav"], sample_rate=None)
    from_pairs = localize_image(model, Preprocess(), Image.open(media["image"]), (wave, rate))
    np.testing.assert_allclose(direct.raw_map, from_pairs.raw_map, atol=1e-6)
    from_ckpt = localize_image(run_dir, None, media["image"], media["wav"])
    np.testing.assert_allclose(direct.raw_map, from_ckpt.raw_map, atol=1e-5)
    with pytest.raises(ValueError, match="preprocess"):
        localize_image(model, None, media["image"], media["wav"])


def test_silent_or_tiny_audio_is_localized_with_a_warning(model, media, tmp_path, caplog):
    image = media["image"]
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(48000, np.float32), 16000)
    with caplog.at_level("WARNING", logger="sspl.localize"):
        result = localize_image(model, Preprocess(), image, silent)
    assert result.raw_map.shape == (14, 14)
    assert f"{silent}: silent audio (constant signal); the map cannot show" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="sspl.localize"):
        localize_image(model, Preprocess(), image, (np.ones(80, np.float32), 16000))
    assert "the audio array: only 80 audio samples (5 ms at 16000 Hz)" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="sspl.localize"):
        localize_image(model, Preprocess(), image, media["wav"])
    assert caplog.text == ""


def test_localize_image_pcm_steps(model, media):
    result = localize_image(model, Preprocess(), media["image"], media["wav"], pcm_steps=True)
    assert result.step_maps.shape == (model.config.cycles + 1, 14, 14)
    np.testing.assert_allclose(result.step_maps[-1], result.raw_map, atol=1e-6)
    assert not np.allclose(result.step_maps[0], result.step_maps[-1])


def test_write_image_outputs(model, media, tmp_path):
    result = localize_image(model, Preprocess(), media["image"], media["wav"])
    paths = write_image_outputs(result, tmp_path / "out", "frame")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["frame_map.npy", "frame_overlay.png"]
    np.testing.assert_array_equal(np.load(paths["map"]), result.raw_map)
    assert np.load(paths["map"]).dtype == np.float32
    barred = Image.open(paths["overlay"])  # a colour bar by default, appended on the right
    assert barred.height == 170 and barred.width > 250
    bare = write_image_outputs(result, tmp_path / "bare", "frame", colorbar=False)
    assert Image.open(bare["overlay"]).size == (250, 170)
    np.testing.assert_array_equal(np.asarray(barred)[:, :250], np.asarray(Image.open(bare["overlay"])))
    with pytest.raises(FileExistsError, match="frame_overlay.png"):
        write_image_outputs(result, tmp_path / "out", "frame")


# --------------------------------------------------------------------------------------------------
# Videos
# --------------------------------------------------------------------------------------------------


def test_localize_video_equals_frame_by_frame(model, tmp_path):
    # 6 s, longer than the 3 s clip, so each frame's sound is its own window of the track; the audio
    # starts 0.5 s after the video, so the window must follow the timestamps, not the sample count
    video = write_synthetic_video(
        tmp_path / "six.mkv", seconds=6.0, fps=10, audio_codec="pcm_s16le", audio_start=0.5
    )
    preprocess = Preprocess()
    seen = []
    result = localize_video(
        model,
        preprocess,
        video,
        fps=2,
        batch_size=4,
        progress=False,
        on_frame=lambda i, t, img, raw: seen.append((i, t, img.size, raw.copy())),
    )
    frames = list(iter_frames(video, fps=2))
    assert len(frames) == 12 and result.maps.shape == (12, 14, 14) and result.maps.dtype == np.float32
    np.testing.assert_allclose(result.timestamps, [t for t, _ in frames])
    assert [s[0] for s in seen] == list(range(12)) and {s[2] for s in seen} == {(64, 48)}
    wave, _ = load_audio(video)
    assert video_info(video).audio_start == 0.5
    clips = [waveform_to_examples(clip_at(wave, t - 0.5)) for t, _ in frames]  # 3 s centred on the frame
    assert not torch.equal(clips[0], clips[6])  # so a wrong window cannot pass
    for (_, img), raw, (_, _, _, handed), spect in zip(frames, result.maps, seen, clips):
        np.testing.assert_allclose(raw, _direct_map(model, preprocess, img, spect), atol=1e-5)
        np.testing.assert_array_equal(raw, handed)


def test_localize_video_streams_in_batches(model, tmp_path, monkeypatch):
    video = write_synthetic_video(tmp_path / "long.mp4", seconds=4.0, fps=10)
    decoded = []
    real_iter_frames = localize_mod.iter_frames

    def counting(*args, **kwargs):
        for item in real_iter_frames(*args, **kwargs):
            decoded.append(item[0])
            yield item

    monkeypatch.setattr(localize_mod, "iter_frames", counting)
    decoded_at_first_map = []
    result = localize_video(
        model,
        Preprocess(),
        video,
        batch_size=2,
        progress=False,
        on_frame=lambda i, *_: decoded_at_first_map.append(len(decoded)) if i == 0 else None,
    )
    assert len(result.timestamps) == len(decoded) == 40
    # The first maps are handed on while most of the video is still undecoded.
    assert decoded_at_first_map[0] <= 2 * (PREFETCH_BATCHES + 2) + 1


def test_localize_video_separate_audio_matches_embedded_track(model, media, tmp_path):
    wave, rate = load_audio(media["video"])
    wav = tmp_path / "track.wav"
    sf.write(wav, wave, rate, subtype="FLOAT")
    embedded = localize_video(model, Preprocess(), media["video"], fps=5, progress=False)
    separate = localize_video(model, Preprocess(), media["video"], fps=5, audio_path=wav, progress=False)
    assert separate.audio == wav and embedded.audio == media["video"]
    np.testing.assert_allclose(separate.maps, embedded.maps, atol=1e-5)
    # The default output rate is the source rate capped at 10 fps.
    assert (
        localize_video(model, Preprocess(), media["silent_video"], audio_path=wav, progress=False).fps == 10
    )


def test_a_sound_file_much_shorter_than_the_video_is_warned_about(model, media, tmp_path, caplog):
    video = write_synthetic_video(tmp_path / "long.mp4", seconds=4.0, fps=5, audio=None)
    with caplog.at_level("WARNING", logger="sspl.localize"):
        localize_video(model, Preprocess(), video, audio_path=media["wav"], progress=False)
    assert (
        f"{media['wav']}: its sound ends at 1.50 s of the 4.00 s video {video}; every later frame"
        in caplog.text
    )
    caplog.clear()
    with caplog.at_level("WARNING", logger="sspl.localize"):  # 1.5 s of sound for 2 s: container slack
        localize_video(model, Preprocess(), media["silent_video"], audio_path=media["wav"], progress=False)
    assert caplog.text == ""


def test_a_rate_above_the_source_gives_each_frame_once_without_a_warning(model, media, caplog):
    result = localize_video(model, Preprocess(), media["video"], fps=100, progress=False)
    assert result.fps == 25 and len(result.timestamps) == 50
    assert "truncated" not in caplog.text


def test_a_phone_video_is_localized_upright(model, tmp_path):
    # Coded as 64 x 48 with a display matrix turning it a quarter clockwise: shown as 48 x 64.
    video = write_synthetic_video(tmp_path / "phone.mp4", seconds=1.0, fps=10, rotation=-90)
    result, paths = write_video_outputs(
        model, Preprocess(), video, tmp_path / "out", progress=False, colorbar=False
    )
    assert (result.width, result.height) == (48, 64)
    # The maps are those of the upright frames, one by one.
    preprocess, (wave, _) = Preprocess(), load_audio(video)
    for (t, image), raw in zip(iter_frames(video), result.maps):
        assert image.size == (48, 64)
        expected = _direct_map(model, preprocess, image, preprocess.audio_at(wave, t))
        np.testing.assert_allclose(raw, expected, atol=1e-5)
    out = video_info(paths["heatmap_video"])
    assert (out.width, out.height, out.rotation) == (48, 64, 0)


def test_the_heatmap_video_ends_with_the_source(model, media, tmp_path):
    long_wav = tmp_path / "long.wav"
    t = np.arange(4 * 22050) / 22050
    sf.write(long_wav, 0.3 * np.sin(2 * np.pi * 330 * t), 22050)
    # One frame sampled from a 2-s clip, and a 4-s sound file: both end with the video.
    _, paths = write_video_outputs(
        model,
        Preprocess(),
        media["silent_video"],
        tmp_path / "out",
        fps=0.01,
        audio_path=long_wav,
        progress=False,
    )
    with av.open(str(paths["heatmap_video"])) as c:
        assert c.streams.video[0].frames == 1
        assert c.duration / av.time_base == pytest.approx(2.0, abs=0.05)
    wave, rate, _ = _decode_audio(paths["heatmap_video"])
    assert wave.size / rate == pytest.approx(2.0, abs=0.05)


def test_a_one_pixel_wide_video_still_gives_a_heatmap_video(model, tmp_path):
    video = write_synthetic_video(
        tmp_path / "sliver.mp4", seconds=0.5, fps=10, width=1, height=40, pix_fmt="yuv444p"
    )
    result, paths = write_video_outputs(
        model, Preprocess(), video, tmp_path / "out", progress=False, colorbar=False
    )
    assert len(result.timestamps) == 5
    assert video_info(paths["heatmap_video"]).width == 2
    assert Image.open(paths["contact_sheet"]).height <= 4 * 320 + 40


def test_heatmap_video_frames_carry_their_time(model, tmp_path):
    video = write_synthetic_video(tmp_path / "wide.mp4", seconds=1.0, fps=5, width=160, height=120)
    frames = {}
    for stamped in (True, False):
        _, paths = write_video_outputs(
            model,
            Preprocess(),
            video,
            tmp_path / str(stamped),
            progress=False,
            colorbar=False,
            timestamp=stamped,
        )
        frames[stamped] = [
            np.asarray(img, dtype=np.float32) for _, img in iter_frames(paths["heatmap_video"])
        ]
    assert len(frames[True]) == len(frames[False]) == 5
    for k, (on, off) in enumerate(zip(frames[True], frames[False])):
        assert on.shape == off.shape == (120, 160, 3)
        corner = np.abs(on - off)[:20, :60].mean()  # the time box, top left
        rest = np.abs(on - off)[40:, :].mean()  # below it: the same overlay (up to H.264's rounding)
        assert corner > 20 and rest < 3, (k, corner, rest)
    # each frame shows its own time: the box of 00:00.0 is not that of 00:00.8
    assert (
        np.abs(frames[True][0] - frames[True][4])[:20, :60].mean()
        > np.abs(frames[False][0] - frames[False][4])[:20, :60].mean()
    )


def test_mp3_sound_is_copied_into_the_heatmap_video(model, media, tmp_path):
    mp3 = tmp_path / "tone.mp3"
    wave, rate = load_audio(media["wav"], sample_rate=None)
    with av.open(str(mp3), "w") as c:
        stream = c.add_stream("libmp3lame", rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(wave[None].astype(np.float32), format="flt", layout="mono")
        frame.sample_rate = rate
        c.mux(stream.encode(frame))
        c.mux(stream.encode(None))
    _, paths = write_video_outputs(
        model, Preprocess(), media["silent_video"], tmp_path / "out", audio_path=mp3, progress=False
    )
    with av.open(str(paths["heatmap_video"])) as c:
        assert c.streams.audio[0].codec_context.codec.canonical_name == "mp3"


def _decode_audio(path: Path) -> tuple[np.ndarray, int, str]:
    with av.open(str(path)) as c:
        stream = c.streams.audio[0]
        name = stream.codec_context.name
    wave, rate = load_audio(path, sample_rate=None)
    return wave, rate, name


def test_write_video_outputs_on_a_real_clip(model, data_dir, tmp_path):
    clip = data_dir / "localize" / REAL_CLIP
    result, paths = write_video_outputs(model, Preprocess(), clip, tmp_path / "out", fps=2, progress=False)
    stem = Path(REAL_CLIP).stem
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        [f"{stem}_heatmap.mp4", f"{stem}_maps.npy", f"{stem}_timestamps.npy", f"{stem}_contact.png"]
    )
    assert result.maps.shape == (10, 14, 14)
    np.testing.assert_array_equal(np.load(paths["maps"]), result.maps)
    np.testing.assert_array_equal(np.load(paths["timestamps"]), result.timestamps)

    info = video_info(paths["heatmap_video"])
    # the colour bar (on by default) is appended on the right of the 640 x 360 overlay
    assert (info.height, info.video_codec) == (360, "h264") and info.width > 640
    frames = list(iter_frames(paths["heatmap_video"]))
    np.testing.assert_allclose([t for t, _ in frames], result.timestamps, atol=1e-3)
    # The AAC track is copied: the same samples as the source.
    src_wave, src_rate, _ = _decode_audio(clip)
    out_wave, out_rate, codec = _decode_audio(paths["heatmap_video"])
    assert (codec, out_rate) == ("aac", src_rate)
    np.testing.assert_array_equal(out_wave, src_wave)

    # Outside the centre crop the frame is grey; inside it is coloured by the heat map.
    rgb = np.asarray(frames[3][1], dtype=np.float32)
    saturation = rgb.max(axis=2) - rgb.min(axis=2)
    x1, _, x2, _ = result.crop_box
    assert saturation[:, : int(x1) - 4].mean() < 6
    assert saturation[:, int(x1) + 4 : int(x2) - 4].mean() > 30
    assert Image.open(paths["contact_sheet"]).width > 640


def test_write_video_outputs_reencodes_audio_mp4_cannot_hold(model, tmp_path):
    video = write_synthetic_video(tmp_path / "pcm.mkv", seconds=2.0, fps=10, audio_codec="pcm_s16le")
    _, paths = write_video_outputs(model, Preprocess(), video, tmp_path / "out", progress=False)
    wave, rate, codec = _decode_audio(paths["heatmap_video"])
    assert codec == "aac" and rate == 44100
    assert abs(wave.size / rate - 2.0) < 0.1
    spectrum = np.abs(np.fft.rfft(wave))
    assert abs(np.argmax(spectrum) * rate / wave.size - 440) < 5  # the source's 440 Hz tone


def test_write_video_outputs_muxes_a_separate_sound_file(model, media, tmp_path):
    _, paths = write_video_outputs(
        model, Preprocess(), media["silent_video"], tmp_path / "out", audio_path=media["wav"], progress=False
    )
    wave, rate, codec = _decode_audio(paths["heatmap_video"])
    assert codec == "aac" and rate == 22050
    assert abs(wave.size / rate - 1.5) < 0.1
    spectrum = np.abs(np.fft.rfft(wave))
    assert abs(np.argmax(spectrum) * rate / wave.size - 330) < 5


def test_video_outputs_are_not_replaced_unless_asked(model, media, tmp_path):
    out = tmp_path / "out"
    _, paths = write_video_outputs(model, Preprocess(), media["video"], out, fps=5, progress=False)
    before = paths["maps"].read_bytes()
    with pytest.raises(FileExistsError, match="clip_heatmap.mp4"):
        write_video_outputs(model, Preprocess(), media["video"], out, fps=5, progress=False)
    assert paths["maps"].read_bytes() == before
    result, _ = write_video_outputs(
        model, Preprocess(), media["video"], out, fps=2, overwrite=True, progress=False
    )
    assert np.load(paths["maps"]).shape == (len(result.timestamps), 14, 14) == (4, 14, 14)


def test_a_failure_mid_video_leaves_no_output(model, media, tmp_path, monkeypatch):
    real_iter_frames = localize_mod.iter_frames

    def breaks_after_five(path, *args, **kwargs):
        for i, item in enumerate(real_iter_frames(path, *args, **kwargs)):
            if i == 5:
                raise VideoDecodeError(f"{path}: cannot decode the video near {item[0]:.2f} s (test)")
            yield item

    monkeypatch.setattr(localize_mod, "iter_frames", breaks_after_five)
    kept = tmp_path / "out" / "notes.txt"
    kept.parent.mkdir()
    kept.write_text("user file")
    with pytest.raises(VideoDecodeError, match="cannot decode"):
        write_video_outputs(model, Preprocess(), media["video"], kept.parent, batch_size=2, progress=False)
    assert [p.name for p in kept.parent.iterdir()] == ["notes.txt"]  # no outputs, no temporary files
    with pytest.raises(VideoDecodeError):
        write_video_outputs(model, Preprocess(), media["video"], tmp_path / "new", progress=False)
    assert not (tmp_path / "new").exists()


# --------------------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------------------


def _last_lines(capsys, count: int = 2) -> list[str]:
    return capsys.readouterr().out.splitlines()[-count:]


def test_cli_video_and_image(run_dir, media, tmp_path, capsys, caplog):
    out = tmp_path / "out"
    argv = ["localize", "--checkpoint", str(run_dir), "--out", str(out), "--no-progress"]
    assert main([*argv, "--video", str(media["video"]), "--fps", "5"]) == 0
    facts, wrote = _last_lines(capsys)
    assert facts == "sspl localize: frames 10, fps 5"
    assert re.fullmatch(
        rf"Wrote 4 files to {re.escape(str(out))}/ in [0-9.]+ s -- open {out}/clip_heatmap.mp4", wrote
    )
    info = video_info(out / "clip_heatmap.mp4")
    assert info.height == 48 and info.width > 64  # the colour bar is appended on the right
    assert main([*argv, "--video", str(media["video"]), "--fps", "5", "--overwrite", "--no-colorbar"]) == 0
    assert video_info(out / "clip_heatmap.mp4").width == 64

    cmyk = tmp_path / "cmyk.jpg"
    Image.open(media["image"]).convert("CMYK").save(cmyk)
    assert main([*argv, "--image", str(cmyk), "--audio", str(media["wav"]), "--json", "--no-colorbar"]) == 0
    printed = capsys.readouterr().out.splitlines()
    summary = json.loads(printed[-1])
    assert (summary["command"], summary["count"], summary["out"]) == ("localize", 2, str(out))
    assert summary["open"] == summary["outputs"]["overlay"] == str(out / "cmyk_overlay.png")
    assert (summary["width"], summary["height"]) == (250, 170)
    assert Image.open(summary["outputs"]["overlay"]).size == (250, 170)
    assert np.load(summary["outputs"]["map"]).shape == (14, 14)

    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(48000, np.float32), 16000)
    with caplog.at_level("WARNING", logger="sspl.localize"):
        assert main([*argv, "--image", str(media["image"]), "--audio", str(silent), "--overwrite"]) == 0
    assert f"{silent}: silent audio (constant signal)" in caplog.text


def _bad_inputs(tmp: Path, media: dict[str, Path]) -> dict[str, tuple[list[str], Path, str]]:
    """Case -> (arguments, the file the message must name, words it must contain)."""
    garbage = tmp / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).bytes(4000))
    truncated = tmp / "truncated.mp4"
    truncated.write_bytes(media["video"].read_bytes()[: media["video"].stat().st_size // 2])
    zero = write_synthetic_video(tmp / "zero.mkv", seconds=0, audio_seconds=1.0)
    not_image = tmp / "notes.jpg"
    not_image.write_text("not an image")
    nan_wav = tmp / "nan.wav"
    sf.write(nan_wav, np.full(16000, np.nan, np.float32), 16000, subtype="FLOAT")
    image, wav = str(media["image"]), str(media["wav"])
    return {
        "audio with NaN samples": (
            ["--image", image, "--audio", str(nan_wav)],
            nan_wav,
            "non-finite samples",
        ),
        "video with a sound file with NaN samples": (
            ["--video", str(media["video"]), "--audio", str(nan_wav)],
            nan_wav,
            "non-finite samples",
        ),
        "missing video": (["--video", str(tmp / "nope.mp4")], tmp / "nope.mp4", "no such video file"),
        "not a container": (["--video", str(garbage)], garbage, "cannot open"),
        "truncated container": (["--video", str(truncated)], truncated, "cannot open"),
        "no video stream": (["--video", wav], media["wav"], "no video stream"),
        "no audio stream": (["--video", str(media["silent_video"])], media["silent_video"], "--audio"),
        "zero-length clip": (["--video", str(zero)], zero, "zero-length"),
        "missing --audio file": (
            ["--video", str(media["video"]), "--audio", str(tmp / "nope.wav")],
            tmp / "nope.wav",
            "no such audio file",
        ),
        "missing image": (
            ["--image", str(tmp / "nope.png"), "--audio", wav],
            tmp / "nope.png",
            "no such image",
        ),
        "unreadable image": (
            ["--image", str(not_image), "--audio", wav],
            not_image,
            "cannot read as an image",
        ),
        "image that is a folder": (["--image", str(tmp), "--audio", wav], tmp, "is a folder, not an image"),
        "video that is a folder": (["--video", str(tmp)], tmp, "is a folder, not a video"),
        "image without sound": (["--image", image], Path("--audio"), "needs --audio"),
        "sound file without audio": (
            ["--image", image, "--audio", str(media["silent_video"])],
            media["silent_video"],
            "no audio stream",
        ),
    }


def test_cli_bad_inputs_fail_on_one_line_and_leave_nothing(run_dir, media, tmp_path, capsys):
    cases = _bad_inputs(tmp_path, media)
    for case, (args, named, words) in cases.items():
        out = tmp_path / "out"
        rc = main(["localize", "--checkpoint", str(run_dir), "--out", str(out), "--no-progress", *args])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 1, case
        assert len(err) == 1 and str(named) in err[0] and words in err[0], (case, err)
        assert not out.exists() or not any(out.iterdir()), case


def test_a_bad_sound_file_fails_before_the_heatmap_video_muxes_it(run_dir, media, tmp_path, capsys, caplog):
    nan_wav = tmp_path / "nan.wav"
    sf.write(nan_wav, np.full(16000, np.nan, np.float32), 16000, subtype="FLOAT")
    argv = ["localize", "--checkpoint", str(run_dir), "--out", str(tmp_path / "out"), "--no-progress"]
    with caplog.at_level("WARNING", logger="sspl.localize"):
        assert main([*argv, "--video", str(media["video"]), "--audio", str(nan_wav)]) == 1
    assert "non-finite samples" in capsys.readouterr().err
    assert "audio ends early" not in caplog.text  # the writer never started on the bad sound


def test_cli_bad_checkpoint_and_options(media, tmp_path, capsys):
    argv = ["localize", "--out", str(tmp_path / "out"), "--video", str(media["video"])]
    assert main([*argv, "--checkpoint", str(tmp_path / "none")]) == 1
    assert "no such checkpoint" in capsys.readouterr().err
    for fps in ("0", "inf", "nan"):
        assert main([*argv, "--checkpoint", str(tmp_path), "--fps", fps]) == 1
        assert f"--fps must be a positive number, got {fps}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_output_folder_that_is_a_file_or_unwritable(run_dir, media, tmp_path, capsys, monkeypatch):
    argv = ["localize", "--checkpoint", str(run_dir), "--image", str(media["image"])]
    argv += ["--audio", str(media["wav"])]
    assert main([*argv, "--out", str(media["wav"])]) == 1
    assert f"{media['wav']}: is a file, not a folder for the outputs" in capsys.readouterr().err
    assert main([*argv, "--out", str(media["wav"] / "sub")]) == 1  # a file further up the path
    assert f"{media['wav']}: is a file, not a folder for the outputs (--out) (in " in capsys.readouterr().err
    # --overwrite replaces files, not a folder in an output's place; nothing is written before it says so
    blocked = tmp_path / "blocked"
    (blocked / f"{media['image'].stem}_map.npy").mkdir(parents=True)
    assert main([*argv, "--out", str(blocked), "--overwrite"]) == 1
    assert "_map.npy: is a folder; --overwrite replaces output files only" in capsys.readouterr().err
    assert sorted(p.name for p in blocked.iterdir()) == [f"{media['image'].stem}_map.npy"]

    def refused(self, *args, **kwargs):  # what a read-only folder does, even to root in a container
        raise PermissionError(13, "Permission denied", str(self))

    # an existing folder that takes no file: said before the model loads and the first frame is computed
    import tempfile

    def never_loaded(*args, **kwargs):
        raise AssertionError("the model was loaded before the output folder was checked")

    readonly = tmp_path / "readonly"
    readonly.mkdir()
    with monkeypatch.context() as m:
        m.setattr(tempfile, "TemporaryFile", lambda *a, dir=None, **k: refused(dir))
        m.setattr(localize_mod, "load_with_origin", never_loaded)
        video = [
            "localize",
            "--checkpoint",
            str(run_dir),
            "--video",
            str(media["video"]),
            "--out",
            str(readonly),
        ]
        assert main(video) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [
            f"sspl localize: error: {readonly}: cannot write in the output folder (--out): Permission denied"
        ]

    monkeypatch.setattr(Path, "mkdir", refused)
    assert main([*argv, "--out", str(tmp_path / "locked")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"sspl localize: error: {tmp_path / 'locked'}: cannot create the output folder (--out): Permission denied"
    ]


def test_an_image_too_large_to_decode_safely_is_refused_by_name(media, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL refuses above twice this
    with pytest.raises(DataError, match=r"frame\.png: too large to read safely"):
        localize_mod.read_image(media["image"])


def test_checkpoints_that_cannot_be_rebuilt_name_their_file(model, config, media, tmp_path):
    no_config = tmp_path / "no_config.pt"
    save_checkpoint(no_config, model=model, config=config, epoch=0, step=0)
    ckpt = torch.load(no_config, weights_only=False)
    del ckpt["config"]
    torch.save(ckpt, no_config)
    with pytest.raises(WeightsError, match=r"no_config\.pt: cannot rebuild the model it holds \(KeyError"):
        sspl.load(no_config)
    partial = tmp_path / "partial.pt"
    save_checkpoint(partial, model=model, config=config, epoch=0, step=0)
    ckpt = torch.load(partial, weights_only=False)
    ckpt["model"].pop(next(iter(ckpt["model"])))
    torch.save(ckpt, partial)
    with pytest.raises(WeightsError, match=r"partial\.pt: checkpoint does not match"):
        sspl.load(partial)
    # A folder with some official files but not the frame encoder's: that file is named.
    official = tmp_path / "official"
    official.mkdir()
    (official / "sound_best.pth").write_bytes(b"")
    with pytest.raises(WeightsError, match="frame_best.pth"):
        sspl.load(official)


@pytest.mark.gpu
def test_video_on_the_gpu_matches_the_cpu(config, media):
    torch.manual_seed(0)
    cpu_model = get_method("sspl").build(config, pretrained=False).eval()
    gpu_model = get_method("sspl").build(config, pretrained=False).eval()
    gpu_model.load_state_dict(cpu_model.state_dict())
    cpu = localize_video(cpu_model, Preprocess(), media["video"], fps=5, progress=False)
    gpu = localize_video(gpu_model, Preprocess(), media["video"], fps=5, device="cuda", progress=False)
    assert next(gpu_model.parameters()).is_cuda
    np.testing.assert_array_equal(gpu.timestamps, cpu.timestamps)
    np.testing.assert_allclose(gpu.maps, cpu.maps, atol=1e-3)
