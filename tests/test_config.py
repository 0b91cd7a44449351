"""Typed configuration: YAML, overrides, validation, round trip."""

from __future__ import annotations

import json

import pytest
import torch

from sspl.config import Config, ConfigError, apply_overrides, config_to_dict, load_config, save_config


def test_defaults_are_the_papers():
    cfg = Config()
    assert cfg.model.pcm and cfg.model.cycles == 4 and cfg.model.scaling == "minmax"
    assert cfg.model.stop_grad and not cfg.model.train_visual
    assert (
        cfg.optim.weight_decay == 1e-4
        and cfg.optim.betas == [0.9, 0.999]
        and cfg.optim.schedule == "constant"
    )
    assert cfg.data.augmentations == ["crop", "hflip"] and cfg.data.val_fraction == 0.05
    # SSPL's inputs unless a config asks for the released EZ-VSL / SLAVC / FNAC ones
    assert cfg.model.audio_frontend == "vggish" and cfg.data.test_transform == "crop"
    assert apply_overrides(cfg, ["data.test_transform=resize"]).data.test_transform == "resize"


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  pcm: false\noptim:\n  lr_head: 2.0e-3\n  lr: 5.0e-4\ntrain:\n  epochs: 3\n")
    cfg = load_config(
        path,
        [
            "optim.lr_head=1e-4",
            "model.scaling=softmax",
            "data.augmentations=[crop,vflip]",
            "train.patience=null",
            "data.max_train=100",
        ],
    )
    assert cfg.model.pcm is False and cfg.optim.lr == 5e-4 and cfg.train.epochs == 3
    assert cfg.optim.lr_head == 1e-4 and cfg.model.scaling == "softmax"
    assert (
        cfg.data.augmentations == ["crop", "vflip"]
        and cfg.train.patience is None
        and cfg.data.max_train == 100
    )


def test_round_trip(tmp_path):
    cfg = apply_overrides(Config(), ["model.cycles=7", "train.amp=bf16"])
    save_config(cfg, tmp_path / "config.yaml")
    assert config_to_dict(load_config(tmp_path / "config.yaml")) == config_to_dict(cfg)


@pytest.mark.parametrize(
    "override,match",
    [
        ("model.pcn=true", "unknown key 'model.pcn'"),
        ("optim.lr_head=fast", "cannot use 'fast' as float"),
        ("model.pcm=maybe", "cannot use 'maybe' as bool"),
        ("model.scaling=tanh", "choose from"),
        ("train.amp=fp8", "choose none, bf16 or fp16"),
        ("epochs=3", "unknown key 'epochs'"),
        ("model.cycles", "section.key=value"),
        (
            "model.visual_encoder=resnet",
            r"model.visual_encoder='resnet': choose from resnet18, small_cnn, vgg16",
        ),
        ("model.proj_dim=0", r"model.proj_dim=0: must be >= 1"),
        ("data.augmentations=[crop,bogus]", r"data.augmentations=\['crop', 'bogus'\]: each at most once"),
        ("data.image_size=33", r"data.image_size=33: must be a multiple of 16"),
        ("data.num_workers=-1", r"data.num_workers=-1: must be >= 0"),
        ("data.val_fraction=1", r"data.val_fraction=1.0: must be in \[0, 1\)"),
        ("optim.betas=[0.9]", r"optim.betas=\[0.9\]: must be two numbers"),
        ("optim.lr=-1e-3", r"optim.lr=-0.001: must be >= 0"),
        ("optim.lr_head=.nan", r"optim.lr_head=nan: must be >= 0"),
        ("train.epochs=0", r"train.epochs=0: must be >= 1"),
        ("train.batch_size=0", r"train.batch_size=0: must be >= 1"),
        ("train.eval_every=0", r"train.eval_every=0: must be >= 1"),
        ("train.log_every=0", r"train.log_every=0: must be >= 1"),
        ("train.patience=0", r"train.patience=0: must be >= 1"),
        ("train.device=gpu", r"train.device='gpu': choose auto, cpu, cuda or cuda:N"),
        ("method_options.negatives=all", r"method_options \['negatives'\]: SSPL takes none"),
        ("model.audio_frontend=mel", r"model.audio_frontend='mel': choose from vggish, stft"),
        ("model.audio_frontend=stft", r"audio_encoder='vggish' takes 96 x 64 log-mel patches"),
        ("data.test_transform=pad", r"data.test_transform='pad': choose from crop, resize"),
    ],
)
def test_bad_overrides_name_the_key(override, match):
    with pytest.raises(ConfigError, match=match):
        apply_overrides(Config(), [override])


