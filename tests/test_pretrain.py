"""Small SynthAV encoders, their supervised pretraining, the oracle query, and `sspl synth-pretrain`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from sspl.cli import main
from sspl.data.synth import generate_synth, synth_config
from sspl.engine.oracle import load_synth_split, oracle_query_maps
from sspl.engine.pretrain import (
    _object_cell_loss,
    load_synth_encoders,
    pretrain_synth_encoders,
)
from sspl.errors import DataError, WeightsError
from sspl.models.small import SmallAudioCNN, SmallVisualCNN
from sspl.outputs import LOCK_NAME


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pretrain") / "synth"
    generate_synth(
        out, synth_config("distractors", num=5, seed=4, pretrain_num=16), workers=1, progress=False
    )
    return out


@pytest.fixture(scope="module")
def encoders_dir(synth_dir, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("pretrain") / "enc"
    info = pretrain_synth_encoders(synth_dir, out, epochs=1, batch_size=8, progress=False)
    return out, info


@pytest.mark.parametrize("batch", [1, 2])
def test_small_visual_cnn_shapes(batch):
    model = SmallVisualCNN(out_channels=32)
    x = torch.randn(batch, 3, 224, 224)
    y = model(x)
    assert y.shape == (batch, 32, 14, 14)
    assert (y >= 0).all()
    y.mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    with torch.no_grad():
        assert model(x[:1]).shape == (1, 32, 14, 14)
        assert model(torch.randn(1, 3, 256, 256)).shape == (1, 32, 16, 16)
    with pytest.raises(ValueError, match="B x 3 x H x W"):
        model(torch.randn(3, 224, 224))


@pytest.mark.parametrize("batch", [1, 3])
def test_small_audio_cnn_shapes(batch):
    model = SmallAudioCNN(embed_dim=16)
    y = model(torch.randn(batch, 1, 96, 64))
    assert y.shape == (batch, 16) and torch.isfinite(y).all()
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 96, 64)).shape == (1, 16)
    with pytest.raises(ValueError, match="B x 1 x 96 x 64"):
        model(torch.randn(batch, 96, 64))


def test_pretraining_writes_loadable_encoders(encoders_dir, synth_dir):
    out, info = encoders_dir
    assert sorted(p.name for p in out.iterdir() if p.name != LOCK_NAME) == [
        "audio_encoder.pt",
        "encoders.json",
        "visual_encoder.pt",
    ]
    visual_state = torch.load(out / "visual_encoder.pt", weights_only=True)
    audio_state = torch.load(out / "audio_encoder.pt", weights_only=True)
    # encoder weights only: the classification heads are dropped
    assert visual_state.keys() == SmallVisualCNN(128).state_dict().keys()
    assert audio_state.keys() == SmallAudioCNN(128).state_dict().keys()
    SmallVisualCNN(128).load_state_dict(visual_state)
    saved = json.loads((out / "encoders.json").read_text())
    assert saved == json.loads(json.dumps(info))
    assert saved["visual"]["name"] == saved["audio"]["name"] == "small_cnn"
    assert saved["visual"]["out_channels"] == 128 and saved["audio"]["embed_dim"] == 128
    assert saved["data_dir"] == str(synth_dir.resolve())
    assert saved["epochs"] == 1 and saved["seed"] == 0
    assert saved["num_pretrain_scenes"] == 16 and saved["num_heldout_scenes"] == 2
    metrics = saved["metrics"]
    for key in ("visual_location_accuracy", "visual_object_location_accuracy", "audio_accuracy"):
        assert 0.0 <= metrics[key] <= 1.0
    assert len(saved["categories"]) == 8

    visual, audio = load_synth_encoders(out)
    assert not visual.training and not audio.training
    assert not any(p.requires_grad for p in [*visual.parameters(), *audio.parameters()])
    torch.testing.assert_close(
        visual.state_dict()["features.0.0.weight"], visual_state["features.0.0.weight"]
    )


def test_pretraining_is_seeded_and_leaves_the_global_rng_alone(synth_dir, encoders_dir, tmp_path):
    state = torch.random.get_rng_state()
    pretrain_synth_encoders(synth_dir, tmp_path / "again", epochs=1, batch_size=8, progress=False)
    assert torch.equal(torch.random.get_rng_state(), state)
    first = torch.load(encoders_dir[0] / "visual_encoder.pt", weights_only=True)
    again = torch.load(tmp_path / "again" / "visual_encoder.pt", weights_only=True)
    for key in first:
        torch.testing.assert_close(first[key], again[key], rtol=0, atol=0)


def test_pretraining_refuses_a_non_empty_folder(synth_dir, tmp_path):
    out = tmp_path / "enc"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="not empty"):
        pretrain_synth_encoders(synth_dir, out, epochs=1, progress=False)
    assert not (out / "visual_encoder.pt").exists()
    pretrain_synth_encoders(synth_dir, out, epochs=1, batch_size=16, overwrite=True, progress=False)
    assert (out / "visual_encoder.pt").is_file() and (out / "keep.txt").read_text() == "user data"


def test_pretraining_needs_a_synth_set(tmp_path):
    with pytest.raises(FileNotFoundError, match="meta.json"):
        pretrain_synth_encoders(tmp_path, tmp_path / "enc", epochs=1, progress=False)
    with pytest.raises(WeightsError, match="synth-pretrain"):
        load_synth_encoders(tmp_path)


def test_pretraining_says_how_to_fix_an_unfinished_set_or_one_without_pretraining_scenes(tmp_path):
    import shutil

    none = tmp_path / "none"
    generate_synth(none, synth_config("easy", num=4, seed=1, pretrain_num=0), workers=1, progress=False)
    with pytest.raises(DataError, match="made with --pretrain-num 0; .* at least 2 pretraining scenes"):
        pretrain_synth_encoders(none, tmp_path / "enc", epochs=1, progress=False)
    unfinished = tmp_path / "unfinished"
    shutil.copytree(none, unfinished)
    (unfinished / "manifest.csv").unlink()
    with pytest.raises(DataError, match="unfinished .* rerun the `sspl synth` command that made it"):
        pretrain_synth_encoders(unfinished, tmp_path / "enc", epochs=1, progress=False)
    with pytest.raises(FileNotFoundError, match="nowhere: no such folder"):
        pretrain_synth_encoders(tmp_path / "nowhere", tmp_path / "enc", epochs=1, progress=False)
    assert not (tmp_path / "enc").exists()


def test_a_kill_between_the_encoder_files_leaves_no_mixed_pair(
    synth_dir, encoders_dir, tmp_path, monkeypatch
):
    import shutil

    import sspl.engine.pretrain as pretrain_mod

    out = tmp_path / "enc"
    shutil.copytree(encoders_dir[0], out)
    real_save = pretrain_mod.atomic_save_torch

    def killed_before_the_audio_encoder(path, obj):
        if Path(path).name == "audio_encoder.pt":
            raise KeyboardInterrupt
        real_save(path, obj)

    monkeypatch.setattr(pretrain_mod, "atomic_save_torch", killed_before_the_audio_encoder)
    with pytest.raises(KeyboardInterrupt):
        pretrain_synth_encoders(
            synth_dir, out, epochs=1, batch_size=8, seed=7, overwrite=True, progress=False
        )
    # The new visual encoder sits beside the old audio one, but nothing vouches for the pair.
    with pytest.raises(WeightsError, match="encoders.json: missing"):
        load_synth_encoders(out)


def test_corrupt_pretraining_files_are_named(synth_dir, encoders_dir, tmp_path):
    import shutil

    broken = tmp_path / "synth"
    shutil.copytree(synth_dir, broken)
    labels = broken / "pretrain" / "location_labels.npy"
    labels.write_bytes(labels.read_bytes()[:90])
    with pytest.raises(DataError, match=r"location_labels\.npy: cannot read"):
        pretrain_synth_encoders(broken, tmp_path / "enc", epochs=1, progress=False)
    enc = tmp_path / "enc2"
    shutil.copytree(encoders_dir[0], enc)
    (enc / "encoders.json").write_text("{not json")
    with pytest.raises(WeightsError, match=r"encoders\.json: not an encoders record"):
        load_synth_encoders(enc)


def test_output_folder_and_options_are_checked_before_any_data_is_read(tmp_path):
    nowhere = tmp_path / "nowhere"  # never reached: each call fails on its own problem first
    (tmp_path / "afile").write_text("x")
    with pytest.raises(NotADirectoryError, match=r"sub: cannot be made, .*afile is a file, not a folder"):
        pretrain_synth_encoders(nowhere, tmp_path / "afile" / "sub", epochs=1, progress=False)
    with pytest.raises(ValueError, match="--visual-channels and --audio-dim must be positive, got 0 and 8"):
        pretrain_synth_encoders(nowhere, tmp_path / "enc", visual_channels=0, audio_dim=8, progress=False)
    with pytest.raises(ValueError, match=r"--seed must be in \[0, 2\*\*63\), got 99999999999999999999"):
        pretrain_synth_encoders(nowhere, tmp_path / "enc", seed=99999999999999999999, progress=False)
    assert not (tmp_path / "enc").exists()


def test_damaged_pretraining_labels_and_patches_are_named(synth_dir, tmp_path):
    import shutil

    import numpy as np

    broken = tmp_path / "labels"
    shutil.copytree(synth_dir, broken)
    sounds = np.load(broken / "pretrain" / "sound_labels.npy")
    np.save(broken / "pretrain" / "sound_labels.npy", np.full_like(sounds, 50))
    with pytest.raises(
        DataError, match=r"sound_labels\.npy: labels 50 \.\. 50 outside 0 \.\. 7 \(the set has 8 categories"
    ):
        pretrain_synth_encoders(broken, tmp_path / "enc", epochs=1, progress=False)
    broken = tmp_path / "spect"
    shutil.copytree(synth_dir, broken)
    first = (broken / "pretrain" / "ids.txt").read_text().split()[0]
    spect = next((broken / "spect").glob(f"{first}.npy"))
    np.save(spect, np.zeros((2, 96, 64), np.float32))
    with pytest.raises(DataError, match=rf"{first}\.npy: log-mel patches of shape \(2, 96, 64\)"):
        pretrain_synth_encoders(broken, tmp_path / "enc", epochs=1, progress=False)


def test_no_held_out_object_cell_gives_null_not_nan():
    from sspl.engine.pretrain import _visual_metrics

    class Background(nn.Module):  # predicts class 0 (the background) everywhere
        def forward(self, x):
            out = torch.zeros(x.shape[0], 3, 14, 14)
            out[:, 0] = 1
            return out

    frames = torch.zeros(2, 3, 224, 224)
    labels = torch.zeros(2, 14, 14, dtype=torch.long)  # background cells only
    metrics = _visual_metrics(nn.Identity(), Background(), frames, labels, 1)
    assert metrics == {
        "visual_location_accuracy": 1.0,
        "visual_object_location_accuracy": None,
        "visual_object_location_cells": 0,
    }
    json.dumps(metrics, allow_nan=False)


def test_damaged_encoder_files_are_named(encoders_dir, tmp_path):
    import shutil

    enc = tmp_path / "enc"
    shutil.copytree(encoders_dir[0], enc)
    (enc / "visual_encoder.pt").write_bytes(b"hello world" * 10)
    with pytest.raises(WeightsError, match=r"visual_encoder\.pt: cannot read checkpoint \(not a PyTorch"):
        load_synth_encoders(enc)
    torch.save(torch.zeros(3), enc / "visual_encoder.pt")
    with pytest.raises(WeightsError, match=r"visual_encoder\.pt: expected a state dict, got Tensor"):
        load_synth_encoders(enc)
    torch.save({"a": torch.zeros(3)}, enc / "visual_encoder.pt")
    with pytest.raises(
        WeightsError, match=r"visual_encoder\.pt: does not match the encoder .*encoders\.json"
    ):
        load_synth_encoders(enc)


class _ChannelsAsFeatures(nn.Module):
    """Average-pools 16 x 16 blocks: the features of a cell are its mean colour."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.avg_pool2d(x, 16)


