"""Pictures: colours, overlays, evaluated samples (the drawn mask is the scored mask), the PCM strip,
success curves, contact sheets and the HTML report."""

from __future__ import annotations

from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from sspl import viz
from sspl.errors import DataError
from sspl.metrics import BENCHMARKS, gt_map_from_boxes, normalize_map, threshold_map, upsample_map


def _luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def test_colorize_ends_of_the_scale_and_nan():
    from matplotlib import colormaps

    heat = np.array([[0.0, 1.0, np.nan]], dtype=np.float32)
    out = viz.colorize(heat)
    assert out.shape == (1, 3, 3) and out.dtype == np.uint8
    low, high, none = out[0]
    ends = np.round(colormaps["viridis"]([0.0, 1.0])[:, :3] * 255)
    assert low.tolist() == ends[0].tolist() == [68, 1, 84]  # viridis starts dark purple
    assert high.tolist() == ends[1].tolist() == [253, 231, 37]  # and ends yellow
    assert none.tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        viz.colorize(np.array([[1.5]]))


def test_the_colour_map_is_perceptually_ordered():
    """Lightness rises monotonically over the colour bar (jet's does not), so the order of two heat
    levels reads right in greyscale."""
    ramp = viz.colorize(np.linspace(0, 1, 256, dtype=np.float32)[None])[0]
    assert np.all(np.diff(_luminance(ramp)) > -1.0)  # non-decreasing up to 8-bit rounding
    assert _luminance(ramp)[-1] - _luminance(ramp)[0] > 150


def test_overlay_at_max_and_min_heat_is_the_colour_maps_ends_blended_by_the_stated_alpha():
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[:, :3] = (200, 30, 30)  # a red object: jet's top colour would vanish on it
    rgb[:, 3:] = (40, 160, 220)
    heat = np.zeros((4, 6), np.float32)
    heat[:2] = 1.0
    out = np.asarray(viz.overlay_heatmap(Image.fromarray(rgb), heat, alpha=0.6), dtype=np.float32)
    purple, yellow = np.array([68, 1, 84], np.float32), np.array([253, 231, 37], np.float32)
    top, bottom = 0.6, 0.6 * viz.ALPHA_FLOOR  # the weights the docstring states: alpha, alpha * floor
    np.testing.assert_allclose(out[:2], (1 - top) * rgb[:2] + top * yellow, atol=1)
    np.testing.assert_allclose(out[2:], (1 - bottom) * rgb[2:] + bottom * purple, atol=1)
    assert viz.heat_alpha(heat, 0.6)[0, 0] == pytest.approx(0.6)
    assert viz.heat_alpha(heat, 0.6)[3, 0] == pytest.approx(0.15)
    # at the default alpha the image still shows through everywhere: at most 60 % colour, 15 % where cold
    assert viz.DEFAULT_ALPHA <= 0.6 and viz.DEFAULT_ALPHA * viz.ALPHA_FLOOR <= 0.15


def test_overlay_blends_inside_and_greys_outside():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    heat = np.full((20, 30), np.nan, np.float32)
    heat[:, 10:20] = rng.random((20, 10))
    out = np.asarray(viz.overlay_heatmap(Image.fromarray(rgb), heat, alpha=0.25), dtype=np.float32)
    inside = heat[:, 10:20]
    weight = (0.25 * (viz.ALPHA_FLOOR + (1 - viz.ALPHA_FLOOR) * inside))[..., None]
    expected_in = (1 - weight) * rgb[:, 10:20] + weight * viz.colorize(inside)
    # PIL blends in 8-bit arithmetic and the weight is looked up on the 256-level colour table
    np.testing.assert_allclose(out[:, 10:20], expected_in, atol=1.5)
    expected_out = _luminance(rgb[:, :10]) * viz.OUTSIDE_BRIGHTNESS
    for c in range(3):
        np.testing.assert_allclose(out[:, :10, c], expected_out, atol=1)
    with pytest.raises(ValueError, match="30 x 20"):
        viz.overlay_heatmap(Image.fromarray(rgb), heat[:, :20])


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "00:00.0"), (3.14, "00:03.1"), (59.96, "01:00.0"), (75.04, "01:15.0"), (6000.0, "100:00.0")],
)
def test_format_timestamp(seconds, text):
    assert viz.format_timestamp(seconds) == text


