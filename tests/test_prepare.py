"""`sspl prepare` and the video helpers: formats, every bad-input case, resume, shards, lists, layouts, CLI."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import time
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from sspl.audio import clip_at, load_audio, official_clip, waveform_to_examples
from sspl.cli import main
from sspl.data import prepare as prep
from sspl.data.manifest import read_manifest, read_meta
from sspl.data.prepare import (
    ClipSource,
    ListEntry,
    parse_shard,
    prepare,
    read_clip_list,
    select_sources,
    shard_slice,
)
from sspl.data.video import (
    VideoDecodeError,
    decode_frame_at,
    decode_middle_frame,
    iter_frames,
    video_info,
    write_synthetic_video,
)
from sspl.errors import DataError

REAL_VIDEO = "demo__single__lawn_mowing_G4TowkVcclw.mp4"
FLICKR_ID = "10006434483"


def _rows(out: Path) -> dict[str, object]:
    return {row.id: row for row in read_manifest(out)}


def _run(src: Path, out: Path, **kwargs) -> prep.PrepareSummary:
    return prepare(src, out, workers=kwargs.pop("workers", 1), progress=False, **kwargs)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """Three good 3-s clips (64 x 48, 25 fps, h264 + AAC 44.1 kHz)."""
    folder = tmp_path_factory.mktemp("videos")
    for k, name in enumerate(("a", "b", "c")):
        write_synthetic_video(folder / f"{name}.mp4", seconds=3.0, seed=k)
    return folder


# --------------------------------------------------------------------------------------------------
# Video helpers
# --------------------------------------------------------------------------------------------------


def test_video_info_and_middle_frame_by_timestamp(videos):
    path = videos / "a.mp4"
    info = video_info(path)
    assert (info.duration, info.fps, info.width, info.height) == (3.0, 25.0, 64, 48)
    assert info.has_audio and info.audio_rate == 44100 and info.video_codec == "h264"
    image, t = decode_middle_frame(path)
    # 75 frames at k / 25 s: the middle is 1.5 s, the first frame at or after it is frame 38.
    assert t == pytest.approx(38 / 25)
    reference = dict(iter_frames(path))
    assert np.array_equal(np.asarray(image), np.asarray(reference[t]))


def test_iter_frames_streams_every_frame_or_a_given_rate(videos):
    path = videos / "b.mp4"
    times = [t for t, _ in iter_frames(path)]
    assert times == pytest.approx([k / 25 for k in range(75)])
    sampled = [t for t, _ in iter_frames(path, fps=5)]
    assert sampled == pytest.approx([k / 5 for k in range(15)])
    # 4 fps falls between frames: each sample takes the first frame at or after k / 4.
    assert [t for t, _ in iter_frames(path, fps=4)][:3] == pytest.approx([0.0, 0.28, 0.52])
    assert [t for t, _ in iter_frames(path, fps=100)] == pytest.approx(times)  # above native: each once
    with pytest.raises(ValueError, match="fps"):
        next(iter_frames(path, fps=0))


def test_decode_frame_at_matches_decoding_from_the_start(tmp_path):
    # Keyframes every 20 frames with B-frames: seeking plus skipped non-reference frames must give
    # exactly the frame that decoding everything gives.
    path = write_synthetic_video(tmp_path / "gop.mp4", seconds=4.0, options={"g": "20", "bf": "3"})
    reference = list(iter_frames(path))
    for target in (0.0, 0.5, 0.79, 0.8, 1.33, 2.0, 3.0, 3.96):
        image, t = decode_frame_at(path, target, threads=1)
        expected_t, expected = next((ts, im) for ts, im in reference if ts >= target - 1e-9)
        assert t == pytest.approx(expected_t)
        assert np.array_equal(np.asarray(image), np.asarray(expected))
    with pytest.raises(VideoDecodeError, match="no decodable video frame at or after 5.00 s"):
        decode_frame_at(path, 5.0)


def test_duration_is_measured_when_the_container_declares_none(tmp_path):
    path = write_synthetic_video(tmp_path / "live.mkv", seconds=2.0, container_options={"live": "1"})
    with av.open(str(path)) as container:
        assert container.duration is None and container.streams.video[0].duration is None
    assert video_info(path).duration == pytest.approx(2.0)
    assert decode_middle_frame(path)[1] == pytest.approx(1.0)


def test_frames_come_out_upright_when_the_container_says_to_turn_them(tmp_path):
    # A phone held upright stores landscape pixels and a display matrix: 90 degrees clockwise (-90).
    # MPEG-4 part 2 encodes the same frames to the same bytes (x264's threads do not).
    plain = write_synthetic_video(tmp_path / "plain.mp4", seconds=1.0, video_codec="mpeg4")
    turned = write_synthetic_video(tmp_path / "turned.mp4", seconds=1.0, video_codec="mpeg4", rotation=-90)
    info = video_info(turned)
    assert (info.width, info.height, info.rotation) == (48, 64, 270)
    assert (video_info(plain).width, video_info(plain).rotation) == (64, 0)
    upright = dict(iter_frames(turned))
    for t, image in iter_frames(plain):
        # Same coded pixels; the turned file's frames are the plain ones turned clockwise.
        assert np.array_equal(np.asarray(upright[t]), np.rot90(np.asarray(image), k=-1))
    middle, t = decode_middle_frame(turned)
    assert middle.size == (48, 64) and np.array_equal(np.asarray(middle), np.asarray(upright[t]))
    assert decode_frame_at(turned, 0.5)[0].size == (48, 64)


def test_video_helpers_name_the_file_on_bad_input(tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(VideoDecodeError, match=r"garbage\.mp4: cannot open"):
        video_info(garbage)
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        decode_middle_frame(tmp_path / "missing.mp4")


def test_a_truncated_video_keeps_the_frames_before_the_damage(data_dir, tmp_path, caplog):
    # The real clip remuxed with its index first (faststart), then cut in half: the file opens, and
    # decoding fails where its data runs out.
    whole = tmp_path / "whole.mp4"
    with av.open(str(data_dir / "prepare" / REAL_VIDEO)) as inp:
        with av.open(str(whole), "w", options={"movflags": "faststart"}) as out:
            streams = {
                s.index: out.add_stream_from_template(s) for s in (inp.streams.video[0], inp.streams.audio[0])
            }
            for packet in inp.demux(*inp.streams.video, *inp.streams.audio):
                if packet.dts is not None:
                    packet.stream = streams[packet.stream.index]
                    out.mux(packet)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    total = len(list(iter_frames(whole)))
    with caplog.at_level("WARNING", logger="sspl.data.video"):
        frames = list(iter_frames(cut))
    assert 0 < len(frames) < total
    times = [t for t, _ in frames]
    assert times[0] == 0 and times == sorted(set(times))
    assert f"cut.mp4: decoding stopped after the frame at {times[-1]:.2f} s" in caplog.text


def test_matroska_video_duration_is_the_pictures_not_the_longer_sound(tmp_path):
    # Matroska declares no stream duration; the container's is the longest stream's, here the audio's.
    clip = write_synthetic_video(tmp_path / "clip.mkv", seconds=2.0, audio_seconds=3.0)
    info = video_info(clip)
    assert info.duration == pytest.approx(2.0, abs=0.05) and info.audio_duration == pytest.approx(
        3.0, abs=0.05
    )
    assert decode_middle_frame(clip)[1] == pytest.approx(1.0, abs=0.05)


def test_real_video(data_dir, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(data_dir / "prepare" / REAL_VIDEO, src / REAL_VIDEO)
    info = video_info(src / REAL_VIDEO)
    assert (info.width, info.height, info.fps, info.duration) == (320, 240, 15.0, 5.0)
    summary = _run(src, tmp_path / "out")
    assert (summary.done, summary.failed) == (1, 0)
    row = _rows(tmp_path / "out")[REAL_VIDEO[:-4]]
    assert row.sample_rate == 16000 and row.duration == pytest.approx(5.02)
    _, t = decode_middle_frame(src / REAL_VIDEO)
    assert t == pytest.approx(38 / 15)  # middle 2.5 s -> frame 38 at 15 fps
    wave, _ = sf.read(tmp_path / "out" / row.audio, dtype="float32")
    full, _ = load_audio(src / REAL_VIDEO)
    np.testing.assert_array_equal(wave, clip_at(full, t))


def test_audio_that_starts_after_the_video_is_aligned_by_its_timestamps(tmp_path):
    src = tmp_path / "src"
    video = write_synthetic_video(
        src / "late.mkv", seconds=6.0, fps=10, audio_codec="pcm_s16le", audio_start=0.5
    )
    assert video_info(video).audio_start == 0.5
    assert str(_run(src, tmp_path / "out")) == "done 1 / skipped 0 / failed 0"
    row = _rows(tmp_path / "out")["late"]
    wave, _ = sf.read(tmp_path / "out" / row.audio, dtype="float32")
    full, _ = load_audio(video)  # sample 0 is at 0.5 s of the video
    _, t = decode_middle_frame(video)
    np.testing.assert_array_equal(wave, clip_at(full, t - 0.5))
    assert not np.array_equal(wave, clip_at(full, t))


# --------------------------------------------------------------------------------------------------
# Output formats
# --------------------------------------------------------------------------------------------------


def test_output_formats(tmp_path):
    src = tmp_path / "src"
    # 6 s long: only the first 1.5 + 3 + margin seconds of audio are decoded, which must not matter.
    video = write_synthetic_video(src / "clip.mp4", seconds=6.0, width=80, height=48)
    out = tmp_path / "out"
    assert str(_run(src, out)) == "done 1 / skipped 0 / failed 0"
    row = _rows(out)["clip"]
    assert (row.status, row.error, row.frame, row.audio, row.spect) == (
        "done",
        "",
        "frames/clip.jpg",
        "audio/clip.wav",
        "spect/clip.npy",
    )
    assert (row.duration, row.sample_rate) == (6.0, 44100)

    with Image.open(out / row.frame) as frame:
        assert (frame.format, frame.size, frame.mode) == ("JPEG", (256, 256), "RGB")
        decoded = np.asarray(frame, dtype=np.float32)
    middle, t = decode_middle_frame(video)
    expected = np.asarray(middle.resize((256, 256), Image.Resampling.BICUBIC), dtype=np.float32)
    assert np.abs(decoded - expected).mean() < 2.0  # JPEG quality 95

    info = sf.info(out / row.audio)
    assert (info.samplerate, info.channels, info.subtype, info.frames) == (16000, 1, "FLOAT", 48000)
    wave, _ = sf.read(out / row.audio, dtype="float32")
    full, _ = load_audio(video)
    np.testing.assert_array_equal(wave, clip_at(full, t))  # the official clip centred on the frame

    spect = np.load(out / row.spect)
    assert spect.dtype == np.float32 and spect.shape == (3, 96, 64)
    np.testing.assert_array_equal(spect, waveform_to_examples(wave).numpy())

    meta = read_meta(out)
    assert (meta["kind"], meta["audio_seconds"], meta["audio_normalized"]) == ("videos", 3.0, True)


@pytest.mark.parametrize("seconds", ["0", "-1", "nan", "inf", "601"])
def test_audio_seconds_out_of_range_is_refused_before_anything_is_written(tmp_path, capsys, seconds):
    src, out = tmp_path / "src", tmp_path / "out"
    write_synthetic_video(src / "a.mp4", seconds=2.0)
    assert main(["prepare", "--no-progress", "--audio-seconds", seconds, str(src), str(out)]) == 1
    assert (
        f"--audio-seconds must be more than 0 and at most 600, got {float(seconds)}"
        in capsys.readouterr().err
    )
    assert not out.exists()


def test_audio_seconds_keeps_raw_audio_centred_on_the_frame(tmp_path):
    src = tmp_path / "src"
    video = write_synthetic_video(src / "clip.mkv", seconds=8.0, audio_codec="pcm_s16le", audio_rate=22050)
    out = tmp_path / "out"
    _run(src, out, audio_seconds=5.0)
    row = _rows(out)["clip"]
    wave, rate = sf.read(out / row.audio, dtype="float32")
    assert (rate, wave.shape) == (16000, (80000,))
    full, _ = load_audio(video)
    _, t = decode_middle_frame(video)
    start = round(t * 16000) - 40000
    np.testing.assert_array_equal(wave, full[start : start + 80000])  # not normalised
    np.testing.assert_array_equal(np.load(out / row.spect), waveform_to_examples(clip_at(full, t)).numpy())
    assert read_meta(out)["audio_normalized"] is False
    with pytest.raises(DataError, match="audio_seconds=5.0"):
        _run(src, out)  # the same folder with other settings


# --------------------------------------------------------------------------------------------------
# Bad input: each case becomes a manifest row with its reason, and the run goes on
# --------------------------------------------------------------------------------------------------


def test_every_bad_input_is_recorded_and_the_run_goes_on(tmp_path):
    src = tmp_path / "src"
    good = write_synthetic_video(src / "good.mp4", seconds=3.0)
    write_synthetic_video(src / "short_audio.mp4", seconds=3.0, audio_seconds=1.0)
    write_synthetic_video(src / "one_second.mp4", seconds=1.0)
    write_synthetic_video(src / "no_audio.mp4", seconds=2.0, audio=None)
    write_synthetic_video(src / "silent.mp4", seconds=2.0, audio="silent")
    write_synthetic_video(src / "constant.mkv", seconds=2.0, audio="constant", audio_codec="pcm_s16le")
    write_synthetic_video(src / "no_video.mkv", video_codec=None, audio_seconds=2.0)
    write_synthetic_video(src / "empty_video.mkv", seconds=0.0, audio_seconds=2.0, audio_codec="pcm_s16le")
    (src / "garbage.webm").write_bytes(np.random.default_rng(1).integers(0, 256, 3000, np.uint8).tobytes())
    data = good.read_bytes()
    (src / "truncated.mp4").write_bytes(data[: len(data) // 2])  # index (moov) lost
    mkv = write_synthetic_video(tmp_path / "whole.mkv", seconds=3.0, audio_codec="pcm_s16le").read_bytes()
    (src / "truncated_mkv.mkv").write_bytes(mkv[: int(len(mkv) * 0.4)])  # frames after 1.5 s lost
    (src / "unknown_codec.mp4").write_bytes(data.replace(b"avc1", b"zzzz"))
    aac_mkv = write_synthetic_video(tmp_path / "aac.mkv", seconds=2.0).read_bytes()
    (src / "unknown_audio_codec.mkv").write_bytes(aac_mkv.replace(b"A_AAC", b"A_QQQ"))

    out = tmp_path / "out"
    summary = _run(src, out)
    rows = _rows(out)
    expected = {
        "garbage": "garbage.webm: cannot open as a media container",
        "truncated": "truncated.mp4: cannot open as a media container",
        "truncated_mkv": "truncated_mkv.mkv: no decodable video frame at or after 1.50 s (truncated",
        "no_audio": "no_audio.mp4: no audio stream",
        "silent": "silent.mp4: silent audio",
        "constant": "constant.mkv: silent audio",
        "no_video": "no_video.mkv: no video stream",
        "empty_video": "empty_video.mkv: no decodable video frame",
        "unknown_codec": "unknown_codec.mp4: unsupported video codec",
        "unknown_audio_codec": "unknown_audio_codec.mkv: unsupported audio codec",
    }
    for clip_id, reason in expected.items():
        assert rows[clip_id].status == "failed", clip_id
        assert reason in rows[clip_id].error, (clip_id, rows[clip_id].error)
        assert rows[clip_id].frame == "" and not (out / "frames" / f"{clip_id}.jpg").exists()
    for clip_id in ("good", "short_audio", "one_second"):
        assert rows[clip_id].ok and rows[clip_id].error == ""
    assert (summary.done, summary.failed) == (3, 10)

    # Short audio is tiled as in the official pipeline, not failed.
    assert rows["short_audio"].duration == pytest.approx(1.0)
    wave, _ = sf.read(out / "audio" / "short_audio.wav", dtype="float32")
    full, _ = load_audio(src / "short_audio.mp4")
    assert wave.shape == (48000,) and full.shape[0] < 17000
    np.testing.assert_array_equal(wave, clip_at(full, 38 / 25))


def test_files_sharing_an_id_fail_together_with_both_names(tmp_path):
    src = tmp_path / "src"
    write_synthetic_video(src / "x.mp4", seconds=2.0)
    write_synthetic_video(src / "sub" / "x.mkv", seconds=2.0)
    out = tmp_path / "out"
    assert str(_run(src, out)) == "done 0 / skipped 0 / failed 1"
    assert _rows(out)["x"].error == (
        f"{src / 'x.mp4'}: id 'x' also given by {src / 'sub' / 'x.mkv'} (ids are file stems); rename or remove one"
    )


def _crash_on_boom(source: ClipSource):
    if source.id == "boom":
        os._exit(3)  # what a segfaulting decoder looks like to the pool
    return prep.ManifestRow(id=source.id)


def test_a_crashing_worker_fails_only_its_own_clip():
    jobs = [ClipSource(name, "video", f"{name}.mp4") for name in ("a", "boom", "c", "d")]
    rows = {row.id: row for row in prep._run_jobs(jobs, _crash_on_boom, workers=2)}
    assert sorted(rows) == ["a", "boom", "c", "d"]
    assert rows["boom"].status == "failed" and "crashed the worker" in rows["boom"].error
    assert all(rows[k].ok for k in ("a", "c", "d"))


def _interrupt_self(source: ClipSource):
    os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C in the terminal sends to every process
    return prep.ManifestRow(id=source.id)


def test_workers_leave_ctrl_c_to_the_parent():
    jobs = [ClipSource(name, "video", f"{name}.mp4") for name in ("a", "b")]
    try:
        ids = sorted(row.id for row in prep._run_jobs(jobs, _interrupt_self, workers=2))
    except KeyboardInterrupt:  # re-raised from a worker: it would abort pytest itself
        pytest.fail("a worker raised KeyboardInterrupt")
    assert ids == ["a", "b"]


def _sleep_if_slow(source: ClipSource):
    if source.id.startswith("slow"):
        Path(source.visual).write_text(str(os.getpid()))
        time.sleep(90)
    return prep.ManifestRow(id=source.id)


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] in ("Z", "X")
    except (FileNotFoundError, IndexError):
        return True


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads process states from /proc")
def test_leaving_the_run_early_stops_the_workers_at_once(tmp_path):
    # Ctrl-C lands in the caller's loop; closing the generator must not wait for a long clip to finish.
    jobs = [ClipSource("a", "video", "a.mp4")]
    jobs += [ClipSource(f"slow{i}", "video", str(tmp_path / f"slow{i}.pid")) for i in range(2)]
    rows = prep._run_jobs(jobs, _sleep_if_slow, workers=2)
    assert next(rows).id == "a"
    pid_files = [tmp_path / f"slow{i}.pid" for i in range(2)]
    deadline = time.monotonic() + 60
    while not all(f.exists() and f.read_text() for f in pid_files) and time.monotonic() < deadline:
        time.sleep(0.05)
    pids = [int(f.read_text()) for f in pid_files]
    started = time.monotonic()
    rows.close()
    assert time.monotonic() - started < 30
    deadline = time.monotonic() + 10
    while not all(_gone(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(_gone(pid) for pid in pids)


def test_worker_processes_give_the_same_outputs(videos, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    _run(videos, one, workers=1)
    assert str(_run(videos, two, workers=2)) == "done 3 / skipped 0 / failed 0"
    for clip_id in ("a", "b", "c"):
        for sub, suffix in (("frames", "jpg"), ("audio", "wav"), ("spect", "npy")):
            name = f"{sub}/{clip_id}.{suffix}"
            assert (one / name).read_bytes() == (two / name).read_bytes(), name


# --------------------------------------------------------------------------------------------------
# Resume
# --------------------------------------------------------------------------------------------------


def test_rerun_skips_finished_clips_and_redoes_incomplete_ones(videos, tmp_path):
    out = tmp_path / "out"
    assert str(_run(videos, out)) == "done 3 / skipped 0 / failed 0"
    assert str(_run(videos, out)) == "done 0 / skipped 3 / failed 0"

    (out / "audio" / "b.wav").unlink()  # a done row whose file is gone
    assert str(_run(videos, out)) == "done 1 / skipped 2 / failed 0"

    # A half-written frame with no manifest row (killed before recording): redone, never trusted.
    (out / "frames" / "c.jpg").write_bytes(b"\xff\xd8\xff half a jpeg")
    rows = [r for r in read_manifest(out) if r.id != "c"]
    prep.write_manifest(out, rows)
    assert str(_run(videos, out)) == "done 1 / skipped 2 / failed 0"
    with Image.open(out / "frames" / "c.jpg") as frame:
        assert frame.size == (256, 256)
    assert sorted(_rows(out)) == ["a", "b", "c"]


def test_killed_run_keeps_the_clips_recorded_so_far(videos, tmp_path, monkeypatch):
    out = tmp_path / "out"
    real = prep.prepare_clip
    seen_on_disk: list[list[str]] = []

    def killed_on_third(source, out_dir, *settings, **options):
        if source.id == "c":
            seen_on_disk.append(sorted(r.id for r in read_manifest(out_dir) if r.ok))
            raise KeyboardInterrupt
        return real(source, out_dir, *settings, **options)

    monkeypatch.setattr(prep, "prepare_clip", killed_on_third)
    monkeypatch.setattr(prep, "MANIFEST_FLUSH_SECONDS", 0.0)
    with pytest.raises(KeyboardInterrupt):
        _run(videos, out)
    assert seen_on_disk == [["a", "b"]]  # flushed while the run was still going
    assert sorted(r.id for r in read_manifest(out)) == ["a", "b"]
    monkeypatch.setattr(prep, "prepare_clip", real)
    assert str(_run(videos, out)) == "done 1 / skipped 2 / failed 0"


def test_failed_clips_are_retried(tmp_path):
    src = tmp_path / "src"
    write_synthetic_video(src / "x.mp4", seconds=2.0, audio=None)
    out = tmp_path / "out"
    assert str(_run(src, out)) == "done 0 / skipped 0 / failed 1"
    write_synthetic_video(src / "x.mp4", seconds=2.0)  # the user fixed the file
    assert str(_run(src, out)) == "done 1 / skipped 0 / failed 0"


def test_output_folder_checks(videos, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not a prepared dataset"):
        _run(videos, other)
    with pytest.raises(DataError, match="must differ"):
        _run(videos, videos)
    with pytest.raises(DataError, match="source folder not found"):
        _run(tmp_path / "nowhere", tmp_path / "out")
    (tmp_path / "a_file.mp4").write_bytes(b"x")
    with pytest.raises(DataError, match=r"a_file\.mp4: is a file; SRC must be a folder"):
        _run(tmp_path / "a_file.mp4", tmp_path / "out")
    with pytest.raises(DataError, match="--workers"):
        _run(videos, tmp_path / "out", workers=0)


# --------------------------------------------------------------------------------------------------
# Shards
# --------------------------------------------------------------------------------------------------


def test_parse_shard():
    assert parse_shard("0/4") == (0, 4) and parse_shard(" 3 / 4 ") == (3, 4)
    for bad in ("4/4", "1/0", "-1/2", "a/b", "1", "1/2/3"):
        with pytest.raises(DataError, match="--shard"):
            parse_shard(bad)


def test_shard_slices_are_deterministic_and_partition_the_ids():
    ids = [f"id{k:02d}" for k in range(11)]
    shuffled = list(reversed(ids))
    parts = [shard_slice(shuffled, (i, 3)) for i in range(3)]
    assert parts[0] == ["id00", "id03", "id06", "id09"]
    assert sorted(id_ for part in parts for id_ in part) == ids
    assert [shard_slice(ids, (i, 3)) for i in range(3)] == parts


def test_shards_write_parts_and_merge_when_all_are_done(tmp_path):
    src = tmp_path / "src"
    for k in range(4):
        write_synthetic_video(src / f"v{k}.mp4", seconds=2.0, seed=k)
    write_synthetic_video(src / "v4.mp4", seconds=2.0, audio=None)
    out = tmp_path / "out"
    first = _run(src, out, shard="1/2")
    assert (first.done, first.failed, first.merged) == (2, 0, False)
    assert not (out / "manifest.csv").exists()
    part = out / "shards" / "1-of-2"
    assert sorted(r.id for r in read_manifest(part)) == ["v1", "v3"]
    second = _run(src, out, shard=(0, 2))
    assert (second.done, second.failed, second.merged) == (2, 1, True)
    rows = _rows(out)
    assert sorted(rows) == [f"v{k}" for k in range(5)]
    assert [rows[f"v{k}"].status for k in range(5)] == ["done"] * 4 + ["failed"]
    # A shard rerun skips what it finished; --merge rebuilds the manifest from the parts.
    assert str(_run(src, out, shard="1/2")) == "done 0 / skipped 2 / failed 0"
    (out / "manifest.csv").unlink()
    assert main(["prepare", "--merge", str(out)]) == 0
    assert _rows(out) == rows


# --------------------------------------------------------------------------------------------------
# --list
# --------------------------------------------------------------------------------------------------


def test_read_clip_list_forms(tmp_path):
    plain = tmp_path / "ids.txt"
    plain.write_text("# comment\nabc12345678_30\nfoo.mp4\n\nfoo\nabc12345678_000030\n")
    # A VGG-Sound start is zero-padded, so both spellings are one clip.
    assert read_clip_list(plain) == [ListEntry("abc12345678_000030"), ListEntry("foo")]
    vgg = tmp_path / "vgg.csv"
    vgg.write_text(
        'ytid,start_seconds,label,split\nabc12345678,30,"dog, barking",train\nxyz98765432,7,cat,test\n'
    )
    assert read_clip_list(vgg) == [
        ListEntry("abc12345678_000030", "dog, barking", "train"),
        ListEntry("xyz98765432_000007", "cat", "test"),
    ]
    no_header = tmp_path / "nh.csv"
    no_header.write_text("abc12345678,30,dog\n")
    assert read_clip_list(no_header) == [ListEntry("abc12345678_000030", "dog", "")]
    bad = tmp_path / "bad.csv"
    bad.write_text("abc12345678,30,dog,holdout\n")
    with pytest.raises(DataError, match=r"bad\.csv:1: unknown split 'holdout'"):
        read_clip_list(bad)
    twice = tmp_path / "twice.csv"
    twice.write_text("abc12345678,30,dog,train\nabc12345678,30,dog,train\nabc12345678,30,cat,test\n")
    with pytest.raises(
        DataError, match=r"twice\.csv:3: abc12345678_000030 .*'cat' .*'test'; line 1 gives 'dog'"
    ):
        read_clip_list(twice)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n# nothing\n")
    with pytest.raises(DataError, match="no ids"):
        read_clip_list(empty)
    # a bundled list by name, unless a file of that name exists in the working directory
    from sspl.data.lists import load_list

    assert [e.id for e in read_clip_list("flickr_10k")] == load_list("flickr_10k")
    with pytest.raises(DataError, match="no such list file, and not a bundled list"):
        read_clip_list("flickr_10")


def test_select_sources_matches_padding_and_whole_videos():
    sources = [ClipSource(s, "video", f"{s}.mp4") for s in ("abc12345678_000030", "xyz98765432", "other")]
    entries = [
        ListEntry("abc12345678_30", "dog", "train"),
        ListEntry("xyz98765432_000007"),
        ListEntry("nope"),
    ]
    picked = {s.id: s for s in select_sources(sources, entries, "SRC")}
    assert picked["abc12345678_30"].visual == "abc12345678_000030.mp4"
    assert (picked["abc12345678_30"].label, picked["abc12345678_30"].split) == ("dog", "train")
    assert picked["xyz98765432_000007"].visual == "xyz98765432.mp4"
    assert picked["nope"].error == "SRC: no source file for id 'nope'"
    assert "other" not in picked
    # One whole video cannot be two list clips (its start seconds are not looked up): both are refused.
    twice = [ListEntry("xyz98765432_000007"), ListEntry("xyz98765432_000017")]
    picked = select_sources(sources, twice, "SRC")
    assert [s.error for s in picked] == [
        "xyz98765432.mp4: one file for the list clips xyz98765432_000007, xyz98765432_000017; name each "
        "clip's file <ytid>_<start> so that each is its own clip"
    ] * 2


def test_list_selects_and_labels_clips(tmp_path):
    src = tmp_path / "src"
    write_synthetic_video(src / "abc12345678_000030.mp4", seconds=2.0)
    write_synthetic_video(src / "xyz98765432.mp4", seconds=2.0, seed=1)
    write_synthetic_video(src / "unlisted.mp4", seconds=2.0, seed=2)
    listing = tmp_path / "train.csv"
    listing.write_text("abc12345678,30,dog barking,train\nxyz98765432,10,cat,val\nmissing0000,5,cow,train\n")
    out = tmp_path / "out"
    assert str(_run(src, out, list_file=listing)) == "done 2 / skipped 0 / failed 1"
    rows = _rows(out)
    assert sorted(rows) == ["abc12345678_000030", "missing0000_000005", "xyz98765432_000010"]
    assert (rows["abc12345678_000030"].label, rows["abc12345678_000030"].split) == ("dog barking", "train")
    assert (rows["xyz98765432_000010"].label, rows["xyz98765432_000010"].split) == ("cat", "val")
    assert (
        rows["missing0000_000005"].status == "failed" and "no source file" in rows["missing0000_000005"].error
    )
    assert (out / "frames" / "xyz98765432_000010.jpg").is_file()
    # Without the list, the rerun takes every file and keeps the labels recorded before.
    assert str(_run(src, out)) == "done 2 / skipped 1 / failed 0"
    rows = _rows(out)
    assert rows["abc12345678_000030"].label == "dog barking" and rows["unlisted"].ok


def test_list_overlapping_a_test_set_is_refused_unless_allowed(tmp_path):
    src = tmp_path / "src"
    write_synthetic_video(src / "2432219254.mp4", seconds=2.0)  # a SoundNet-Flickr test id
    write_synthetic_video(src / "1234.mp4", seconds=2.0, seed=1)  # not one
    listing = tmp_path / "ids.txt"
    listing.write_text("2432219254\n1234\n")  # a training list that leaks a test id
    with pytest.raises(DataError, match="1 training id"):
        _run(src, tmp_path / "out", list_file=listing)
    assert not (tmp_path / "out").exists()
    summary = _run(src, tmp_path / "out", list_file=listing, allow_overlap=True)
    assert summary.done == 2
    # A list of test ids only is a test set, prepared as one.
    test_list = tmp_path / "test.txt"
    test_list.write_text("2432219254\n")
    assert _run(src, tmp_path / "test_out", list_file=test_list).done == 1
    # Rows the list marks `test` are its own test split, as in the official vggsound.csv, which holds the
    # VGG-SS clips there: not a leak (train never reads them). The same clip marked train is one.
    vggsound = tmp_path / "vggsound.csv"
    vggsound.write_text("zpWuikVorYg,32,elk,test\nabcdefghijk,10,dog,train\n")  # a VGG-SS test clip
    summary = _run(src, tmp_path / "vgg_out", list_file=vggsound)
    assert (summary.done, summary.failed) == (0, 2)  # no files for them here; the list was accepted
    vggsound.write_text("zpWuikVorYg,32,elk,train\nabcdefghijk,10,dog,train\n")
    with pytest.raises(DataError, match="1 training id.*vggss"):
        _run(src, tmp_path / "vgg_out2", list_file=vggsound)


# --------------------------------------------------------------------------------------------------
# SoundNet-Flickr and pairs layouts
# --------------------------------------------------------------------------------------------------


def _flickr_frame(data_dir: Path) -> Image.Image:
    with Image.open(data_dir / "prepare" / f"{FLICKR_ID}.jpg") as image:
        return image.convert("RGB")


def test_flickr_layout_takes_the_middle_file_in_natural_order(data_dir, tmp_path, caplog):
    src = tmp_path / "flickr"
    frames = src / "frames" / FLICKR_ID
    frames.mkdir(parents=True)
    base = _flickr_frame(data_dir)
    # Natural order is frame_1, frame_2, frame_10: the middle (index 1) is frame_2, the flipped one.
    base.save(frames / "frame_1.jpg", quality=95)
    base.transpose(Image.Transpose.FLIP_LEFT_RIGHT).resize((320, 240)).save(frames / "frame_2.png")
    base.transpose(Image.Transpose.FLIP_TOP_BOTTOM).save(frames / "frame_10.jpg", quality=95)
    (src / "audio").mkdir()
    shutil.copy(data_dir / "prepare" / f"{FLICKR_ID}.wav", src / "audio" / f"{FLICKR_ID}.wav")
    # A second clip with mp3 audio in mp3/, and a third without audio.
    (src / "frames" / "222").mkdir()
    base.save(src / "frames" / "222" / "0001.jpg")
    (src / "mp3").mkdir()
    _write_mp3(src / "mp3" / "222.mp3", seconds=2.0)
    (src / "frames" / "333").mkdir()
    base.save(src / "frames" / "333" / "0001.jpg")

    (src / "stray.mp4").write_bytes(b"a video beside the dump")
    out = tmp_path / "out"
    with caplog.at_level("WARNING", logger="sspl.data.prepare"):
        assert str(_run(src, out)) == "done 2 / skipped 0 / failed 1"
    assert read_meta(out)["kind"] == "flickr"
    assert "1 video file(s) (stray.mp4) are left out" in caplog.text and "--layout videos" in caplog.text
    rows = _rows(out)
    row = rows[FLICKR_ID]
    assert (row.duration, row.sample_rate) == (5.0, 22050)
    with Image.open(out / row.frame) as frame:
        got = np.asarray(frame, dtype=np.float32)
    flipped = base.transpose(Image.Transpose.FLIP_LEFT_RIGHT).resize((320, 240))
    want = np.asarray(flipped.resize((256, 256), Image.Resampling.BICUBIC), dtype=np.float32)
    assert np.abs(got - want).mean() < 2.0
    wave, _ = sf.read(out / row.audio, dtype="float32")
    full, _ = load_audio(data_dir / "prepare" / f"{FLICKR_ID}.wav")
    np.testing.assert_array_equal(wave, official_clip(full))  # centred on the middle of the track
    assert rows["222"].ok and rows["222"].sample_rate == 44100
    assert rows["333"].status == "failed" and "no audio file 333.mp3|.wav" in rows["333"].error


def test_flickr_test_layout_of_one_frame_per_clip(data_dir, tmp_path):
    # The SoundNet-Flickr test set as LVS / EZ-VSL ship it: frames/<id>.jpg beside audio/<id>.wav.
    src = tmp_path / "flickr_test"
    (src / "frames").mkdir(parents=True)
    (src / "audio").mkdir()
    shutil.copy(data_dir / "prepare" / f"{FLICKR_ID}.jpg", src / "frames" / f"{FLICKR_ID}.jpg")
    shutil.copy(data_dir / "prepare" / f"{FLICKR_ID}.wav", src / "audio" / f"{FLICKR_ID}.wav")
    _flickr_frame(data_dir).save(src / "frames" / "444.jpg")
    out = tmp_path / "out"
    assert str(_run(src, out)) == "done 1 / skipped 0 / failed 1"
    assert read_meta(out)["kind"] == "flickr"
    rows = _rows(out)
    assert (out / rows[FLICKR_ID].frame).read_bytes() == (src / "frames" / f"{FLICKR_ID}.jpg").read_bytes()
    assert "444.jpg: no audio file 444.mp3|.wav" in rows["444"].error


def test_pairs_with_two_images_of_one_stem_are_refused_by_name(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for suffix in (".jpg", ".png"):
        Image.new("RGB", (64, 64), (200, 0, 0)).save(src / f"x{suffix}")
    sf.write(src / "x.wav", 0.3 * np.random.default_rng(0).standard_normal(48000), 16000)
    out = tmp_path / "out"
    assert str(_run(src, out)) == "done 0 / skipped 0 / failed 1"
    assert "x.jpg, x.png share a stem" in _rows(out)["x"].error


def _write_mp3(path: Path, seconds: float) -> None:
    rate = 44100
    t = np.arange(int(seconds * rate)) / rate
    wave = (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libmp3lame", rate=rate, layout="mono")
        for s in range(0, wave.size, 1152):
            frame = av.AudioFrame.from_ndarray(wave[None, s : s + 1152], format="fltp", layout="mono")
            frame.sample_rate = rate
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def test_pairs_layout(data_dir, tmp_path):
    src = tmp_path / "pairs"
    src.mkdir()
    for suffix in (".jpg", ".wav"):
        shutil.copy(data_dir / "prepare" / f"{FLICKR_ID}{suffix}", src / f"{FLICKR_ID}{suffix}")
    _flickr_frame(data_dir).resize((100, 80)).save(src / "small.png")
    shutil.copy(data_dir / "prepare" / f"{FLICKR_ID}.wav", src / "small.wav")
    _flickr_frame(data_dir).save(src / "lonely.jpg")
    shutil.copy(data_dir / "prepare" / f"{FLICKR_ID}.wav", src / "voice.wav")

    out = tmp_path / "out"
    assert str(_run(src, out)) == "done 2 / skipped 0 / failed 2"
    assert read_meta(out)["kind"] == "pairs"
    rows = _rows(out)
    # An image that already is a 256 x 256 JPEG is copied, not re-encoded.
    assert (out / rows[FLICKR_ID].frame).read_bytes() == (src / f"{FLICKR_ID}.jpg").read_bytes()
    with Image.open(out / rows["small"].frame) as frame:
        assert (frame.format, frame.size) == ("JPEG", (256, 256))
    assert "lonely.jpg: no audio file with the same stem" in rows["lonely"].error
    assert "voice.wav: no image with the same stem" in rows["voice"].error


def test_frames_of_a_video_share_its_audio_file_as_in_avsbench(tmp_path):
    # AVSBench-S4: visual_frames/test/<category>/<ytid>/<ytid>_<k>.png and audio_wav/test/<category>/<ytid>.wav
    src = tmp_path / "s4_data"
    frames = src / "visual_frames" / "test" / "helicopter" / "0d9u2CymIxc"
    frames.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in (1, 2):
        Image.fromarray(rng.integers(0, 256, (224, 224, 3), np.uint8)).save(frames / f"0d9u2CymIxc_{k}.png")
    Image.fromarray(rng.integers(0, 256, (224, 224, 3), np.uint8)).save(frames / "orphan_3.png")
    audio = src / "audio_wav" / "test" / "helicopter"
    audio.mkdir(parents=True)
    sf.write(audio / "0d9u2CymIxc.wav", 0.3 * rng.standard_normal(5 * 16000), 16000)
    # The real folder also holds the masks (named like the frames) and the other splits.
    masks = src / "gt_masks" / "test" / "helicopter" / "0d9u2CymIxc"
    masks.mkdir(parents=True)
    Image.fromarray(np.zeros((224, 224), np.uint8)).save(masks / "0d9u2CymIxc_1.png")
    (src / "visual_frames" / "train" / "dog" / "trainclip").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (224, 224, 3), np.uint8)).save(
        src / "visual_frames" / "train" / "dog" / "trainclip" / "trainclip_1.png"
    )
    (src / "audio_wav" / "train" / "dog").mkdir(parents=True)
    sf.write(
        src / "audio_wav" / "train" / "dog" / "trainclip.wav", 0.3 * rng.standard_normal(5 * 16000), 16000
    )

    out = tmp_path / "out"
    assert str(_run(src, out)) == "done 3 / skipped 0 / failed 1"
    rows = _rows(out)
    assert sorted(rows) == ["0d9u2CymIxc_1", "0d9u2CymIxc_2", "orphan_3", "trainclip_1"]
    assert {k: r.split for k, r in rows.items()} == {
        "0d9u2CymIxc_1": "test",
        "0d9u2CymIxc_2": "test",
        "orphan_3": "test",
        "trainclip_1": "train",
    }
    assert np.array_equal(
        np.load(out / rows["0d9u2CymIxc_1"].spect), np.load(out / rows["0d9u2CymIxc_2"].spect)
    )
    assert "orphan_3.png: no audio file with the same stem" in rows["orphan_3"].error
    assert "nor a single orphan.* audio file" in rows["orphan_3"].error
    from sspl.data.annotations import load_annotations

    assert {"0d9u2CymIxc_1", "0d9u2CymIxc_2"} <= set(load_annotations("avsbench"))


def test_pairs_are_read_as_shown_and_heard(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(6 * 16000) / 16000)
    # A phone photo: landscape pixels with a left red half, and EXIF orientation 6 (turn a quarter clockwise).
    pixels = np.zeros((200, 400, 3), np.uint8)
    pixels[:, :200] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(src / "phone.jpg", exif=exif)
    sf.write(src / "phone.wav", tone, 16000)
    # Broken sounds: a NaN sample, 6 s whose middle 3 s (the kept clip) are silent, a file cut at 100 bytes.
    for name in ("nan", "gap", "cut"):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), np.uint8)).save(src / f"{name}.png")
    nan = tone.copy()
    nan[100] = np.nan
    sf.write(src / "nan.wav", nan, 16000, subtype="FLOAT")
    gap = tone.copy()
    gap[16000:80000] = 0.0
    sf.write(src / "gap.wav", gap, 16000)
    sf.write(src / "cut.wav", tone, 16000)
    (src / "cut.wav").write_bytes((src / "cut.wav").read_bytes()[:100])  # 44-byte header + 28 samples

    out = tmp_path / "out"
    assert str(_run(src, out)) == "done 1 / skipped 0 / failed 3"
    rows = _rows(out)
    assert "nan.wav: audio holds non-finite samples" in rows["nan"].error
    assert "gap.wav: silent audio" in rows["gap"].error
    assert "cut.wav: only 28 audio samples (2 ms at 16000 Hz)" in rows["cut"].error
    assert "truncated" in rows["cut"].error
    frame = np.asarray(Image.open(out / rows["phone"].frame), dtype=np.float32)
    # Turned upright, the red half is on top: a portrait photo, squeezed to 256 x 256.
    assert frame[:100, :, 0].mean() > 200 and frame[156:, :, 0].mean() < 40


def test_a_clip_prepared_earlier_survives_its_source_breaking(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), np.uint8)).save(src / f"{name}.png")
        sf.write(src / f"{name}.wav", 0.3 * rng.standard_normal(48000), 16000)
    out = tmp_path / "out"
    assert str(_run(src, out)) == "done 2 / skipped 0 / failed 0"
    (src / "a.wav").unlink()  # the source goes away after it was prepared
    assert str(_run(src, out)) == "done 0 / skipped 2 / failed 0"
    assert _rows(out)["a"].ok and (out / _rows(out)["a"].frame).is_file()
    # Another source folder is not a resume of this one.
    other = tmp_path / "other"
    shutil.copytree(src, other)
    with pytest.raises(DataError, match="source="):
        _run(other, out)
    with pytest.raises(DataError, match="is a file, not a folder"):
        _run(src, src / "b.wav")


def test_audio_shorter_than_its_container_gets_its_own_duration(tmp_path):
    src = tmp_path / "src"
    write_synthetic_video(src / "late.mkv", seconds=5.0, audio_seconds=1.0, audio_codec="pcm_s16le")
    out = tmp_path / "out"
    _run(src, out)
    assert _rows(out)["late"].duration == pytest.approx(1.0, abs=0.01)


def test_a_plain_run_after_shards_keeps_their_work(tmp_path):
    src = tmp_path / "src"
    for k in range(4):
        write_synthetic_video(src / f"v{k}.mp4", seconds=2.0, seed=k)
    out = tmp_path / "out"
    assert _run(src, out, shard="0/2").done == 2
    assert str(_run(src, out)) == "done 2 / skipped 2 / failed 0"
    assert sorted(_rows(out)) == ["v0", "v1", "v2", "v3"]


def test_explicit_layout_that_does_not_fit(videos, tmp_path):
    with pytest.raises(DataError, match="SoundNet-Flickr layout needs frames"):
        _run(videos, tmp_path / "out", layout="flickr")
    with pytest.raises(DataError, match="unknown layout"):
        _run(videos, tmp_path / "out", layout="frames")


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------


def test_cli_end_to_end(videos, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["prepare", str(videos), str(out), "--workers", "1", "--no-progress"]) == 0
    facts, wrote = capsys.readouterr().out.strip().splitlines()
    assert facts == "sspl prepare: done 3, skipped 0, failed 0"
    assert re.fullmatch(
        rf"Wrote 3 clips to {re.escape(str(out))}/ in [0-9.]+ s -- open {re.escape(str(out))}/manifest.csv",
        wrote,
    )
    with open(out / "manifest.csv", newline="") as f:
        assert [r["status"] for r in csv.DictReader(f)] == ["done"] * 3
    assert main(["prepare", str(videos), str(out), "--workers", "1", "--no-progress", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["done"], summary["skipped"], summary["failed"], summary["count"]) == (0, 3, 0, 0)
    assert (summary["command"], summary["unit"], summary["open"]) == (
        "prepare",
        "clip",
        str(out / "manifest.csv"),
    )


def _prepare_until(tmp_path: Path, workers: int, finished: int):
    """Start `sspl prepare` on 24 one-second clips in a subprocess; return once ``finished`` clips are in
    its journal: ``(src, out, journal, proc)``."""
    import subprocess
    import sys

    src = tmp_path / "src"
    for i in range(24):
        write_synthetic_video(src / f"clip{i:02d}.mp4", seconds=1.0, seed=i)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "sspl.cli", "prepare", str(src), str(out), "--workers", str(workers)]
    proc = subprocess.Popen(
        [*cmd, "--no-progress"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    journal = out / prep.JOURNAL_NAME
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if journal.is_file() and journal.read_text().count("\n") >= finished:
            break
        time.sleep(0.02)
    return src, out, journal, proc


@pytest.mark.slow
def test_a_sigkilled_prepare_keeps_the_clips_it_finished(tmp_path):
    src, out, journal, proc = _prepare_until(tmp_path, workers=1, finished=3)
    proc.send_signal(signal.SIGKILL)  # no Ctrl-C handler runs: only what is on disk survives
    proc.wait()
    assert not (out / "manifest.csv").exists()  # killed before the first manifest flush (10 s)
    finished = journal.read_text().count("\n")
    assert 3 <= finished < 24
    summary = _run(src, out)
    assert (summary.skipped, summary.done, summary.failed) == (finished, 24 - finished, 0)
    assert len(_rows(out)) == 24 and not journal.exists()


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found.update(kids)
        todo.extend(kids)
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads process trees from /proc")
def test_sigterm_stops_prepare_and_its_workers_and_keeps_the_finished_clips(tmp_path):
    src, out, journal, proc = _prepare_until(tmp_path, workers=2, finished=2)
    workers = _descendants(proc.pid)
    assert workers, "prepare finished or started no worker before the signal"
    proc.send_signal(signal.SIGTERM)  # kill, timeout, a batch scheduler's time limit
    assert proc.wait(timeout=60) == 143
    assert "sspl prepare: terminated" in proc.stderr.read()
    deadline = time.monotonic() + 30
    while not all(_gone(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(_gone(pid) for pid in workers), "worker processes outlived a terminated prepare"
    finished = len(_rows(out)) if (out / "manifest.csv").exists() else journal.read_text().count("\n")
    assert 2 <= finished < 24
    summary = _run(src, out)
    assert (summary.skipped, summary.done, summary.failed) == (finished, 24 - finished, 0)


def test_a_folder_killed_before_its_first_manifest_says_it_is_unfinished(tmp_path, capsys):
    src, out = tmp_path / "src", tmp_path / "out"
    write_synthetic_video(src / "a.mp4", seconds=1.0)
    _run(src, out)
    (out / "manifest.csv").unlink()  # as a run killed before its first manifest write leaves it
    (out / prep.JOURNAL_NAME).write_text('{"id": "a", "status": "done"}\n')
    with pytest.raises(FileNotFoundError, match=r"no manifest yet: .* unfinished `sspl prepare` output"):
        read_manifest(out)
    assert main(["train", "--data", str(out), "--run-dir", str(tmp_path / "run")]) == 1
    assert "unfinished `sspl prepare` output; rerun the command that made it" in capsys.readouterr().err
    (out / prep.JOURNAL_NAME).unlink()
    with pytest.raises(FileNotFoundError, match=r"no manifest; is .* a folder written by `sspl prepare`"):
        read_manifest(out)


def test_cli_errors(videos, tmp_path, capsys):
    assert main(["prepare", str(tmp_path / "nowhere"), str(tmp_path / "out")]) == 1
    assert "source folder not found" in capsys.readouterr().err
    assert main(["prepare", str(videos), str(tmp_path / "out"), "--merge"]) == 1
    assert "--merge takes only OUT" in capsys.readouterr().err
    assert main(["prepare", "--merge", str(tmp_path / "out")]) == 1
    assert "no shard manifests" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["prepare", str(videos), str(tmp_path / "out"), "--shard", "2/2"])
    assert "need 0 <= i < n" in capsys.readouterr().err
    # A run that prepared nothing fails, pointing at the reasons.
    silent = tmp_path / "silent"
    write_synthetic_video(silent / "quiet.mp4", seconds=2.0, audio="silent")
    assert main(["prepare", str(silent), str(tmp_path / "q"), "--workers", "1", "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0] == "sspl prepare: done 0, skipped 0, failed 1"
    assert "no clip could be prepared" in captured.err and str(tmp_path / "q") in captured.err
