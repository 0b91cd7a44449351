"""SynthAV: a procedural audio-visual localization benchmark with exact ground truth.

Each scene is a 256 x 256 frame with a textured background (smooth noise, gradient or stripes, in muted
colours) and one to a few non-overlapping objects. Every object belongs to a category that fixes its shape,
colour, texture and sound (see :data:`CATEGORIES`). Exactly one object is sounding: the 3-s clip is that
category's signature (harmonic hum, whistle, hiss band, chirps, beeps, clicks, rumble, siren; frequencies
jittered per scene) mixed with pink background noise at a chosen SNR.

Everything is a function of ``(seed, stream, index)``: the scene's random generator is seeded from those
three numbers alone, so scenes are generated in any order, in parallel, and resumed after a kill with
byte-identical results. Layout, sound and noise draw from three independent child generators, so changing
the SNR changes only the noise level of otherwise identical scenes.

The output folder is in the prepared format of :mod:`sspl.data.manifest` (``kind = "synth"``), plus::

    annotations.json              VGG-SS format: [{"file": id, "class": category, "bbox": [[x1, y1, x2, y2]]}]
                                  the sounding object's tight box, normalised to [0, 1] in the 256 x 256
                                  frame, for every scene of every split
    scenes.json                   {id: {"split", "sounding": k, "objects": [{"category", "bbox"}, ...]}}:
                                  the category and box of every object (for "negatives exclude same class")
    pretrain/ids.txt              the M ids of the "pretrain" split, one per line (the order of the arrays)
    pretrain/location_coverage.npy M x (1 + K) x 14 x 14 float32: share of each cell of the evaluation grid
                                  covered by background (channel 0) and by each of the K categories
    pretrain/location_labels.npy  M x 14 x 14 uint8 hard per-location labels derived from the coverage
    pretrain/sound_labels.npy     M int64 sound category (index into the categories of meta.json)

Location labels refer to the evaluation view: the frame is square, so ``Resize(224) + CenterCrop(224)`` keeps
all of it and cell ``(i, j)`` of the 14 x 14 grid covers frame rows ``[i, i + 1) * 256 / 14`` and columns
``[j, j + 1) * 256 / 14``. The coverage is exact (pixels count in proportion to their overlap with a cell).
The hard label of a cell is ``1 + category`` when one category covers at least half of it,
:data:`BACKGROUND_LABEL` (0) when objects cover less than a tenth of it, and :data:`IGNORE_LABEL` (255)
in between (edges of objects). Pretraining fits the coverage itself (soft targets), so features at an
object's edge are a proportional mix and cosine maps follow the object's extent.

Splits: the ``num`` main scenes (``synth_000000`` ...) are split into train / val / test by a seeded
permutation; the ``pretrain_num`` pretraining scenes (``synthpre_000000`` ...) come from a separate random
stream, so no pretraining scene is a main scene. Generation checks that no two frames are identical.
Pretraining scenes always hold 2-4 objects of distinct categories (:data:`PRETRAIN_OBJECTS`), whatever
the preset, with the set's categories, object sizes and SNR: like ImageNet for the paper's encoders, the
pretraining data does not follow the downstream difficulty, and encoders pretrained on an "easy" set still
learn to tell objects apart (oracle-query cIoU@0.5 on an easy train split 0.97 with them, 0.93 with
encoders pretrained on single-object scenes).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
from PIL import Image

from ..audio import CLIP_SECONDS, SAMPLE_RATE_HZ, encode_wav_float32, official_clip, waveform_to_examples
from ..errors import DataError
from ..io import atomic_save_json, atomic_save_npy, atomic_write_bytes, atomic_write_text, nearest_existing
from ..outputs import LOCK_NAME, check_output_folder, output_lock
from ..processes import end_with
from .manifest import ANNOTATIONS_NAME, META_NAME, ManifestRow, read_meta, write_manifest, write_meta

__all__ = [
    "BACKGROUND_LABEL",
    "CATEGORIES",
    "FRAME_SIZE",
    "IGNORE_LABEL",
    "LABEL_GRID",
    "PRESETS",
    "PRETRAIN_OBJECTS",
    "Category",
    "RenderedScene",
    "SynthConfig",
    "cell_coverage",
    "encode_wav_float32",
    "generate_synth",
    "load_scenes",
    "location_coverage",
    "location_labels",
    "render_scene",
    "scene_id",
    "split_assignment",
    "synth_config",
]

log = logging.getLogger(__name__)


FRAME_SIZE = 256  # pixels, the prepared-format frame side
LABEL_GRID = 14  # cells per side of the evaluation feature map (224 / 16)
BACKGROUND_LABEL = 0
IGNORE_LABEL = 255
OBJECT_LABEL_MIN_COVERAGE = 0.5  # fraction of a cell one object must cover to label it
BACKGROUND_KINDS = ("noise", "gradient", "stripes")  # each scene's background is one of these
BACKGROUND_MAX_COVERAGE = 0.1  # fraction of a cell all objects may cover for it to count as background
OBJECT_GAP_PIXELS = 4  # minimum free space between two objects' boxes
SNR_RANGE_DB = (-60.0, 120.0)  # beyond it the mix is all noise or all signal (and float32 overflows)
JPEG_QUALITY = 95
GENERATOR_VERSION = 1  # bump when a change alters the generated bytes
MAX_SCENES = 1_000_000  # per stream (--num, --pretrain-num): about 30 GB of scenes

SCENES_NAME = "scenes.json"
PRETRAIN_DIR = "pretrain"
PRETRAIN_IDS = "pretrain/ids.txt"
PRETRAIN_LOCATION_LABELS = "pretrain/location_labels.npy"
PRETRAIN_LOCATION_COVERAGE = "pretrain/location_coverage.npy"
PRETRAIN_SOUND_LABELS = "pretrain/sound_labels.npy"

_STREAMS = {"main": 0, "pretrain": 1}
_SPLIT_STREAM = 2  # seed stream of the train/val/test permutation


@dataclass(frozen=True)
class Category:
    """One SynthAV category: how its objects look and how they sound.

    Attributes:
        name: the label written to the manifest and the annotations.
        shape: ``circle``, ``square``, ``triangle``, ``diamond``, ``cross``, ``ellipse``, ``hexagon`` or
            ``star``.
        colour: RGB in 0..255.
        texture: ``solid``, ``stripes``, ``checker`` or ``dots``.
        sound: the audio signature, see :func:`_render_sound`.
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
PRESETS: dict[str, dict[str, int]] = {
    "easy": {"min_objects": 1, "max_objects": 1},
    "distractors": {"min_objects": 2, "max_objects": 4},
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
    objects) with explicit fields taking precedence; ``None`` values are ignored."""
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


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------


@dataclass
class RenderedScene:
    """One scene in memory.

    Attributes:
        image: ``256 x 256 x 3`` uint8 frame (before JPEG).
        masks: ``K x 256 x 256`` bool, the pixels of each object.
        boxes: ``K x 4`` float, each mask's tight box ``[x1, y1, x2, y2]`` normalised to [0, 1].
        categories: ``K`` category indices.
        sounding: index (into the K objects) of the sounding one.
        source: ``48000`` float32, the sounding signature scaled to unit RMS.
        noise: ``48000`` float32, the background noise scaled to the configured SNR.
        background: the background kind (``noise``, ``gradient`` or ``stripes``).
    """

    image: np.ndarray
    masks: np.ndarray
    boxes: np.ndarray
    categories: list[int]
    sounding: int
    source: np.ndarray
    noise: np.ndarray
    background: str = ""
    objects_px: list[tuple[int, int, int]] = field(default_factory=list)

    @property
    def mix(self) -> np.ndarray:
        """The clip before normalisation: ``source + noise`` (``48000`` float32)."""
        return self.source + self.noise


def _scene_rngs(seed: int, stream: str, index: int) -> list[np.random.Generator]:
    seq = np.random.SeedSequence(entropy=seed, spawn_key=(_STREAMS[stream], index))
    return [np.random.default_rng(s) for s in seq.spawn(3)]  # layout, sound, noise


def _muted_colour(rng: np.random.Generator) -> np.ndarray:
    return np.clip(rng.uniform(60, 175) + rng.uniform(-18, 18, size=3), 0, 255)


def _render_background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, str]:
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


def _band_noise(rng: np.random.Generator, n: int, lo_hz: float, hi_hz: float) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE_HZ)
    spectrum[(freqs < lo_hz) | (freqs > hi_hz)] = 0
    return np.fft.irfft(spectrum, n)


def _tone(freq_hz: np.ndarray) -> np.ndarray:
    """Sine with a time-varying frequency (``N`` Hz values): phase is the running sum."""
    return np.sin(2 * np.pi * np.cumsum(freq_hz) / SAMPLE_RATE_HZ)


def _render_sound(kind: str, rng: np.random.Generator, n: int) -> np.ndarray:
    """A category's signature: ``n`` float64 samples at 16 kHz, frequencies jittered by +-6%."""
    t = np.arange(n) / SAMPLE_RATE_HZ
    jitter = rng.uniform(0.94, 1.06)
    offset = rng.uniform(0, 1)  # seconds: moves periodic patterns in time
    if kind == "hum":  # harmonic tone, 180 Hz fundamental, 1/k partials
        f0 = 180 * jitter
        return sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 7))
    if kind == "whistle":  # 1.8 kHz tone with a 5 Hz vibrato
        return _tone(1800 * jitter * (1 + 0.02 * np.sin(2 * np.pi * 5 * (t + offset))))
    if kind == "hiss":  # noise band 3-6 kHz
        return _band_noise(rng, n, 3000 * jitter, 6000 * jitter)
    if kind == "chirp":  # 400 -> 2400 Hz sweeps, two per second
        phase = ((t + offset) % 0.5) / 0.5
        return _tone(jitter * (400 + 2000 * phase))
    if kind == "beep":  # 1 kHz tone gated at 4 Hz
        gate = (((t + offset) * 4) % 1 < 0.5).astype(np.float64)
        gate = np.convolve(gate, np.hanning(81) / np.hanning(81).sum(), mode="same")  # 5 ms ramps
        return gate * _tone(np.full(n, 1000 * jitter))
    if kind == "clicks":  # decaying broadband bursts at 10 Hz
        out = np.zeros(n)
        burst = rng.standard_normal(160) * np.exp(-np.arange(160) / 40)
        period = int(SAMPLE_RATE_HZ / (10 * jitter))
        for start in range(int(offset * period), n, period):
            seg = out[start : start + 160]
            seg += burst[: seg.size]
        return out
    if kind == "rumble":  # noise band 150-500 Hz, slowly modulated
        return _band_noise(rng, n, 150 * jitter, 500 * jitter) * (
            0.6 + 0.4 * np.sin(2 * np.pi * 1.5 * t + rng.uniform(0, 2 * np.pi))
        )
    if kind == "siren":  # 700 / 1000 Hz alternating every 0.25 s
        high = ((t + offset) * 2) % 1 < 0.5
        return _tone(jitter * np.where(high, 1000.0, 700.0))
    raise ValueError(f"unknown sound {kind!r}")