def test_oracle_query_maps_hand_computed():
    frames = torch.zeros(2, 3, 224, 224)
    frames[:, 1] = 1.0  # green everywhere
    frames[0, :, 32:80, 48:96] = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)  # red: cells rows 2-4, cols 3-5
    frames[1, :, 160:224, 0:32] = torch.tensor([0.0, 0.6, 0.8]).view(3, 1, 1)  # rows 10-13, cols 0-1
    boxes = [[48 / 224, 32 / 224, 96 / 224, 80 / 224], [0.0, 160 / 224, 32 / 224, 1.0]]
    maps = oracle_query_maps(_ChannelsAsFeatures(), frames, boxes)
    assert maps.shape == (2, 14, 14)
    expected0 = torch.zeros(14, 14)
    expected0[2:5, 3:6] = 1.0
    torch.testing.assert_close(maps[0], expected0)
    expected1 = torch.full((14, 14), 0.6)  # cos(green, (0, 0.6, 0.8))
    expected1[10:14, 0:2] = 1.0
    torch.testing.assert_close(maps[1], expected1)


def test_oracle_query_maps_on_pretrained_features(encoders_dir, synth_dir):
    visual, _ = load_synth_encoders(encoders_dir[0])
    visual.train()  # the oracle runs in eval mode and restores the mode
    ids, frames, boxes = load_synth_split(synth_dir, "train")
    assert frames.shape == (len(ids), 3, 224, 224) and frames.dtype == torch.uint8
    assert boxes.shape == (len(ids), 4)
    maps = oracle_query_maps(visual, frames, boxes, batch_size=2)
    assert visual.training
    assert maps.shape == (len(ids), 14, 14)
    assert maps.max() <= 1 + 1e-5 and maps.min() >= -1 - 1e-5
    centre = ((boxes[:, [0, 1]] + boxes[:, [2, 3]]) / 2 * 14).astype(int)
    for m, (cx, cy) in zip(maps, centre):
        assert m[cy, cx] == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(DataError, match="no clip of split"):
        load_synth_split(synth_dir, "nosuchsplit")


