"""Id lists, samplers, the validation split and the train/test leakage check."""

from __future__ import annotations

import gzip
import logging
import random

import pytest

from sspl.data import lists
from sspl.errors import DataError


def test_bundled_lists_have_their_published_sizes():
    sizes = {name: len(lists.load_list(name)) for name in ("flickr_10k", "flickr_144k", "vggss_144k")}
    assert sizes == {"flickr_10k": 10000, "flickr_144k": 144000, "vggss_144k": 144000}
    senocak = lists.load_list("senocak_flickr_train_144k")
    assert len(senocak) == 144000 and all(t.isdigit() for t in senocak[:100])  # ".wav" stripped
    assert len(lists.load_list("vggsound_test_split")) == 15446
    # Header row skipped, the `video` column read (not mistaken for VGG-Sound `ytid,start` rows).
    silent = lists.load_list("flickr_test_plus_silent")
    assert len(silent) == 250 and silent[0] == "10000130166"


def test_test_ids_variants():
    full, sspl, original = (lists.test_ids("flickr", s) for s in ("full", "sspl", "original"))
    assert (len(full), len(sspl), len(original)) == (250, 249, 250)
    assert set(full) - set(sspl) == {"3908875350"}
    assert set(full) ^ set(original) == {"3908875350", "3908875357"}
    vggss, vggss_sspl = lists.test_ids("vggss"), lists.test_ids("vggss", "sspl")
    assert (len(vggss), len(vggss_sspl)) == (5158, 4692) and set(vggss_sspl) <= set(vggss)
    with pytest.raises(ValueError, match="unknown|no test ids"):
        lists.test_ids("vggss", "original")


def test_load_list_file_forms(tmp_path):
    plain = tmp_path / "ids.txt"
    plain.write_text("# a comment\nframes/123.jpg\n\n456.png\n789\n")
    assert lists.load_list(plain) == ["123", "456", "789"]

    vggsound_csv = tmp_path / "vggsound.csv"
    vggsound_csv.write_text('abc_defghij,30,"female speech, woman speaking",test\nzpWuikVorYg,7,dog,train\n')
    assert lists.load_list(vggsound_csv) == ["abc_defghij_000030", "zpWuikVorYg_000007"]

    zipped = tmp_path / "ids.txt.gz"
    zipped.write_bytes(gzip.compress(b"id,split\nA_000001,train\n"))
    assert lists.load_list(zipped) == ["A_000001"]


def test_the_training_list_and_the_prepare_list_read_the_same_ids(tmp_path):
    from sspl.data.prepare import read_clip_list

    # A BOM, Windows line ends, a comment before the header, a header that names the VGG-Sound columns.
    text = "# my subset\r\nytid,start_seconds,label,split\r\nabcdefghijk,30,dog,train\r\nzpWuikVorYg,7,cat,test\r\n"
    path = tmp_path / "subset.csv"
    path.write_bytes(("\ufeff" + text).encode())
    expected = ["abcdefghijk_000030", "zpWuikVorYg_000007"]
    assert lists.load_list(path) == expected
    entries = read_clip_list(path)
    assert [(e.id, e.label, e.split) for e in entries] == [
        (expected[0], "dog", "train"),
        (expected[1], "cat", "test"),
    ]
    zipped = tmp_path / "subset.csv.gz"
    zipped.write_bytes(gzip.compress(path.read_bytes()))
    assert [e.id for e in read_clip_list(zipped)] == lists.load_list(zipped) == expected
    # Another header names other columns: the first field is the id.
    other = tmp_path / "pairs.csv"
    other.write_text("video,offset,label\nabcdefghijk,30,dog\n")
    assert lists.load_list(other) == [e.id for e in read_clip_list(other)] == ["abcdefghijk"]