def _pink_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE_HZ)
    spectrum /= np.sqrt(np.maximum(freqs, 20.0))
    return np.fft.irfft(spectrum, n)


def _unit_rms(x: np.ndarray) -> np.ndarray:
    return x / np.sqrt(np.mean(x**2))


def render_scene(config: SynthConfig, stream: str, index: int) -> RenderedScene:
    """Render scene ``index`` of ``stream`` (``"main"`` or ``"pretrain"``) of a SynthAV set.

    Args:
        config: the set's settings.
        stream: which random stream; main and pretraining scenes never coincide.
        index: scene number within the stream.

    Returns:
        The frame, object masks and boxes, categories and the two audio components.
    """
    if stream not in _STREAMS:
        raise ValueError(f"stream must be one of {sorted(_STREAMS)}, got {stream!r}")
    layout_rng, sound_rng, noise_rng = _scene_rngs(config.seed, stream, index)
    if stream == "pretrain":
        lo, hi, share = PRETRAIN_OBJECTS[0], min(PRETRAIN_OBJECTS[1], config.num_categories), False
    else:
        lo, hi, share = config.min_objects, config.max_objects, config.share_category
    k = int(layout_rng.integers(lo, hi + 1))
    num_cat = config.num_categories
    sounding_cat = int(layout_rng.integers(num_cat))
    pool = np.arange(num_cat) if share else np.delete(np.arange(num_cat), sounding_cat)
    distractors = [int(c) for c in layout_rng.choice(pool, size=k - 1, replace=False)]
    sounding = int(layout_rng.integers(k))
    categories = [*distractors[:sounding], sounding_cat, *distractors[sounding:]]

    image, background = _render_background(layout_rng, FRAME_SIZE)
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

    n = int(round(CLIP_SECONDS * SAMPLE_RATE_HZ))
    source = _unit_rms(_render_sound(CATEGORIES[sounding_cat].sound, sound_rng, n))
    noise = _unit_rms(_pink_noise(noise_rng, n)) * 10 ** (-config.snr_db / 20)
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


