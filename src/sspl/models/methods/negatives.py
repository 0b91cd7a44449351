"""Which clips of a batch serve as negatives for the contrastive baselines, and their typed options.

The SSPL paper's argument (Sec. 1, Figure 2) is about these negatives: drawing them at random from other
videos produces *false negatives*, clips whose sound belongs to the same category as the anchor's. With
``negatives: exclude-same-class`` the other clips that share the anchor's class label are removed from its
negatives, the paper's "w/o false negatives" case (Figure 2b), which needs labels.

Negatives come from the batch of the process computing the loss (under DDP, from its share of the batch).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import TypeVar

import torch

from ...config import Config, ConfigError
from ...errors import DataError

__all__ = ["NEGATIVES", "negative_mask", "parse_method_options"]

#: ``all``: every other clip of the batch (random negatives, as the baselines' papers);
#: ``exclude-same-class``: every other clip whose label differs from the anchor's (or is unknown).
NEGATIVES = ("all", "exclude-same-class")

_Options = TypeVar("_Options")


def negative_mask(
    batch_size: int,
    policy: str = "all",
    labels: torch.Tensor | None = None,
    *,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Which clips' audio are negatives for each clip's frame.

    Args:
        batch_size: ``B``.
        policy: one of :data:`NEGATIVES`.
        labels: ``B`` class indices, ``-1`` for unlabelled clips (the trainer's ``label``); needed by
            ``exclude-same-class``. An unlabelled clip is never taken for a same-class clip.
        device: where to put the mask (default: ``labels``' device, else CPU).

    Returns:
        ``B x B`` bool: ``[i, j]`` is true when audio ``j`` is a negative for frame ``i``; the diagonal
        (the positive pair) is always false.

    Raises:
        ConfigError: an unknown policy.
        DataError: ``exclude-same-class`` on a batch without labels.
    """
    if policy not in NEGATIVES:
        raise ConfigError(f"method_options.negatives={policy!r}: choose from {', '.join(NEGATIVES)}")
    if device is None:
        device = labels.device if labels is not None else "cpu"
    mask = ~torch.eye(batch_size, dtype=torch.bool, device=device)
    if policy == "all":
        return mask
    if labels is None or not bool((labels >= 0).any()):
        raise DataError(
            "negatives=exclude-same-class needs class labels, but the batch has none (the prepared "
            "manifest's label column is empty); use negatives=all, or prepare the data with its labels"
        )
    if labels.shape != (batch_size,):
        raise ValueError(f"labels must have shape ({batch_size},), got {tuple(labels.shape)}")
    labels = labels.to(device)
    same = (labels[:, None] == labels[None, :]) & (labels[:, None] >= 0)
    return mask & ~same


def parse_method_options(cls: type[_Options], config: Config) -> _Options:
    """A method's typed options from the free-form ``config.method_options``.

    Args:
        cls: a dataclass whose fields are the method's options (``str``, ``float``, ``int`` or ``bool``),
            each with a default; its ``__post_init__`` checks their values.
        config: the run's configuration.

    Raises:
        ConfigError: an unknown key (naming the valid ones) or a value of the wrong type.
    """
    raw = dict(config.method_options)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise ConfigError(
            f"unknown method_options key(s) {', '.join(unknown)} for method {config.method!r}; "
            f"valid keys: {', '.join(names)}"
        )
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in raw.items():
        tp = hints[key]
        if tp is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, tp) or (tp in (int, float) and isinstance(value, bool)):
            raise ConfigError(f"method_options.{key}: expected {tp.__name__}, got {value!r}")
        values[key] = value
    return cls(**values)
