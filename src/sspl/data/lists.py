"""Id lists: the field's standard training subsets, benchmark test ids, deterministic samplers, the
held-out validation split, and the train/test leakage check.

Bundled lists live in ``sspl/assets/lists`` (gzipped; sources and licences in ``SOURCES.md`` there) and
the benchmark test ids in ``sspl/assets/benchmarks`` (``TEST_ID_LISTS`` names some of them as lists too),
so everything here works offline.

Id conventions (every list is normalised to them on reading):

- SoundNet-Flickr: the Flickr photo id, e.g. ``10000130166`` (files may carry ``.jpg``/``.png``/``.wav``
  and folders; both are stripped).
- VGG-Sound: ``<ytid>_<start>``, the 11-character YouTube id and the clip start in seconds zero-padded to
  6 digits, e.g. ``zpWuikVorYg_000032``. A VGG-Sound CSV row ``ytid,start,label[,split]`` becomes that id.
"""

from __future__ import annotations

import csv
import functools
import gzip
import hashlib
import io
import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePosixPath

from ..errors import DataError
from ..paths import plain_name

__all__ = [
    "BUNDLED_LISTS",
    "EXTENDED_LISTS",
    "OVERLAP_BENCHMARKS",
    "TEST_ID_LISTS",
    "ListRow",
    "SilentPair",
    "bundled_list_names",
    "canonical_id",
    "check_overlap",
    "find_overlap",
    "flickr_id",
    "load_list",
    "parse_ids",
    "parse_pairs",
    "parse_rows",
    "read_asset_text",
    "read_list_text",
    "sample_ids",
    "silent_pairs",
    "test_ids",
    "train_val_split",
    "vggsound_clip",
]

log = logging.getLogger(__name__)

#: Bundled list name -> file under ``sspl/assets/lists`` (without the ``.gz``).
BUNDLED_LISTS: dict[str, str] = {
    "flickr_10k": "flickr_10k.txt",
    "flickr_144k": "flickr_144k.txt",
    "senocak_flickr_train_144k": "senocak_flickr_train_144k.txt",
    "flickr_test_250_fixed": "flickr_test_250_fixed.txt",
    "flickr_test_plus_silent": "flickr_test_plus_silent.csv",
    "vggss_10k": "vggss_10k.txt",
    "vggss_144k": "vggss_144k.txt",
    "vggss_heard": "vggss_heard.txt",
    "vggss_heard_test": "vggss_heard_test.csv",
    "vggss_unheard_test": "vggss_unheard_test.csv",
    "vggss_test_plus_silent": "vggss_test_plus_silent.csv",
    "vggsound_test_split": "vggsound_test_split.csv",
}

#: Bundled lists with no file of their own, read from a benchmark's metadata: name -> ``(benchmark,
#: subset)`` of :func:`test_ids`. ``vggss_test_5158`` is the ids of the bundled VGG-SS boxes
#: (``sspl/assets/benchmarks/vggss_test_5158.json``), the clips ``sspl evaluate --benchmark vggss`` can score.
TEST_ID_LISTS: dict[str, tuple[str, str]] = {"vggss_test_5158": ("vggss", "full")}


def bundled_list_names() -> list[str]:
    """Every name ``--list`` / :func:`load_list` takes for a bundled list, sorted: the list files of
    :data:`BUNDLED_LISTS` and the benchmark id lists of :data:`TEST_ID_LISTS`."""
    return sorted([*BUNDLED_LISTS, *TEST_ID_LISTS])


#: Test sets the leakage check knows; ``"all"`` means the two benchmarks we evaluate on.
OVERLAP_BENCHMARKS = ("flickr", "vggss", "vggsound_test")
_ALL_BENCHMARKS = ("flickr", "vggss")

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
_AUDIO_SUFFIXES = (".wav", ".mp3", ".flac", ".npy")
_VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov")
_MEDIA_SUFFIXES = frozenset(_IMAGE_SUFFIXES + _AUDIO_SUFFIXES + _VIDEO_SUFFIXES)
_HEADER_WORDS = frozenset({"id", "ids", "video", "file", "filename", "name", "ytid", "youtube_id"})
_YTID_LEN = 11
_LIST_SPLITS = frozenset({"train", "val", "test"})
_EXAMPLES_IN_MESSAGE = 5