# --------------------------------------------------------------------------------------------------
# Writing a set
# --------------------------------------------------------------------------------------------------


def _encode_jpeg(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image, mode="RGB").save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


@dataclass
class _SceneRecord:
    id: str
    stream: str
    index: int
    categories: list[int]
    sounding: int
    boxes: list[list[float]]
    frame_sha1: str
    location_coverage: np.ndarray | None


def _make_scene(out_dir: str, config: SynthConfig, stream: str, index: int) -> _SceneRecord:
    """Render one scene and write its frame, clip and log-mel unless all three exist (resume)."""
    sid = scene_id(stream, index)
    root = Path(out_dir)
    frame_path, audio_path, spect_path = (root / p for p in _relative_paths(sid))
    scene = render_scene(config, stream, index)
    jpeg = _encode_jpeg(scene.image)
    if not _scene_files_intact(frame_path, audio_path, spect_path, jpeg):
        clip = official_clip(scene.mix)
        spect = waveform_to_examples(clip).numpy()  # 3 x 96 x 64
        atomic_save_npy(spect_path, spect)
        atomic_write_bytes(audio_path, encode_wav_float32(clip))
        atomic_write_bytes(frame_path, jpeg)  # last: its presence marks the scene as done
    return _SceneRecord(
        id=sid,
        stream=stream,
        index=index,
        categories=scene.categories,
        sounding=scene.sounding,
        boxes=[[round(float(c), 6) for c in b] for b in scene.boxes],
        frame_sha1=hashlib.sha1(jpeg).hexdigest(),
        location_coverage=(
            location_coverage(scene.masks, scene.categories, config.num_categories)
            if stream == "pretrain"
            else None
        ),
    )


