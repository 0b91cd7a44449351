"""Make the extended-protocol goldens by running SLAVC's own evaluator (``utils.EvaluatorFull``).

Not part of the test suite: run it in a temporary copy of github.com/stoneMo/SLAVC (see README.md for
the exact command). It writes seeded inputs (raw maps, boxes in the benchmarks' own formats,
confidences) and what SLAVC's code computes from them:

- ``flickr`` (48 samples, 16 without a box): boxes as SoundNet-Flickr XML files read by SLAVC's
  ``load_all_bboxes(..., 'flickr')`` and drawn by its ``bbox2gtmap`` (consensus of annotators); the
  map upsampled with OpenCV's bilinear resize (the SSPL protocol's rule), min-max normalised by SLAVC's
  ``normalize_img`` and thresholded at 0.5 (``pred_thr``) inside ``EvaluatorFull.update``;
- ``vggss`` (48 samples, 12 without a box, one with a degenerate box): normalised boxes as a
  ``metadata/vggss.json`` read by ``load_all_bboxes(..., 'vggss')`` (union), thresholded at the
  value at index ``n * pred_size`` of the sorted map (SLAVC's ``--relative_prediction``, pred_size 0.5);
- ``lists`` (437 samples): cIoU, confidence, box count and area given directly to the evaluator's
  lists (``N // 200 = 2``, so AP samples every second threshold), with ties and boundary values.

Each golden holds the evaluator's per-sample lists and ``finalize_stats()`` (F1 as SLAVC formats it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np


def _smooth_maps(rng: np.random.Generator, boxes: list, scale: float, side: int = 14) -> np.ndarray:
    """Maps with one or two blobs plus noise, values roughly in [-1, 1] like cosine maps; two thirds of
    the samples with boxes get a blob on their first box (``scale``: box units per map cell)."""
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float64)
    maps = []
    for found in boxes:
        m = rng.normal(0, 0.05, (side, side))
        if found and rng.uniform() < 2 / 3:
            x1, y1, x2, y2 = (v / scale for v in found[0])
            s = max(x2 - x1, y2 - y1) / 3
            m += np.exp(-((yy - (y1 + y2) / 2 + 0.5) ** 2 + (xx - (x1 + x2) / 2 + 0.5) ** 2) / (2 * s * s))
        for _ in range(rng.integers(1, 3)):
            cy, cx, s = rng.uniform(0, side), rng.uniform(0, side), rng.uniform(1.5, 4.5)
            m += rng.uniform(0.3, 1.0) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
        maps.append(np.clip(m * 1.2 - 0.4, -1, 1))
    return np.stack(maps).astype(np.float32)


def _flickr_inputs(rng):
    ids = [f"f{k:03d}" for k in range(48)]
    boxes = {}
    for k, i in enumerate(ids):
        if k % 3 == 2:
            boxes[i] = []  # no visible source
            continue
        x1, y1 = rng.integers(0, 200, 2)
        w, h = rng.integers(8, 256 - max(x1, y1), 2)
        found = []
        for _annotator in range(rng.integers(1, 4)):  # annotators roughly agree
            jx1, jy1, jx2, jy2 = rng.integers(-12, 13, 4)
            found.append(
                [
                    int(max(x1 + jx1, 0)),
                    int(max(y1 + jy1, 0)),
                    int(min(x1 + w + jx2, 256)),
                    int(min(y1 + h + jy2, 256)),
                ]
            )
        boxes[i] = found
    return ids, boxes


def _vggss_inputs(rng):
    ids = [f"v{k:03d}" for k in range(48)]
    boxes = {}
    for k, i in enumerate(ids):
        if k % 4 == 3:
            boxes[i] = []
            continue
        found = []
        for _ in range(rng.integers(1, 3)):
            x1, y1 = rng.uniform(-0.05, 0.85, 2)
            w, h = rng.uniform(0.03, 0.9, 2)
            found.append([round(float(v), 4) for v in (x1, y1, x1 + w, y1 + h)])
        boxes[i] = found
    boxes[ids[0]] = [[0.5, 0.5, 0.501, 0.7]]  # narrower than a pixel: covers none
    return ids, boxes


def _write_flickr_xml(folder: Path, boxes: dict) -> None:
    for i, found in boxes.items():
        if not found:
            continue
        rows = "".join(
            f"<object><bbox><label>x</label><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax>"
            f"<ymax>{b[3]}</ymax></bbox></object>"
            for b in found
        )
        (folder / f"{i}.xml").write_text(f"<annotation>{rows}</annotation>")


def _run_maps(name, ids, boxes, maps, conf, slavc, work):
    import cv2
    import datasets  # SLAVC's
    import utils  # SLAVC's

    if name == "flickr":
        xml_dir = work / "Annotations"
        xml_dir.mkdir()
        _write_flickr_xml(xml_dir, boxes)
        loaded = datasets.load_all_bboxes(str(xml_dir), format="flickr")
    else:
        (work / "metadata").mkdir()
        entries = [{"file": i, "class": "x", "bbox": b} for i, b in boxes.items() if b]
        (work / "metadata" / "vggss.json").write_text(json.dumps(entries))
        here = os.getcwd()
        os.chdir(work)  # SLAVC reads metadata/vggss.json from the working folder
        try:
            loaded = datasets.load_all_bboxes(None, format="vggss")
        finally:
            os.chdir(here)
    evaluator = utils.EvaluatorFull(results_dir=str(work / "results"))
    for k, i in enumerate(ids):
        bb = [list(map(int, b)) for b in loaded.get(i, [])]
        gt = datasets.bbox2gtmap(bb, name) if bb else np.zeros([224, 224])
        pred = utils.normalize_img(cv2.resize(maps[k], (224, 224), interpolation=cv2.INTER_LINEAR))
        thr = 0.5 if name == "flickr" else np.sort(pred.flatten())[int(pred.size * 0.5)]
        evaluator.update(bb, gt, conf[k], pred, thr, i)
    return evaluator


def _run_lists(rng, work):
    import utils

    n = 437
    bb = rng.integers(0, 4, n)
    bb[:3] = 0
    ciou = np.round(rng.uniform(0, 1, n), 2)  # 0.5 and 0.75 occur exactly
    conf = np.round(rng.uniform(0, 1, n), 2)  # ties
    area = rng.choice([0, 500, 1023, 1024, 5000, 9215, 9216, 15000, 20735, 20736, 40000], n).astype(float)
    area[bb == 0] = 0
    evaluator = utils.EvaluatorFull(results_dir=str(work / "results"))
    evaluator.bb_list = [int(v) for v in bb]
    evaluator.ciou_list = [float(v) for v in ciou]
    evaluator.confidence_list = [float(v) for v in conf]
    evaluator.area_list = [float(v) for v in area]
    evaluator.name_list = [f"s{k}" for k in range(n)]
    return evaluator


def _run_confidence(rng, work: Path) -> dict:
    """SLAVC's ``test.validate`` on 12 seeded 7 x 7 cosine maps (its model's resolution), through stand-in
    models that return them divided by tau: the confidences its ``conf_av`` computes, read back from the
    ``sample_cious.txt`` its evaluator writes."""
    import argparse as ap

    import test as slavc_test  # SLAVC's test.py
    import torch

    tau = 0.03
    maps = np.clip(rng.normal(0, 0.45, (12, 7, 7)), -1, 1).astype(np.float32)
    names = [f"c{k:02d}" for k in range(len(maps))]

    class AV(torch.nn.Module):
        def forward(self, image, spec, mode="test"):
            return None, torch.from_numpy(maps[image[:, 0, 0, 0].long().numpy()] / np.float32(tau))

    class Obj(torch.nn.Module):
        def forward(self, image):
            return torch.zeros(image.shape[0], 1, 7, 7)

    boxes = -torch.ones(10, 4).long()
    boxes[0] = torch.tensor([10, 10, 100, 100])
    gt = torch.zeros(224, 224, dtype=torch.float64)
    gt[10:100, 10:100] = 1
    loader = [
        (
            torch.full((1, 3, 4, 4), float(k)),
            torch.zeros(1, 1, 4, 4),
            {"bboxes": boxes[None], "gt_map": gt[None]},
            [names[k]],
        )
        for k in range(len(maps))
    ]
    args = ap.Namespace(tau=tau, alpha=0.4, relative_prediction=False, pred_size=0.5, pred_thr=0.5, gpu=None)
    args.save_visualizations = False
    slavc_test.validate(loader, AV(), Obj(), str(work), args)
    rows = (next((work / "av").glob("results_*")) / "sample_cious.txt").read_text().splitlines()[1:]
    conf = {r.split(",")[0]: float(r.split(",")[4]) for r in rows}
    return {"tau": tau, "ids": names, "maps": maps.tolist(), "confidence": [conf[n] for n in names]}


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and np.isnan(value):
        return None
    return value


def _golden(evaluator) -> dict:
    return _plain(
        {
            "ciou": [float(v) for v in evaluator.ciou_list],
            "area": [float(v) for v in evaluator.area_list],
            "n_boxes": [int(v) for v in evaluator.bb_list],
            "confidence": [float(v) for v in evaluator.confidence_list],
            "finalize_stats": evaluator.finalize_stats(),
        }
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--slavc", required=True, help="a checkout of stoneMo/SLAVC")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    sys.path.insert(0, args.slavc)
    out = Path(args.out).resolve()
    rng = np.random.default_rng(23)
    for name, make in (("flickr", _flickr_inputs), ("vggss", _vggss_inputs)):
        ids, boxes = make(rng)
        maps = _smooth_maps(rng, [boxes[i] for i in ids], 256 / 14 if name == "flickr" else 1 / 14)
        conf = np.round(rng.uniform(0, 1, len(ids)), 3)
        conf[[k for k, i in enumerate(ids) if not boxes[i]]] -= 0.2
        with tempfile.TemporaryDirectory() as tmp:
            evaluator = _run_maps(name, ids, boxes, maps, conf, args.slavc, Path(tmp))
            golden = _golden(evaluator)
        np.savez_compressed(out / f"{name}_inputs.npz", ids=np.array(ids), maps=maps, confidence=conf)
        (out / f"{name}_boxes.json").write_text(json.dumps(boxes, indent=0) + "\n")
        (out / f"{name}_golden.json").write_text(json.dumps({"ids": ids, **golden}, indent=1) + "\n")
    with tempfile.TemporaryDirectory() as tmp:
        golden = _golden(_run_lists(rng, Path(tmp)))
    (out / "lists_golden.json").write_text(json.dumps(golden, indent=1) + "\n")
    with tempfile.TemporaryDirectory() as tmp:
        golden = _run_confidence(rng, Path(tmp))
    (out / "confidence_golden.json").write_text(json.dumps(golden) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
