"""The contrastive baselines, Attention (Senocak et al.) and HardWay (LVS), as method plugins.

Losses on hand-computed tiny inputs (aligned < shuffled, exact 2 x 2 values, the LVS tri-map, the effect of
excluding same-class negatives), the models' contracts, and 2-step training runs through the shared
trainer, evaluator, checkpoints, ``sspl.load`` and the CLI on a tiny SynthAV set.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from sspl.cli import main as cli_main
from sspl.config import Config, ConfigError, apply_overrides
from sspl.data.manifest import read_manifest, write_manifest
from sspl.engine.checkpoint import load_checkpoint, restore_model
from sspl.engine.train import train
from sspl.errors import DataError
from sspl.models.baselines import cosine_maps_all_pairs
from sspl.models.methods import get_method
from sspl.models.methods.attention import AttentionOptions, infonce_loss, triplet_loss
from sspl.models.methods.hardway import HardWayOptions, hardway_logits, hardway_loss, trimap
from sspl.models.methods.negatives import negative_mask, parse_method_options

SMALL = [
    "model.visual_encoder=small_cnn",
    "model.audio_encoder=small_cnn",
    "model.visual_channels=128",
    "model.visual_weights=null",
    "model.audio_weights=null",
    "train.batch_size=4",
    "train.max_steps_per_epoch=2",
    "train.epochs=1",
    "train.log_every=1",
    "data.num_workers=0",
    "optim.lr=1e-3",
]


def small_config(method: str, *extra: str) -> Config:
    return apply_overrides(Config(), [*SMALL, f"method={method}", *extra])


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def unit(degrees: float) -> list[float]:
    return [math.cos(math.radians(degrees)), math.sin(math.radians(degrees))]


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> Path:
    from sspl.data.synth import generate_synth, synth_config

    out = tmp_path_factory.mktemp("synth") / "set"
    generate_synth(
        out, synth_config("distractors", num=28, seed=3, pretrain_num=4), workers=1, progress=False
    )
    return out


# --------------------------------------------------------------------------------------------------
# negatives
# --------------------------------------------------------------------------------------------------


def test_negative_masks():
    labels = torch.tensor([0, 0, 1, -1, -1])
    assert torch.equal(negative_mask(5, "all", labels), ~torch.eye(5, dtype=torch.bool))
    expected = torch.tensor(
        [
            [0, 0, 1, 1, 1],  # clip 1 shares class 0 with clip 0
            [0, 0, 1, 1, 1],
            [1, 1, 0, 1, 1],
            [1, 1, 1, 0, 1],  # two unlabelled clips are not "the same class"
            [1, 1, 1, 1, 0],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(negative_mask(5, "exclude-same-class", labels), expected)
    with pytest.raises(DataError, match="needs class labels"):
        negative_mask(4, "exclude-same-class", None)
    with pytest.raises(DataError, match="needs class labels"):
        negative_mask(4, "exclude-same-class", torch.full((4,), -1))
    with pytest.raises(ConfigError, match="choose from all, exclude-same-class"):
        negative_mask(4, "hard", labels)


def test_method_options_are_typed_and_checked():
    cfg = small_config(
        "hardway", "method_options.epsilon_pos=1", "method_options.negatives=exclude-same-class"
    )
    options = parse_method_options(HardWayOptions, cfg)
    assert options.epsilon_pos == 1.0 and isinstance(options.epsilon_pos, float)
    assert options.negatives == "exclude-same-class" and options.epsilon_neg == 0.4
    with pytest.raises(
        ConfigError, match=r"unknown method_options key\(s\) epsilon for method 'hardway'.*epsilon_pos"
    ):
        parse_method_options(HardWayOptions, small_config("hardway", "method_options.epsilon=0.5"))
    with pytest.raises(ConfigError, match="method_options.temperature: expected float"):
        parse_method_options(AttentionOptions, small_config("attention", "method_options.temperature=warm"))
    with pytest.raises(ConfigError, match="epsilon_neg=0.7 exceeds epsilon_pos=0.65"):
        get_method("hardway").build(
            small_config("hardway", "method_options.epsilon_neg=0.7"), pretrained=False
        )
    with pytest.raises(ConfigError, match="objective='hinge'"):
        get_method("attention").build(
            small_config("attention", "method_options.objective=hinge"), pretrained=False
        )


# --------------------------------------------------------------------------------------------------
# Attention: Senocak et al.'s loss and InfoNCE
# --------------------------------------------------------------------------------------------------


def test_triplet_loss_aligned_is_lower_than_shuffled():
    eye = torch.eye(2)
    negatives = negative_mask(2)
    # aligned: d+ = 0, d- = sqrt(2) for both anchors -> sigmoid(-sqrt(2))^2 = 0.0382
    aligned = triplet_loss(eye, eye, negatives)
    assert aligned.item() == pytest.approx(sigmoid(-math.sqrt(2)) ** 2, abs=1e-6)
    shuffled = triplet_loss(eye, eye.flip(0), negatives)
    assert shuffled.item() == pytest.approx(sigmoid(math.sqrt(2)) ** 2, abs=1e-6)  # 0.6471
    # the embeddings' scale does not matter (they are L2-normalised)
    assert triplet_loss(3 * eye, 0.5 * eye, negatives).item() == pytest.approx(aligned.item(), abs=1e-6)


def test_triplet_loss_hand_computed_2x2():
    # v0 at 53.13 deg (0.6, 0.8), v1 at 0 deg; a0 at 0 deg, a1 at 90 deg: cos v0.a0 = 0.6, v0.a1 = 0.8,
    # v1.a0 = 1, v1.a1 = 0; unit-vector distance d = sqrt(2 - 2 cos)
    visual = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    audio = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    d = {(0, 0): math.sqrt(0.8), (0, 1): math.sqrt(0.4), (1, 0): 0.0, (1, 1): math.sqrt(2.0)}
    anchor0 = sigmoid(d[0, 0] - d[0, 1]) ** 2  # the negative is closer than the positive: 0.3185
    anchor1 = sigmoid(d[1, 1] - d[1, 0]) ** 2  # 0.6471
    assert triplet_loss(visual, audio, negative_mask(2)).item() == pytest.approx(
        (anchor0 + anchor1) / 2, abs=1e-5
    )


def test_infonce_hand_computed_2x2():
    visual = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    audio = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    # logits = cos / T = [[0.6, 0.8], [1.0, 0.0]] / T; the target of row i is column i
    for t in (1.0, 0.5):
        row0 = math.log(math.exp(0.6 / t) + math.exp(0.8 / t)) - 0.6 / t
        row1 = math.log(math.exp(1.0 / t) + math.exp(0.0 / t)) - 0.0 / t
        loss = infonce_loss(visual, audio, negative_mask(2), temperature=t)
        assert loss.item() == pytest.approx((row0 + row1) / 2, abs=1e-5)
    eye = torch.eye(3)
    assert infonce_loss(eye, eye, negative_mask(3), 1.0) < infonce_loss(
        eye, eye.roll(1, 0), negative_mask(3), 1.0
    )


def test_excluding_same_class_negatives_changes_the_loss_as_computed_by_hand():
    labels = torch.tensor([0, 0, 1])
    every, excluded = negative_mask(3), negative_mask(3, "exclude-same-class", labels)
    # InfoNCE, T = 1, orthonormal aligned embeddings: logits = identity. A row with k negatives costs
    # log(e + k) - 1: rows 0 and 1 keep 1 negative (clip 2) instead of 2, row 2 keeps both.
    eye = torch.eye(3)
    two, one = math.log(math.e + 2) - 1, math.log(math.e + 1) - 1
    assert infonce_loss(eye, eye, every, 1.0).item() == pytest.approx(two, abs=1e-6)
    assert infonce_loss(eye, eye, excluded, 1.0).item() == pytest.approx((one + one + two) / 3, abs=1e-6)
    # triplet: anchors at 0, 40 and 90 degrees, audio at 0, 10 and 90 degrees
    visual = torch.tensor([unit(0), unit(40), unit(90)])
    audio = torch.tensor([unit(0), unit(10), unit(90)])

    def pair(i: int, j: int) -> float:
        angle = {0: 0, 1: 40, 2: 90}[i] - {0: 0, 1: 10, 2: 90}[j]
        return math.sqrt(2 - 2 * math.cos(math.radians(angle)))

    def term(i: int, j: int) -> float:
        return sigmoid(pair(i, i) - pair(i, j)) ** 2

    all_expected = (
        (term(0, 1) + term(0, 2)) / 2 + (term(1, 0) + term(1, 2)) / 2 + (term(2, 0) + term(2, 1)) / 2
    ) / 3
    excluded_expected = (term(0, 2) + term(1, 2) + (term(2, 0) + term(2, 1)) / 2) / 3
    assert triplet_loss(visual, audio, every).item() == pytest.approx(all_expected, abs=1e-5)
    assert triplet_loss(visual, audio, excluded).item() == pytest.approx(excluded_expected, abs=1e-5)
    assert abs(all_expected - excluded_expected) > 0.01
    # a batch of one class leaves no negatives: nothing to contrast, loss 0 (and still differentiable)
    one_class = negative_mask(3, "exclude-same-class", torch.tensor([4, 4, 4]))
    v = visual.clone().requires_grad_()
    loss = triplet_loss(v, audio, one_class) + infonce_loss(v, audio, one_class)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(v.grad, torch.zeros_like(v))


# --------------------------------------------------------------------------------------------------
# HardWay: tri-map and LVS logits
# --------------------------------------------------------------------------------------------------


def test_trimap_on_a_constructed_map():
    sim = torch.tensor([0.9, 0.65, 0.5, 0.4, 0.1])
    positive, negative = trimap(sim, 0.65, 0.4, 0.03)
    expected_pos = [sigmoid((s - 0.65) / 0.03) for s in (0.9, 0.65, 0.5, 0.4, 0.1)]
    expected_neg = [1 - sigmoid((s - 0.4) / 0.03) for s in (0.9, 0.65, 0.5, 0.4, 0.1)]
    assert positive.tolist() == pytest.approx(expected_pos, abs=1e-6)
    assert negative.tolist() == pytest.approx(expected_neg, abs=1e-6)
    assert positive[1].item() == pytest.approx(0.5) and negative[3].item() == pytest.approx(0.5)
    assert positive[0] > 0.999 and negative[4] > 0.999  # clearly in and clearly out
    assert positive[2] < 0.01 and negative[2] < 0.04  # 0.5 lies in the uncertain band: neither region


def test_hardway_logits_hand_computed_2x2():
    # B = 2 frames, 1 x 2 maps; maps[i, j] = audio j on frame i
    values = {(0, 0): (0.9, 0.1), (0, 1): (0.8, 0.2), (1, 0): (0.3, 0.3), (1, 1): (0.7, 0.0)}
    maps = torch.tensor([[[values[i, j]] for j in range(2)] for i in range(2)])  # 2 x 2 x 1 x 2

    def wmean(vals: tuple, weights: list) -> float:
        return sum(v * w for v, w in zip(vals, weights)) / sum(weights)

    def pos_region(vals: tuple) -> float:
        return wmean(vals, [sigmoid((v - 0.65) / 0.03) for v in vals])

    def neg_region(vals: tuple) -> float:
        return wmean(vals, [1 - sigmoid((v - 0.4) / 0.03) for v in vals])

    logits = hardway_logits(maps, negative_mask(2))
    inf = float("-inf")
    expected = [
        [
            pos_region(values[0, 0]) / 0.07,
            inf,
            pos_region(values[0, 1]) / 0.07,
            neg_region(values[0, 0]) / 0.07,
        ],
        [
            pos_region(values[1, 1]) / 0.07,
            pos_region(values[1, 0]) / 0.07,
            inf,
            neg_region(values[1, 1]) / 0.07,
        ],
    ]
    assert logits.shape == (2, 4)
    assert logits.tolist() == [pytest.approx(row, abs=1e-4) for row in expected]
    ce = [math.log(sum(math.exp(x) for x in row if x != inf)) - row[0] for row in expected]
    assert hardway_loss(maps, negative_mask(2)).item() == pytest.approx(sum(ce) / 2, abs=1e-4)
    # without hard negatives the last column goes; with no negative at all only the positive is left
    assert hardway_logits(maps, negative_mask(2), hard_negatives=False).shape == (2, 3)
    alone = torch.zeros(2, 2, dtype=torch.bool)
    assert hardway_loss(maps, alone, hard_negatives=False).item() == 0.0


def test_all_pairs_maps_index_frames_then_audio():
    from sspl.models.attention import cosine_map

    torch.manual_seed(0)
    visual, audio = torch.randn(3, 5, 2, 4), torch.randn(3, 5)
    pairs = cosine_maps_all_pairs(visual, audio)
    assert pairs.shape == (3, 3, 2, 4)
    for i in range(3):
        for j in range(3):
            assert torch.allclose(pairs[i, j], cosine_map(visual[i : i + 1], audio[j : j + 1])[0], atol=1e-6)


def test_hardway_aligned_batch_beats_a_shuffled_one():
    # frame i has feature e_i at one location and e_3 (background) elsewhere; audio i is e_i, so its map
    # is 1 on its object and 0 elsewhere, and 0 everywhere on the other frames
    b, c = 3, 4
    visual = torch.zeros(b, c, 2, 2)
    visual[:, 3] = 1.0
    for i, (y, x) in enumerate([(0, 0), (0, 1), (1, 1)]):
        visual[i, :, y, x] = 0.0
        visual[i, i, y, x] = 1.0
    audio = torch.eye(c)[:b]
    aligned = hardway_loss(cosine_maps_all_pairs(visual, audio), negative_mask(b))
    shuffled = hardway_loss(cosine_maps_all_pairs(visual, audio.roll(1, 0)), negative_mask(b))
    # aligned: logits ~ [1, 0, 0, 0] / 0.07 (positive 1, two easy negatives and the background 0)
    assert aligned.item() == pytest.approx(math.log(1 + 3 * math.exp(-1 / 0.07)), abs=1e-4)
    # shuffled: the own map is 0 everywhere and one easy negative is 1: about 1 / 0.07 = 14.3
    assert shuffled.item() == pytest.approx(1 / 0.07, abs=0.01)


# --------------------------------------------------------------------------------------------------
# the models
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["attention", "hardway"])
def test_models_share_the_contract(method):
    torch.manual_seed(0)
    cfg = small_config(method)
    plugin = get_method(method)
    model = plugin.build(cfg, pretrained=False).train()
    assert model.config is cfg.model
    assert not model.visual_encoder.training and not model.audio_encoder.training  # frozen: eval mode
    assert not any(p.requires_grad for p in model.visual_encoder.parameters())
    groups = plugin.param_groups(model, cfg.optim)
    assert sum(len(g["params"]) for g in groups) == sum(1 for p in model.parameters() if p.requires_grad)
    assert all(g["lr"] == 1e-3 and g["weight_decay"] == 1e-4 for g in groups)
    frames, spect = torch.randn(3, 3, 224, 224), torch.randn(3, 3, 96, 64)
    with torch.no_grad():
        maps = model.localize(frames, spect)
        assert maps.shape == (3, 14, 14) and torch.isfinite(maps).all()
        cached = model.localize(frames, audio_patch_embeddings=model.encode_audio(spect))
        assert torch.allclose(maps, cached, atol=1e-6)
        if method == "attention":
            assert torch.allclose(maps.sum(dim=(1, 2)), torch.ones(3), atol=1e-5)  # softmax over locations
        else:
            pairs = model(frames, spect)  # B x B x h x w, the diagonal is each frame's own map
            assert torch.allclose(pairs.diagonal(dim1=0, dim2=1).permute(2, 0, 1), maps, atol=1e-6)
    batch = {"frame_view1": frames, "spect": spect, "label": torch.tensor([0, 0, 1])}
    loss, extra = plugin.loss(model, batch, cfg)
    loss.backward()
    assert math.isfinite(loss.item()) and extra["negatives_per_clip"] == 2.0
    assert model.audio_transform[0].weight.grad.abs().sum() > 0


def test_trained_encoder_gets_its_group():
    cfg = small_config("hardway", "model.train_visual=true", "optim.lr_encoder=1e-5")
    model = get_method("hardway").build(cfg, pretrained=False)
    groups = {g["name"]: g for g in get_method("hardway").param_groups(model, cfg.optim)}
    assert list(groups) == ["audio_transform", "visual_encoder"] and groups["visual_encoder"]["lr"] == 1e-5
    assert model.train().visual_encoder.training


# --------------------------------------------------------------------------------------------------
# end to end: trainer, checkpoints, evaluate, load, CLI
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["attention", "hardway"])
def test_two_steps_then_evaluate_and_load(method, synth_dir, tmp_path):
    from sspl.api import load

    run = tmp_path / "run"
    result = train(small_config(method), synth_dir, run, progress=False)
    assert result.steps == 2 and (run / "checkpoints" / "best.pt").is_file()
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["type"] == "train"]
    assert len(steps) == 2 and all(math.isfinite(r["loss"]) and "lr_audio_transform" in r for r in steps)
    assert "val_ciou@0.5" in records[-1] and math.isfinite(records[-1]["val_loss"])
    ckpt = load_checkpoint(run / "checkpoints" / "best.pt")
    assert ckpt["method"] == method

    test_ids = [r.id for r in read_manifest(synth_dir) if r.split == "test" and r.ok]
    for protocol in ("fixed", "median") if method == "hardway" else ("fixed",):
        out = tmp_path / f"eval_{protocol}"
        args = ["evaluate", "--checkpoint", str(run), "--data", str(synth_dir), "--benchmark", "synth"]
        code = cli_main([*args, "--out", str(out), "--protocol", protocol, "--no-progress"])
        assert code == 0
        report = json.loads((out / "report.json").read_text())
        assert report["num_samples"] == len(test_ids) and report["protocol"]["threshold"] == protocol
        assert 0.0 <= report["ciou@0.5"] <= 1.0

    model, preprocess = load(run, device="cpu")
    assert preprocess.image_size == 224
    reference, _ = restore_model(ckpt)
    frames, spect = torch.randn(2, 3, 224, 224), torch.randn(2, 3, 96, 64)
    with torch.no_grad():
        assert torch.equal(model.localize(frames, spect), reference.localize(frames, spect))
    assert type(model).__name__ == {"attention": "AttentionBaseline", "hardway": "HardWayBaseline"}[method]


def test_cli_negatives_exclude_same_class(synth_dir, tmp_path, capsys):
    common = ["--data", str(synth_dir), "--no-progress", *SMALL]
    run = tmp_path / "run"
    code = cli_main(
        ["train", "--method", "hardway", "--negatives", "exclude-same-class", "--run-dir", str(run), *common]
    )
    assert code == 0
    saved = load_checkpoint(run / "checkpoints" / "last.pt")["config"]
    assert saved["method_options"] == {"negatives": "exclude-same-class"}
    capsys.readouterr()

    unlabelled = tmp_path / "unlabelled"
    shutil.copytree(synth_dir, unlabelled)
    rows = read_manifest(unlabelled)
    for row in rows:
        row.label = ""
    write_manifest(unlabelled, rows)
    args = ["train", "--method", "attention", "--negatives", "exclude-same-class"]
    code = cli_main([*args, "--run-dir", str(tmp_path / "run2"), *common[2:], "--data", str(unlabelled)])
    assert code == 1 and "needs class labels" in capsys.readouterr().err

    assert cli_main(["train", "--negatives", "all", "--run-dir", str(tmp_path / "run3"), *common]) == 1
    assert "SSPL takes none" in capsys.readouterr().err
