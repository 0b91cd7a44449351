"""Known pretrained weights: where they come from, how they are checked, where they are cached.

Resolution order for a known weight file (first hit wins):

1. an explicit path given by the caller (config ``visual_weights: /path/to/file.pth``);
2. the environment variable of that weight (``SSPL_VGG16_WEIGHTS``, ``SSPL_RESNET18_WEIGHTS``,
   ``SSPL_VGGISH_WEIGHTS``);
3. the cache: ``$SSPL_CACHE`` or ``$XDG_CACHE_HOME/sspl`` (default ``~/.cache/sspl``), then torch hub's
   checkpoint folder (``~/.cache/torch/hub/checkpoints``, where torchvision and torchvggish put them);
4. a download into the cache (``download=True``), written atomically and checked before use.

Every file is checked by SHA-256: both releases name their files with the first 8 hex digits of the
file's SHA-256 (the torch hub convention: ``vgg16-397923af.pth``, ``resnet18-f37072fd.pth``, ``vggish-10086976.pth``),
and that digest prefix is what is verified; the full digests of VGG16 and ResNet-18 (the image encoder of
the released EZ-VSL, SLAVC and FNAC models) are pinned here and checked in full. VGGish's
release publishes no full digest, so its 8-digit prefix is checked, and the full SHA-256 of the user's
copy is pinned: given in ``$SSPL_VGGISH_SHA256``, else recorded in the cache folder's
:data:`PINS_FILE` when a copy first passes the prefix check (:func:`resolve`), or on demand
(:func:`pin`, ``sspl weights --pin``). A later copy with another digest is refused. When nothing is
found and the download fails (offline), the error names the file, the URL, and the ways to provide it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import WeightsError
from .io import atomic_save_json, make_shareable, nearest_existing

__all__ = [
    "KNOWN_WEIGHTS",
    "PINS_FILE",
    "KnownWeights",
    "cache_dir",
    "cached_path",
    "known_weights_name",
    "load_audio_encoder_weights",
    "load_visual_encoder_weights",
    "misconfigured",
    "pin",
    "pinned",
    "read_state_dict",
    "resolve",
    "sha256_file",
    "status",
    "unreadable",
]

log = logging.getLogger(__name__)

#: a partial download not written to for this long was left by a killed process, and is removed
STALE_PART_SECONDS = 600

#: the file in the cache folder that records the full SHA-256 pinned for each file published without one
PINS_FILE = "sha256-pins.json"

_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class KnownWeights:
    """A published weight file.

    Attributes:
        name: our name for it.
        filename: the published file name.
        url: where it is published.
        sha256_prefix: the leading hex digits of its SHA-256 (from the file name).
        sha256: the full SHA-256 when published, else ``None``.
        env_var: environment variable that may point at a local copy.
        description: what it is.
        pin_env_var: for a file published without a full SHA-256, the environment variable that may
            give the one its copy must have (see :func:`pinned`).
    """

    name: str
    filename: str
    url: str
    sha256_prefix: str
    env_var: str
    description: str
    sha256: str | None = None
    pin_env_var: str | None = None


KNOWN_WEIGHTS: dict[str, KnownWeights] = {
    "imagenet": KnownWeights(
        name="imagenet",
        filename="vgg16-397923af.pth",
        url="https://download.pytorch.org/models/vgg16-397923af.pth",
        sha256_prefix="397923af",
        env_var="SSPL_VGG16_WEIGHTS",
        description="torchvision VGG16 trained on ImageNet (VGG16_Weights.IMAGENET1K_V1), 528 MB",
        sha256="397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0",
    ),
    "imagenet-resnet18": KnownWeights(
        name="imagenet-resnet18",
        filename="resnet18-f37072fd.pth",
        url="https://download.pytorch.org/models/resnet18-f37072fd.pth",
        sha256_prefix="f37072fd",
        env_var="SSPL_RESNET18_WEIGHTS",
        description="torchvision ResNet-18 trained on ImageNet (ResNet18_Weights.IMAGENET1K_V1), 45 MB",
        sha256="f37072fd47e89c5e827621c5baffa7500819f7896bbacec160b1a16c560e07ec",
    ),
    "audioset": KnownWeights(
        name="audioset",
        filename="vggish-10086976.pth",
        url="https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth",
        sha256_prefix="10086976",
        env_var="SSPL_VGGISH_WEIGHTS",
        description="VGGish trained on AudioSet, torchvggish port (v0.1), 275 MB",
        pin_env_var="SSPL_VGGISH_SHA256",
    ),
}


def cache_dir() -> Path:
    """The sspl cache folder (``$SSPL_CACHE``, else ``$XDG_CACHE_HOME/sspl``, else ``~/.cache/sspl``)."""
    if os.environ.get("SSPL_CACHE"):
        return Path(os.environ["SSPL_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "sspl"


def _torch_hub_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _published_digest(path: Path, known: KnownWeights) -> str:
    """The file's SHA-256, checked against what the release publishes (its prefix, or all of it)."""
    try:
        digest = sha256_file(path)
    except OSError as e:
        raise WeightsError(f"{path}: cannot read {known.filename} ({e})") from e
    if not digest.startswith(known.sha256_prefix) or (known.sha256 and digest != known.sha256):
        raise WeightsError(
            f"{path}: SHA-256 {digest[:16]}... does not match {known.filename} (expected "
            f"{known.sha256 or known.sha256_prefix + '...'}); the file is corrupt or a different release. "
            f"Delete it and fetch {known.url} again."
        )
    return digest