def test_bad_yaml_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  pcm: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: invalid YAML \(.* at line 3, column 1\)$") as info:
        load_config(path)
    assert "\n" not in str(info.value)  # one line, not PyYAML's block pointing at "<unicode string>"
    path.write_text("model:\n  pcn: true\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown config key\(s\) model.pcn"):
        load_config(path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_shipped_configs_load_with_table_s1_rates():
    from pathlib import Path

    configs = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))
    assert len(configs) >= 8
    for path in configs:
        cfg = load_config(path)
        if path.stem.startswith(("flickr", "vggsound")):
            # Table S1: with PCM lr1 = 5e-5, lr2 = 2e-5 on both datasets; without PCM they differ per dataset
            expected = {
                (True, "flickr"): (5e-5, 2e-5),
                (True, "vggsound"): (5e-5, 2e-5),
                (False, "flickr"): (2e-3, 5e-4),
                (False, "vggsound"): (1e-2, 5e-3),
            }[(cfg.model.pcm, path.stem.split("1")[0])]
            assert (cfg.optim.lr_head, cfg.optim.lr) == expected, path.name
            assert cfg.train.batch_size == 256 and cfg.data.augmentations == ["crop", "hflip"]


def test_synthav_configs_match_the_library_settings(tmp_path):
    from pathlib import Path

    from sspl.engine.synthav import synthav_config
    from sspl.models.small import SmallAudioCNN, SmallVisualCNN

    enc = tmp_path / "enc"
    enc.mkdir()
    torch.save(SmallVisualCNN(128).state_dict(), enc / "visual_encoder.pt")
    torch.save(SmallAudioCNN(128).state_dict(), enc / "audio_encoder.pt")
    (enc / "encoders.json").write_text(
        json.dumps(
            {
                "visual": {"out_channels": 128, "weights": "visual_encoder.pt"},
                "audio": {"embed_dim": 128, "weights": "audio_encoder.pt"},
            }
        )
    )
    for pcm in (True, False):
        shipped = load_config(
            Path(__file__).parents[1] / "configs" / f"synthav_{'pcm' if pcm else 'nopcm'}.yaml"
        )
        built = synthav_config(enc, pcm=pcm)
        for cfg in (shipped, built):
            cfg.model.visual_weights = cfg.model.audio_weights = None  # machine-specific paths
        assert shipped == built
    scaled = synthav_config(enc, pcm=False, lr_scale=10)  # what the demo trains with
    assert (scaled.optim.lr, scaled.optim.lr_head) == pytest.approx((5e-3, 2e-2))


def test_a_config_that_is_a_folder_or_not_text_is_named(tmp_path):
    with pytest.raises(ConfigError, match="is a folder; give a YAML config file"):
        load_config(tmp_path)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"method: sspl\n\xff\xfe\x00")
    with pytest.raises(ConfigError, match=r"bin.yaml: not a YAML text file \(byte 13 is not UTF-8\)"):
        load_config(binary)


def test_the_names_config_accepts_are_the_ones_the_models_and_data_implement():
    """config validates names without importing the layers above it: its lists must be theirs."""
    from sspl import config
    from sspl.data import transforms
    from sspl.models import attention, encoders

    assert tuple(sorted(encoders.VISUAL_ENCODERS)) == config.VISUAL_ENCODER_NAMES
    assert tuple(sorted(encoders.AUDIO_ENCODERS)) == config.AUDIO_ENCODER_NAMES
    assert attention.SCALINGS is config.SCALINGS and attention.FUSIONS is config.FUSIONS
    assert transforms.AUGMENTATIONS is config.AUGMENTATIONS