def read_asset_text(relpath: str) -> str:
    """Text of a bundled metadata file, e.g. ``"benchmarks/vggss_test_5158.json"``.

    The file may be stored gzipped (``<relpath>.gz``); callers never need to know.

    Raises:
        DataError: when the package ships no such file (a broken installation).
    """
    root = resources.files("sspl") / "assets"
    for candidate in (relpath, relpath + ".gz"):
        node = root.joinpath(*candidate.split("/"))
        if node.is_file():
            data = node.read_bytes()
            if candidate.endswith(".gz"):
                data = gzip.decompress(data)
            return data.decode("utf-8")
    raise DataError(f"sspl/assets/{relpath}: bundled file missing; reinstall sspl")


def _stem(token: str) -> str:
    """Strip folders and a media extension: ``a/b/123.jpg`` -> ``123``."""
    name = token.strip()
    if "/" in name or "\\" in name:
        name = PurePosixPath(name.replace("\\", "/")).name
    if "." not in name:
        return name
    root, ext = os.path.splitext(name)
    return root if ext.lower() in _MEDIA_SUFFIXES else name


@dataclass(frozen=True)
class ListRow:
    """One row of an id list: the clip id and, for VGG-Sound CSV rows, its label and split."""

    id: str
    label: str = ""
    split: str = ""
    line: int = 0


def parse_rows(text: str, source: str = "<text>") -> list[ListRow]:
    """Parse an id list: one id per line, or CSV rows (the one reading ``--list`` and ``train_list`` share).

    Rules, per row: blank lines and lines starting with ``#`` are skipped; the first other row is skipped
    when its first field is a header word (``id``, ``video``, ``file``, ``ytid`` ...); a row of 3 or more
    fields whose second field is an integer is a VGG-Sound row ``ytid,start,label[,split]`` and gives
    ``<ytid>_<start:06d>`` with its label and split, unless a header names other columns (a
    ``ytid,start...`` header keeps that reading); otherwise the first field is the id (so ``id,<anything>``
    works, e.g. the official ``flickr_test249_in5k.csv``). Folders and media extensions are stripped
    from ids, and a VGG-Sound id ``<ytid>_<start>`` gets its start zero-padded (``abc..._30`` and
    ``abc..._000030`` are one clip). In a file of VGG-Sound rows every row must be one: a row whose
    start is not a whole number (``ytid,ten,dog,train``) is an error, not another clip's id.

    Args:
        text: the file contents.
        source: file name used in error messages.

    Returns:
        The rows in file order (duplicates kept), each with its line number.

    Raises:
        DataError: when no id is found, an id is not a plain file name (``..``, a control character), or a
            row breaks the file's VGG-Sound format (names the line).
    """
    rows: list[ListRow] = []
    other: list[tuple[int, list[str]]] = []  # rows read as plain ids, checked below
    vggsound_rows, first, seen_vggsound = True, True, False
    for line, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        fields = [f.strip() for f in row]
        if not fields or not fields[0] or fields[0].startswith("#"):
            continue
        if first:
            first = False
            if fields[0].lower() in _HEADER_WORDS:
                vggsound_rows = len(fields) >= 3 and fields[1].lower().startswith("start")
                continue
        if vggsound_rows and len(fields) >= 3 and fields[1].isdigit():
            split = fields[3] if len(fields) > 3 else ""
            rows.append(ListRow(f"{_stem(fields[0])}_{int(fields[1]):06d}", fields[2], split, line))
            seen_vggsound = True
        else:
            rows.append(ListRow(_padded(_stem(fields[0])), line=line))
            other.append((line, fields))
    for row in rows:  # an id names the prepared files (frames/<id>.jpg ...)
        plain_name(row.id, f"{source}:{row.line}")
    if not rows:
        raise DataError(
            f"{source}: no ids found (expected one id per line or `ytid,start,label,split` CSV rows)"
        )
    for line, fields in other:
        # A row that breaks the file's VGG-Sound format would otherwise be read as another clip's id.
        split_like = len(fields) == 4 and fields[3] in _LIST_SPLITS
        if vggsound_rows and (seen_vggsound or split_like):
            start = repr(fields[1]) if len(fields) > 1 else "missing"
            raise DataError(
                f"{source}:{line}: not a `ytid,start,label[,split]` row like the others (start {start} "
                f"is not a whole number of seconds): {','.join(fields)}"
            )
    return rows


