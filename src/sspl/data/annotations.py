"""Readers of the benchmarks' ground-truth boxes, all returning ``dict[id, Annotation]``.

Formats (``Annotation.box_format`` says how ``sspl.metrics.gt_map_from_boxes`` reads the boxes):

- SoundNet-Flickr per-image XML (the official structure): each child of the root stands for one
  annotator; each of its ``bbox`` elements holds a label element followed by ``xmin, ymin, xmax, ymax``
  in pixels of the 256 x 256 frame. Id = file stem. ``pixels256``.
- SoundNet-Flickr pooled JSON ``{"<id>": [[xmin, ymin, xmax, ymax], ...]}``: the same boxes with the
  annotators pooled (which annotator drew which box is lost; the consensus rule does not need it).
  ``pixels256``.
- VGG-SS JSON ``[{"file": "<ytid>_<start>", "class": ..., "bbox": [[x1, y1, x2, y2], ...]}, ...]``,
  normalised coordinates clamped to [0, 1] on reading (a few published values fall outside).
  ``normalized``. SynthAV writes this format as ``annotations.json`` in its prepared folder. An entry with
  ``"bbox": []`` is a clip whose sound has no visible source (the extended protocol's silent and
  off-screen clips, SynthAV's ``extended`` preset): it reads as an annotation without boxes, which only
  the extended protocol scores; :func:`subset_annotations` refuses it unless asked.
- AVSBench-S4 JSON ``[{"image": ".../<category>/<ytid>/<ytid>_<k>.png", "audio": ..., "gt_box":
  [x1, y1, x2, y2]}, ...]`` in pixels of a 224 x 224 frame, 5 frames per video. Id = the image stem
  ``<ytid>_<k>`` (k = 1..5, frame k covering about second k-1 to k), which is also the name a prepared
  frame gets; class = the category folder. ``pixels224``.

``load_annotations("flickr" | "vggss" | "avsbench")`` reads the copies bundled with the package.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from ..errors import DataError
from .lists import canonical_id, read_asset_text, test_ids

__all__ = [
    "BUNDLED_ANNOTATIONS",
    "Annotation",
    "load_annotations",
    "parse_avsbench_json",
    "parse_flickr_pooled_json",
    "parse_vggss_json",
    "read_flickr_xml",
    "read_flickr_xml_dir",
    "subset_annotations",
    "test_ids",
]

log = logging.getLogger(__name__)

#: Benchmark name -> bundled file under ``sspl/assets/benchmarks``.
BUNDLED_ANNOTATIONS: dict[str, str] = {
    "flickr": "benchmarks/flickr_test250_boxes_pooled.json",
    "vggss": "benchmarks/vggss_test_5158.json",
    "avsbench": "benchmarks/avsbench_s4_boxes.json",
}
_XML_COORDS = ("xmin", "ymin", "xmax", "ymax")


@dataclass(eq=False)
class Annotation:
    """Ground truth of one test sample.

    Attributes:
        id: sample id (the prepared dataset's clip id).
        boxes: ``K x 4`` float64 ``[x1, y1, x2, y2]`` in ``box_format``; K >= 1 for every reader here
            but VGG-SS-style entries with ``"bbox": []`` (K = 0: no visible source).
        box_format: ``"pixels256"``, ``"normalized"`` or ``"pixels224"`` (see ``sspl.metrics``).
        classes: per box, the class or label text ("" when the format has none).
        annotator_ids: per box, the annotator index (-1 when unknown, e.g. pooled boxes).
    """

    id: str
    boxes: np.ndarray
    box_format: str
    classes: tuple[str, ...] = field(default=())
    annotator_ids: tuple[int, ...] = field(default=())

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        k = len(self.boxes)
        if not self.classes:
            self.classes = ("",) * k
        if not self.annotator_ids:
            self.annotator_ids = (-1,) * k
        if len(self.classes) != k or len(self.annotator_ids) != k:
            raise ValueError(f"annotation {self.id}: {k} boxes but per-box fields of another length")


def _coords(values: Iterable[Any], where: str) -> list[float]:
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError) as e:
        raise DataError(f"{where}: box coordinates are not numbers ({e})") from e
    if len(out) != 4 or not all(math.isfinite(v) for v in out):
        raise DataError(f"{where}: a box needs 4 finite coordinates [x1, y1, x2, y2], got {out}")
    return out


# --------------------------------------------------------------------------- SoundNet-Flickr


def read_flickr_xml(path: str | os.PathLike) -> Annotation:
    """One SoundNet-Flickr XML file (official structure, see the module docstring).

    Coordinates are read by tag name when the four ``xmin``/``ymin``/``xmax``/``ymax`` tags are there,
    otherwise by position after the label element, as the official parser does.

    Raises:
        DataError: unreadable XML, a malformed ``bbox``, or no ``bbox`` at all (names the file).
    """
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        raise DataError(f"{path}: cannot read Flickr XML annotation ({e})") from e
    boxes, labels, annotators = [], [], []
    annotator = 0
    for child in root:
        found = False
        for bbox in child.iter("bbox"):
            found = True
            elements = list(bbox)
            by_tag = {e.tag: e.text for e in elements}
            where = f"{path}: bbox {len(boxes)}"
            if all(t in by_tag for t in _XML_COORDS):
                values = [by_tag[t] for t in _XML_COORDS]
            elif len(elements) >= 5:
                values = [e.text for e in elements[1:5]]
            else:
                raise DataError(f"{where}: expected a label and xmin, ymin, xmax, ymax elements")
            boxes.append(_coords(values, where))
            labels.append((elements[0].text or "").strip() if elements and elements[0].tag == "label" else "")
            annotators.append(annotator)
        if found:
            annotator += 1
    if not boxes:
        raise DataError(f"{path}: no bbox element; is this a SoundNet-Flickr annotation file?")
    return Annotation(path.stem, np.array(boxes), "pixels256", tuple(labels), tuple(annotators))


def read_flickr_xml_dir(folder: str | os.PathLike) -> dict[str, Annotation]:
    """Every ``*.xml`` of a folder (the official ``Annotations/`` folder), keyed by file stem."""
    folder = Path(folder)
    files = sorted(folder.glob("*.xml"))
    if not files:
        raise DataError(f"{folder}: no .xml annotation files")
    return {p.stem: read_flickr_xml(p) for p in files}


def parse_flickr_pooled_json(data: Any, source: str = "<json>") -> dict[str, Annotation]:
    """Pooled Flickr boxes ``{"<id>": [[xmin, ymin, xmax, ymax], ...]}`` (256 x 256 pixels)."""
    if not isinstance(data, dict):
        raise DataError(f"{source}: expected an object mapping ids to box lists")
    out = {}
    for sample_id, boxes in data.items():
        where = f"{source}: sample {sample_id}"
        if not isinstance(boxes, list) or not boxes:
            raise DataError(f"{where}: expected a non-empty list of boxes")
        out[str(sample_id)] = Annotation(
            str(sample_id), np.array([_coords(b, where) for b in boxes]), "pixels256"
        )
    return out


# --------------------------------------------------------------------------- VGG-SS / SynthAV


def parse_vggss_json(data: Any, source: str = "<json>") -> dict[str, Annotation]:
    """VGG-SS style entries ``{"file", "class", "bbox": [[x1, y1, x2, y2], ...]}`` (normalised).

    Coordinates are clamped to [0, 1], which changes no ground-truth pixel (the official rule clips
    at the image border too). ``"bbox": []`` gives an annotation without boxes: a clip without a visible
    source.

    Raises:
        DataError: malformed entries, a ``bbox`` that is not a list, or a repeated id (names the entry).
    """
    if not isinstance(data, list):
        raise DataError(f"{source}: expected a list of {{'file', 'class', 'bbox'}} entries")
    out: dict[str, Annotation] = {}
    for index, entry in enumerate(data):
        where = f"{source}: entry {index}"
        if not isinstance(entry, dict) or "file" not in entry or "bbox" not in entry:
            raise DataError(f"{where}: needs 'file' and 'bbox' keys")
        sample_id = str(entry["file"])
        where = f"{where} ({sample_id})"
        boxes = entry["bbox"]
        if not isinstance(boxes, list):
            raise DataError(f"{where}: expected a list of boxes ([] for a clip without a visible source)")
        if sample_id in out:
            raise DataError(f"{where}: id {sample_id} appears twice")
        arr = np.clip(np.array([_coords(b, where) for b in boxes]).reshape(-1, 4), 0.0, 1.0)
        label = str(entry.get("class", ""))
        out[sample_id] = Annotation(sample_id, arr, "normalized", (label,) * len(arr))
    return out


# --------------------------------------------------------------------------- AVSBench


def parse_avsbench_json(
    data: Any, source: str = "<json>", *, skip_empty: bool = True
) -> dict[str, Annotation]:
    """AVSBench-S4 boxes, one entry per frame (see the module docstring for ids).

    Args:
        data: the decoded JSON list.
        source: file name for messages.
        skip_empty: leave out frames whose box has no area (the published file marks 6 frames without
            a visible source with ``[0, 0, 0, 0]``; cIoU is undefined for them). When False they are
            an error.

    Raises:
        DataError: malformed entries or repeated ids.
    """
    if not isinstance(data, list):
        raise DataError(f"{source}: expected a list of {{'image', 'gt_box'}} entries")
    out: dict[str, Annotation] = {}
    skipped = []
    for index, entry in enumerate(data):
        where = f"{source}: entry {index}"
        if not isinstance(entry, dict) or "image" not in entry or "gt_box" not in entry:
            raise DataError(f"{where}: needs 'image' and 'gt_box' keys")
        image = PurePosixPath(str(entry["image"]).replace("\\", "/"))
        sample_id = image.stem
        where = f"{where} ({sample_id})"
        box = _coords(entry["gt_box"], where)
        if box[2] <= box[0] or box[3] <= box[1]:
            if skip_empty:
                skipped.append(sample_id)
                continue
            raise DataError(f"{where}: box {box} has no area")
        if sample_id in out:
            raise DataError(f"{where}: id {sample_id} appears twice")
        category = image.parts[-3] if len(image.parts) >= 3 else ""
        out[sample_id] = Annotation(sample_id, np.array([box]), "pixels224", (category,))
    if skipped:
        log.debug("%s: left out %d frame(s) without a box: %s", source, len(skipped), ", ".join(skipped))
    return out


# --------------------------------------------------------------------------- entry point


def _parse_json(data: Any, source: str) -> dict[str, Annotation]:
    """Dispatch on the JSON's shape."""
    if isinstance(data, dict):
        return parse_flickr_pooled_json(data, source)
    if isinstance(data, list) and data and isinstance(data[0], dict):
        if "gt_box" in data[0]:
            return parse_avsbench_json(data, source)
        if "bbox" in data[0]:
            return parse_vggss_json(data, source)
    raise DataError(
        f"{source}: unrecognised annotation JSON (expected VGG-SS entries with 'file'/'bbox', AVSBench "
        "entries with 'image'/'gt_box', or an object of Flickr box lists)"
    )


def _read_json_file(path: Path) -> Any:
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e})") from e


