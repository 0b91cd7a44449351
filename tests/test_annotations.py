"""Readers of the benchmark annotation formats (bundled copies and files written by the tests)."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from sspl import metrics
from sspl.data import annotations as ann
from sspl.data import lists
from sspl.errors import DataError

FLICKR_XML = """<annotation>
  <filename>{name}.jpg</filename>
  <object>
    <bbox><label>dog</label><xmin>10</xmin><ymin>20</ymin><xmax>110</xmax><ymax>220</ymax></bbox>
    <bbox><label>dog</label><xmin>0</xmin><ymin>0</ymin><xmax>50</xmax><ymax>60</ymax></bbox>
  </object>
  <object>
    <bbox><label>dog</label><xmin>12</xmin><ymin>22</ymin><xmax>100</xmax><ymax>200</ymax></bbox>
  </object>
</annotation>
"""


def test_bundled_flickr_boxes_cover_the_250_test_ids():
    flickr = ann.load_annotations("flickr")
    assert set(flickr) == set(lists.test_ids("flickr"))
    counts = [len(a.boxes) for a in flickr.values()]
    assert min(counts) == 2 and max(counts) == 7  # measured (the data README says "2-10")
    first = flickr["10000130166"]
    assert first.box_format == "pixels256"
    np.testing.assert_array_equal(first.boxes[0], [69, 1, 216, 256])


def test_bundled_vggss_boxes_are_clamped():
    vggss = ann.load_annotations("vggss")
    assert len(vggss) == 5158 and set(vggss) == set(lists.test_ids("vggss"))
    boxes = np.concatenate([a.boxes for a in vggss.values()])
    assert boxes.min() == 0.0 and boxes.max() == 1.0  # one published value is -2.9e16
    assert vggss["zpWuikVorYg_000032"].classes == ("elk bugling",)


def test_bundled_avsbench_ids_and_empty_frames():
    avs = ann.load_annotations("avsbench")
    assert len(avs) == 3700 - 6  # six frames have the empty box [0, 0, 0, 0]
    assert "tA_NrYVTlps_1" not in avs and "tA_NrYVTlps_2" in avs
    first = avs["0d9u2CymIxc_1"]
    assert first.box_format == "pixels224" and first.classes == ("helicopter",)
    np.testing.assert_array_equal(first.boxes, [[21, 72, 196, 140]])
    assert len({a.classes[0] for a in avs.values()}) == 23


def test_every_bundled_annotation_gives_a_ground_truth_map():
    empty = []
    for name in ("flickr", "vggss", "avsbench"):
        p = metrics.BENCHMARKS[name]
        for a in ann.load_annotations(name).values():
            gt = metrics.gt_map_from_boxes(
                a.boxes, rule=p.rule, box_format=a.box_format, sample_id=a.id, allow_empty=True
            )
            if not gt.any():
                empty.append(a.id)
    # Two published VGG-SS boxes have no area (y1 == y2 == 1; x2 = 0 < x1); the second is among the
    # 4,692 clips SSPL evaluated, where the official code scores it 0 (Protocol.empty_gt).
    assert empty == ["M1P1xla8rg0_000000", "MKC9LvRivTM_000030"]
    assert "MKC9LvRivTM_000030" in lists.test_ids("vggss", "sspl")


def test_flickr_xml_by_tag_and_by_position(tmp_path):
    path = tmp_path / "12345.xml"
    path.write_text(FLICKR_XML.format(name="12345"))
    a = ann.read_flickr_xml(path)
    assert a.id == "12345" and a.box_format == "pixels256"
    np.testing.assert_array_equal(a.boxes, [[10, 20, 110, 220], [0, 0, 50, 60], [12, 22, 100, 200]])
    assert a.annotator_ids == (0, 0, 1) and a.classes == ("dog",) * 3

    # The official parser reads coordinates by position after the label; so do we when tags differ.
    positional = tmp_path / "777.xml"
    positional.write_text(
        "<annotation><object><bbox><label>cat</label><a>1</a><b>2</b><c>30</c><d>40</d></bbox>"
        "</object></annotation>"
    )
    np.testing.assert_array_equal(ann.read_flickr_xml(positional).boxes, [[1, 2, 30, 40]])


def test_flickr_xml_folder_matches_the_reference_structure(data_dir):
    folder = ann.load_annotations(data_dir / "metrics" / "flickr_annotations")
    assert len(folder) == 60
    np.testing.assert_array_equal(folder["sample000"].boxes, [[106, 53, 256, 196], [101, 187, 239, 256]])
    assert folder["sample000"].annotator_ids == (0, 1)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "<annotation><object><bbox><label>x</label><xmin>1</xmin></bbox></object></annotation>",
            "expected a label",
        ),
        ("<annotation><filename>a.jpg</filename></annotation>", "no bbox element"),
        ("<annotation><object>", "cannot read Flickr XML"),
        (
            "<annotation><object><bbox><label>x</label><xmin>a</xmin><ymin>1</ymin><xmax>2</xmax>"
            "<ymax>3</ymax></bbox></object></annotation>",
            "not numbers",
        ),
    ],
)
def test_malformed_flickr_xml_names_the_file(tmp_path, text, message):
    path = tmp_path / "bad.xml"
    path.write_text(text)
    with pytest.raises(DataError, match=rf"bad\.xml.*{message}"):
        ann.load_annotations(path)


def test_json_formats_are_recognised(tmp_path):
    pooled = tmp_path / "pooled.json"
    pooled.write_text(json.dumps({"111": [[0, 0, 128, 128], [10, 10, 20, 20]]}))
    assert ann.load_annotations(pooled)["111"].annotator_ids == (-1, -1)

    vggss = [{"file": "abcdefghijk_000010", "class": "dog", "bbox": [[-0.1, 0.2, 1.3, 0.9]]}]
    zipped = tmp_path / "boxes.json.gz"
    zipped.write_bytes(gzip.compress(json.dumps(vggss).encode()))
    np.testing.assert_array_equal(
        ann.load_annotations(zipped)["abcdefghijk_000010"].boxes, [[0, 0.2, 1, 0.9]]
    )

    # A prepared SynthAV folder carries its boxes as annotations.json in the VGG-SS format.
    (tmp_path / "synth").mkdir()
    (tmp_path / "synth" / "annotations.json").write_text(json.dumps(vggss))
    assert ann.load_annotations(tmp_path / "synth")["abcdefghijk_000010"].box_format == "normalized"

    avs = [
        {"image": "/x/s4/test/dog/abcdefghijk/abcdefghijk_3.png", "audio": "a.wav", "gt_box": [1, 2, 30, 40]}
    ]
    avs_path = tmp_path / "avs.json"
    avs_path.write_text(json.dumps(avs))
    a = ann.load_annotations(avs_path)["abcdefghijk_3"]
    assert a.classes == ("dog",) and a.box_format == "pixels224"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([{"file": "a", "bbox": "none"}], r"entry 0 \(a\): expected a list of boxes"),
        ([{"file": "a", "bbox": [[0, 0, 1, 1]]}, {"file": "a", "bbox": [[0, 0, 1, 1]]}], "appears twice"),
        ([{"file": "a", "bbox": [[0, 0, 1]]}], "4 finite coordinates"),
        ([{"name": "a"}], "unrecognised annotation JSON"),
        ({"111": []}, "sample 111: expected a non-empty list"),
    ],
)
def test_malformed_json_names_the_file_and_entry(tmp_path, payload, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(payload))
    with pytest.raises(DataError, match=rf"bad\.json.*{message}"):
        ann.load_annotations(path)


def test_avsbench_empty_box_is_an_error_when_not_skipped():
    entry = {"image": "dog/v/v_5.png", "gt_box": [0.0, 0.0, 0.0, 0.0]}
    assert ann.parse_avsbench_json([entry]) == {}
    with pytest.raises(DataError, match="v_5.*has no area"):
        ann.parse_avsbench_json([entry], skip_empty=False)


def test_unknown_benchmark_or_path(tmp_path):
    with pytest.raises(DataError, match="not a bundled benchmark.*avsbench, flickr, vggss"):
        ann.load_annotations(tmp_path / "nothing.json")
    assert ann.test_ids is lists.test_ids


def test_subset_annotations_names_missing_ids():
    vggss = ann.load_annotations("vggss")
    subset = ann.subset_annotations(vggss, lists.test_ids("vggss", "sspl"))
    assert len(subset) == 4692
    with pytest.raises(DataError, match=r"2 sample\(s\) have no ground-truth annotation: nope_1, nope_2"):
        ann.subset_annotations(vggss, ["zpWuikVorYg_000032", "nope_1", "nope_2"])
    # A clip prepared from `gEvCUcZ6w88_30.mp4` keeps that id and finds the boxes of gEvCUcZ6w88_000030.
    short = ann.subset_annotations(vggss, ["gEvCUcZ6w88_30"])
    assert list(short) == ["gEvCUcZ6w88_30"] and short["gEvCUcZ6w88_30"].id == "gEvCUcZ6w88_30"
    np.testing.assert_array_equal(short["gEvCUcZ6w88_30"].boxes, vggss["gEvCUcZ6w88_000030"].boxes)