#: size of a SynthAV clip's WAV file
_WAV_BYTES = len(encode_wav_float32(np.zeros(int(round(CLIP_SECONDS * SAMPLE_RATE_HZ)), np.float32)))


def _scene_files_intact(frame: Path, audio: Path, spect: Path, jpeg: bytes) -> bool:
    """Whether a scene written before (resume) can be kept: its frame is the one rendered now, its clip
    has the right size and its log-mel reads as 3 x 96 x 64. A scene cut short by a kill (the only damage
    a run of ours can leave, every file being written atomically) is rewritten; the clip's and log-mel's
    values are not recomputed to compare, so a file edited in place keeps its edit."""
    try:
        if frame.read_bytes() != jpeg or audio.stat().st_size != _WAV_BYTES:
            return False
        array = np.load(spect, mmap_mode="r", allow_pickle=False)
        return array.shape == (3, 96, 64) and array.dtype == np.float32
    except (OSError, ValueError, EOFError):
        return False


def _make_scene_star(args: tuple) -> _SceneRecord:
    return _make_scene(*args)


def _worker_init(command_pid: int) -> None:
    import torch

    end_with(command_pid)  # a SIGKILLed command runs no clean-up: its workers end by themselves

    # Each worker is one of ``workers`` processes: one thread each avoids oversubscribing the cores.
    torch.set_num_threads(1)
    # Ctrl-C is the parent's to handle (it stops the pool); workers printing their own tracebacks of the
    # same KeyboardInterrupt would bury the one line that matters.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _stale_temp(path: Path) -> bool:
    """A temporary file of :func:`sspl.io.atomic_open` (``.<name>.<random>.tmp``), left by a killed run."""
    return path.name.startswith(".") and path.name.endswith(".tmp") and path.is_file()


def _relative_paths(sid: str) -> tuple[str, str, str]:
    return f"frames/{sid}.jpg", f"audio/{sid}.wav", f"spect/{sid}.npy"


