"""Shared fixtures and the `gpu` marker: GPU tests are skipped cleanly when CUDA is absent."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

DATA = Path(__file__).parent / "data"


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _deterministic_threads():
    """Keep tests reproducible and light on a 2-core CI machine."""
    prev = torch.get_num_threads()
    torch.manual_seed(0)
    yield
    torch.set_num_threads(prev)


@pytest.fixture
def data_dir() -> Path:
    """Folder of the test data copied into the project (never ../shared)."""
    return DATA


@pytest.fixture
def small_cnn_config():
    """The config of a tiny SSPL on the SynthAV small encoders, without weights (for CPU tests of
    everything around the model: checkpoints, the CLI, localization)."""
    from sspl.config import Config, SSPLConfig

    return Config(
        model=SSPLConfig(
            visual_encoder="small_cnn",
            audio_encoder="small_cnn",
            visual_channels=128,
            visual_weights=None,
            audio_weights=None,
        )
    )
