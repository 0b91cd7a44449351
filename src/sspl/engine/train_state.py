"""What a training run did (:class:`TrainResult`) and where it stands while it trains (:class:`TrainState`,
saved in each last checkpoint and restored on resume)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

__all__ = ["TrainResult", "TrainState"]


@dataclass
class TrainResult:
    """What a training run did."""

    run_dir: Path
    epochs_completed: int
    steps: int
    best_epoch: int | None
    best_metric: float | None
    select_metric: str
    stopped_early: bool
    history: list[dict] = field(default_factory=list)


@dataclass
class TrainState:
    """Where a run stands: epochs and steps done, the best evaluation so far, the evaluations since it
    (for early stopping) and the validation records. Saved in every last checkpoint."""

    epoch: int = 0
    step: int = 0
    best_metric: float | None = None
    best_epoch: int | None = None
    bad_evals: int = 0
    history: list[dict] = field(default_factory=list)

    @classmethod
    def restored(cls, ckpt: dict) -> TrainState:
        """The state saved in a last checkpoint."""
        saved = {k: v for k, v in ckpt["trainer"].items() if k in _SAVED_STATE}
        return cls(epoch=ckpt["epoch"], step=ckpt["step"], **saved)

    def saved(self, fingerprint: str, scaler: torch.amp.GradScaler) -> dict:
        """The checkpoint's ``trainer`` entry: this state, the data fingerprint and the AMP scaler's state."""
        out = {k: getattr(self, k) for k in _SAVED_STATE}
        out["data"] = fingerprint
        if scaler.is_enabled():
            out["scaler"] = scaler.state_dict()
        return out

    def evaluated(self, value: float | None, mode: str) -> bool:
        """Count an evaluation of the selection metric after this epoch; whether it is the best so far."""
        better = value is not None and (
            self.best_metric is None
            or (value > self.best_metric if mode == "max" else value < self.best_metric)
        )
        if better:
            self.best_metric, self.best_epoch, self.bad_evals = value, self.epoch, 0
        else:
            self.bad_evals += 1
        return better

    def out_of_patience(self, patience: int | None) -> bool:
        return patience is not None and self.bad_evals >= patience


_SAVED_STATE = ("best_metric", "best_epoch", "bad_evals", "history")