def test_load_list_errors_name_the_problem(tmp_path):
    with pytest.raises(DataError, match="no such list file.*flickr_10k"):
        lists.load_list(tmp_path / "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n# nothing\n")
    with pytest.raises(DataError, match=r"empty\.txt: no ids"):
        lists.load_list(empty)
    # A VGG-Sound row whose start is not a number is an error on its line, not the id "aaaaaaaaaaa".
    bad = tmp_path / "bad.csv"
    bad.write_text("zpWuikVorYg,7,dog,train\naaaaaaaaaaa,ten,dog,train\n")
    with pytest.raises(DataError, match=r"bad\.csv:2: .*start 'ten'"):
        lists.load_list(bad)
    alone = tmp_path / "alone.csv"
    alone.write_text("aaaaaaaaaaa,ten,dog,train\n")  # no good row to compare with: the split column tells
    with pytest.raises(DataError, match=r"alone\.csv:1: "):
        lists.load_list(alone)


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("zpWuikVorYg_000032", ("zpWuikVorYg", 32)),
        ("zpWuikVorYg_32", ("zpWuikVorYg", 32)),
        ("videos/zpWuikVorYg_000032.mp4", ("zpWuikVorYg", 32)),
        ("zpWuikVorYg", ("zpWuikVorYg", None)),
        ("abc_defghij", ("abc_defghij", None)),  # YouTube ids may contain "_"
        ("abc_defghij_000030", ("abc_defghij", 30)),
    ],
)
def test_vggsound_clip(token, expected):
    assert lists.vggsound_clip(token) == expected


def test_flickr_overlap_counts_match_the_measured_leaks():
    # Measured on the published lists (shared/data/README.md): 20 and 1 Flickr test ids.
    with pytest.raises(DataError, match=r"20 training id\(s\).*flickr test set"):
        lists.check_overlap(lists.load_list("flickr_144k"), benchmark="flickr")
    assert lists.check_overlap(lists.load_list("flickr_10k"), allow_overlap=True) == 1
    assert lists.find_overlap(lists.load_list("flickr_10k"), "flickr") == {"flickr": ["4767923306"]}
    assert lists.check_overlap(lists.load_list("senocak_flickr_train_144k")) == 0


def test_vggsound_overlap_counts(caplog):
    vggss_144k = lists.load_list("vggss_144k")
    found = lists.find_overlap(vggss_144k, ("vggss", "vggsound_test"))
    assert {k: len(v) for k, v in found.items()} == {"vggss": 3709, "vggsound_test": 11163}
    with caplog.at_level(logging.WARNING, logger="sspl.data.lists"):
        count = lists.check_overlap(vggss_144k, benchmark="vggsound_test", allow_overlap=True)
    assert count == 11163
    assert "11163" in caplog.text


def test_overlap_matches_every_id_form():
    train = [
        "frames/2432219254.jpg",  # Flickr test id with folder and extension
        "zpWuikVorYg_32",  # VGG-SS clip, start not padded
        "gEvCUcZ6w88",  # bare YouTube id of a VGG-SS clip
        "gEvCUcZ6w88_000031",  # same video, another second: a different clip
        "not_a_test_id",
    ]
    with pytest.raises(DataError) as err:
        lists.check_overlap(train)
    message = str(err.value)
    assert message.startswith("3 training id(s)")
    assert "2432219254.jpg" in message and "zpWuikVorYg_32" in message
    assert "gEvCUcZ6w88_000031" not in message
    with pytest.raises(ValueError, match="unknown benchmark"):
        lists.check_overlap(train, benchmark="imagenet")


def test_sample_ids_is_deterministic_order_free_and_nested():
    ids = [f"id{i:04d}" for i in range(1000)]
    a = lists.sample_ids(ids, 100, seed=3)
    shuffled = ids[:]
    random.Random(0).shuffle(shuffled)
    assert len(a) == 100 and set(a) == set(lists.sample_ids(shuffled, 100, seed=3))
    assert a == sorted(a)  # kept in input order
    assert set(lists.sample_ids(ids, 50, seed=3)) <= set(a)
    assert set(lists.sample_ids(ids, 100, seed=4)) != set(a)
    with pytest.raises(ValueError, match="cannot sample 1001"):
        lists.sample_ids(ids, 1001)


def test_train_val_split():
    ids = [f"clip{i}" for i in range(200)]
    train, val = lists.train_val_split(ids)
    assert len(val) == 10 and len(train) == 190
    assert set(train) | set(val) == set(ids) and not set(train) & set(val)
    reordered = list(reversed(ids)) + ids[:5]  # reordering and duplicates change nothing
    assert sorted(lists.train_val_split(reordered)[1]) == sorted(val)
    assert set(lists.train_val_split(ids, seed=1)[1]) != set(val)
    assert lists.train_val_split(["a", "b", "c"])[1] != []  # at least one held out
    assert lists.train_val_split(ids, val_fraction=0.0) == (ids, [])
    with pytest.raises(ValueError, match="val_fraction"):
        lists.train_val_split(ids, val_fraction=1.0)
