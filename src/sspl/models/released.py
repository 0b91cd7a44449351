"""The released checkpoints of the field's later methods, loaded as they are (EZ-VSL; SLAVC and FNAC add
their rows to :data:`RELEASED_FORMATS`).

Their training scripts save ``{'model': state_dict, 'optimizer': ..., 'epoch': ..., ...}`` with
DataParallel's ``module.`` prefixes. A format is told apart by the keys of that state dict
(:func:`detect_format`): each :class:`ReleasedFormat` names keys it must hold and keys it must not, how its
prefixes map onto ours, the config that rebuilds the model with the preprocessing its authors used, and the
parts that come from published weights instead of the file (OGL's ImageNet ResNet-18). An unknown file is a
one-line :class:`~sspl.errors.WeightsError` naming the formats known.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..config import Config, apply_overrides
from ..errors import WeightsError
from ..weights import unreadable

__all__ = [
    "RELEASED_FORMATS",
    "ReleasedFormat",
    "detect_format",
    "known_formats",
    "load_released",
    "read_released",
    "register_format",
    "released_config",
    "to_state_dict",
]

#: the config every released model of EZ-VSL's family shares: ResNet-18 streams, both trained, the
#: ``1 x 257 x T`` spectrogram front end, and frames resized to 224 x 224 without a crop
RESNET18_STREAMS = (
    "model.visual_encoder=resnet18",
    "model.audio_encoder=resnet18",
    "model.audio_dim=512",
    "model.audio_weights=null",
    "model.audio_frontend=stft",
    "model.train_visual=true",
    "model.train_audio=true",
    "data.test_transform=resize",
)


@dataclass(frozen=True)
class ReleasedFormat:
    """How one method's released checkpoints look and load.

    Attributes:
        name: the format's name (also what ``sspl`` reports).
        method: the registered method that builds the model (:mod:`sspl.models.methods`).
        description: one line for messages.
        required: state-dict keys (``module.`` removed) a file of this format holds.
        excluded: keys whose presence rules this format out (a later method that adds parts).
        prefixes: ``(official prefix, our prefix)`` pairs, tried in order; a key matching none is kept.
        overrides: config overrides (``key=value``) that rebuild the model with its preprocessing.
        published: ``(attribute, weights name)`` of parts loaded from published weights, not the file.
    """

    name: str
    method: str
    description: str
    required: tuple[str, ...]
    excluded: tuple[str, ...] = ()
    prefixes: tuple[tuple[str, str], ...] = ()
    overrides: tuple[str, ...] = ()
    published: tuple[tuple[str, str], ...] = ()

    def matches(self, keys: set[str]) -> bool:
        """Whether a state dict with these keys is of this format."""
        return set(self.required) <= keys and not keys & set(self.excluded)


#: Known formats, tried in order (the first match wins: a format sharing another's keys comes after it,
#: unless its ``excluded`` keys tell them apart).
RELEASED_FORMATS: dict[str, ReleasedFormat] = {}


def register_format(fmt: ReleasedFormat) -> ReleasedFormat:
    """Add a format to :data:`RELEASED_FORMATS` (by its ``name``)."""
    RELEASED_FORMATS[fmt.name] = fmt
    return fmt


register_format(
    ReleasedFormat(
        name="ezvsl",
        method="ezvsl",
        description="EZ-VSL (Mo & Morgado, ECCV 2022), github.com/stoneMo/EZ-VSL",
        required=("imgnet.conv1.weight", "audnet.conv1.weight", "img_proj.weight", "aud_proj.weight"),
        excluded=("img_proj1.weight", "momentum_imgnet.conv1.weight"),
        prefixes=(("imgnet.", "visual_encoder."), ("audnet.", "audio_encoder.")),
        overrides=(*RESNET18_STREAMS, "method=ezvsl"),
        published=(("saliency_encoder", "imagenet"),),
    )
)


def read_released(path: str | os.PathLike) -> tuple[ReleasedFormat, dict[str, torch.Tensor]]:
    """Read a released checkpoint file and tell its format.

    Returns:
        ``(format, state)``: the state dict with ``module.`` prefixes removed, official key names.

    Raises:
        WeightsError: unreadable, not ``{'model': state_dict, ...}``, or of no known format (one line
            naming the formats known).
    """
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for damaged or foreign files
        raise unreadable(path, e) from e
    model = ckpt.get("model") if isinstance(ckpt, dict) else None
    if not isinstance(model, dict) or not all(
        isinstance(k, str) and torch.is_tensor(v) for k, v in model.items()
    ):
        raise WeightsError(f"{path}: not a checkpoint of a known format ({known_formats()})")
    state = {k.removeprefix("module."): v for k, v in model.items()}
    fmt = detect_format(state)
    if fmt is None:
        raise WeightsError(
            f"{path}: a 'model' state dict whose keys match no known format ({known_formats()})"
        )
    return fmt, state


def known_formats() -> str:
    """``known: ...`` for messages: the formats :func:`read_released` recognises."""
    listed = "; ".join(f"{f.name}: {f.description}" for f in RELEASED_FORMATS.values())
    return f"known formats: a checkpoint of sspl train, a folder of official SSPL files, or released {listed}"


def detect_format(state: dict[str, torch.Tensor]) -> ReleasedFormat | None:
    """The first format of :data:`RELEASED_FORMATS` the state dict's keys match, else ``None``."""
    keys = set(state)
    return next((f for f in RELEASED_FORMATS.values() if f.matches(keys)), None)


