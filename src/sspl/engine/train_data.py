"""The trainer's data: the train / validation splits of a prepared folder (and their fingerprint, which
a resumed run must match), the model-selection metric they allow, and the caches of the frozen encoders'
outputs built in the run directory."""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from ..config import Config
from ..data.annotations import load_annotations
from ..data.datasets import Sample, label_index, load_samples
from ..data.feature_cache import VisualFeatureCache, build_visual_cache, visual_cache_dir
from ..data.lists import check_overlap, load_list, sample_ids, train_val_split
from ..data.manifest import ANNOTATIONS_NAME, read_meta
from ..errors import DataError
from ..io import atomic_save_torch
from .distributed import DistEnv
from .run_dir import AUDIO_CACHE_NAME, CACHE_DIR, TrainingError

__all__ = ["Splits", "audio_cache", "select_key", "training_splits", "visual_cache"]

log = logging.getLogger(__name__)


@dataclass
class Splits:
    """The clips a run trains and validates on, the class index, the validation boxes (when every
    validation clip has them), the evaluation protocol of the folder and its kind (``meta.json``'s
    ``"kind"``: ``"synth"`` for SynthAV, ``"videos"``, ``"flickr"`` or ``"pairs"`` for prepared media)."""

    train: list[Sample]
    val: list[Sample]
    labels: dict[str, int]
    val_annotations: dict | None
    protocol_name: str
    kind: str | None = None


def _split_data(cfg: Config, data_dir: Path) -> Splits:
    samples = load_samples(data_dir)
    if not samples:
        raise DataError(f"{data_dir}: no finished clips in the manifest")
    candidates = [s for s in samples if s.split in ("train", "")]
    given_val = [s for s in samples if s.split == "val"]
    if cfg.data.train_list:
        wanted = set(load_list(cfg.data.train_list))
        candidates = [s for s in candidates if s.id in wanted]
        if not candidates:
            raise DataError(f"{data_dir}: no prepared clip is in the list {cfg.data.train_list!r}")
    if given_val:
        train, val = candidates, given_val
    else:
        train_ids, val_ids = train_val_split(
            [s.id for s in candidates], cfg.data.val_fraction, cfg.data.split_seed
        )
        by_id = {s.id: s for s in candidates}
        train, val = [by_id[i] for i in train_ids], [by_id[i] for i in val_ids]
    if cfg.data.max_train is not None and cfg.data.max_train < len(train):
        keep = set(sample_ids([s.id for s in train], cfg.data.max_train, cfg.data.split_seed))
        train = [s for s in train if s.id in keep]
    if not train:
        raise DataError(f"{data_dir}: no training clips (splits 'train' or unlabelled)")
    check_overlap([s.id for s in train + val], benchmark="all", allow_overlap=cfg.data.allow_overlap)

    meta = read_meta(data_dir)
    val_annotations = None
    if val and (data_dir / ANNOTATIONS_NAME).is_file():
        annotations = load_annotations(data_dir)
        if all(s.id in annotations for s in val):
            # cIoU scores clips with a visible source: those without boxes (an extended set) count in
            # the validation loss only
            val_annotations = {s.id: annotations[s.id] for s in val if len(annotations[s.id].boxes)} or None
    protocol = "synth" if meta.get("kind") == "synth" else "vggss"
    kind = meta.get("kind") if isinstance(meta.get("kind"), str) else None
    return Splits(train, val, label_index(samples), val_annotations, protocol, kind)


def _data_fingerprint(splits: Splits) -> str:
    """SHA-1 of the train and val ids: what a resumed run must be given again."""
    ids = (
        "\n".join(sorted(s.id for s in splits.train)) + "\n--\n" + "\n".join(sorted(s.id for s in splits.val))
    )
    return hashlib.sha1(ids.encode()).hexdigest()


