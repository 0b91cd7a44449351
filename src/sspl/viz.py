"""Pictures of localization results: heat-map overlays, evaluated samples, the PCM refinement strip,
success curves and contact sheets (the HTML report that shows them is :mod:`sspl.html_report`, its names
re-exported here).

One colour map everywhere, :data:`COLORMAP` (``"viridis"``): 0 (dark purple) is the least and 1 (yellow)
the most audio-like location of a map after min-max normalisation. Viridis is perceptually uniform: equal
steps of the map look like equal steps of colour, and its lightness rises monotonically from 0 to 1, so
the order of two places reads right in greyscale and for colour-blind viewers. ``jet`` (the paper's
figures) is neither: its bright cyan and yellow bands draw edges that are not in the map, and its red end
vanishes on red objects and on the warm tones of real frames. Viridis has no red at all.

Overlays weight the colour by the heat (:func:`heat_alpha`): ``alpha`` at the map's maximum, falling
linearly to ``alpha * ALPHA_FLOOR`` at its minimum, so the image stays legible where the sound is not
and the colour concentrates where it is. Written overlays carry a colour bar by default, video frames
their time (:func:`stamp_time`).

Every function returns an RGB ``PIL.Image``; save it with :func:`sspl.io.atomic_save_image`.

Heat arrays (``heat``) are ``H x W`` float arrays in [0, 1]; a NaN marks a pixel without prediction
(outside the square the network saw): overlays show it greyed, i.e. desaturated and dimmed to
:data:`OUTSIDE_BRIGHTNESS` of its luminance, with no colour on top.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .data.images import to_rgb
from .data.projection import evaluation_picture, spread_cells
from .html_report import ReportSection, write_html_report
from .metrics import (
    BENCHMARKS,
    Protocol,
    auc,
    ciou,
    gt_map_from_boxes,
    normalize_map,
    success_thresholds,
    threshold_map,
    upsample_map,
)

if TYPE_CHECKING:  # matplotlib is imported where a picture needs it: `import sspl.viz` is light
    from matplotlib.figure import Figure

    from .data.transforms import CropMapping

__all__ = [
    "ALPHA_FLOOR",
    "COLORMAP",
    "DEFAULT_ALPHA",
    "EVALUATION_SCALE",
    "OUTSIDE_BRIGHTNESS",
    "ReportSection",
    "add_colorbar",
    "colorize",
    "contact_sheet",
    "evaluation_overlay",
    "format_timestamp",
    "heat_alpha",
    "learning_curves_plot",
    "metric_label",
    "overlay_heatmap",
    "pcm_strip",
    "stamp_time",
    "success_curves_plot",
    "write_html_report",
]

COLORMAP = "viridis"
#: Luminance factor of pixels without prediction in overlays.
OUTSIDE_BRIGHTNESS = 0.5
#: Weight of the colour at a map's maximum.
DEFAULT_ALPHA = 0.6
#: Share of ``alpha`` left at a map's minimum (so the colour bar's low end still shows, faintly).
ALPHA_FLOOR = 0.25
#: Evaluation overlays are drawn at this multiple of the protocol's frame (224 -> 448 pixels).
EVALUATION_SCALE = 2
BOX_COLOR = (0, 255, 0)
MASK_COLOR = (255, 255, 255)
HEAT_LABEL = "normalised similarity"

_LUT_SIZE = 256


@lru_cache(maxsize=1)
def _lut() -> np.ndarray:
    """``256 x 3`` uint8 colours of :data:`COLORMAP`."""
    from matplotlib import colormaps

    rgba = colormaps[COLORMAP](np.linspace(0.0, 1.0, _LUT_SIZE))
    return np.round(rgba[:, :3] * 255).astype(np.uint8)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


#: entries a plot's legend holds inside the axes; with more, it goes to the right and the figure widens
_LEGEND_INSIDE = 5
_LEGEND_WIDTH = 3.6  # inches added for an outside legend


def _curve_style(i: int) -> dict:
    """Colour and line style of the ``i``-th curve: the 10 default colours, then dashed, then dotted,
    so no two of up to 30 curves look alike."""
    return {"color": f"C{i % 10}", "linestyle": ("-", "--", ":")[(i // 10) % 3]}


def _place_legend(fig: Figure, ax, entries: int) -> None:
    if entries <= _LEGEND_INSIDE:
        ax.legend(fontsize=8)
        return
    width, height = fig.get_size_inches()
    fig.set_size_inches(width + _LEGEND_WIDTH, height)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)


def _render(fig: Figure) -> Image.Image:
    """Draw a matplotlib figure on an Agg canvas and return its pixels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3].copy())


