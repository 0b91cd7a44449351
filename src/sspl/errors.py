"""User-facing errors: the CLI prints their message on one line and exits non-zero.

Messages name the file or option at fault and, where there is one, the way to fix it.
"""

from __future__ import annotations

__all__ = ["DataError", "SSPLError", "WeightsError"]


class SSPLError(Exception):
    """Base class of the errors a user can act on (bad input, missing weights, bad options)."""


class DataError(SSPLError):
    """A data file or folder is missing, malformed or inconsistent."""


class WeightsError(SSPLError):
    """Pretrained weights are missing, corrupt, or cannot be downloaded."""