def test_cli_synth_pretrain_end_to_end(synth_dir, tmp_path, capsys):
    out = tmp_path / "enc"
    argv = ["synth-pretrain", "--data", str(synth_dir), "--out", str(out), "--epochs", "1", "--no-progress"]
    argv += ["--visual-channels", "16", "--audio-dim", "8"]
    assert main(argv) == 0
    facts, wrote = capsys.readouterr().out.splitlines()[-2:]
    assert facts.startswith("sspl synth-pretrain: ") and "audio_accuracy " in facts
    assert wrote.startswith(f"Wrote 3 files to {out}/ in ") and wrote.endswith(
        f" -- open {out / 'encoders.json'}"
    )
    visual, audio = load_synth_encoders(out)
    assert visual.out_channels == 16 and audio.embed_dim == 8
    assert main(argv) == 1
    assert "not empty" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0


def test_object_cell_loss_hand_computed():
    # Two cells, background first then categories 0 and 1: cell 0 all background, cell 1 covered 0.5 by
    # category 0, 0.25 by category 1, 0.25 by background.
    coverage = torch.tensor([[1.0, 0.25], [0.0, 0.5], [0.0, 0.25]]).view(1, 3, 1, 2)
    logits = torch.tensor([[5.0, 1.0], [-3.0, 0.0]]).view(1, 2, 1, 2).requires_grad_()
    loss = _object_cell_loss(logits, coverage)
    # only cell 1 counts, against its object share renormalised to (2/3, 1/3)
    log_p = torch.log_softmax(torch.tensor([1.0, 0.0]), 0)
    expected = -(2 / 3 * log_p[0] + 1 / 3 * log_p[1])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert logits.grad[..., 0].abs().max() == 0  # the background cell is never trained towards a class
    # a second object cell of half the coverage weighs half as much
    coverage2 = torch.tensor([[0.5, 0.0], [0.5, 1.0], [0.0, 0.0]]).view(1, 3, 1, 2)
    logits2 = torch.tensor([[0.0, 2.0], [1.0, 0.0]]).view(1, 2, 1, 2)
    ce = [
        -torch.log_softmax(torch.tensor([0.0, 1.0]), 0)[0],
        -torch.log_softmax(torch.tensor([2.0, 0.0]), 0)[0],
    ]
    assert _object_cell_loss(logits2, coverage2).item() == pytest.approx(
        ((0.5 * ce[0] + 1.0 * ce[1]) / 1.5).item(), rel=1e-6
    )
    assert _object_cell_loss(logits2, torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1).expand(1, 3, 1, 2)) == 0