def load_annotations(benchmark_or_path: str | os.PathLike) -> dict[str, Annotation]:
    """Ground truth of a benchmark, bundled or from a file or folder.

    Args:
        benchmark_or_path: ``"flickr"`` (the 250 test images, pooled annotators), ``"vggss"``
            (5,158 clips), ``"avsbench"`` (AVSBench-S4 test frames); or a path: a ``.json``/``.json.gz``
            file in any format above, a Flickr ``.xml`` file, a folder of Flickr ``.xml`` files, or a
            prepared dataset folder with ``annotations.json`` (SynthAV).

    Returns:
        Sample id -> ``Annotation``.

    Raises:
        DataError: unknown name, missing path, or a malformed file (named in the message).
    """
    if isinstance(benchmark_or_path, str) and benchmark_or_path in BUNDLED_ANNOTATIONS:
        relpath = BUNDLED_ANNOTATIONS[benchmark_or_path]
        return _parse_json(json.loads(read_asset_text(relpath)), f"sspl/assets/{relpath}")
    path = Path(benchmark_or_path)
    if path.is_dir():
        prepared = path / "annotations.json"
        if prepared.is_file():
            return _parse_json(_read_json_file(prepared), str(prepared))
        return read_flickr_xml_dir(path)
    if path.is_file():
        if path.suffix.lower() == ".xml":
            annotation = read_flickr_xml(path)
            return {annotation.id: annotation}
        return _parse_json(_read_json_file(path), str(path))
    raise DataError(
        f"{path}: no such annotation file or folder, and not a bundled benchmark "
        f"({', '.join(sorted(BUNDLED_ANNOTATIONS))})"
    )