def test_stamp_time_writes_in_the_top_left_corner_only():
    image = Image.new("RGB", (320, 240), (120, 140, 160))
    one, two = np.asarray(viz.stamp_time(image, 1.0)), np.asarray(viz.stamp_time(image, 62.5))
    plain = np.asarray(image)
    changed = (one != plain).any(axis=2)
    rows, cols = np.nonzero(changed)
    assert changed.any() and rows.max() < 240 // 4 and cols.max() < 320 // 2  # a small corner box
    stamped = one[changed].astype(int)
    assert (stamped.max(axis=1) == stamped.min(axis=1)).all()  # white text on black, antialiased in grey
    assert (stamped[:, 0] == 0).mean() > 0.5 and (stamped[:, 0] > 200).sum() > 20
    assert not np.array_equal(one, two)  # the text is the time
    assert viz.stamp_time(image, 1.0).size == image.size and np.array_equal(np.asarray(image), plain)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "CMYK", "I;16"])
def test_overlay_any_mode_and_colorbar(mode):
    image = Image.new("RGB", (40, 250), (10, 200, 30)).convert(mode)
    heat = np.linspace(0, 1, 40 * 250, dtype=np.float32).reshape(250, 40)
    plain = viz.overlay_heatmap(image, heat)
    barred = viz.overlay_heatmap(image, heat, colorbar=True)
    assert plain.mode == "RGB" and plain.size == (40, 250)
    assert barred.height == 250 and barred.width > 40 and (barred.width - 40) % 2 == 0
    np.testing.assert_array_equal(np.asarray(barred)[:, :40], np.asarray(plain))


def _outline(mask: np.ndarray) -> np.ndarray:
    return viz._outline(mask)


@pytest.mark.parametrize("scale", [1, 2])
def test_evaluation_overlay_draws_the_scored_mask_and_boxes(scale):
    protocol = BENCHMARKS["vggss"]
    raw = np.zeros((14, 14), np.float32)
    raw[2:6, 3:9] = 1.0
    boxes = [[0.6, 0.6, 0.9, 0.95]]
    image = Image.new("RGB", (300, 200), (0, 0, 0))
    out = np.asarray(
        viz.evaluation_overlay(image, raw, boxes, protocol=protocol, scale=scale, colorbar=False)
    )
    header = 16 + 4 * scale
    assert out.shape == (224 * scale + header, 224 * scale, 3)
    picture = out[header:]
    mask = threshold_map(normalize_map(upsample_map(raw)), protocol.threshold, protocol.threshold_value)
    box = gt_map_from_boxes(boxes, rule="union", box_format="normalized") > 0
    mask, box = (np.kron(m, np.ones((scale, scale), bool)) for m in (mask, box))  # each scored pixel a block
    white = (picture == viz.MASK_COLOR).all(axis=2)
    green = (picture == viz.BOX_COLOR).all(axis=2)
    np.testing.assert_array_equal(green, _outline(box))
    np.testing.assert_array_equal(white, _outline(mask) & ~_outline(box))


def test_evaluation_overlays_are_larger_than_the_scored_frame_and_carry_a_colour_bar():
    raw = np.random.default_rng(1).random((14, 14)).astype(np.float32)
    image = Image.new("RGB", (300, 200), (90, 90, 90))
    default = viz.evaluation_overlay(image, raw, [[10, 10, 100, 100]])
    bare = viz.evaluation_overlay(image, raw, [[10, 10, 100, 100]], colorbar=False)
    assert viz.EVALUATION_SCALE == 2 and bare.size == (448, 448 + 24)
    assert default.height == bare.height and default.width > bare.width + 30
    np.testing.assert_array_equal(np.asarray(default)[24:, :448], np.asarray(bare)[24:])
    strip = np.asarray(default)[24:, 448:]
    assert _has_colour_scale(strip)
    with pytest.raises(ValueError, match="scale"):
        viz.evaluation_overlay(image, raw, [[10, 10, 100, 100]], scale=0)


def _has_colour_scale(strip: np.ndarray) -> bool:
    """Whether a picture holds the colour map's ends (the bar of add_colorbar)."""
    colours = strip.reshape(-1, 3).astype(int)
    near = lambda c: (np.abs(colours - c).max(axis=1) <= 8).any()  # noqa: E731
    return near([68, 1, 84]) and near([253, 231, 37])


def test_pcm_strip_shared_and_per_step_scales():
    base = np.random.default_rng(3).random((14, 14)).astype(np.float32)
    steps = np.stack([base, 3 * base])  # the same shape, more definite at t = 2
    image = Image.new("RGB", (224, 224), (128, 128, 128))
    per_step = np.asarray(viz.pcm_strip(image, steps, shared_scale=False))
    shared = np.asarray(viz.pcm_strip(image, steps, boxes=[[10, 10, 100, 100]]))
    assert per_step.shape == shared.shape == (224 + 20, 3 * 224 + 2 * 4, 3)
    panel = [slice(i * 228, i * 228 + 224) for i in range(3)]
    np.testing.assert_array_equal(per_step[20:, panel[1]], per_step[20:, panel[2]])
    assert not np.array_equal(shared[20:, panel[1]], shared[20:, panel[2]])
    assert (shared[20:, panel[0]] == viz.BOX_COLOR).all(axis=2).any()
    with pytest.raises(ValueError, match="T x h x w"):
        viz.pcm_strip(image, base)