def _check_output_dir(out_dir: Path, config: SynthConfig) -> None:
    """Refuse a non-empty folder unless it is a SynthAV set of the same settings (which is resumed)."""
    if not out_dir.exists():
        above = nearest_existing(out_dir)
        if not above.is_dir():
            raise DataError(f"{out_dir}: cannot be made, {above} is a file, not a folder")
        return
    if not out_dir.is_dir():
        raise DataError(f"{out_dir}: exists and is not a folder")
    if not any(p for p in out_dir.iterdir() if not _stale_temp(p) and p.name != LOCK_NAME):
        return
    if not (out_dir / META_NAME).is_file():
        raise DataError(f"{out_dir}: folder is not empty and holds no SynthAV set; choose a new folder")
    try:
        meta = read_meta(out_dir)
    except ValueError as e:
        raise DataError(str(e)) from e
    previous = meta.get("synth")
    if meta.get("kind") != "synth" or previous is None:
        raise DataError(f"{out_dir}: holds a prepared set of kind {meta.get('kind')!r}; choose a new folder")
    wanted = config.to_json()
    differ = [
        f"{_option_name(k)} {previous.get(k)!r} there, {wanted[k]!r} now"
        for k in wanted
        if previous.get(k) != wanted[k]
    ]
    if meta.get("generator_version") != GENERATOR_VERSION:
        differ.append(f"generator version {meta.get('generator_version')!r} there, {GENERATOR_VERSION!r} now")
    if differ:
        raise DataError(
            f"{out_dir}: holds a SynthAV set made with other settings ({'; '.join(differ)}); "
            "choose a new folder, or repeat that set's settings to resume it"
        )


def _option_name(field_name: str) -> str:
    """The `sspl synth` option of a :class:`SynthConfig` field (``object_size`` -> ``--object-size``)."""
    return "--" + field_name.replace("_", "-")


def generate_synth(
    out_dir: str | os.PathLike,
    config: SynthConfig,
    *,
    workers: int | None = None,
    progress: bool = True,
) -> dict:
    """Generate a SynthAV set in the prepared format (layout in the module docstring).

    Rerunning with the same settings on the same folder resumes: finished scenes are kept.

    Args:
        out_dir: output folder (created; must be empty or an unfinished set of the same settings).
        config: the set's settings.
        workers: processes (default: all cores); results do not depend on it.
        progress: show a progress bar.

    Returns:
        A summary: ``{"out_dir", "scenes": {split: count}, "seconds"}``.

    Raises:
        DataError: the folder holds something else, or two generated frames are identical.
        OutputInUseError: another process is writing the folder.
        PermissionError: nothing can be written there.
    """
    out = Path(out_dir)
    _check_output_dir(out, config)
    check_output_folder(out, "OUT")
    with output_lock(out, "sspl synth"):  # one writer: two runs would mix their scenes and records
        _check_output_dir(out, config)  # again: a run that held the folder until now may have written it
        return _generate(out, config, workers, progress)


