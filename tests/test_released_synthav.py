"""EZ-VSL, SLAVC and FNAC on SynthAV's small encoders (experiments/synthav_learning.py's variants): the
models build with the pretrained small encoders, both trained, without OGL (its ImageNet ResNet-18 is not
part of the SynthAV setting, and no download happens), take the ``B x P x 96 x 64`` log-mel patches of
SynthAV's loader, and train: the trainer's step on a tiny SynthAV batch lowers the loss on that batch."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch.utils.data import default_collate

from sspl.config import Config, apply_overrides
from sspl.data.datasets import PreparedDataset, load_samples
from sspl.engine.distributed import DistEnv
from sspl.engine.step import build_optimisation, train_step
from sspl.models.methods import get_method
from sspl.models.small import SmallAudioCNN, SmallVisualCNN

METHODS = ("ezvsl", "slavc", "fnac")
STEPS = 4
IMAGE_SIZE = 112  # a 7 x 7 map from the stride-16 small encoder: the same code, a quarter of the pixels


@pytest.fixture(scope="module")
def synth_batch(tmp_path_factory) -> dict:
    """Four training items of a tiny generated SynthAV set, as the trainer's loader collates them."""
    from sspl.data.synth import generate_synth, synth_config

    out = tmp_path_factory.mktemp("synth") / "set"
    generate_synth(
        out, synth_config("distractors", num=10, seed=5, pretrain_num=2), workers=1, progress=False
    )
    items = PreparedDataset(load_samples(out, splits=["train"]), mode="train", image_size=IMAGE_SIZE, seed=0)
    return default_collate([items[i] for i in range(4)])


@pytest.fixture(scope="module")
def encoders(tmp_path_factory) -> tuple[Path, Path]:
    """Small encoders "pretrained" (seeded random) and saved as ``sspl synth-pretrain`` saves them."""
    folder = tmp_path_factory.mktemp("encoders")
    torch.manual_seed(3)
    visual, audio = folder / "visual_encoder.pt", folder / "audio_encoder.pt"
    torch.save(SmallVisualCNN(128).state_dict(), visual)
    torch.save(SmallAudioCNN().state_dict(), audio)
    return visual, audio


def synthav_method_config(method: str, encoders: tuple[Path, Path]) -> Config:
    """The small-encoder config of experiments/synthav_learning.py's ``ezvsl`` / ``slavc`` / ``fnac``."""
    visual, audio = encoders
    return apply_overrides(
        Config(),
        [
            f"method={method}",
            "model.visual_encoder=small_cnn",
            "model.audio_encoder=small_cnn",
            "model.visual_channels=128",
            f"model.visual_weights={visual}",
            f"model.audio_weights={audio}",
            "model.train_visual=true",
            "model.train_audio=true",
            "optim.optimizer=adam",
            "optim.lr=1e-4",
            "optim.weight_decay=0",
            "optim.schedule=constant",
            "method_options.ogl=false",
            "train.batch_size=4",
        ],
    )


@pytest.mark.parametrize("method", METHODS)
def test_builds_with_the_pretrained_small_encoders(method, encoders):
    model = get_method(method).build(synthav_method_config(method, encoders), pretrained=True)
    saved = torch.load(encoders[0], weights_only=True)
    for name, value in saved.items():  # the trained visual encoder starts from the pretrained one
        assert torch.equal(model.visual_encoder.state_dict()[name], value), name
    assert model.saliency_encoder is None  # no ImageNet network to fetch
    assert all(p.requires_grad for p in model.visual_encoder.parameters())
    assert all(p.requires_grad for p in model.audio_encoder.parameters())


@pytest.mark.parametrize("method", METHODS)
def test_trains_on_a_synthav_batch(method, encoders, synth_batch):
    assert synth_batch["spect"].shape[1:] == (3, 96, 64)  # log-mel patches, not a 257 x T spectrogram
    cfg = synthav_method_config(method, encoders)
    torch.manual_seed(0)
    handler = get_method(method)
    model = handler.build(cfg, pretrained=True).train()
    opt = build_optimisation(handler, model, cfg, steps_per_epoch=STEPS, device=torch.device("cpu"))
    batch = {k: synth_batch[k] for k in ("frame_view1", "spect")}
    losses = [float(train_step(model, handler, batch, cfg, opt, DistEnv()).loss) for _ in range(STEPS)]
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0], losses
    with torch.no_grad():
        maps = model.eval().localize(batch["frame_view1"], batch["spect"])
    assert maps.shape == (4, IMAGE_SIZE, IMAGE_SIZE) and torch.isfinite(maps).all()