def _check_heat(heat: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
    arr = np.asarray(heat, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"heat must be H x W, got shape {arr.shape}")
    if size is not None and arr.shape != (size[1], size[0]):
        raise ValueError(f"heat is {arr.shape[1]} x {arr.shape[0]} but the image is {size[0]} x {size[1]}")
    finite = arr[np.isfinite(arr)]
    if finite.size and (finite.min() < 0 or finite.max() > 1):
        raise ValueError(
            f"heat must lie in [0, 1] (NaN for no prediction), got [{finite.min()}, {finite.max()}]"
        )
    return arr


# --------------------------------------------------------------------------------------------------
# Heat maps
# --------------------------------------------------------------------------------------------------


def _lut_index(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Colour-table index of each pixel of a checked heat array (0 where NaN), and where it is finite."""
    valid = np.isfinite(arr)
    return np.round(np.where(valid, arr, 0) * (_LUT_SIZE - 1)).astype(np.intp), valid


def colorize(heat: np.ndarray) -> np.ndarray:
    """Colour a heat array with :data:`COLORMAP`.

    Args:
        heat: ``H x W`` values in [0, 1]; NaN pixels come out black.

    Returns:
        ``H x W x 3`` uint8 RGB.
    """
    index, valid = _lut_index(_check_heat(heat))
    out = _lut()[index]
    out[~valid] = 0
    return out


def heat_alpha(heat: np.ndarray, alpha: float = DEFAULT_ALPHA) -> np.ndarray:
    """The weight of the colour at each pixel of an overlay: ``alpha * (ALPHA_FLOOR + (1 - ALPHA_FLOOR)
    * heat)``, i.e. ``alpha`` at heat 1 and ``alpha * ALPHA_FLOOR`` at heat 0; 0 where heat is NaN.

    Args:
        heat: ``H x W`` values in [0, 1] (NaN: no prediction).
        alpha: the weight at heat 1, in [0, 1].

    Returns:
        ``H x W`` float32 weights in [0, ``alpha``].
    """
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    arr = _check_heat(heat)
    weight = alpha * (ALPHA_FLOOR + (1 - ALPHA_FLOOR) * arr)
    return np.where(np.isfinite(arr), weight, 0).astype(np.float32)


def overlay_heatmap(
    image: Image.Image, heat: np.ndarray, *, alpha: float = DEFAULT_ALPHA, colorbar: bool = False
) -> Image.Image:
    """Blend a heat map onto an image of the same size, the colour weighted by the heat (:func:`heat_alpha`).

    Args:
        image: any PIL mode (converted with :func:`sspl.data.images.to_rgb`).
        heat: ``H x W`` in [0, 1] at the image's size; NaN pixels (no prediction) are greyed.
        alpha: weight of the colour at heat 1 (``alpha * ALPHA_FLOOR`` at heat 0).
        colorbar: append a colour bar on the right (the result is wider than ``image``).

    Returns:
        RGB image, ``W x H`` (plus the bar's width).
    """
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    rgb = to_rgb(image)
    arr = _check_heat(heat, rgb.size)
    index, valid = _lut_index(arr)
    # Table look-ups and PIL's C loops: this runs once per video frame, where float arrays cost ~10x more.
    levels = np.linspace(0, 1, _LUT_SIZE, dtype=np.float32)[None]
    weights = np.round(255 * heat_alpha(levels, alpha)[0]).astype(np.uint8)
    out = Image.composite(Image.fromarray(_lut()[index]), rgb, Image.fromarray(weights[index]))
    if not valid.all():
        greyed = rgb.convert("L").point(lambda v: v * OUTSIDE_BRIGHTNESS).convert("RGB")
        out = Image.composite(out, greyed, Image.fromarray(valid.view(np.uint8) * np.uint8(255)))
    return add_colorbar(out) if colorbar else out


def format_timestamp(seconds: float) -> str:
    """``mm:ss.s`` (minutes grow past 99 as needed), rounded to the tenth: 75.04 -> ``"01:15.0"``."""
    tenths = max(0, round(seconds * 10))
    minutes, rest = divmod(tenths, 600)
    return f"{minutes:02d}:{rest // 10:02d}.{rest % 10}"


def stamp_time(image: Image.Image, seconds: float) -> Image.Image:
    """A copy of ``image`` with its time (:func:`format_timestamp`) in white on a dark box, top left;
    the text is about a sixteenth of the image's height (10 to 48 pixels)."""
    out = to_rgb(image).copy()
    size = int(np.clip(out.height / 16, 10, 48))
    draw = ImageDraw.Draw(out)
    text = format_timestamp(seconds)
    pad = max(2, size // 5)
    _, _, right, bottom = draw.textbbox((pad, pad), text, font=_font(size))
    draw.rectangle((0, 0, right + pad, bottom + pad), fill=(0, 0, 0))
    draw.text((pad, pad), text, fill=(255, 255, 255), font=_font(size))
    return out


@lru_cache(maxsize=8)
def _colorbar_strip(height: int) -> Image.Image:
    """A vertical colour bar of :data:`COLORMAP` over [0, 1], ``height`` pixels tall, even width.

    The label is drawn only where it fits (``height >= 200``).
    """
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    labelled = height >= 200
    width, dpi = (64 if labelled else 44), 100
    fontsize = float(np.clip(height / 36, 5, 9))
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    margin = min(8, height // 10)
    # Placed in pixels: a 10-px bar, then the tick labels and the rotated label to its right.
    ax = fig.add_axes((4 / width, margin / height, 10 / width, 1 - 2 * margin / height))
    bar = fig.colorbar(ScalarMappable(norm=Normalize(0, 1), cmap=COLORMAP), cax=ax, ticks=[0, 0.5, 1])
    bar.ax.tick_params(labelsize=fontsize, length=2, pad=1)
    if labelled:
        bar.set_label(HEAT_LABEL, fontsize=fontsize, labelpad=2)
    return _render(fig)


def add_colorbar(image: Image.Image) -> Image.Image:
    """``image`` with a colour bar of :data:`COLORMAP` (0 to 1) appended on its right."""
    rgb = to_rgb(image)
    strip = _colorbar_strip(rgb.height)
    out = Image.new("RGB", (rgb.width + strip.width, rgb.height), (255, 255, 255))
    out.paste(rgb, (0, 0))
    out.paste(strip, (rgb.width, 0))
    return out


# --------------------------------------------------------------------------------------------------
# Evaluated samples and the PCM strip
# --------------------------------------------------------------------------------------------------


def _outline(mask: np.ndarray, width: int = 2) -> np.ndarray:
    """Pixels of ``mask`` within ``width`` pixels of its border (4-neighbourhood)."""
    inner = mask.copy()
    for _ in range(width):
        padded = np.pad(inner, 1, constant_values=False)
        inner = inner & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def _paint(arr: np.ndarray, mask: np.ndarray, color: tuple[int, int, int]) -> None:
    arr[mask] = color


def _box_masks(boxes: np.ndarray, protocol: Protocol) -> list[np.ndarray]:
    """Each box rasterised exactly as the protocol's ground truth rasterises it (degenerate ones dropped)."""
    masks = []
    for box in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        one = gt_map_from_boxes(
            box[None], rule="union", box_format=protocol.box_format, size=protocol.size, allow_empty=True
        )
        if one.any():
            masks.append(one > 0)
    return masks


def _label(image: Image.Image, text: str, *, height: int = 20) -> Image.Image:
    """``image`` under a white header line holding ``text``."""
    out = Image.new("RGB", (image.width, image.height + height), (255, 255, 255))
    out.paste(image, (0, height))
    ImageDraw.Draw(out).text((4, 2), text, fill=(0, 0, 0), font=_font(height - 6))
    return out


def evaluation_overlay(
    image: Image.Image,
    raw_map: np.ndarray,
    boxes: np.ndarray | Sequence[Sequence[float]],
    *,
    protocol: Protocol = BENCHMARKS["flickr"],
    alpha: float = DEFAULT_ALPHA,
    title: str | None = None,
    scale: int = EVALUATION_SCALE,
    colorbar: bool = True,
    mapping: CropMapping | None = None,
) -> Image.Image:
    """An evaluated sample as the protocol scores it: heat map, thresholded mask and ground truth.

    The picture is the evaluation frame (``image`` resized to ``protocol.size`` squared, the frame the
    benchmark's boxes are given in), drawn ``scale`` times larger: each scored pixel is a ``scale x
    scale`` block. The mask (white outline) and each ground-truth box (green, as rasterised by the
    protocol's box format) come from :mod:`sspl.metrics` (``upsample_map`` -> ``normalize_map`` ->
    ``threshold_map``, ``gt_map_from_boxes``), so they are exactly what was scored; the header gives the
    sample's cIoU. With ``mapping``, the picture is ``image`` itself (e.g. a non-square source frame), each
    scored pixel drawn where the network saw it (:func:`~sspl.data.projection.evaluation_picture`).

    Args:
        image: the frame (any mode and size).
        raw_map: ``h x w`` raw similarity map.
        boxes: ``K x 4`` ground-truth boxes in ``protocol.box_format``; none (K = 0) for a clip without a
            visible source (the extended protocol), whose header then says so instead of a cIoU.
        protocol: the benchmark protocol (``sspl.metrics.BENCHMARKS[name]``).
        alpha: heat-map weight at the map's maximum (see :func:`heat_alpha`).
        title: header text before the cIoU (e.g. the sample id).
        scale: display size as a multiple of ``protocol.size`` (a whole number, at least 1).
        colorbar: append a colour bar on the right.
        mapping: where the network's input lay in ``image`` (``Preprocess.crop_mapping``).

    Returns:
        RGB image, ``size * scale`` wide (plus the colour bar's width) and ``size * scale`` plus a
        ``16 + 4 * scale``-pixel header tall; with ``mapping``, the enlarged ``image`` and the header.
    """
    if not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be a whole number >= 1, got {scale!r}")
    size = protocol.size
    raw = np.asarray(raw_map, dtype=np.float32)
    if raw.ndim != 2:
        raise ValueError(f"raw_map must be h x w, got shape {raw.shape}")
    heat = normalize_map(upsample_map(raw, size))
    mask = threshold_map(heat, protocol.threshold, protocol.threshold_value)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(boxes) == 0:  # a clip without a visible source (the extended protocol): no cIoU to show
        score_text = "no visible source"
    else:
        gt = gt_map_from_boxes(
            boxes,
            rule=protocol.rule,
            box_format=protocol.box_format,
            size=size,
            consensus_divisor=protocol.consensus_divisor,
            allow_empty=True,
        )
        score_text = f"cIoU {ciou(mask, gt) if gt.any() else 0.0:.3f}"
    frame, rows, cols = evaluation_picture(image, size, scale, mapping)
    arr = np.array(overlay_heatmap(frame, spread_cells(heat, rows, cols, np.nan), alpha=alpha))
    _paint(arr, _outline(spread_cells(mask, rows, cols)), MASK_COLOR)
    for box in _box_masks(boxes, protocol):
        _paint(arr, _outline(spread_cells(box, rows, cols)), BOX_COLOR)
    picture = Image.fromarray(arr)
    header = score_text if title is None else f"{title}  {score_text}"
    return _label(add_colorbar(picture) if colorbar else picture, header, height=16 + 4 * scale)


def pcm_strip(
    image: Image.Image,
    step_maps: np.ndarray,
    *,
    boxes: np.ndarray | Sequence[Sequence[float]] | None = None,
    protocol: Protocol = BENCHMARKS["flickr"],
    shared_scale: bool = True,
    alpha: float = DEFAULT_ALPHA,
) -> Image.Image:
    """The PCM refinement strip (the paper's Figure 7): the frame, then the map after each PCM step.

    Args:
        image: the frame (any mode and size); shown as the evaluation frame (``protocol.size`` squared).
        step_maps: ``T x h x w`` raw maps after steps t = 1..T (``model.pcm_step_maps(...)[:, i]``).
        boxes: optional ground-truth boxes (``protocol.box_format``) drawn on the first panel.
        protocol: gives the frame size and the box format.
        shared_scale: normalise all steps with one min and max, so a map that grows more definite over
            the steps looks so (the paper's reading of Figure 7); ``False`` normalises each step alone.
        alpha: heat-map weight.

    Returns:
        RGB image of ``T + 1`` labelled panels side by side.
    """
    steps = np.asarray(step_maps, dtype=np.float32)
    if steps.ndim != 3 or steps.shape[0] < 1:
        raise ValueError(f"step_maps must be T x h x w, got shape {steps.shape}")
    size = protocol.size
    frame = evaluation_picture(image, size)[0]
    up = upsample_map(steps, size)  # T x size x size
    if shared_scale:
        lo, hi = float(up.min()), float(up.max())
        heats = (up - lo) / (hi - lo) if hi > lo else np.ones_like(up)
    else:
        heats = normalize_map(up)
    first = np.array(frame)
    if boxes is not None:
        for box in _box_masks(np.asarray(boxes), protocol):
            _paint(first, _outline(box), BOX_COLOR)
    panels = [_label(Image.fromarray(first), "annotation" if boxes is not None else "frame")]
    panels += [
        _label(overlay_heatmap(frame, np.clip(h, 0, 1), alpha=alpha), f"t = {t}")
        for t, h in enumerate(heats, start=1)
    ]
    gap = 4
    out = Image.new("RGB", (len(panels) * (size + gap) - gap, panels[0].height), (255, 255, 255))
    for i, panel in enumerate(panels):
        out.paste(panel, (i * (size + gap), 0))
    return out


# --------------------------------------------------------------------------------------------------
# Curves and sheets
# --------------------------------------------------------------------------------------------------


def success_curves_plot(
    curves: Mapping[str, Sequence[float]],
    *,
    step: float = 0.05,
    title: str | None = None,
    figsize: tuple[float, float] = (5.0, 4.0),
    dpi: int = 100,
) -> Image.Image:
    """Success rate against the cIoU threshold for several runs on one plot (the paper's Figure 4).

    Args:
        curves: run name -> success rates at cIoU ``>= step * i`` (``EvalResult.success_curve``, 21
            values on the 0.05 grid by default); all of the same length.
        step: spacing of the thresholds.
        title: plot title.
        figsize, dpi: figure size in inches and resolution.

    Returns:
        RGB image of the plot; the legend gives each run's AUC (:func:`sspl.metrics.auc`).
    """
    if not curves:
        raise ValueError("no curves to plot")
    lengths = {len(c) for c in curves.values()}
    if len(lengths) != 1 or min(lengths) < 2:
        raise ValueError(f"curves must share one length of at least 2, got lengths {sorted(lengths)}")
    x = success_thresholds(lengths.pop(), step)
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi)
    ax = fig.add_subplot()
    for i, (name, curve) in enumerate(curves.items()):
        y = np.asarray(curve, dtype=np.float64)
        if not np.all(np.isfinite(y)) or y.min() < 0 or y.max() > 1:
            raise ValueError(f"curve {name!r} has values outside [0, 1]")
        ax.plot(x, y, marker="o", markersize=3, label=f"{name} (AUC {auc(y, step):.3f})", **_curve_style(i))
    ax.set_xlabel("cIoU threshold")
    ax.set_ylabel("success rate")
    ax.set_xlim(0, x[-1])
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    _place_legend(fig, ax, len(curves))
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return _render(fig)


def metric_label(key: str) -> str:
    """A logged metric's key in words: ``val_ciou@0.5`` -> ``validation cIoU@0.5``, ``val_auc`` ->
    ``validation AUC``; other keys as they are."""
    split, _, name = key.partition("_")
    words = {"ciou": "cIoU", "auc": "AUC", "loss": "loss"}
    metric, at, rest = name.partition("@")
    if split not in ("val", "train") or metric not in words:
        return key
    return f"{'validation' if split == 'val' else 'training'} {words[metric]}{at}{rest}"


def learning_curves_plot(
    histories: Mapping[str, Sequence[Mapping[str, Any]]],
    key: str = "val_ciou@0.5",
    *,
    references: Mapping[str, float] | None = None,
    title: str | None = None,
    ylabel: str | None = None,
    figsize: tuple[float, float] = (5.0, 4.0),
    dpi: int = 100,
) -> Image.Image:
    """A validation metric against the epoch for several runs, with constant reference levels.

    Args:
        histories: run name -> its ``history.json`` records; the ``"val"`` records holding ``key`` are
            plotted (epoch 0 is the untrained model).
        key: the metric of the records to plot.
        references: name -> level drawn as a dashed horizontal line (e.g. a baseline or the oracle).
        title: plot title.
        ylabel: label of the metric's axis (default: ``key`` in words, :func:`metric_label`).
        figsize, dpi: figure size in inches and resolution.

    Returns:
        RGB image of the plot.

    Raises:
        ValueError: a run has no record with ``key``.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi)
    ax = fig.add_subplot()
    for i, (name, history) in enumerate(histories.items()):
        points = [(r["epoch"], r[key]) for r in history if r.get("type") == "val" and key in r]
        if not points:
            raise ValueError(f"run {name!r} has no validation record with {key!r}")
        ax.plot(*zip(*points), marker="o", markersize=3, label=name, **_curve_style(i))
    references = references or {}
    for k, (name, level) in enumerate(references.items()):
        # thin and black-dashed whatever the index, so a reference never looks like a run
        ax.axhline(level, linestyle=(0, (4, 2 + 2 * k)), linewidth=1, color="black", label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel or metric_label(key))
    ax.grid(alpha=0.3)
    _place_legend(fig, ax, len(histories) + len(references))
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return _render(fig)


def contact_sheet(
    images: Sequence[Image.Image],
    *,
    labels: Sequence[str] | None = None,
    columns: int = 4,
    thumb_width: int = 320,
    gap: int = 4,
) -> Image.Image:
    """A grid of thumbnails, each under an optional label.

    Args:
        images: the pictures (any modes and sizes; each scaled to ``thumb_width``, aspect kept up to a
            height of four widths).
        labels: one text per image.
        columns: thumbnails per row.
        thumb_width: thumbnail width in pixels.
        gap: white space between thumbnails.

    Returns:
        RGB image.
    """
    if not images:
        raise ValueError("contact sheet of zero images")
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"{len(labels)} labels for {len(images)} images")
    if columns < 1 or thumb_width < 1:
        raise ValueError(f"columns and thumb_width must be positive, got {columns}, {thumb_width}")
    thumbs = []
    for img in images:
        rgb = to_rgb(img)
        # Aspect kept, but no taller than 4 widths: a sliver of a video stays a readable sheet.
        h = min(4 * thumb_width, max(1, round(rgb.height * thumb_width / rgb.width)))
        thumbs.append(rgb.resize((thumb_width, h), Image.Resampling.BILINEAR))
    if labels is not None:
        thumbs = [_label(t, text) for t, text in zip(thumbs, labels)]
    cell_h = max(t.height for t in thumbs)
    cols = min(columns, len(thumbs))
    rows = -(-len(thumbs) // cols)
    out = Image.new("RGB", (cols * (thumb_width + gap) - gap, rows * (cell_h + gap) - gap), (255, 255, 255))
    for i, thumb in enumerate(thumbs):
        out.paste(thumb, ((i % cols) * (thumb_width + gap), (i // cols) * (cell_h + gap)))
    return out
