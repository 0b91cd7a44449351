"""SynthAV's scenes: the categories, a set's settings, and rendering one scene with its ground truth.

Everything is a function of ``(seed, stream, index)``: the scene's random generator is seeded from those
three numbers alone, so scenes are rendered in any order, in parallel, and again after a kill with
identical results. Layout, sound and noise draw from three independent child generators, so changing
the SNR changes only the noise level of otherwise identical scenes. Ground truth on the evaluation grid
(:func:`location_coverage`, :func:`location_labels`) follows the rules in :mod:`sspl.data.synth`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields

import numpy as np
from PIL import Image

from ..audio import CLIP_SECONDS, SAMPLE_RATE_HZ
from .synth_sounds import pink_noise, render_sound, unit_rms

__all__ = [
    "BACKGROUND_KINDS",
    "BACKGROUND_LABEL",
    "CATEGORIES",
    "FRAME_SIZE",
    "IGNORE_LABEL",
    "LABEL_GRID",
    "MAX_SCENES",
    "PRESETS",
    "PRETRAIN_OBJECTS",
    "SCENE_KINDS",
    "Category",
    "RenderedScene",
    "SynthConfig",
    "cell_coverage",
    "location_coverage",
    "location_labels",
    "render_background",
    "render_scene",
    "scene_id",
    "scene_kinds",
    "split_assignment",
    "synth_config",
]

FRAME_SIZE = 256  # pixels, the prepared-format frame side
LABEL_GRID = 14  # cells per side of the evaluation feature map (224 / 16)
BACKGROUND_LABEL = 0
IGNORE_LABEL = 255
OBJECT_LABEL_MIN_COVERAGE = 0.5  # fraction of a cell one object must cover to label it
BACKGROUND_KINDS = ("noise", "gradient", "stripes")  # each scene's background is one of these
BACKGROUND_MAX_COVERAGE = 0.1  # fraction of a cell all objects may cover for it to count as background
OBJECT_GAP_PIXELS = 4  # minimum free space between two objects' boxes
SNR_RANGE_DB = (-60.0, 120.0)  # beyond it the mix is all noise or all signal (and float32 overflows)
MAX_SCENES = 1_000_000  # per stream (--num, --pretrain-num): about 30 GB of scenes

_STREAMS = {"main": 0, "pretrain": 1}
_SPLIT_STREAM = 2  # seed stream of the train/val/test permutation
_KIND_STREAM = 3  # seed stream of the choice of scenes without a visible source

#: what a scene shows of its sound's source: ``visible`` (the sounding object is in the frame), ``silent``
#: (the sound's category is nowhere in the scene: the sound has no source to see) or ``offscreen`` (the
#: sounding object lies beside the frame, outside it; nothing of its category is in the frame)
SCENE_KINDS = ("visible", "silent", "offscreen")


@dataclass(frozen=True)
class Category:
    """One SynthAV category: how its objects look and how they sound.

    Attributes:
        name: the label written to the manifest and the annotations.
        shape: ``circle``, ``square``, ``triangle``, ``diamond``, ``cross``, ``ellipse``, ``hexagon`` or
            ``star``.
        colour: RGB in 0..255.
        texture: ``solid``, ``stripes``, ``checker`` or ``dots``.
        sound: the audio signature, see :func:`sspl.data.synth_sounds.render_sound`.
    """

    name: str
    shape: str
    colour: tuple[int, int, int]
    texture: str
    sound: str


# Saturated, mutually distant colours against muted backgrounds; every shape and colour appears once, so
# any one cue identifies the category.
CATEGORIES: tuple[Category, ...] = (
    Category("red_circle", "circle", (225, 40, 40), "solid", "hum"),
    Category("green_square", "square", (40, 200, 60), "stripes", "whistle"),
    Category("blue_triangle", "triangle", (45, 75, 235), "checker", "hiss"),
    Category("yellow_diamond", "diamond", (240, 220, 40), "dots", "chirp"),
    Category("magenta_cross", "cross", (215, 45, 215), "solid", "beep"),
    Category("cyan_ellipse", "ellipse", (40, 215, 225), "stripes", "clicks"),
    Category("orange_hexagon", "hexagon", (250, 140, 25), "checker", "rumble"),
    Category("white_star", "star", (245, 245, 245), "dots", "siren"),
)

PRETRAIN_OBJECTS = (2, 4)  # objects per pretraining scene, capped at the number of categories
#: the extended preset's share of scenes without a visible source: one half, as in Extended Flickr-SoundNet
#: and Extended VGG-SS (Mo & Morgado 2022), which add as many clips without a visible source as they hold
#: test clips (250 + 250, 5,158 + 5,158; the lists in ``sspl/assets/lists``)
EXTENDED_NO_SOURCE_FRACTION = 0.5
PRESETS: dict[str, dict[str, float]] = {
    "easy": {"min_objects": 1, "max_objects": 1},
    "distractors": {"min_objects": 2, "max_objects": 4},
    # distractors, and half of the scenes without a visible source (silent and off-screen, half each)
    "extended": {"min_objects": 2, "max_objects": 4, "no_source_fraction": EXTENDED_NO_SOURCE_FRACTION},
}


@dataclass(frozen=True)
class SynthConfig:
    """Everything that determines a SynthAV set; saved in ``meta.json`` under ``"synth"``.

    Attributes:
        num: number of main scenes (train + val + test).
        seed: the set's seed; scene ``i`` depends only on ``(seed, stream, i)`` and the other fields.
        min_objects, max_objects: objects per main scene, sounding one included (1 = no distractor);
            pretraining scenes always hold :data:`PRETRAIN_OBJECTS`.
        object_size: range of an object's box side as a fraction of the frame side.
        snr_db: power ratio of the sounding signature to the background noise, in dB.
        share_category: distractors may have the sounding object's category (drawn from all categories
            without replacement; main scenes only); otherwise every object of a scene has its own
            category.
        num_categories: use the first ``num_categories`` of :data:`CATEGORIES`.
        val_fraction, test_fraction: shares of the main scenes in val and test (the rest is train).
        pretrain_num: scenes of the separate "pretrain" split for encoder pretraining.
        no_source_fraction: share of the main scenes of each split whose sound has no visible source
            (half ``silent``, half ``offscreen``, see :data:`SCENE_KINDS` and :func:`scene_kinds`); their
            annotations hold no box. 0 (every scene visible) but in the ``extended`` preset.
    """

    num: int
    seed: int = 0
    min_objects: int = 2
    max_objects: int = 4
    object_size: tuple[float, float] = (0.15, 0.35)
    snr_db: float = 10.0
    share_category: bool = False
    num_categories: int = len(CATEGORIES)
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    pretrain_num: int = 1000
    no_source_fraction: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "object_size", tuple(float(s) for s in self.object_size))
        problems = []
        if not 1 <= self.num <= MAX_SCENES:
            problems.append(f"num must be in 1..{MAX_SCENES}, got {self.num}")
        if not 0 <= self.pretrain_num <= MAX_SCENES:
            problems.append(f"pretrain_num must be in 0..{MAX_SCENES}, got {self.pretrain_num}")
        if not 1 <= self.min_objects <= self.max_objects:
            problems.append(
                f"need 1 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}"
            )
        if not 2 <= self.num_categories <= len(CATEGORIES):
            problems.append(f"num_categories must be in 2..{len(CATEGORIES)}, got {self.num_categories}")
        elif not self.share_category and self.max_objects > self.num_categories:
            problems.append(
                f"max_objects {self.max_objects} > num_categories {self.num_categories}: objects cannot all "
                "have distinct categories (lower --max-objects, or pass --share-category)"
            )
        elif self.share_category and self.max_objects > self.num_categories + 1:
            problems.append(
                f"max_objects {self.max_objects} > num_categories + 1 = {self.num_categories + 1}: the "
                "distractors are distinct categories (one may share the sounding object's)"
            )
        lo, hi = self.object_size
        if not 0.05 <= lo <= hi <= 0.5:
            problems.append(f"object_size must satisfy 0.05 <= min <= max <= 0.5, got {lo}, {hi}")
        if not (math.isfinite(self.snr_db) and SNR_RANGE_DB[0] <= self.snr_db <= SNR_RANGE_DB[1]):
            problems.append(
                f"snr_db must be in [{SNR_RANGE_DB[0]:g}, {SNR_RANGE_DB[1]:g}], got {self.snr_db}"
            )
        if self.seed < 0:
            problems.append(f"seed must be >= 0, got {self.seed}")
        if not (0 <= self.val_fraction < 1 and 0 <= self.test_fraction < 1):
            problems.append("val_fraction and test_fraction must be in [0, 1)")
        elif self.val_fraction + self.test_fraction >= 1:
            problems.append(
                f"val_fraction + test_fraction must be < 1, got {self.val_fraction + self.test_fraction}"
            )
        if not (math.isfinite(self.no_source_fraction) and 0 <= self.no_source_fraction <= 1):
            problems.append(f"no_source_fraction must be in [0, 1], got {self.no_source_fraction}")
        if problems:
            raise ValueError("invalid SynthAV settings: " + "; ".join(problems))

    @property
    def categories(self) -> tuple[Category, ...]:
        return CATEGORIES[: self.num_categories]

    def to_json(self) -> dict:
        d = asdict(self)
        d["object_size"] = list(self.object_size)
        return d

    @classmethod
    def from_json(cls, d: dict) -> SynthConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: (tuple(v) if k == "object_size" else v) for k, v in d.items() if k in names})


def synth_config(preset: str = "distractors", **overrides: object) -> SynthConfig:
    """A :class:`SynthConfig` from a preset (``easy``: the sounding object alone; ``distractors``: 2-4
    objects; ``extended``: 2-4 objects, and half of the scenes without a visible source) with explicit
    fields taking precedence; ``None`` values are ignored."""
    if preset not in PRESETS:
        raise ValueError(f"unknown SynthAV preset {preset!r}; choose from {sorted(PRESETS)}")
    values: dict[str, object] = dict(PRESETS[preset])
    values.update({k: v for k, v in overrides.items() if v is not None})
    return SynthConfig(**values)  # type: ignore[arg-type]


def scene_id(stream: str, index: int) -> str:
    """``synth_000123`` for main scenes, ``synthpre_000123`` for pretraining scenes."""
    return f"{'synth' if stream == 'main' else 'synthpre'}_{index:06d}"


def split_assignment(config: SynthConfig) -> list[str]:
    """Split of each main scene (``num`` entries): a seeded permutation cut into test, val, train."""
    n_test = int(round(config.num * config.test_fraction))
    n_val = int(round(config.num * config.val_fraction))
    order = np.random.default_rng([config.seed, _SPLIT_STREAM]).permutation(config.num)
    splits = ["train"] * config.num
    for rank, index in enumerate(order):
        if rank < n_test:
            splits[index] = "test"
        elif rank < n_test + n_val:
            splits[index] = "val"
    return splits


def scene_kinds(config: SynthConfig) -> list[str]:
    """Kind (:data:`SCENE_KINDS`) of each main scene (``num`` entries).

    In each split, ``round(n * no_source_fraction)`` of its ``n`` scenes, picked by a seeded permutation,
    have no visible source: the first half of them (rounded up) ``silent``, the rest ``offscreen``; every
    other scene is ``visible``. So each split, the test split included, holds the stated share.
    """
    kinds = ["visible"] * config.num
    if config.no_source_fraction <= 0:
        return kinds
    splits = split_assignment(config)
    order = np.random.default_rng([config.seed, _KIND_STREAM]).permutation(config.num)
    for split in ("train", "val", "test"):
        members = [int(i) for i in order if splits[i] == split]
        chosen = members[: int(round(len(members) * config.no_source_fraction))]
        n_silent = (len(chosen) + 1) // 2
        for rank, index in enumerate(chosen):
            kinds[index] = "silent" if rank < n_silent else "offscreen"
    return kinds


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------


@dataclass
class RenderedScene:
    """One scene in memory.

    Attributes:
        image: ``256 x 256 x 3`` uint8 frame (before JPEG).
        masks: ``K x 256 x 256`` bool, the pixels of each object in the frame.
        boxes: ``K x 4`` float, each mask's tight box ``[x1, y1, x2, y2]`` normalised to [0, 1].
        categories: ``K`` category indices.
        sounding: index (into the K objects) of the sounding one; None when the sound has no visible
            source (``kind`` ``silent`` or ``offscreen``).
        source: ``48000`` float32, the sounding signature scaled to unit RMS.
        noise: ``48000`` float32, the background noise scaled to the configured SNR.
        background: the background kind (``noise``, ``gradient`` or ``stripes``).
        kind: one of :data:`SCENE_KINDS`.
        sound_category: the category whose signature ``source`` is.
        offscreen_box: for an ``offscreen`` scene, the sounding object's tight box in the frame's
            normalised coordinates, wholly outside ``[0, 1]`` (it lies beside the frame); else None.
    """

    image: np.ndarray
    masks: np.ndarray
    boxes: np.ndarray
    categories: list[int]
    sounding: int | None
    source: np.ndarray
    noise: np.ndarray
    background: str = ""
    objects_px: list[tuple[int, int, int]] = field(default_factory=list)
    kind: str = "visible"
    sound_category: int = -1
    offscreen_box: np.ndarray | None = None

    @property
    def mix(self) -> np.ndarray:
        """The clip before normalisation: ``source + noise`` (``48000`` float32)."""
        return self.source + self.noise


def _scene_rngs(seed: int, stream: str, index: int) -> list[np.random.Generator]:
    seq = np.random.SeedSequence(entropy=seed, spawn_key=(_STREAMS[stream], index))
    return [np.random.default_rng(s) for s in seq.spawn(3)]  # layout, sound, noise


def _muted_colour(rng: np.random.Generator) -> np.ndarray:
    return np.clip(rng.uniform(60, 175) + rng.uniform(-18, 18, size=3), 0, 255)


def render_background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, str]:
    """A scene's background, drawn from ``rng``: one of :data:`BACKGROUND_KINDS` in two muted colours,
    with pixel noise.

    Args:
        rng: the scene's layout generator (:func:`render_scene` draws the background first from it).
        size: the frame side in pixels.

    Returns:
        ``(image, kind)``: ``size x size x 3`` float64 RGB, not yet rounded or clipped, and the kind.
    """
    kind = BACKGROUND_KINDS[int(rng.integers(len(BACKGROUND_KINDS)))]
    c0, c1 = _muted_colour(rng), _muted_colour(rng)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    if kind == "noise":
        cells = int(rng.integers(3, 9))
        coarse = Image.fromarray(rng.random((cells, cells)).astype(np.float32), mode="F")
        t = np.asarray(coarse.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float64)
    else:
        angle = rng.uniform(0, np.pi)
        proj = xx * np.cos(angle) + yy * np.sin(angle)
        if kind == "gradient":
            t = (proj - proj.min()) / (proj.max() - proj.min())
        else:
            period = rng.uniform(16, 48)
            t = 0.5 + 0.5 * np.sin(2 * np.pi * proj / period + rng.uniform(0, 2 * np.pi))
    t = np.clip(t, 0, 1)[..., None]
    image = (1 - t) * c0 + t * c1 + rng.normal(0, 6, size=(size, size, 3))
    return image, kind


def _shape_mask(shape: str, side: int) -> np.ndarray:
    """``side x side`` bool mask of a shape filling its box (pixel centres in [-1, 1])."""
    c = (np.arange(side) + 0.5) / side * 2 - 1
    v, u = np.meshgrid(c, c, indexing="ij")
    r = np.hypot(u, v)
    if shape == "circle":
        return r <= 1
    if shape == "square":
        return np.ones((side, side), dtype=bool)
    if shape == "triangle":  # apex up, base on the bottom edge
        return np.abs(u) <= (v + 1) / 2
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= 1
    if shape == "cross":
        return (np.abs(u) <= 0.34) | (np.abs(v) <= 0.34)
    if shape == "ellipse":  # lying, two thirds as high as wide
        return u**2 + (v / 0.67) ** 2 <= 1
    if shape == "hexagon":  # vertices at (+-1, 0)
        s3 = math.sqrt(3)
        return (np.abs(v) <= s3 / 2) & (s3 * np.abs(u) + np.abs(v) <= s3)
    if shape == "star":  # five lobes, one pointing up
        theta = np.arctan2(v, u) + np.pi / 2
        return r <= 0.65 + 0.35 * np.cos(5 * theta)
    raise ValueError(f"unknown shape {shape!r}")


def _texture(texture: str, side: int) -> np.ndarray:
    """``side x side`` darkening pattern in {0, 1}, aligned with the object."""
    yy, xx = np.mgrid[0:side, 0:side]
    if texture == "solid":
        return np.zeros((side, side))
    if texture == "stripes":
        return (((xx + yy) // 6) % 2).astype(np.float64)
    if texture == "checker":
        return ((xx // 8 + yy // 8) % 2).astype(np.float64)
    if texture == "dots":
        return (np.hypot(xx % 10 - 4.5, yy % 10 - 4.5) <= 2.6).astype(np.float64)
    raise ValueError(f"unknown texture {texture!r}")


def _free_spot(
    rng: np.random.Generator, side: int, placed: list[tuple[int, int, int]], frame: int, tries: int = 100
) -> tuple[int, int] | None:
    """A random top-left corner where a ``side`` box keeps its gap to every placed box, or None."""
    for _ in range(tries):
        x0 = int(rng.integers(0, frame - side + 1))
        y0 = int(rng.integers(0, frame - side + 1))
        if all(
            x0 + side + OBJECT_GAP_PIXELS <= px
            or px + ps + OBJECT_GAP_PIXELS <= x0
            or y0 + side + OBJECT_GAP_PIXELS <= py
            or py + ps + OBJECT_GAP_PIXELS <= y0
            for px, py, ps in placed
        ):
            return x0, y0
    return None


def _place_objects(
    rng: np.random.Generator, count: int, size_range: tuple[float, float], frame: int
) -> list[tuple[int, int, int]]:
    """Non-overlapping square boxes ``(x0, y0, side)`` in pixels; an object that does not fit shrinks."""
    placed: list[tuple[int, int, int]] = []
    for _ in range(count):
        side = int(round(rng.uniform(*size_range) * frame))
        while (spot := _free_spot(rng, side, placed, frame)) is None:
            side = max(8, int(side * 0.9))
        placed.append((*spot, side))
    return placed


def _scene_categories(
    rng: np.random.Generator, config: SynthConfig, stream: str, kind: str
) -> tuple[list[int], int | None, int]:
    """``(categories of the frame's objects, index of the sounding one or None, the sound's category)``.

    A scene without a visible source draws its objects from the other categories only (at most all of
    them), so nothing in its frame has the sound's category."""
    if stream == "pretrain":
        lo, hi, share = PRETRAIN_OBJECTS[0], min(PRETRAIN_OBJECTS[1], config.num_categories), False
    else:
        lo, hi, share = config.min_objects, config.max_objects, config.share_category
    k = int(rng.integers(lo, hi + 1))
    num_cat = config.num_categories
    sounding_cat = int(rng.integers(num_cat))
    others = np.delete(np.arange(num_cat), sounding_cat)
    if kind != "visible":
        return (
            [int(c) for c in rng.choice(others, size=min(k, num_cat - 1), replace=False)],
            None,
            sounding_cat,
        )
    pool = np.arange(num_cat) if share else others
    distractors = [int(c) for c in rng.choice(pool, size=k - 1, replace=False)]
    sounding = int(rng.integers(k))
    return [*distractors[:sounding], sounding_cat, *distractors[sounding:]], sounding, sounding_cat