def _padded(clip_id: str) -> str:
    """A VGG-Sound id ``<11-character ytid>_<start>`` with its start zero-padded to 6 digits; others as given."""
    if len(clip_id) > _YTID_LEN + 1 and clip_id[_YTID_LEN] == "_" and clip_id[_YTID_LEN + 1 :].isdigit():
        return f"{clip_id[:_YTID_LEN]}_{int(clip_id[_YTID_LEN + 1 :]):06d}"
    return clip_id


def canonical_id(clip_id: str) -> str:
    """A clip id in the conventions above: a VGG-Sound ``<ytid>_<start>`` gets its start zero-padded
    (``gEvCUcZ6w88_30`` -> ``gEvCUcZ6w88_000030``); any other id is returned as given."""
    return _padded(clip_id)


def parse_ids(text: str, source: str = "<text>") -> list[str]:
    """The ids of :func:`parse_rows`, in file order (duplicates kept)."""
    return [row.id for row in parse_rows(text, source)]


def read_list_text(name_or_path: str | os.PathLike) -> tuple[str, str]:
    """``(text, source)`` of a bundled list or a list file (UTF-8, a BOM allowed, ``.gz`` read too).

    Raises:
        DataError: when it is neither a bundled name nor a readable UTF-8 file.
    """
    if isinstance(name_or_path, str) and not Path(name_or_path).is_file():
        if name_or_path in BUNDLED_LISTS:
            relpath = f"lists/{BUNDLED_LISTS[name_or_path]}"
            return read_asset_text(relpath), f"sspl/assets/{relpath}"
        if name_or_path in TEST_ID_LISTS:
            benchmark, subset = TEST_ID_LISTS[name_or_path]
            ids = _test_ids(benchmark, subset)
            return "".join(f"{i}\n" for i in ids), f"sspl/assets/{_test_id_relpath(benchmark, subset)}"
    path = Path(name_or_path)
    if not path.is_file():
        bundled = ", ".join(bundled_list_names())
        raise DataError(f"{path}: no such list file, and not a bundled list (bundled: {bundled})")
    data = path.read_bytes()
    try:
        if path.suffix == ".gz":
            data = gzip.decompress(data)
        return data.decode("utf-8-sig"), str(path)
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable gzip file ({e})") from e
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not a UTF-8 text list ({e})") from e


@functools.lru_cache(maxsize=32)
def _bundled(name: str) -> tuple[str, ...]:
    relpath = f"lists/{BUNDLED_LISTS[name]}"
    return tuple(parse_ids(read_asset_text(relpath), f"sspl/assets/{relpath}"))


def load_list(name_or_path: str | os.PathLike) -> list[str]:
    """Ids of a bundled list (see ``BUNDLED_LISTS``) or of a list file (plain ids or VGG-Sound CSV).

    Args:
        name_or_path: a bundled name such as ``"flickr_10k"`` or ``"vggss_test_5158"``, or a path (``.gz`` files are read too).

    Returns:
        The ids in file order, normalised as described in :func:`parse_rows`.

    Raises:
        DataError: when it is neither a bundled name nor a readable file, or holds no ids.
    """
    if isinstance(name_or_path, str) and name_or_path in BUNDLED_LISTS:
        return list(_bundled(name_or_path))
    if isinstance(name_or_path, str) and name_or_path in TEST_ID_LISTS:
        return list(_test_ids(*TEST_ID_LISTS[name_or_path]))
    return parse_ids(*read_list_text(name_or_path))


def flickr_id(token: str) -> str:
    """Canonical SoundNet-Flickr id: ``"frames/10000130166.jpg"`` -> ``"10000130166"``."""
    return _stem(token)