def test_pretraining_without_a_background_class(synth_dir, encoders_dir, tmp_path, capsys):
    out = tmp_path / "enc"
    argv = ["synth-pretrain", "--data", str(synth_dir), "--out", str(out), "--epochs", "1", "--no-progress"]
    assert (
        main([*argv, "--visual-channels", "16", "--audio-dim", "8", "--no-background-class", "--json"]) == 0
    )
    metrics = json.loads(capsys.readouterr().out)["metrics"]
    assert metrics["visual_location_accuracy"] is None  # background cells have no class to be right about
    assert 0.0 <= metrics["visual_object_location_accuracy"] <= 1.0
    saved = json.loads((out / "encoders.json").read_text())
    assert saved["background_class"] is False
    visual, _ = load_synth_encoders(out)
    assert visual.out_channels == 16
    assert encoders_dir[1]["background_class"] is True  # the default


def test_split_background_hand_computed():
    from sspl.engine.pretrain import split_background

    # two scenes, K = 2 categories, 1 x 2 cells; coverage channels: background, category 0, category 1
    coverage = torch.tensor(
        [
            [[[1.0, 0.25]], [[0.0, 0.75]], [[0.0, 0.0]]],
            [[[0.5, 1.0]], [[0.0, 0.0]], [[0.5, 0.0]]],
        ]
    )
    kinds = torch.tensor([2, 0])  # stripes, noise
    split = split_background(coverage, kinds)
    assert split.shape == (2, 5, 1, 2)  # noise, gradient, stripes, category 0, category 1
    expected = torch.tensor(
        [
            [[[0.0, 0.0]], [[0.0, 0.0]], [[1.0, 0.25]], [[0.0, 0.75]], [[0.0, 0.0]]],
            [[[0.5, 1.0]], [[0.0, 0.0]], [[0.0, 0.0]], [[0.0, 0.0]], [[0.5, 0.0]]],
        ]
    )
    assert torch.equal(split, expected)
    assert torch.allclose(split.sum(1), coverage.sum(1))  # still sums to 1 per cell


