"""``sspl evaluate --save-overlays``: each drawn sample on the frame its model read.

SSPL's evaluation view is a crop of the 256 x 256 ``frames/<id>.jpg``, and its overlay is that frame at the
protocol's size. The released EZ-VSL / SLAVC / FNAC models (test transform ``resize``,
:data:`~sspl.data.datasets.NATIVE_FRAME_TRANSFORMS`) read the source-size frame of ``sspl prepare
--native-frames`` where the folder has it: their overlay is drawn on that frame, non-square as it may be,
the scored map, mask and boxes stretched over the whole of it as the transform squeezed it
(:func:`sspl.data.projection.evaluation_picture`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from ..data.datasets import NATIVE_FRAME_TRANSFORMS, Sample
from ..data.preprocess import Preprocess
from ..metrics import Protocol

if TYPE_CHECKING:
    from ..data.transforms import CropMapping

__all__ = ["overlay_frame", "write_overlays"]


def overlay_frame(sample: Sample, preprocess: Preprocess) -> tuple[Image.Image, CropMapping | None]:
    """The frame ``sample``'s evaluation read with ``preprocess`` and, when it is the source-size frame,
    where the network's input lay in it (``None``: the 256 x 256 frame, drawn as the evaluation frame)."""
    native = preprocess.test_transform in NATIVE_FRAME_TRANSFORMS and sample.native_frame is not None
    frame = sample.load_frame(native)
    return frame, preprocess.crop_mapping(*frame.size) if native else None


def write_overlays(
    out_dir: Path,
    samples: list[Sample],
    maps: dict,
    gt: dict,
    cious: dict[str, float],
    proto: Protocol,
    preprocess: Preprocess,
    colorbar: bool,
) -> list[tuple[str, str]]:
    """Draw each sample's evaluated map (:func:`sspl.viz.evaluation_overlay`) to ``overlays/<id>.png`` in
    ``out_dir``.

    Returns:
        ``(file name relative to out_dir, caption)`` per sample, for the report page.
    """
    from .. import viz
    from ..io import atomic_save_image

    images = []
    for sample in samples:
        frame, mapping = overlay_frame(sample, preprocess)
        picture = viz.evaluation_overlay(
            frame,
            maps[sample.id],
            gt[sample.id].boxes,
            protocol=proto,
            title=sample.id,
            colorbar=colorbar,
            mapping=mapping,
        )
        name = f"overlays/{sample.id}.png"
        atomic_save_image(out_dir / name, picture)
        images.append((name, f"{sample.id}: cIoU {cious[sample.id]:.3f}"))
    return images