def subset_annotations(
    annotations: dict[str, Annotation], ids: Iterable[str], *, allow_empty: bool = False
) -> dict[str, Annotation]:
    """The annotations of the given ids, e.g. the clips of a prepared test set (VGG-SS: 4,692 of 5,158).

    An id is looked up as given, then in its canonical form (:func:`sspl.data.lists.canonical_id`), so a
    clip prepared from ``gEvCUcZ6w88_30.mp4`` finds the VGG-SS boxes of ``gEvCUcZ6w88_000030``; the
    result is keyed by the ids as given.

    Args:
        annotations: id -> annotation (:func:`load_annotations`).
        ids: the clips wanted.
        allow_empty: accept annotations without boxes (clips without a visible source), which only the
            extended protocol scores; by default they are an error, as a missing annotation is.

    Raises:
        DataError: listing the ids that have no annotation (never a silent zero map), or, unless
            ``allow_empty``, those whose annotation holds no box.
    """
    ids = list(dict.fromkeys(ids))
    found = {i: annotations.get(i, annotations.get(canonical_id(i))) for i in ids}
    missing = [i for i, a in found.items() if a is None]
    if missing:
        shown = ", ".join(missing[:10]) + (f", ... ({len(missing)} in all)" if len(missing) > 10 else "")
        raise DataError(f"{len(missing)} sample(s) have no ground-truth annotation: {shown}")
    empty = [i for i, a in found.items() if len(a.boxes) == 0]
    if empty and not allow_empty:
        shown = ", ".join(empty[:10]) + (f", ... ({len(empty)} in all)" if len(empty) > 10 else "")
        raise DataError(
            f"{len(empty)} sample(s) have no box (no visible source: an extended-protocol set): {shown}; "
            "the standard protocol scores clips with a visible source only"
        )
    return {i: a if a.id == i else replace(a, id=i) for i, a in found.items()}