def training_splits(cfg: Config, data_dir: Path, run_dir: Path, ckpt: dict | None) -> tuple[Splits, str]:
    """The splits of ``data_dir`` for ``cfg`` and their fingerprint, checked: at least one batch of
    training clips, validation clips when early stopping watches them, and on resume (``ckpt``) the clips
    the run was trained on."""
    splits = _split_data(cfg, data_dir)
    if len(splits.train) < cfg.train.batch_size:
        raise TrainingError(
            f"{data_dir}: {len(splits.train)} training clips, fewer than one batch of {cfg.train.batch_size}; "
            "lower train.batch_size"
        )
    if cfg.train.patience is not None and not splits.val:
        raise TrainingError(
            f"{data_dir}: train.patience={cfg.train.patience} needs validation clips to watch, and there "
            "are none (a 'val' split, or data.val_fraction > 0)"
        )
    fingerprint = _data_fingerprint(splits)
    if ckpt is not None and ckpt["trainer"].get("data", fingerprint) != fingerprint:
        raise TrainingError(
            f"{run_dir}: was trained on other clips than {data_dir} gives (train/val ids differ); resume "
            "with the --data it was started with, or start a new run"
        )
    return splits, fingerprint


def select_key(cfg: Config, splits: Splits) -> tuple[str, str]:
    """(metric name, "max" or "min") used for model selection."""
    choice = cfg.train.select_metric
    if choice == "auto":
        choice = "ciou" if splits.val_annotations is not None else "loss"
    if choice == "ciou":
        if splits.val_annotations is None:
            raise TrainingError(
                "train.select_metric=ciou needs boxes for the validation clips (annotations.json)"
            )
        return "val_ciou@0.5", "max"
    return "val_loss", "min"


@torch.no_grad()
def audio_cache(
    model, samples: list[Sample], run_dir: Path, env: DistEnv, cfg: Config
) -> dict[str, torch.Tensor]:
    """Exact cache of the frozen audio encoder's patch embeddings (computed once, stored in the run dir)."""
    if cfg.model.train_audio:
        raise TrainingError("data.cache_audio needs a frozen audio encoder (model.train_audio is true)")
    path = run_dir / CACHE_DIR / AUDIO_CACHE_NAME
    ids = [s.id for s in samples]
    if env.is_main and not path.is_file():
        model.eval()
        embeddings = {}
        for start in range(0, len(samples), 64):
            chunk = samples[start : start + 64]
            spect = torch.stack([s.load_spect() for s in chunk]).to(env.device)
            out = model.encode_audio(spect).float().cpu()
            embeddings.update({s.id: e.clone() for s, e in zip(chunk, out)})
        atomic_save_torch(path, {"ids": ids, "embeddings": torch.stack([embeddings[i] for i in ids])})
    if env.distributed:
        dist.barrier()
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        table = dict(zip(saved["ids"], saved["embeddings"]))
    except Exception as e:  # several exception types for damaged files
        raise TrainingError(f"{path}: damaged audio cache ({e}); delete it to rebuild") from e
    missing = [i for i in ids if i not in table]
    if missing:
        raise TrainingError(
            f"{path}: audio cache lacks {len(missing)} clip(s) (e.g. {missing[:3]}); delete it to rebuild"
        )
    return table


def visual_cache(
    model, samples: list[Sample], run_dir: Path, env: DistEnv, cfg: Config, progress: bool
) -> VisualFeatureCache:
    """Features of the frozen visual encoder on each training frame's crop resize (approximate views:
    see :mod:`sspl.data.feature_cache`), built once by the main process in the run dir."""
    folder = visual_cache_dir(run_dir / CACHE_DIR, model.visual_encoder, cfg.data.image_size)
    if env.is_main:
        tic = time.perf_counter()
        cache = build_visual_cache(
            model.visual_encoder,
            samples,
            folder,
            image_size=cfg.data.image_size,
            batch_size=min(cfg.train.batch_size, 64),
            num_workers=cfg.data.num_workers,
            device=env.device,
            progress=progress,
        )
        log.info("visual feature cache of %d frames ready in %.1f s", len(samples), time.perf_counter() - tic)
    if env.distributed:
        dist.barrier()
    if not env.is_main:
        cache = VisualFeatureCache(folder)
        cache.check(samples)
    return cache
