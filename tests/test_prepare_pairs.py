"""`sspl prepare --list` of an extended set (SLAVC's ``*_plus_silent.csv``): each pair becomes a clip with one
clip's frame and another clip's sound, from a SoundNet-Flickr dump and from videos."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from sspl.audio import load_audio, official_clip
from sspl.data.lists import test_ids as benchmark_ids
from sspl.data.manifest import read_manifest
from sspl.data.prepare import check_list_overlap, prepare, read_clip_list
from sspl.data.video import write_synthetic_video

FLICKR_ID = "10006434483"


def _rows(out: Path) -> dict:
    return {row.id: row for row in read_manifest(out)}


def test_bundled_extended_list_is_the_whole_extended_set():
    entries = read_clip_list("flickr_test_plus_silent")
    pairs = [e for e in entries if e.audio]
    assert len(entries) == 500 and len(pairs) == 250 and {e.split for e in entries} == {"test"}
    assert {e.id for e in entries if not e.audio} == set(benchmark_ids("flickr", "full"))
    assert pairs[0].id == f"{pairs[0].video}+{pairs[0].audio}"
    check_list_overlap("flickr_test_plus_silent", entries, allow_overlap=False)  # a test set, not a leak
    vggss = read_clip_list("vggss_test_plus_silent")
    # 5,158 boxed clips, 4,779 pairs, 379 clips heard but not seen (their own frame and sound)
    assert len(vggss) == 5158 + 5158 and sum(bool(e.audio) for e in vggss) == 4779


def test_pairs_from_a_flickr_dump(data_dir, tmp_path):
    src = tmp_path / "flickr"
    (src / "frames").mkdir(parents=True)
    (src / "audio").mkdir()
    shutil.copy(data_dir / "prepare" / f"{FLICKR_ID}.jpg", src / "frames" / f"{FLICKR_ID}.jpg")
    shutil.copy(data_dir / "prepare" / f"{FLICKR_ID}.wav", src / "audio" / f"{FLICKR_ID}.wav")
    Image.new("RGB", (256, 256), (20, 200, 40)).save(src / "frames" / "222.jpg")
    sf.write(src / "audio" / "222.wav", 0.3 * np.random.default_rng(0).standard_normal(5 * 16000), 16000)
    listed = tmp_path / "extended.csv"
    listed.write_text(
        f"video,audio,label\n{FLICKR_ID},222,non-sounding\n222,{FLICKR_ID},\n999,222,non-sounding\n"
    )
    out = tmp_path / "out"
    assert (
        str(prepare(src, out, workers=1, progress=False, list_file=listed)) == "done 2 / skipped 0 / failed 1"
    )
    rows = _rows(out)
    pair = rows[f"{FLICKR_ID}+222"]
    assert pair.ok and pair.split == "test"
    # the frame is FLICKR_ID's, byte for byte; the sound is 222's official clip
    assert (out / pair.frame).read_bytes() == (src / "frames" / f"{FLICKR_ID}.jpg").read_bytes()
    wave, _ = sf.read(out / pair.audio, dtype="float32")
    full, _ = load_audio(src / "audio" / "222.wav")
    np.testing.assert_array_equal(wave, official_clip(full))
    back = rows[f"222+{FLICKR_ID}"]
    wave, _ = sf.read(out / back.audio, dtype="float32")
    np.testing.assert_array_equal(wave, official_clip(load_audio(src / "audio" / f"{FLICKR_ID}.wav")[0]))
    assert "no source file for the frame '999'" in rows["999+222"].error


@pytest.mark.parametrize("layout", ["videos"])
def test_pairs_from_videos(tmp_path, layout):
    src = tmp_path / "videos"
    src.mkdir()
    for k, name in enumerate(("aaaaaaaaaaa_000010", "bbbbbbbbbbb_000020")):
        write_synthetic_video(src / f"{name}.mp4", seconds=3.0, seed=k)
    listed = tmp_path / "extended.csv"
    a, b = "aaaaaaaaaaa_000010", "bbbbbbbbbbb_000020"
    listed = tmp_path / "extended.csv"
    # a pair (b's start not zero-padded: the same clip), and a heard-not-seen row: a itself, frame and sound
    listed.write_text(f"video,audio,label\n{a},bbbbbbbbbbb_20,non-sounding\n{a},{a},non-sounding\n")
    out = tmp_path / "out"
    assert str(prepare(src, out, workers=1, progress=False, list_file=listed, layout=layout)) == (
        "done 2 / skipped 0 / failed 0"
    )
    rows = _rows(out)
    pair = rows[f"{a}+{b}"]
    assert (out / pair.frame).read_bytes() == (out / rows[a].frame).read_bytes()  # a's middle frame
    wave, _ = sf.read(out / pair.audio, dtype="float32")
    full, _ = load_audio(src / f"{b}.mp4")
    np.testing.assert_array_equal(wave, official_clip(full))  # b's sound, the middle of its track