def _verify(path: Path, known: KnownWeights) -> str:
    """The file's SHA-256, checked against the release and against the user's pin; returns it."""
    digest = _published_digest(path, known)
    _check_pin(path, known, digest)
    return digest


def _check_pin(path: Path, known: KnownWeights, digest: str) -> None:
    """A file that passes the release's check must also be the copy the user pinned."""
    expected, source = pinned(known.name)
    if expected is not None and digest != expected:
        raise WeightsError(
            f"{path}: SHA-256 {digest} is not the {expected} pinned for {known.filename} ({source}); "
            f"the file changed since it was pinned. If you replaced it with a copy you trust, "
            f"{_how_to_repin(known, source)}"
        )


def _pins_path() -> Path:
    return cache_dir() / PINS_FILE


def _how_to_repin(known: KnownWeights, source: str) -> str:
    if known.pin_env_var and source.startswith("$"):
        return f"set {known.pin_env_var} to its SHA-256 (or unset it)"
    return f"re-pin it: `sspl weights --pin {known.name}` (or delete {_pins_path()})"


def _recorded_pins() -> dict[str, str]:
    """The pins recorded in the cache folder (none when the file is absent)."""
    path = _pins_path()
    try:
        pins = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):  # no cache folder (yet): said where it is needed
        return {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WeightsError(
            f"{path}: cannot read the pinned SHA-256 digests ({e}); delete it to re-pin"
        ) from e
    if not isinstance(pins, dict) or not all(
        isinstance(v, str) and _SHA256.fullmatch(v) for v in pins.values()
    ):
        raise WeightsError(
            f"{path}: not a record of pinned SHA-256 digests (file name -> 64 hex digits); delete it to re-pin"
        )
    return pins


def pinned(name: str) -> tuple[str | None, str]:
    """The full SHA-256 a copy of the known weight file ``name`` must have, and where it comes from.

    The published digest when the release has one; else the user's pin: ``$<pin env var>`` when set
    (it overrides a recorded one), else the digest recorded in the cache folder's :data:`PINS_FILE`.

    Returns:
        ``(digest, source)``; ``(None, "not pinned yet")`` before the first load.

    Raises:
        WeightsError: the variable is not a SHA-256, or the pin file cannot be read.
    """
    known = KNOWN_WEIGHTS[name]
    if known.sha256:
        return known.sha256, "published"
    given = os.environ.get(known.pin_env_var or "", "").strip()
    if given:
        if not _SHA256.fullmatch(given.lower()):
            raise WeightsError(f"${known.pin_env_var}={given}: not a SHA-256 (64 hex digits)")
        return given.lower(), f"${known.pin_env_var}"
    recorded = _recorded_pins().get(known.filename)
    if recorded is None:
        return None, "not pinned yet"
    return recorded, f"recorded in {_pins_path()}"


def _save_pin(known: KnownWeights, digest: str) -> None:
    """Record ``digest`` as the pin of ``known`` in the cache folder, beside the other pins."""
    atomic_save_json(_pins_path(), {**_recorded_pins(), known.filename: digest})


def _record_pin(known: KnownWeights, digest: str) -> None:
    """Pin ``digest`` for ``known`` on its first successful load (when nothing pins it yet)."""
    if known.sha256 or pinned(known.name)[0] is not None:
        return
    try:
        _save_pin(known, digest)
    except OSError as e:  # a read-only shared cache: the load goes on, unpinned
        log.warning(
            "cannot record the SHA-256 of %s in %s (%s); it stays unpinned", known.filename, _pins_path(), e
        )


def _how_to_get(known: KnownWeights) -> str:
    return (
        f"download {known.url} on a machine with internet access, then either set "
        f"{known.env_var}=/path/to/{known.filename}, or copy it to {cache_dir() / known.filename}"
    )


def _cached(name: str) -> tuple[Path | None, str | None, list[str]]:
    """The first verified copy in the caches with its digest, and what was wrong with the copies passed
    over. A copy that is not the pinned one is not passed over: it is an error (``WeightsError``)."""
    known = KNOWN_WEIGHTS[name]
    problems = []
    for candidate in (cache_dir() / known.filename, _torch_hub_dir() / known.filename):
        if candidate.is_file():
            try:
                digest = _published_digest(candidate, known)
            except WeightsError as e:
                problems.append(str(e))
                continue
            _check_pin(candidate, known, digest)
            return candidate, digest, problems
    return None, None, problems


def cached_path(name: str) -> Path | None:
    """The verified local copy of a known weight file, or ``None`` (no download attempted).

    A corrupt copy is passed over (and logged), so a good one in torch hub's cache is still found and a
    download replaces the bad one.

    Raises:
        WeightsError: a copy passes the release's check but is not the pinned one (:func:`pinned`).
    """
    found, _, problems = _cached(name)
    for problem in problems:
        log.warning("%s", problem)
    return found


def status(name: str) -> tuple[Path | None, str]:
    """Where a known weight file would be found without downloading, and a one-line account of it.

    Looks where :func:`resolve` looks (``$<env var>``, then the caches), verifying what it finds.

    Returns:
        ``(path, message)``: the verified local file (``None`` when there is none) and a sentence saying
        where it is, or why it is unusable and how to get it.
    """
    path, message, _ = _status(name)
    return path, message


def misconfigured(name: str) -> bool:
    """Whether a known weight file is unusable because of what is there, not because it was never fetched.

    True when ``$<env var>`` names a missing or corrupt file, a cached copy is corrupt and no good one is
    found, or the cache folder is not a folder. Not fetching is a normal state; these are mistakes to fix.
    """
    return _status(name)[2]


def _status(name: str) -> tuple[Path | None, str, bool]:
    try:
        return _status_unchecked(name)
    except WeightsError as e:  # not the pinned copy, or an unreadable pin
        return None, str(e), True


def _status_unchecked(name: str) -> tuple[Path | None, str, bool]:
    known = KNOWN_WEIGHTS[name]
    env = os.environ.get(known.env_var)
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            what = "is a folder, not a file" if path.is_dir() else "does not exist"
            return None, f"${known.env_var}={env} {what}; {_how_to_get(known)}", True
        try:
            _verify(path, known)
        except WeightsError as e:
            return None, str(e), True
        return path, f"{path} (from ${known.env_var}, SHA-256 checked)", False
    found, _, problems = _cached(name)
    if found is not None:
        return found, f"{found} (cached, SHA-256 checked)", False
    cache = cache_dir()
    blocking = nearest_existing(cache)
    if blocking.exists() and not blocking.is_dir():
        where = "is a file" if blocking == cache else f"cannot be made, {blocking} is a file"
        problems.append(f"the cache folder {cache} {where}, not a folder; set SSPL_CACHE to a folder")
    if problems:
        return None, "; ".join(problems), True
    return None, f"not cached; {_how_to_get(known)}", False


class _CacheError(OSError):
    """The cache folder cannot take the file (as opposed to the download failing)."""


def _download(known: KnownWeights, dest: Path, timeout: float) -> str:
    """Download into ``dest`` (atomically, checked before use); returns the file's SHA-256."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        for part in dest.parent.glob(f".{dest.name}.*.part"):
            # left by a killed download; one written to lately may be another process's (DDP ranks
            # download at the same time), so only parts idle for a while go
            with contextlib.suppress(FileNotFoundError):
                if time.time() - part.stat().st_mtime > STALE_PART_SECONDS:
                    part.unlink(missing_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    except OSError as e:
        raise _CacheError(f"cache folder {dest.parent} cannot take {dest.name} ({e}); set SSPL_CACHE") from e
    try:
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(known.url, timeout=timeout) as r:
            received = _copy_to_cache(r, f, tmp)
            declared = r.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and received < int(declared):
            raise WeightsError(
                f"the download of {known.filename} from {known.url} was cut short ({received:,} of "
                f"{int(declared):,} bytes); nothing was cached, try again"
            )
        try:
            digest = _verify(Path(tmp), known)
        except WeightsError as e:
            raise WeightsError(
                f"{known.url} sent a file whose SHA-256 does not match {known.filename} (a proxy or login "
                "page?); nothing was cached"
            ) from e
        make_shareable(tmp)  # a shared cache must be readable by its other users
        os.replace(tmp, dest)
        return digest
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _copy_to_cache(source: Any, f: Any, tmp: str) -> int:
    """Copy the response into the cache file; returns the bytes received. Read errors are the network's
    (they propagate as they are); write errors (a full disk) are the cache's (``_CacheError``)."""

    def cache_error(e: OSError) -> _CacheError:
        return _CacheError(f"cache folder {Path(tmp).parent} cannot take the file ({e}); set SSPL_CACHE")

    received = 0
    while chunk := source.read(1 << 20):
        try:
            f.write(chunk)
        except OSError as e:
            raise cache_error(e) from e
        received += len(chunk)
    try:
        f.flush()
        os.fsync(f.fileno())
    except OSError as e:
        raise cache_error(e) from e
    return received


def resolve(
    name: str, path: str | os.PathLike | None = None, *, download: bool = True, timeout: float = 30.0
) -> Path:
    """Find (and if needed download) a known weight file; returns a verified local path.

    A file published without a full SHA-256 (VGGish) must also match the user's pin (:func:`pinned`);
    the first copy that passes while nothing is pinned is recorded as the pin.

    Args:
        name: ``"imagenet"`` (VGG16), ``"imagenet-resnet18"`` or ``"audioset"`` (VGGish).
        path: explicit local file (checked, never downloaded over).
        download: try the URL when no local copy exists.

    Raises:
        WeightsError: unknown name, missing or corrupt file, or no local copy and the download failed.
    """
    if name not in KNOWN_WEIGHTS:
        raise WeightsError(
            f"unknown weights {name!r}; known: {', '.join(KNOWN_WEIGHTS)} (or give a file path)"
        )
    known = KNOWN_WEIGHTS[name]
    pinned(name)  # a malformed pin is said first, not taken for a bad copy or a bad download
    explicit = path or os.environ.get(known.env_var)
    if explicit:
        p = Path(explicit).expanduser()
        if not p.is_file():
            src = "given path" if path else f"${known.env_var}"
            raise WeightsError(f"{p}: {known.filename} not found ({src}); {_how_to_get(known)}")
        _record_pin(known, _verify(p, known))
        return p
    found, digest, problems = _cached(name)
    for problem in problems:
        log.warning("%s", problem)
    if found is not None:
        _record_pin(known, digest)
        return found
    dest = cache_dir() / known.filename
    if not download:
        raise WeightsError(f"{known.filename} ({known.description}) is not cached; {_how_to_get(known)}")
    log.info("downloading %s to %s", known.url, dest)
    try:
        digest = _download(known, dest, timeout)
    except _CacheError as e:
        raise WeightsError(f"{e}; or {_how_to_get(known)}") from e
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        raise WeightsError(
            f"cannot download {known.filename} ({known.description}) from {known.url}: {e}. "
            f"Offline? {_how_to_get(known)}"
        ) from e
    _record_pin(known, digest)
    return dest


def pin(name: str) -> tuple[Path, str]:
    """Record the SHA-256 of the local copy of ``name`` as its pin, replacing a recorded one.

    For a file the user replaced on purpose: the copy is found where :func:`resolve` looks (no
    download) and must pass the release's own check.

    Returns:
        ``(path, digest)``.

    Raises:
        WeightsError: the release publishes a full digest (nothing to pin), or there is no usable copy.
    """
    known = KNOWN_WEIGHTS[name]
    if known.sha256:
        raise WeightsError(
            f"{name}: the full SHA-256 of {known.filename} is published and checked; nothing to pin"
        )
    env = os.environ.get(known.env_var)
    candidates = (
        [Path(env).expanduser()] if env else [cache_dir() / known.filename, _torch_hub_dir() / known.filename]
    )
    problems = []
    for candidate in candidates:
        if candidate.is_file():
            try:
                digest = _published_digest(candidate, known)
            except WeightsError as e:
                problems.append(str(e))
                continue
            try:
                _save_pin(known, digest)
            except OSError as e:
                raise WeightsError(f"{_pins_path()}: cannot record the pin of {candidate} ({e})") from e
            return candidate, digest
    raise WeightsError("; ".join(problems) or f"{known.filename}: no local copy to pin; {_how_to_get(known)}")


def unreadable(path: Path, error: Exception) -> WeightsError:
    """The error for a file ``torch.load`` failed on, saying whether it is empty or not PyTorch's."""
    empty = path.is_file() and path.stat().st_size == 0
    detail = f"{type(error).__name__}: {error}" if isinstance(error, KeyError) else str(error)
    if detail.startswith("Weights only load failed"):
        # Not PyTorch's whole message: its advice to retry with weights_only=False would run the file's code.
        why = re.search(r"WeightsUnpickler error:\s*(.*?)\s*(?:\n\n|$)", detail, re.DOTALL)
        detail = "the safe (weights-only) loader refused it" + (f": {why.group(1)}" if why else "")
    cause = "empty file" if empty else f"not a PyTorch checkpoint, or a damaged one: {detail}"
    return WeightsError(f"{path}: cannot read checkpoint ({cause})")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a weights file (a state dict, or a checkpoint holding one under ``state_dict``),
    with DataParallel's ``module.`` prefixes removed.

    Raises:
        WeightsError: the file cannot be read as PyTorch weights or holds something else (naming it).
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types (KeyError, RuntimeError, ...) for damaged files
        raise unreadable(path, e) from e
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # saved with its epoch or optimiser beside it
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: expected a state dict, got {type(state).__name__}")
    odd = next(((k, v) for k, v in state.items() if not isinstance(k, str) or not torch.is_tensor(v)), None)
    if odd is not None:
        raise WeightsError(
            f"{path}: not a state dict of tensors (entry {odd[0]!r} holds {type(odd[1]).__name__})"
        )
    return {k.removeprefix("module."): v for k, v in state.items()}


def _load_into(module: nn.Module, state: dict[str, torch.Tensor], source: Path, what: str) -> None:
    own = module.state_dict()
    # Accept whole-network checkpoints (torchvision VGG16 also holds the classifier): keep matching keys.
    picked = {k: v for k, v in state.items() if k in own}
    missing = sorted(set(own) - set(picked))
    if missing:
        raise WeightsError(
            f"{source}: not {what} weights (missing {len(missing)} key(s), e.g. {missing[:3]})"
        )
    bad = [k for k, v in picked.items() if tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        shapes = "; ".join(
            f"{k} is {_shape(picked[k])} in the file, {_shape(own[k])} in the model" for k in bad[:3]
        )
        raise WeightsError(
            f"{source}: shape mismatch ({what}): {shapes}. The file was made for another feature size: "
            f"encoders from `sspl synth-pretrain --visual-channels N --audio-dim D` need "
            f"model.visual_channels=N model.audio_dim=D"
        )
    module.load_state_dict(picked, strict=True)


def _shape(t: torch.Tensor) -> str:
    return " x ".join(map(str, t.shape)) or "a scalar"


def known_weights_name(encoder: nn.Module, weights: str | None) -> str | None:
    """The :data:`KNOWN_WEIGHTS` entry a config's weights name means for this encoder, else ``None``.

    ``"imagenet"`` is VGG16's file for the VGG16 trunk and ResNet-18's for the ResNet-18 trunk: an encoder
    class lists its own files in ``published_weights`` (config name -> known name).
    """
    name = getattr(encoder, "published_weights", {}).get(weights, weights)
    return name if name in KNOWN_WEIGHTS else None


def load_visual_encoder_weights(encoder: nn.Module, weights: str, *, download: bool = True) -> Path:
    """Load ``"imagenet"`` (VGG16, or ResNet-18 into a ResNet-18 trunk) or a file into a visual encoder;
    returns the file used."""
    known = known_weights_name(encoder, weights)
    path = resolve(known, download=download) if known else Path(weights)
    if not known and not path.is_file():
        raise WeightsError(f"{path}: visual encoder weights not found")
    _load_into(encoder, read_state_dict(path), path, "visual encoder")
    return path


def load_audio_encoder_weights(encoder: nn.Module, weights: str, *, download: bool = True) -> Path:
    """Load ``"audioset"`` (VGGish) or a file into an audio encoder; returns the file used."""
    path = resolve("audioset", download=download) if weights == "audioset" else Path(weights)
    if weights != "audioset" and not path.is_file():
        raise WeightsError(f"{path}: audio encoder weights not found")
    _load_into(encoder, read_state_dict(path), path, "audio encoder")
    return path