def vggsound_clip(token: str) -> tuple[str, int | None]:
    """Split a VGG-Sound id into (YouTube id, start seconds or None).

    Accepts ``<ytid>_<start>`` with the start zero-padded or not, a bare ``<ytid>``, and either with
    folders or a media extension. YouTube ids are 11 characters and may themselves contain ``_``, so
    the start is only split off after the 11th character (or, for ids of another length, after the last
    ``_`` when what follows is a number).
    """
    stem = _stem(token)
    if len(stem) > _YTID_LEN + 1 and stem[_YTID_LEN] == "_" and stem[_YTID_LEN + 1 :].isdigit():
        return stem[:_YTID_LEN], int(stem[_YTID_LEN + 1 :])
    if len(stem) == _YTID_LEN:
        return stem, None
    head, sep, tail = stem.rpartition("_")
    if sep and head and tail.isdigit():
        return head, int(tail)
    return stem, None


def _rank_key(seed: int, token: str) -> bytes:
    # A keyed hash ranks ids independently of their order in the input.
    return hashlib.blake2b(f"{seed}\x00{token}".encode(), digest_size=16).digest()


def sample_ids(ids: Iterable[str], n: int, seed: int = 0) -> list[str]:
    """Deterministic subset of ``n`` distinct ids.

    The subset depends only on the set of ids and the seed (not their order), and grows by nesting:
    ``sample_ids(ids, n)`` is contained in ``sample_ids(ids, n + 1)`` for the same seed.

    Returns:
        The chosen ids in the order they first appear in ``ids``.

    Raises:
        ValueError: when ``n`` is negative or larger than the number of distinct ids.
    """
    unique = list(dict.fromkeys(ids))
    if not 0 <= n <= len(unique):
        raise ValueError(f"cannot sample {n} ids from {len(unique)} distinct ids")
    chosen = set(sorted(unique, key=lambda t: _rank_key(seed, t))[:n])
    return [t for t in unique if t in chosen]