def _generate(out: Path, config: SynthConfig, workers: int | None, progress: bool) -> dict:
    """The work of :func:`generate_synth`, once ``out`` is checked and held."""
    start = time.perf_counter()
    categories = [asdict(c) for c in config.categories]
    write_meta(
        out,
        "synth",
        audio_seconds=CLIP_SECONDS,
        sample_rate=SAMPLE_RATE_HZ,
        frame_size=FRAME_SIZE,
        generator_version=GENERATOR_VERSION,
        synth=config.to_json(),
        categories=categories,
        location_labels={
            "grid": LABEL_GRID,
            "background": BACKGROUND_LABEL,
            "ignore": IGNORE_LABEL,
            "object": "1 + category index",
            "object_min_coverage": OBJECT_LABEL_MIN_COVERAGE,
            "background_max_coverage": BACKGROUND_MAX_COVERAGE,
        },
        files={
            "annotations": ANNOTATIONS_NAME,
            "scenes": SCENES_NAME,
            "pretrain_ids": PRETRAIN_IDS,
            "pretrain_location_labels": PRETRAIN_LOCATION_LABELS,
            "pretrain_location_coverage": PRETRAIN_LOCATION_COVERAGE,
            "pretrain_sound_labels": PRETRAIN_SOUND_LABELS,
        },
    )
    for sub in (".", "frames", "audio", "spect", PRETRAIN_DIR):
        (out / sub).mkdir(exist_ok=True)
        for stale in filter(_stale_temp, (out / sub).iterdir()):  # left by a killed run
            stale.unlink(missing_ok=True)

    tasks = [(str(out), config, "main", i) for i in range(config.num)]
    tasks += [(str(out), config, "pretrain", i) for i in range(config.pretrain_num)]
    workers = max(1, min(workers or os.cpu_count() or 1, len(tasks)))
    records = _run_tasks(tasks, workers, progress)

    splits = split_assignment(config)
    split_of = {r.id: (splits[r.index] if r.stream == "main" else "pretrain") for r in records}
    _check_unique_frames(records, split_of)

    names = [c.name for c in config.categories]
    rows, annotations, scenes = [], [], {}
    for r in records:
        frame, audio, spect = _relative_paths(r.id)
        label = names[r.categories[r.sounding]]
        rows.append(
            ManifestRow(
                id=r.id,
                frame=frame,
                audio=audio,
                spect=spect,
                duration=CLIP_SECONDS,
                sample_rate=SAMPLE_RATE_HZ,
                label=label,
                split=split_of[r.id],
            )
        )
        annotations.append({"file": r.id, "class": label, "bbox": [r.boxes[r.sounding]]})
        scenes[r.id] = {
            "split": split_of[r.id],
            "sounding": r.sounding,
            "objects": [{"category": names[c], "bbox": b} for c, b in zip(r.categories, r.boxes)],
        }
    atomic_save_json(out / ANNOTATIONS_NAME, annotations, indent=0)
    atomic_save_json(out / SCENES_NAME, scenes, indent=0)
    pre = [r for r in records if r.stream == "pretrain"]
    atomic_write_text(out / PRETRAIN_IDS, "".join(f"{r.id}\n" for r in pre))
    coverage = np.zeros((len(pre), 1 + config.num_categories, LABEL_GRID, LABEL_GRID), np.float32)
    for k, r in enumerate(pre):
        coverage[k] = r.location_coverage
    atomic_save_npy(out / PRETRAIN_LOCATION_COVERAGE, coverage)
    labels = np.stack([location_labels(c) for c in coverage]) if pre else coverage[:, 0].astype(np.uint8)
    atomic_save_npy(out / PRETRAIN_LOCATION_LABELS, labels)
    atomic_save_npy(
        out / PRETRAIN_SOUND_LABELS, np.array([r.categories[r.sounding] for r in pre], dtype=np.int64)
    )
    write_manifest(out, rows)  # last: a set with a manifest is complete

    counts = {s: sum(1 for v in split_of.values() if v == s) for s in ("train", "val", "test", "pretrain")}
    fractions = {"train": 1.0, "val": config.val_fraction, "test": config.test_fraction}
    for split, fraction in fractions.items():
        if fraction > 0 and counts[split] == 0:
            log.warning(
                "SynthAV %s: the %s split is empty (%d scenes are too few for its share %g); use a larger --num",
                out,
                split,
                config.num,
                fraction if split != "train" else 1 - config.val_fraction - config.test_fraction,
            )
    return {"out_dir": str(out), "scenes": counts, "seconds": round(time.perf_counter() - start, 2)}


def _run_tasks(tasks: list[tuple], workers: int, progress: bool) -> list[_SceneRecord]:
    from tqdm import tqdm

    bar = tqdm(total=len(tasks), desc="synth", unit="scene", disable=not progress)
    try:
        if workers == 1:
            records = []
            for t in tasks:
                records.append(_make_scene(*t))
                bar.update()
            return records
        import multiprocessing as mp

        # spawn, not fork: forking a process whose torch thread pool is running can deadlock.
        # The workers start with Ctrl-C ignored (the disposition passes to the new interpreters), so one
        # arriving while they still import torch does not print their tracebacks; the parent stops them.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            pool = mp.get_context("spawn").Pool(workers, initializer=_worker_init, initargs=(os.getpid(),))
        finally:
            signal.signal(signal.SIGINT, previous)
        with pool:
            records = []
            for r in pool.imap(_make_scene_star, tasks, chunksize=8):
                records.append(r)
                bar.update()
            return records
    finally:
        bar.close()


def _check_unique_frames(records: list[_SceneRecord], split_of: dict[str, str]) -> None:
    seen: dict[str, str] = {}
    for r in records:
        other = seen.setdefault(r.frame_sha1, r.id)
        if other != r.id:
            raise DataError(
                f"SynthAV generated identical frames for {other} ({split_of[other]}) and {r.id} "
                f"({split_of[r.id]}); this is a bug, please report it"
            )


def load_scenes(data_dir: str | os.PathLike) -> dict:
    """Read ``scenes.json`` of a SynthAV set: ``{id: {"split", "sounding", "objects": [...]}}``."""
    path = Path(data_dir) / SCENES_NAME
    if not path.is_file():
        raise DataError(f"{path}: missing; is {data_dir} a SynthAV set written by `sspl synth`?")
    return json.loads(path.read_text(encoding="utf-8"))