#: where an off-screen object lies: the frame-sized square left of, right of, above or below the frame
_BESIDE = ((-1, 0), (1, 0), (0, -1), (0, 1))


def _offscreen_box(rng: np.random.Generator, config: SynthConfig, category: int) -> np.ndarray:
    """Tight box of an object of ``category`` placed in a frame-sized square beside the frame, normalised
    to the frame (so wholly outside ``[0, 1]``)."""
    dx, dy = _BESIDE[int(rng.integers(len(_BESIDE)))]
    side = int(round(rng.uniform(*config.object_size) * FRAME_SIZE))
    x0 = int(rng.integers(0, FRAME_SIZE - side + 1)) + dx * FRAME_SIZE
    y0 = int(rng.integers(0, FRAME_SIZE - side + 1)) + dy * FRAME_SIZE
    rows, cols = np.nonzero(_shape_mask(CATEGORIES[category].shape, side))
    return np.array([x0 + cols.min(), y0 + rows.min(), x0 + cols.max() + 1, y0 + rows.max() + 1]) / FRAME_SIZE


def render_scene(config: SynthConfig, stream: str, index: int, kind: str | None = None) -> RenderedScene:
    """Render scene ``index`` of ``stream`` (``"main"`` or ``"pretrain"``) of a SynthAV set.

    Args:
        config: the set's settings.
        stream: which random stream; main and pretraining scenes never coincide.
        index: scene number within the stream.
        kind: the scene's kind (:data:`SCENE_KINDS`); default: the one :func:`scene_kinds` gives a main
            scene (``visible`` for pretraining scenes and for indices past ``config.num``). Writing a set
            passes it, to not redo that rule for every scene.

    Returns:
        The frame, object masks and boxes, categories, the two audio components and the kind.
    """
    if stream not in _STREAMS:
        raise ValueError(f"stream must be one of {sorted(_STREAMS)}, got {stream!r}")
    if kind is None:  # every scene is visible unless the set has scenes without a visible source
        visible = stream == "pretrain" or config.no_source_fraction == 0 or not 0 <= index < config.num
        kind = "visible" if visible else scene_kinds(config)[index]
    if kind not in SCENE_KINDS or (stream == "pretrain" and kind != "visible"):
        raise ValueError(f"kind must be one of {SCENE_KINDS} (pretraining scenes: visible), got {kind!r}")
    layout_rng, sound_rng, noise_rng = _scene_rngs(config.seed, stream, index)
    categories, sounding, sounding_cat = _scene_categories(layout_rng, config, stream, kind)
    k = len(categories)

    image, background = render_background(layout_rng, FRAME_SIZE)
    placed = _place_objects(layout_rng, k, config.object_size, FRAME_SIZE)
    masks = np.zeros((k, FRAME_SIZE, FRAME_SIZE), dtype=bool)
    boxes = np.zeros((k, 4))
    for j, (cat, (x0, y0, side)) in enumerate(zip(categories, placed)):
        spec = CATEGORIES[cat]
        local = _shape_mask(spec.shape, side)
        shade = 1 - 0.45 * _texture(spec.texture, side)
        colour = np.clip(np.asarray(spec.colour) * layout_rng.uniform(0.85, 1.05), 0, 255)
        region = image[y0 : y0 + side, x0 : x0 + side]
        region[local] = shade[local][:, None] * colour
        masks[j, y0 : y0 + side, x0 : x0 + side] = local
        rows, cols = np.nonzero(masks[j])
        boxes[j] = [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
    boxes /= FRAME_SIZE
    frame = np.clip(np.round(image), 0, 255).astype(np.uint8)
    offscreen = _offscreen_box(layout_rng, config, sounding_cat) if kind == "offscreen" else None

    n = int(round(CLIP_SECONDS * SAMPLE_RATE_HZ))
    source = unit_rms(render_sound(CATEGORIES[sounding_cat].sound, sound_rng, n))
    noise = unit_rms(pink_noise(noise_rng, n)) * 10 ** (-config.snr_db / 20)
    return RenderedScene(
        image=frame,
        masks=masks,
        boxes=boxes,
        categories=categories,
        sounding=sounding,
        source=source.astype(np.float32),
        noise=noise.astype(np.float32),
        background=background,
        objects_px=placed,
        kind=kind,
        sound_category=sounding_cat,
        offscreen_box=offscreen,
    )


def cell_coverage(mask: np.ndarray, grid: int = LABEL_GRID) -> np.ndarray:
    """Fraction of each cell of a ``grid x grid`` partition of a square mask that the mask covers.

    Cells have fractional borders (256 / 14 pixels): each pixel counts in a cell in proportion to its overlap.

    Args:
        mask: ``S x S`` bool or float.
        grid: cells per side.

    Returns:
        ``grid x grid`` float64 in [0, 1].
    """
    size = mask.shape[0]
    if mask.ndim != 2 or mask.shape[1] != size:
        raise ValueError(f"expected a square mask, got shape {mask.shape}")
    edges = np.arange(grid + 1) * size / grid
    pixels = np.arange(size)
    # weights[i, p]: overlap of pixel [p, p + 1) with cell [edges[i], edges[i + 1]), per unit cell length
    overlap = np.minimum(pixels[None, :] + 1, edges[1:, None]) - np.maximum(pixels[None, :], edges[:-1, None])
    weights = np.clip(overlap, 0, None) / (size / grid)
    return weights @ mask.astype(np.float64) @ weights.T


def location_coverage(
    masks: np.ndarray, categories: Sequence[int], num_categories: int, grid: int = LABEL_GRID
) -> np.ndarray:
    """Share of each cell of the evaluation grid covered by background and by each category.

    Args:
        masks: ``K x S x S`` non-overlapping object masks (``S = 256``).
        categories: ``K`` category indices.
        num_categories: number of categories of the set.
        grid: cells per side.

    Returns:
        ``(1 + num_categories) x grid x grid`` float32; channel 0 is the background, channel ``1 + c``
        category ``c``; channels sum to 1 in every cell.
    """
    cover = np.zeros((1 + num_categories, grid, grid))
    for mask, cat in zip(masks, categories):
        cover[1 + cat] += cell_coverage(mask, grid)
    cover[0] = np.clip(1 - cover[1:].sum(0), 0, 1)
    return cover.astype(np.float32)


def location_labels(coverage: np.ndarray) -> np.ndarray:
    """Hard per-cell labels from :func:`location_coverage` (rules in the module docstring).

    Args:
        coverage: ``(1 + num_categories) x grid x grid``.

    Returns:
        ``grid x grid`` uint8: 0 background, ``1 + category`` object, 255 ignore.
    """
    labels = np.full(coverage.shape[1:], IGNORE_LABEL, dtype=np.uint8)
    objects = coverage[1:]
    labels[objects.sum(0) < BACKGROUND_MAX_COVERAGE] = BACKGROUND_LABEL
    strong = objects.max(0) >= OBJECT_LABEL_MIN_COVERAGE
    labels[strong] = (objects.argmax(0)[strong] + 1).astype(np.uint8)
    return labels
