"""Typed configuration: the single source of truth. YAML files and ``key=value`` overrides only fill it in.

Every protocol or ablation choice is a named field whose default is the paper's (or the official code's)
value; the resolved config is saved beside every checkpoint (``config.yaml``).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import SSPLError

__all__ = [
    "AUDIO_AUGMENTATIONS",
    "AUDIO_ENCODER_NAMES",
    "AUDIO_FRONTENDS",
    "AUGMENTATIONS",
    "FUSIONS",
    "SCALINGS",
    "TEST_TRANSFORMS",
    "VISUAL_ENCODER_NAMES",
    "Config",
    "ConfigError",
    "DataConfig",
    "OptimConfig",
    "SSPLConfig",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "config_to_yaml",
    "load_config",
    "save_config",
]


#: The names a config may hold; the modules that implement them import these (config is the layer below
#: them, so it validates a config without importing models or data).
SCALINGS = ("minmax", "sigmoid", "softmax", "relu", "relu_softmax")
FUSIONS = ("attention", "concat", "multiply", "add")
VISUAL_ENCODER_NAMES = ("resnet18", "small_cnn", "vgg16")
AUDIO_ENCODER_NAMES = ("resnet18", "small_cnn", "vggish")
#: the audio front ends (:mod:`sspl.audio` log-mel patches; :mod:`sspl.spectrogram` the released EZ-VSL /
#: SLAVC / FNAC models' linear-frequency log-spectrogram)
AUDIO_FRONTENDS = ("vggish", "stft")
#: audio encoders that take the ``vggish`` front end's 96 x 64 log-mel patches
PATCH_AUDIO_ENCODERS = ("small_cnn", "vggish")
#: evaluation image transforms (:mod:`sspl.data.transforms`)
TEST_TRANSFORMS = ("crop", "resize")
#: FNAC's spectrogram masks (:mod:`sspl.data.spec_augment`), for the ``stft`` front end.
AUDIO_AUGMENTATIONS = ("freq_mask", "time_mask")
#: the Table S2 augmentations (:mod:`sspl.data.transforms`)
AUGMENTATIONS = ("crop", "hflip", "vflip", "translate", "rotate", "color_jitter", "grayscale", "blur")


class ConfigError(SSPLError):
    """An unknown key, a value of the wrong type, or an invalid combination of options."""


def _at_least(section: str, obj: Any, minimum: float, *names: str, optional: bool = False) -> None:
    """Refuse ``section.name`` values below ``minimum`` (or not finite); ``None`` passes if ``optional``."""
    for name in names:
        value = getattr(obj, name)
        if value is None and optional:
            continue
        if not (math.isfinite(value) and value >= minimum):
            raise ConfigError(f"{section}.{name}={value}: must be >= {minimum:g}")


@dataclass
class SSPLConfig:
    """The SSPL model; each paper ablation is a switch of this one model.

    Attributes:
        pcm: use the predictive coding module (SSPL w/ PCM) or not (w/o PCM).
        cycles: PCM recurrent cycles after the initial step (official ``cycs_in``; paper ``T = cycles + 1``).
        scaling: attention scaling of the similarity map (Table 5): minmax, sigmoid, softmax, relu,
            relu_softmax.
        fusion: audio-visual fusion (Table S5): attention (the paper's AM), concat, multiply, add.
        stop_grad: stop-gradient on the SimSiam targets (Table 3).
        visual_encoder: ``vgg16`` (paper), ``small_cnn`` (SynthAV-pretrained analogue) or ``resnet18``
            (the image encoder of EZ-VSL, SLAVC and FNAC: ``B x 512 x 7 x 7`` from ``224 x 224``).
        audio_encoder: ``vggish`` (paper), ``small_cnn`` or ``resnet18`` (EZ-VSL's, SLAVC's and FNAC's:
            the whole ``1 x 257 x T`` log-spectrogram, max-pooled to 512; needs ``audio_dim: 512``).
        visual_weights: ``"imagenet"`` (torchvision's ImageNet VGG16, or ResNet-18 for ``resnet18``), a
            file path, or ``None`` (random init, Table 3).
        audio_weights: ``"audioset"`` (torchvggish VGGish), a file path, or ``None`` (``resnet18`` has no
            published audio weights: its released models train it from scratch).
        train_visual: train the visual encoder (Table 3 "from scratch" with ``visual_weights=None``).
        train_audio: train the audio encoder (the paper keeps it frozen).
        visual_channels: channels of the visual map (512 for VGG16).
        audio_dim: size of the audio embedding (128 for VGGish).
        pcm_channels: channels of the PCM's lower layers (512 in the paper); ``None`` = ``visual_channels``.
        proj_dim: SimSiam projection size (2048).
        pred_hidden: SimSiam predictor bottleneck (512).
        transform_hidden: hidden size of the audio transform ``g`` (512).
        audio_frontend: what batch key ``spect`` holds: ``vggish`` (``B x P x 96 x 64`` log-mel patches of
            16 kHz audio, SSPL) or ``stft`` (``B x 1 x 257 x T`` log-spectrogram of the centre 3 s at the
            clip's own rate, the released EZ-VSL / SLAVC / FNAC models' input; see :mod:`sspl.spectrogram`).
    """

    pcm: bool = True
    cycles: int = 4
    scaling: str = "minmax"
    fusion: str = "attention"
    stop_grad: bool = True
    visual_encoder: str = "vgg16"
    audio_encoder: str = "vggish"
    visual_weights: str | None = "imagenet"
    audio_weights: str | None = "audioset"
    train_visual: bool = False
    train_audio: bool = False
    visual_channels: int = 512
    audio_dim: int = 128
    pcm_channels: int | None = None
    proj_dim: int = 2048
    pred_hidden: int = 512
    transform_hidden: int = 512
    audio_frontend: str = "vggish"

    def __post_init__(self) -> None:
        if self.scaling not in SCALINGS:
            raise ConfigError(f"model.scaling={self.scaling!r}: choose from {', '.join(SCALINGS)}")
        if self.fusion not in FUSIONS:
            raise ConfigError(f"model.fusion={self.fusion!r}: choose from {', '.join(FUSIONS)}")
        if self.cycles < 0:
            raise ConfigError(f"model.cycles={self.cycles}: must be >= 0")
        if self.visual_encoder not in VISUAL_ENCODER_NAMES:
            choices = ", ".join(VISUAL_ENCODER_NAMES)
            raise ConfigError(f"model.visual_encoder={self.visual_encoder!r}: choose from {choices}")
        if self.audio_encoder not in AUDIO_ENCODER_NAMES:
            choices = ", ".join(AUDIO_ENCODER_NAMES)
            raise ConfigError(f"model.audio_encoder={self.audio_encoder!r}: choose from {choices}")
        if self.audio_encoder == "resnet18" and self.audio_weights == "audioset":
            raise ConfigError(
                "model.audio_weights='audioset' is VGGish's; the resnet18 audio encoder has no published "
                "weights (set model.audio_weights=null, or a file path)"
            )
        if self.audio_encoder == "resnet18" and self.audio_dim != 512:
            raise ConfigError(f"model.audio_dim={self.audio_dim}: the resnet18 audio encoder gives 512")
        if self.audio_frontend not in AUDIO_FRONTENDS:
            choices = ", ".join(AUDIO_FRONTENDS)
            raise ConfigError(f"model.audio_frontend={self.audio_frontend!r}: choose from {choices}")
        if self.audio_frontend == "stft" and self.audio_encoder in PATCH_AUDIO_ENCODERS:
            raise ConfigError(
                f"model.audio_frontend='stft' gives 1 x 257 x T spectrograms, but model.audio_encoder="
                f"{self.audio_encoder!r} takes 96 x 64 log-mel patches (use audio_frontend='vggish')"
            )
        if self.audio_frontend == "vggish" and self.audio_encoder not in PATCH_AUDIO_ENCODERS:
            raise ConfigError(
                f"model.audio_encoder={self.audio_encoder!r} takes 1 x 257 x T spectrograms, not the vggish "
                "front end's log-mel patches (set model.audio_frontend=stft)"
            )
        sizes = ("visual_channels", "audio_dim", "proj_dim", "pred_hidden", "transform_hidden")
        _at_least("model", self, 1, *sizes)
        _at_least("model", self, 1, "pcm_channels", optional=True)


@dataclass
class DataConfig:
    """Training data.

    Attributes:
        augmentations: names of the Table S2 augmentations (official default: crop + horizontal flip).
        image_size: network input size.
        val_fraction: share of the training ids held out for model selection when the prepared folder has no
            ``val`` split (never the test set).
        split_seed: seed of the train/val split.
        train_list: a bundled list name (e.g. ``flickr_10k``) or a file restricting the training ids.
        max_train: deterministic subsample of the training ids (``None`` = all).
        allow_overlap: train even if training ids overlap a benchmark test set (warns with the count).
        num_workers: data loader workers.
        cache_audio: cache the frozen audio encoder's patch embeddings (exact; needs a frozen encoder).
        cache_visual: cache the frozen visual encoder's features of each training frame's crop resize
            and draw the crop and flip in feature space (approximate: see :mod:`sspl.data.feature_cache`;
            needs a frozen visual encoder and exactly the ``crop`` and ``hflip`` augmentations).
        test_transform: the evaluation / localization image transform: ``crop`` (shorter side to
            ``image_size``, bicubic, centre crop; SSPL) or ``resize`` (the whole frame to ``image_size`` x
            ``image_size``, bicubic, no crop; the EZ-VSL / SLAVC / FNAC test transform). With ``resize`` the
            evaluation frame and the training views come from the source-size frame of
            ``sspl prepare --native-frames`` where the data folder has one, as in their code.
        audio_augmentations: masks drawn on each training clip's ``stft`` spectrogram (FNAC's
            ``freq_mask`` and ``time_mask``, :mod:`sspl.data.spec_augment`); needs ``model.audio_frontend``
            ``stft``.
    """

    augmentations: list[str] = field(default_factory=lambda: ["crop", "hflip"])
    image_size: int = 224
    val_fraction: float = 0.05
    split_seed: int = 0
    train_list: str | None = None
    max_train: int | None = None
    allow_overlap: bool = False
    num_workers: int = 2
    cache_audio: bool = False
    cache_visual: bool = False
    test_transform: str = "crop"
    audio_augmentations: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        unknown = [a for a in self.augmentations if a not in AUGMENTATIONS]
        if unknown or len(set(self.augmentations)) != len(self.augmentations):
            raise ConfigError(
                f"data.augmentations={self.augmentations}: each at most once, from {', '.join(AUGMENTATIONS)}"
            )
        if self.image_size < 32 or self.image_size % 16:
            raise ConfigError(
                f"data.image_size={self.image_size}: must be a multiple of 16 (the encoders' stride), >= 32"
            )
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"data.val_fraction={self.val_fraction}: must be in [0, 1)")
        if self.test_transform not in TEST_TRANSFORMS:
            choices = ", ".join(TEST_TRANSFORMS)
            raise ConfigError(f"data.test_transform={self.test_transform!r}: choose from {choices}")
        names = self.audio_augmentations
        if any(a not in AUDIO_AUGMENTATIONS for a in names) or len(set(names)) != len(names):
            raise ConfigError(
                f"data.audio_augmentations={names}: each at most once, from {', '.join(AUDIO_AUGMENTATIONS)}"
            )
        _at_least("data", self, 1, "max_train", optional=True)
        _at_least("data", self, 0, "num_workers")


@dataclass
class OptimConfig:
    """AdamW with the official parameter groups (Table S1: ``lr_head`` = lr1, ``lr`` = lr2).

    Attributes:
        lr_head: learning rate of the SimSiam projector and predictor (lr1).
        lr: learning rate of the audio transform ``g`` and the PCM (lr2; official lr_sound / lr_frame).
        lr_encoder: learning rate of encoders that are trained (Table 3 ablation); ``None`` = ``lr``.
        weight_decay: AdamW weight decay (the PCM rates get none, as in the official code).
        betas: AdamW betas.
        eps: AdamW epsilon.
        schedule: ``constant`` (the paper) or ``cosine`` (with ``warmup_epochs`` linear warm-up).
        warmup_epochs: warm-up length for the cosine schedule.
        optimizer: ``adamw`` (decoupled weight decay, SSPL's) or ``adam`` (weight decay added to the
            gradient, PyTorch's ``Adam``: what EZ-VSL, SLAVC and FNAC train with).
    """

    lr_head: float = 5e-5
    lr: float = 2e-5
    lr_encoder: float | None = None
    weight_decay: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    schedule: str = "constant"
    warmup_epochs: float = 0.0
    optimizer: str = "adamw"

    def __post_init__(self) -> None:
        if self.optimizer not in ("adamw", "adam"):
            raise ConfigError(f"optim.optimizer={self.optimizer!r}: choose adamw or adam")
        if self.schedule not in ("constant", "cosine"):
            raise ConfigError(f"optim.schedule={self.schedule!r}: choose constant or cosine")
        _at_least("optim", self, 0, "lr_head", "lr", "weight_decay", "warmup_epochs")
        _at_least("optim", self, 0, "lr_encoder", optional=True)
        if not self.eps > 0:
            raise ConfigError(f"optim.eps={self.eps}: must be > 0")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"optim.betas={self.betas}: must be two numbers in [0, 1)")


@dataclass
class TrainConfig:
    """The training loop.

    Attributes:
        epochs: number of epochs.
        batch_size: global batch size (split across processes under DDP); the paper uses 256.
        seed: seed of everything random in training.
        patience: stop after this many evaluations without improvement of the selection metric.
        select_metric: ``auto`` (val cIoU@0.5 when the val split is labelled, else val loss), ``ciou``
            or ``loss``.
        amp: autocast dtype on GPU: ``none``, ``bf16`` or ``fp16``.
        channels_last: channels-last memory format for the encoders.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``.
        log_every: steps between log lines.
        max_steps_per_epoch: cap the steps of an epoch (smoke runs).
        sync_bn: convert batch norms to SyncBatchNorm under DDP (the official code does).
        eval_every: epochs between validations.
    """

    epochs: int = 20
    batch_size: int = 256
    seed: int = 1234
    patience: int | None = None
    select_metric: str = "auto"
    amp: str = "none"
    channels_last: bool = True
    device: str = "auto"
    log_every: int = 20
    max_steps_per_epoch: int | None = None
    sync_bn: bool = True
    eval_every: int = 1

    def __post_init__(self) -> None:
        if self.amp not in ("none", "bf16", "fp16"):
            raise ConfigError(f"train.amp={self.amp!r}: choose none, bf16 or fp16")
        if self.select_metric not in ("auto", "ciou", "loss"):
            raise ConfigError(f"train.select_metric={self.select_metric!r}: choose auto, ciou or loss")
        _at_least("train", self, 1, "epochs", "batch_size", "log_every", "eval_every")
        _at_least("train", self, 1, "patience", "max_steps_per_epoch", optional=True)
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise ConfigError(f"train.device={self.device!r}: choose auto, cpu, cuda or cuda:N")


@dataclass
class Config:
    """Everything a training run needs; saved as ``config.yaml`` in the run directory.

    Attributes:
        method: the method to train: ``sspl`` (this paper), or the contrastive baselines ``attention``
            (Senocak et al.) or ``hardway`` (LVS, Chen et al.).
        model: the SSPL model (the baselines use its encoder settings).
        data: training data.
        optim: the optimizer.
        train: the training loop.
        method_options: options of the baselines, e.g. ``negatives`` (``all`` or ``exclude-same-class``);
            SSPL takes none.
    """

    method: str = "sspl"
    model: SSPLConfig = field(default_factory=SSPLConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    method_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.model.audio_frontend == "stft" and self.data.cache_audio:
            raise ConfigError(
                "data.cache_audio caches the vggish front end's patch embeddings; "
                "model.audio_frontend='stft' has none (set data.cache_audio=false)"
            )
        if self.data.audio_augmentations and self.model.audio_frontend != "stft":
            raise ConfigError(
                f"data.audio_augmentations={self.data.audio_augmentations} mask the stft spectrogram; "
                f"model.audio_frontend={self.model.audio_frontend!r} has none (set model.audio_frontend=stft)"
            )
        if self.method == "sspl" and self.method_options:
            raise ConfigError(
                f"method_options {sorted(self.method_options)}: SSPL takes none (they belong to the "
                "contrastive baselines, method attention or hardway)"
            )


# --------------------------------------------------------------------------------------------------
# dict / YAML conversion
# --------------------------------------------------------------------------------------------------


def _resolve_type(tp: Any) -> tuple[Any, bool]:
    """Return (base type, optional?) for an annotation like ``int | None``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return (args[0] if len(args) == 1 else Any), True
    return tp, False


def _coerce(value: Any, tp: Any, key: str) -> Any:
    base, optional = _resolve_type(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{key}: null is not allowed")
    if isinstance(value, str) and value.lower() in ("none", "null") and optional:
        return None
    if dataclasses.is_dataclass(base):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return _from_dict(base, value, prefix=f"{key}.")
    origin = typing.get_origin(base) or base
    try:
        if origin is bool:
            if isinstance(value, str):
                if value.lower() in ("true", "yes", "1", "on"):
                    return True
                if value.lower() in ("false", "no", "0", "off"):
                    return False
                raise ValueError
            if not isinstance(value, bool | int):
                raise ValueError
            return bool(value)
        if origin is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if origin is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if origin is str:
            return str(value)
        if origin is list:
            if isinstance(value, str):
                value = [v for v in value.split(",") if v]
            (item_tp,) = typing.get_args(base) or (Any,)
            return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        if origin is dict:
            if not isinstance(value, dict):
                raise ValueError
            return dict(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: cannot use {value!r} as {getattr(base, '__name__', base)}") from None
    return value


def _from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(prefix + k for k in unknown)}; "
            f"valid keys here: {', '.join(sorted(prefix + n for n in names))}"
        )
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{prefix or 'config'}: {e}") from e


def config_from_dict(data: dict) -> Config:
    """Build a :class:`Config` from a nested dict (unknown keys are an error naming them)."""
    return _from_dict(Config, data or {})


def config_to_dict(cfg: Any) -> dict:
    """Nested plain dict of a config dataclass (YAML/JSON-serialisable)."""
    return dataclasses.asdict(cfg)


def config_to_yaml(cfg: Config) -> str:
    """The YAML text of a config: what ``config.yaml`` of a run holds and ``sspl train --print-config`` prints."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``section.key=value`` overrides (values parsed as YAML scalars) and revalidate.

    Example: ``["optim.lr_head=1e-4", "model.pcm=false", "data.augmentations=[crop,hflip,grayscale]"]``.
    """
    data = config_to_dict(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise ConfigError(f"override {item!r}: {p!r} is not a config section")
            node = node[p]
        if parts[-1] not in node and parts[0] != "method_options":
            raise ConfigError(f"override {item!r}: unknown key {key!r}")
        try:
            node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: cannot parse value ({_yaml_problem(e)})") from e
    return config_from_dict(data)


def _yaml_problem(e: yaml.YAMLError) -> str:
    """PyYAML's multi-line message as one line: the problem and where it is."""
    problem = getattr(e, "problem", None)
    mark = getattr(e, "problem_mark", None)
    if problem and mark is not None:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(e).split())


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (``None`` = defaults) and apply overrides."""
    data: dict = {}
    if path is not None:
        p = Path(path)
        if p.is_dir():
            raise ConfigError(f"{p}: is a folder; give a YAML config file (shipped ones live in configs/)")
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found (ship configs live in configs/)")
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError as e:
            raise ConfigError(f"{p}: not a YAML text file (byte {e.start} is not UTF-8)") from e
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: invalid YAML ({_yaml_problem(e)})") from e
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: expected a mapping at the top level")
        try:
            cfg = config_from_dict(data)
        except ConfigError as e:
            raise ConfigError(f"{p}: {e}") from e
    else:
        cfg = Config()
    return apply_overrides(cfg, list(overrides or []))


def save_config(cfg: Config, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML, atomically."""
    from .io import atomic_write_text

    atomic_write_text(path, config_to_yaml(cfg))