def released_config(fmt: ReleasedFormat, base: Config | None = None) -> Config:
    """The config that rebuilds a model of this format, with its preprocessing."""
    return apply_overrides(base or Config(), list(fmt.overrides))


def to_state_dict(fmt: ReleasedFormat, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official key names -> ours (the format's prefixes; other keys unchanged)."""
    out = {}
    for key, value in state.items():
        for theirs, ours in fmt.prefixes:
            if key.startswith(theirs):
                key = ours + key[len(theirs) :]
                break
        out[key] = value
    return out


def load_released(
    path: str | os.PathLike, *, config: Config | None = None, download: bool = True
) -> tuple[nn.Module, Config]:
    """Build the model of a released checkpoint and load the file into it.

    Args:
        path: the checkpoint file (e.g. the authors' ``best.pth``).
        config: base config (its ``model`` / ``data`` fields the format does not set are kept).
        download: allow fetching published weights the format needs (OGL's ImageNet ResNet-18).

    Returns:
        ``(model in eval mode, config)``.

    Raises:
        WeightsError: see :func:`read_released`; keys or shapes that do not fit the model.
    """
    from .factory import load_encoder
    from .methods import get_method

    fmt, state = read_released(path)
    cfg = released_config(fmt, config)
    model = get_method(fmt.method).build(cfg, pretrained=False)
    ours = to_state_dict(fmt, state)
    own = model.state_dict()
    wrong = [k for k, v in ours.items() if k in own and own[k].shape != v.shape]
    if wrong:
        k = wrong[0]
        raise WeightsError(
            f"{path}: {fmt.name} checkpoint does not fit the model (shape of {k}: "
            f"{tuple(ours[k].shape)} in the file, {tuple(own[k].shape)} in the model)"
        )
    result = model.load_state_dict(ours, strict=False)
    published = tuple(f"{attr}." for attr, _ in fmt.published)
    missing = [k for k in result.missing_keys if not k.startswith(published)]
    if missing or result.unexpected_keys:
        raise WeightsError(
            f"{path}: {fmt.name} checkpoint does not fit the model "
            f"(missing {missing[:5]}, unexpected {result.unexpected_keys[:5]})"
        )
    for attr, weights in fmt.published:
        if getattr(model, attr, None) is not None:
            load_encoder(getattr(model, attr), "visual_encoder", weights, download=download)
    return model.eval(), cfg