def test_visual_metrics_count_any_background_kind_as_background():
    from sspl.engine.pretrain import _visual_metrics

    class Fixed(nn.Module):  # class 2 (the third background kind) left, class 4 (category 1) right
        def forward(self, x):
            out = torch.zeros(x.shape[0], 5, 1, 2)
            out[:, 2, 0, 0] = 1
            out[:, 4, 0, 1] = 1
            return out

    labels = torch.tensor([[[0, 2]], [[1, 2]]])  # label 1 + k is category k
    metrics = _visual_metrics(nn.Identity(), Fixed(), torch.zeros(2, 3, 4, 4), labels, 3)
    assert metrics == {
        "visual_location_accuracy": 0.75,  # all but the category-0 cell read as background
        "visual_object_location_accuracy": round(2 / 3, 4),
        "visual_object_location_cells": 3,
    }


def test_background_kinds_of_the_pretraining_scenes(synth_dir, tmp_path):
    import shutil

    from sspl.data.synth import BACKGROUND_KINDS, SynthConfig, render_scene
    from sspl.engine.pretrain import _background_kinds

    ids = (synth_dir / "pretrain" / "ids.txt").read_text().split()
    kinds = _background_kinds(synth_dir, ids)
    config = SynthConfig.from_json(json.loads((synth_dir / "meta.json").read_text())["synth"])
    assert [BACKGROUND_KINDS[k] for k in kinds] == [
        render_scene(config, "pretrain", int(i.split("_")[1])).background for i in ids
    ]
    assert len(set(kinds.tolist())) > 1  # 16 scenes draw more than one kind
    with pytest.raises(DataError, match=r"ids\.txt: 'synth_000001' is not a pretraining scene id"):
        _background_kinds(synth_dir, ["synth_000001"])
    old = tmp_path / "old"
    shutil.copytree(synth_dir, old)
    meta = json.loads((old / "meta.json").read_text())
    (old / "meta.json").write_text(json.dumps({**meta, "generator_version": 0}))
    with pytest.raises(DataError, match="generator version 0, this one is 1: its background kinds cannot be"):
        _background_kinds(old, ids)


def test_pretraining_with_background_kinds(synth_dir, tmp_path, capsys):
    out = tmp_path / "enc"
    argv = ["synth-pretrain", "--data", str(synth_dir), "--out", str(out), "--epochs", "1", "--no-progress"]
    assert main([*argv, "--visual-channels", "16", "--audio-dim", "8", "--background-kinds", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)["metrics"]
    assert 0.0 <= metrics["visual_location_accuracy"] <= 1.0
    saved = json.loads((out / "encoders.json").read_text())
    assert saved["background_kinds"] == ["noise", "gradient", "stripes"]
    assert saved["background_class"] is True
    visual, _ = load_synth_encoders(out)
    assert visual.out_channels == 16
    assert main([*argv, "--overwrite", "--background-kinds", "--no-background-class"]) == 1
    assert "--background-kinds splits the background class" in capsys.readouterr().err