def test_success_curves_plot():
    curve = np.linspace(1, 0, 21)
    one = viz.success_curves_plot({"a": curve})
    two = viz.success_curves_plot({"a": curve, "b": curve**2}, title="Flickr")
    assert one.size == two.size == (500, 400)
    assert not np.array_equal(np.asarray(one), np.asarray(two))
    with pytest.raises(ValueError, match="one length"):
        viz.success_curves_plot({"a": curve, "b": curve[:20]})
    with pytest.raises(ValueError, match="outside"):
        viz.success_curves_plot({"a": curve + 0.5})


def test_many_curves_stay_distinguishable():
    # the 11th curve used to repeat the first one's colour and style, and a long legend hid the curves
    styles = [tuple(viz._curve_style(i).values()) for i in range(30)]
    assert len(set(styles)) == 30
    curve = np.linspace(1, 0, 21)
    many = viz.success_curves_plot({f"run {i}": curve**i for i in range(1, 12)})
    assert many.size == (500 + int(viz._LEGEND_WIDTH * 100), 400)  # legend beside the axes, not over them
    history = [{"type": "val", "epoch": e, "val_ciou@0.5": e / 10} for e in range(3)]
    runs = {f"run {i}": history for i in range(5)}
    assert viz.learning_curves_plot(runs).size == (500, 400)
    assert viz.learning_curves_plot(runs, references={"oracle": 0.9}).size == (860, 400)


def test_learning_curves_plot():
    history = [
        {"type": "val", "epoch": 0, "val_ciou@0.5": 0.0},
        {"type": "train", "epoch": 1, "loss": -0.5},  # train records are not plotted
        {"type": "val", "epoch": 1, "val_ciou@0.5": 0.4},
    ]
    one = viz.learning_curves_plot({"run": history})
    ref = viz.learning_curves_plot({"run": history}, references={"oracle": 0.8})
    assert one.size == ref.size == (500, 400)
    assert not np.array_equal(np.asarray(one), np.asarray(ref))  # the reference line is drawn
    with pytest.raises(ValueError, match="no validation record with 'val_auc'"):
        viz.learning_curves_plot({"run": history}, key="val_auc")


def test_contact_sheet_layout():
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    images = [Image.new("RGB", (64, 32), c) for c in colours]
    sheet = np.asarray(viz.contact_sheet(images, columns=2, thumb_width=32, gap=4))
    assert sheet.shape == (2 * 16 + 4, 2 * 32 + 4, 3)
    assert sheet[8, 16].tolist() == [255, 0, 0]
    assert sheet[8, 36 + 16].tolist() == [0, 255, 0]
    assert sheet[20 + 8, 16].tolist() == [0, 0, 255]
    labelled = viz.contact_sheet(images, labels=["a", "b", "c"], thumb_width=32)
    assert labelled.size == (3 * 32 + 2 * 4, 16 + 20)
    with pytest.raises(ValueError, match="labels"):
        viz.contact_sheet(images, labels=["a"])
    # A sliver keeps its aspect only up to four widths tall.
    assert viz.contact_sheet([Image.new("RGB", (3, 200))], thumb_width=32).size == (32, 128)


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.cells: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        if tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.cells.append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def test_html_report(tmp_path):
    (tmp_path / "figs").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "figs" / "a b.png")
    Image.new("RGB", (4, 4)).save(tmp_path / "curve.png")
    path = viz.write_html_report(
        tmp_path / "index.html",
        "Demo <run>",
        [
            viz.ReportSection(
                "Metrics",
                table=[{"run": "sspl", "ciou@0.5": 0.7593, "n": 249}, {"run": "base", "auc": 0.5}],
                notes=["Random weights & a tiny model."],
            ),
            {"title": "Pictures", "images": [("figs/a b.png", "overlay"), tmp_path / "curve.png"]},
        ],
    )
    text = path.read_text()
    assert "<title>Demo &lt;run&gt;</title>" in text and "Random weights &amp; a tiny model." in text
    tags = _Tags()
    tags.feed(text)
    assert tags.images == ["figs/a%20b.png", "curve.png"]
    assert tags.cells == ["run", "ciou@0.5", "n", "auc", "sspl", "0.759", "249", "", "base", "", "", "0.500"]
    with pytest.raises(DataError, match="missing.png"):
        viz.write_html_report(tmp_path / "bad.html", "t", [{"title": "x", "images": ["missing.png"]}])
    assert not (tmp_path / "bad.html").exists()