def train_val_split(
    ids: Iterable[str], val_fraction: float = 0.05, seed: int = 0
) -> tuple[list[str], list[str]]:
    """Split ids into training and held-out validation ids, deterministically.

    The validation set is the ``round(len * val_fraction)`` distinct ids of lowest keyed hash (at least
    one when ``val_fraction > 0`` and there are two or more ids; never all of them), so it depends only
    on the set of ids and the seed, not on their order.

    Args:
        ids: training candidates (duplicates are dropped).
        val_fraction: fraction in [0, 1) held out; the default 5% is the CLI's ``--val-fraction``.
        seed: changes which ids are held out.

    Returns:
        ``(train, val)``, each in the order the ids first appear in ``ids``.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    unique = list(dict.fromkeys(ids))
    n_val = int(len(unique) * val_fraction + 0.5)
    if val_fraction > 0 and len(unique) >= 2:
        n_val = min(max(n_val, 1), len(unique) - 1)
    val = set(sample_ids(unique, n_val, seed))
    return [t for t in unique if t not in val], [t for t in unique if t in val]


#: Benchmark -> bundled list of its extended test set's clips without a visible source (Mo & Morgado,
#: NeurIPS 2022): CSV rows ``video,audio,label``, each a frame paired with a sound it does not show.
EXTENDED_LISTS: dict[str, str] = {"flickr": "flickr_test_plus_silent", "vggss": "vggss_test_plus_silent"}
#: joins a silent pair's video and audio ids into the pair's clip id
PAIR_SEPARATOR = "+"


@dataclass(frozen=True)
class SilentPair:
    """A clip of an extended test set whose sound has no visible source.

    Attributes:
        id: the clip id: ``<video>+<audio>`` (:data:`PAIR_SEPARATOR`) when the frame and the sound come
            from two clips, else the clip's own id (VGG-SS's off-screen and non-audible clips).
        video: the clip the frame comes from.
        audio: the clip the sound comes from.
    """

    id: str
    video: str
    audio: str


def silent_pairs(benchmark: str) -> list[SilentPair]:
    """The clips without a visible source that the extended protocol adds to a benchmark's test set
    (Extended Flickr-SoundNet: 250, each a test frame with another clip's sound; Extended VGG-SS:
    5,158, of which 379 are clips heard but not seen). ``load_list`` of these lists gives the videos only.

    Raises:
        ValueError: for a benchmark without an extended set (see :data:`EXTENDED_LISTS`).
    """
    if benchmark not in EXTENDED_LISTS:
        raise ValueError(f"no extended test set for {benchmark!r}; known: {', '.join(EXTENDED_LISTS)}")
    return list(_silent_pairs(benchmark))


@functools.lru_cache(maxsize=4)
def _silent_pairs(benchmark: str) -> tuple[SilentPair, ...]:
    relpath = f"lists/{BUNDLED_LISTS[EXTENDED_LISTS[benchmark]]}"
    return tuple(parse_pairs(read_asset_text(relpath), f"sspl/assets/{relpath}") or ())


def parse_pairs(text: str, source: str = "<text>") -> list[SilentPair] | None:
    """The rows of an extended-set list (a ``video,audio[,label]`` header, as SLAVC's ``*_plus_silent.csv``)
    as pairs, or None when ``text`` is not such a list.

    As SLAVC reads them, only rows labelled ``non-sounding`` (or not labelled) are pairs; others are left
    out. Ids are normalised as :func:`parse_rows` does.

    Raises:
        DataError: a row without an audio id, or a pair id that is not a plain file name (names the line).
    """
    rows = [
        (line, [f.strip() for f in row]) for line, row in enumerate(csv.reader(io.StringIO(text)), start=1)
    ]
    rows = [(line, row) for line, row in rows if row and row[0] and not row[0].startswith("#")]
    if not rows or [f.lower() for f in rows[0][1][:2]] != ["video", "audio"]:
        return None
    pairs = []
    for line, row in rows[1:]:
        if len(row) < 2 or not row[1]:
            raise DataError(f"{source}:{line}: expected `video,audio,label`, got {','.join(row)}")
        if len(row) > 2 and row[2] not in ("", "non-sounding"):
            continue
        video, audio = _padded(_stem(row[0])), _padded(_stem(row[1]))
        clip = video if video == audio else f"{video}{PAIR_SEPARATOR}{audio}"
        pairs.append(SilentPair(plain_name(clip, f"{source}:{line}"), video, audio))
    return pairs


_TEST_ID_FILES: dict[tuple[str, str], str] = {
    ("flickr", "full"): "lists/flickr_test_250_fixed.txt",
    ("flickr", "original"): "benchmarks/flickr_test_list_250.txt",
    ("flickr", "sspl"): "benchmarks/flickr_test249_in5k.csv",
    ("vggss", "sspl"): "benchmarks/vggss_test_4692.csv",
    ("vggsound_test", "full"): "lists/vggsound_test_split.csv",
}


_VGGSS_BOXES = "benchmarks/vggss_test_5158.json"


def _test_id_relpath(benchmark: str, subset: str) -> str:
    """The bundled file (under ``sspl/assets``) that holds a benchmark's test ids."""
    return _VGGSS_BOXES if (benchmark, subset) == ("vggss", "full") else _TEST_ID_FILES[(benchmark, subset)]


@functools.lru_cache(maxsize=16)
def _test_ids(benchmark: str, subset: str) -> tuple[str, ...]:
    relpath = _test_id_relpath(benchmark, subset)
    if relpath == _VGGSS_BOXES:
        return tuple(entry["file"] for entry in json.loads(read_asset_text(relpath)))
    return tuple(parse_ids(read_asset_text(relpath), f"sspl/assets/{relpath}"))


def test_ids(benchmark: str, subset: str = "full") -> list[str]:
    """Test ids of a benchmark.

    Args:
        benchmark: ``"flickr"``, ``"vggss"`` or ``"vggsound_test"`` (the official VGG-Sound test split).
        subset: ``"full"``: the whole benchmark (Flickr: the 250 annotated ids with the misspelled
            ``3908875357`` corrected to ``3908875350``; VGG-SS: the 5,158 annotated ids).
            ``"sspl"``: what the official SSPL code evaluates (Flickr: 249 ids, without
            ``3908875350``; VGG-SS: the 4,692 clips still downloadable).
            ``"original"`` (Flickr only): Senocak et al.'s list as published, misspelled id included.

    Raises:
        ValueError: for an unknown benchmark or subset.
    """
    known = sorted({f"{b}/{s}" for b, s in _TEST_ID_FILES} | {"vggss/full"})
    if (benchmark, subset) not in _TEST_ID_FILES and (benchmark, subset) != ("vggss", "full"):
        raise ValueError(f"no test ids for benchmark {benchmark!r}, subset {subset!r} (known: {known})")
    return list(_test_ids(benchmark, subset))


def _benchmark_names(benchmark: str | Sequence[str]) -> tuple[str, ...]:
    names = (benchmark,) if isinstance(benchmark, str) else tuple(benchmark)
    if names == ("all",):
        return _ALL_BENCHMARKS
    unknown = [b for b in names if b not in OVERLAP_BENCHMARKS]
    if unknown:
        raise ValueError(
            f"unknown benchmark(s) {unknown} for the leakage check; use 'all' or any of {OVERLAP_BENCHMARKS}"
        )
    return names


def find_overlap(train_ids: Iterable[str], benchmark: str | Sequence[str] = "all") -> dict[str, list[str]]:
    """Training ids that belong to benchmark test sets.

    Flickr ids match after stripping folders and extensions. VGG-Sound ids match as clips: the same
    YouTube id and start second (zero-padding ignored); a training id without a start matches every test
    clip of that video.

    Args:
        train_ids: the training ids, in any of the forms above.
        benchmark: ``"all"`` (Flickr 250 and VGG-SS 5,158), one name of ``OVERLAP_BENCHMARKS`` or a
            sequence of them; ``"vggsound_test"`` is the official VGG-Sound test split (15,446 clips,
            a superset of VGG-SS) and is only checked when asked for.

    Returns:
        Benchmark name -> the overlapping training ids as given (distinct, in input order).
    """
    names = _benchmark_names(benchmark)
    unique = list(dict.fromkeys(train_ids))
    found: dict[str, list[str]] = {}
    for name in names:
        if name == "flickr":
            test = {flickr_id(t) for t in _test_ids("flickr", "full")}
            found[name] = [t for t in unique if flickr_id(t) in test]
            continue
        clips = {vggsound_clip(t) for t in _test_ids(name, "full")}
        videos = {ytid for ytid, _ in clips}
        hits = []
        for t in unique:
            ytid, start = vggsound_clip(t)
            matched = ytid in videos if start is None else (ytid, start) in clips
            if matched:
                hits.append(t)
        found[name] = hits
    return found


def check_overlap(
    train_ids: Iterable[str], *, benchmark: str | Sequence[str] = "all", allow_overlap: bool = False
) -> int:
    """Refuse training ids that are benchmark test ids (see ``find_overlap`` for the matching rules).

    Args:
        train_ids: the ids a model is about to be trained (or a dataset prepared) on.
        benchmark: which test sets to compare with (``"all"``: Flickr 250 and VGG-SS 5,158).
        allow_overlap: when True, overlapping ids only produce a logged warning.

    Returns:
        The number of overlapping training ids (0 when clean).

    Raises:
        DataError: when ids overlap and ``allow_overlap`` is False; the message gives the count per
            benchmark and a few example ids.
    """
    found = find_overlap(train_ids, benchmark)
    total = sum(len(v) for v in found.values())
    if total == 0:
        return 0
    parts = [
        f"{len(hits)} in the {name} test set (e.g. {', '.join(hits[:_EXAMPLES_IN_MESSAGE])})"
        for name, hits in found.items()
        if hits
    ]
    message = f"{total} training id(s) are benchmark test ids: " + "; ".join(parts)
    if not allow_overlap:
        raise DataError(
            message + ". Remove them from the training list, or allow the overlap explicitly "
            "(--allow-overlap / allow_overlap=True) if you know the results will not be compared."
        )
    log.warning("%s; continuing because the overlap is allowed", message)
    return total
