"""``sspl demo``: the whole pipeline in a few CPU minutes, without downloads, ending in one HTML page.

Steps 1-3 are the SynthAV pipeline of :mod:`sspl.engine.synthav`, which the experiments run too; each step
resumes where a killed run stopped (that module's resume rule), so rerunning the command finishes the job:

1. generate a small SynthAV set (:mod:`sspl.data.synth`) with its encoder-pretraining split, and pretrain
   the small visual and audio encoders on that split (the stand-in for ImageNet / AudioSet pretraining,
   which cannot be downloaded here; :mod:`sspl.engine.pretrain`);
2. train SSPL on the set with those encoders frozen (:func:`sspl.engine.synthav.train_synthav`), and on the
   same scenes, encoders, minibatch and seed the method beside it (:data:`BESIDE_METHOD`, the project's best
   localizer on SynthAV), so the page shows what the pipeline can do and where SSPL stands;
3. evaluate both on the held-out test scenes beside SSPL's untrained model, the oracle query and the
   trivial maps (:func:`sspl.engine.synthav.evaluate_synthav`);
4. localize a few test scenes through the user-facing API (:func:`sspl.localize.localize_image`) and
   the bundled real video (:func:`sspl.localize.write_video_outputs`) -- honestly labelled: a model
   trained on synthetic shapes shows the video pipeline, not real-world localization;
5. write ``index.html`` (:mod:`sspl.demo_page`): what ran (command, seed, threads, versions, wall time, each
   method's settings and selected epoch), the metrics table, success and learning curves, both methods'
   overlays side by side, and the heat-map video in a ``<video>`` element.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import shlex
import time
from collections import Counter
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path

from .api import load
from .config import Config
from .data.manifest import META_NAME, read_manifest, read_meta
from .data.synth import MAX_SCENES, PRESETS, SynthConfig, settings_differences, synth_config
from .demo_page import beside_pairs, write_demo_page
from .engine.evaluate import evaluate
from .engine.synthav import (
    SynthAVEvaluation,
    evaluate_synthav,
    prepare_synthav,
    synthav_config,
    train_synthav,
)
from .engine.train import TrainResult
from .errors import DataError, SSPLError
from .io import atomic_save_image, atomic_save_json, output_folder_blocked
from .localize import localize_image, write_video_outputs
from .models.methods import get_method
from .viz import contact_sheet, learning_curves_plot, pcm_strip, success_curves_plot

__all__ = [
    "BESIDE_METHOD",
    "DEMO_VIDEO",
    "DemoSettings",
    "beside_config",
    "beside_label",
    "demo_command",
    "demo_config",
    "demo_video",
    "run_demo",
    "score_rows",
]

log = logging.getLogger(__name__)

#: The method trained beside SSPL on the same scenes: the project's best localizer on SynthAV (docs/results.md:
#: Attention, 1.000 held-out cIoU@0.5 on the easy preset). Name another registered method to show it instead.
BESIDE_METHOD = "attention"
#: the page's name of a method shown beside SSPL (default: its registry name)
BESIDE_LABELS = {
    "attention": "Attention (Senocak et al., contrastive)",
    "hardway": "HardWay (Chen et al., contrastive)",
    "ezvsl": "EZ-VSL (Mo and Morgado, contrastive)",
}
#: the rate of the contrastive baselines on SynthAV (docs/results.md); a method may name its own below
CONTRASTIVE_OVERRIDES = ("optim.lr=1e-3",)
BESIDE_OVERRIDES: dict[str, tuple[str, ...]] = {}
#: held-out scenes drawn with their evaluated maps, for each model on the page
OVERLAYS = 8


def beside_label(method: str) -> str:
    """The page's name of the method shown beside SSPL."""
    return BESIDE_LABELS.get(method, method)


#: The bundled real clip (see ``sspl/assets/videos/PROVENANCE.md``).
DEMO_VIDEO = "single_source__p04SYXuBSQ.mp4"


def demo_video() -> Path:
    """Path of the bundled real clip."""
    return Path(str(resources.files("sspl") / "assets" / "videos" / DEMO_VIDEO))


@dataclass(frozen=True)
class DemoSettings:
    """What the demo generates and trains (its time and results on 1, 2 and 4 threads: docs/benchmarks.md).

    Attributes:
        preset: SynthAV preset (``easy``: the sounding object alone; ``distractors``: 2-4 objects).
        scenes: main scenes (70% train, 10% val, 20% test).
        pretrain_scenes: scenes of the encoder-pretraining split.
        pretrain_epochs: epochs of encoder pretraining.
        epochs: SSPL training epochs.
        batch_size: SSPL batch size.
        pcm: train SSPL with the predictive coding module.
        seed: seed of the data, the pretraining and the training.
        workers: processes for scene generation (default: all cores).
        localize_scenes: test scenes localized through ``localize_image``.
        video_fps: output frame rate of the real-video localization.
        lr_scale: multiple of Table S1's learning rates (10: picked on SynthAV's validation split for
            SSPL w/o PCM, 0.49 vs 0.33 validation cIoU@0.5 at 1; docs/results.md).
        augmentations: the Table S2 augmentations of SSPL's training (crop + horizontal flip + colour
            jitter: the best on SynthAV's validation split at 10x rates, 0.550 vs 0.487 validation
            cIoU@0.5 for crop + flip; docs/results.md).
        train_overrides: further ``key=value`` overrides of the training config.
        beside: the method trained beside SSPL on the same scenes, encoders, minibatch and seed
            (:data:`BESIDE_METHOD`; ``None``: none).
        beside_epochs: its training epochs.
    """

    preset: str = "easy"
    scenes: int = 500
    pretrain_scenes: int = 500
    pretrain_epochs: int = 5
    epochs: int = 12
    batch_size: int = 32
    pcm: bool = False
    seed: int = 0
    workers: int | None = None
    localize_scenes: int = 4
    video_fps: float = 5.0
    lr_scale: float = 10.0
    augmentations: tuple[str, ...] = ("crop", "hflip", "color_jitter")
    train_overrides: tuple[str, ...] = ()
    beside: str | None = BESIDE_METHOD
    beside_epochs: int = 6

    def __post_init__(self) -> None:
        # Checked before anything runs: a bad value must not surface minutes into the demo.
        train_share = 1 - SynthConfig.val_fraction - SynthConfig.test_fraction
        least = math.ceil(self.batch_size / train_share)
        problems = []
        if self.preset not in PRESETS:
            problems.append(f"preset {self.preset!r}: choose from {', '.join(sorted(PRESETS))}")
        if not least <= self.scenes <= MAX_SCENES:
            problems.append(
                f"scenes {self.scenes}: at least {least}, so that training holds one batch of {self.batch_size}, "
                f"and at most {MAX_SCENES}"
            )
        # `sspl demo --scenes N` sets both counts; a bad N is reported once, by the check above (an N
        # that passes it passes this one).
        if not 2 <= self.pretrain_scenes <= MAX_SCENES and self.pretrain_scenes != self.scenes:
            problems.append(f"pretrain_scenes {self.pretrain_scenes}: at least 2 and at most {MAX_SCENES}")
        if self.epochs < 1 or self.pretrain_epochs < 1 or self.beside_epochs < 1:
            problems.append(
                f"epochs {self.epochs}, pretrain_epochs {self.pretrain_epochs}, beside_epochs "
                f"{self.beside_epochs}: at least 1"
            )
        if self.beside is not None:
            try:
                get_method(self.beside)
            except SSPLError as e:
                problems.append(f"beside: {e}")
            if self.beside == "sspl":
                problems.append("beside 'sspl': name another method than SSPL")
        if not 0 <= self.seed < 2**63:
            problems.append(f"seed {self.seed}: must be in [0, 2**63)")
        if self.workers is not None and self.workers < 1:
            problems.append(f"workers {self.workers}: at least 1")
        if problems:
            raise ValueError("invalid demo settings: " + "; ".join(problems))


#: marks a folder as a demo's, so that a rerun may replace what is in it
DEMO_MARKER = ".sspl-demo"


def _check_demo_folder(out: Path) -> None:
    """Refuse a file, a path below a file, or a non-empty folder that is not a demo's (it would be
    overwritten), before anything is generated."""
    blocked = output_folder_blocked(out)
    if blocked:
        raise DataError(blocked)
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not (out / DEMO_MARKER).exists() and not (out / "synthav" / META_NAME).is_file():
        raise DataError(
            f"{out}: folder is not empty and holds no demo (the demo would overwrite it); choose another --out"
        )


def _step(number: int, steps: int, text: str) -> None:
    log.info("[%d/%d] %s", number, steps, text)


def _demo_folder(out_dir: str | os.PathLike, synth: SynthConfig) -> Path:
    """The demo's folder, absolute, made and marked as a demo's, without the last run's page and summary
    (they exist only for a finished run: a rerun stopped half-way must not leave the last run's page
    beside this run's overlays). Refused before anything is written when it holds something else."""
    if not str(out_dir):
        raise DataError("--out is empty; name the demo's output folder")
    # absolute from here on: the page refers to files written under several sub-folders, and a relative
    # out_dir (`sspl demo --out demo_out`) made them resolve against the page's folder twice
    out = Path(out_dir).resolve()
    _check_demo_folder(out)
    data = out / "synthav"
    if (data / META_NAME).is_file() and settings_differences(read_meta(data).get("synth") or {}, synth):
        raise DataError(
            f"{out}: holds a demo of another preset, size or seed; give another --out (or delete {out})"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / DEMO_MARKER).touch()
    for name in ("index.html", "summary.json"):
        (out / name).unlink(missing_ok=True)
    (out / "figures").mkdir(exist_ok=True)
    return out


def demo_config(settings: DemoSettings, encoders: str | os.PathLike) -> Config:
    """The training config of the demo's SSPL run on the SynthAV encoders of ``encoders``."""
    return synthav_config(
        encoders,
        pcm=settings.pcm,
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        seed=1234 + settings.seed,
        lr_scale=settings.lr_scale,
        overrides=[
            "train.log_every=5",
            f"data.augmentations=[{','.join(settings.augmentations)}]",
            *settings.train_overrides,
        ],
    )


def beside_config(settings: DemoSettings, encoders: str | os.PathLike) -> Config:
    """The training config of the method the demo trains beside SSPL (``settings.beside``), on the same
    scenes, encoders, minibatch and seed."""
    return synthav_config(
        encoders,
        method=settings.beside,
        pcm=False,
        epochs=settings.beside_epochs,
        batch_size=settings.batch_size,
        seed=1234 + settings.seed,
        overrides=["train.log_every=5", *BESIDE_OVERRIDES.get(settings.beside, CONTRASTIVE_OVERRIDES)],
    )


def demo_command(out_dir: str | os.PathLike, settings: DemoSettings) -> str:
    """The ``sspl demo`` command that runs ``settings`` into ``out_dir``; a Python call where the command
    line cannot say them (it sets ``pretrain_scenes`` to ``scenes`` and has no option for the others)."""
    cli_fields = {"preset", "scenes", "pretrain_scenes", "epochs", "pcm", "seed", "workers"}
    default = DemoSettings()
    other = [
        f.name
        for f in fields(settings)
        if f.name not in cli_fields and getattr(settings, f.name) != getattr(default, f.name)
    ]
    if other or settings.pretrain_scenes != settings.scenes:
        return f"sspl.demo.run_demo({str(out_dir)!r}, {settings!r})"
    words = ["sspl", "demo", "--out", str(out_dir)]
    for name in ("preset", "scenes", "epochs", "seed"):
        if getattr(settings, name) != getattr(default, name):
            words += [f"--{name}", str(getattr(settings, name))]
    if settings.pcm != default.pcm:
        words.append("--pcm" if settings.pcm else "--no-pcm")
    return shlex.join(words)


def _run_record(out_dir: str | os.PathLike, settings: DemoSettings, started: float, clock: float) -> dict:
    """What ran where: the command, seed, thread count, versions, start time and wall time."""
    import torch

    from . import __version__

    return {
        "command": demo_command(out_dir, settings),
        "seed": settings.seed,
        "torch_threads": torch.get_num_threads(),
        "versions": {"sspl": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "started_utc": datetime.fromtimestamp(started, timezone.utc).isoformat(timespec="seconds"),
        "wall_time_s": round(time.perf_counter() - clock, 1),
    }


def _method_record(config: Config, result: TrainResult, label: str) -> dict:
    """A trained run's method and settings, and the epoch model selection kept."""
    return {
        "method": config.method,
        "label": label,
        "pcm": config.model.pcm,
        "lr": config.optim.lr,
        "lr_head": config.optim.lr_head,
        "batch_size": config.train.batch_size,
        "epochs": config.train.epochs,
        "augmentations": list(config.data.augmentations),
        "training_seed": config.train.seed,
        "selected_epoch": result.best_epoch,
        "selected_by": result.select_metric,
        "selected_value": result.best_metric,
        "history": [r for r in result.history if r.get("type") == "val"],
    }


def _train_beside(
    out: Path, data: Path, encoders: Path, settings: DemoSettings, steps: int, progress: bool
) -> tuple[Config, TrainResult]:
    """Train the method beside SSPL into ``out/run_<method>`` (resumed by the pipeline's rule)."""
    label = beside_label(settings.beside)
    _step(3, steps, f"training {label} on the same scenes for {settings.beside_epochs} epochs")
    config = beside_config(settings, encoders)
    return config, train_synthav(config, data, out / f"run_{settings.beside}", progress=progress)


def run_demo(
    out_dir: str | os.PathLike, settings: DemoSettings | None = None, *, progress: bool = True
) -> dict:
    """Run the demo into ``out_dir`` (created; rerunning resumes and rewrites the page).

    The SynthAV steps are :mod:`sspl.engine.synthav`'s pipeline, with its resume rule: a rerun with other
    training settings (another ``lr_scale``, fewer epochs than were trained) starts that run over, and a
    moved demo folder resumes (the checkpoint holds the SynthAV encoders). SSPL with and without PCM are
    two models: each keeps its own run, so switching ``pcm`` loses neither; the method beside SSPL keeps
    its run in ``run_<method>``.

    Args:
        out_dir: output folder.
        settings: what to generate and train (default :class:`DemoSettings`).
        progress: progress bars.

    Returns:
        The summary also written to ``out_dir/summary.json``: the metrics of each map, what ran (``run``:
        command, seed, threads, versions, wall time; ``sspl`` and ``beside``: each method's settings and
        selected epoch), the paths of the page and of the main outputs.
    """
    started, clock = time.time(), time.perf_counter()
    settings = settings or DemoSettings()
    synth = synth_config(
        settings.preset, num=settings.scenes, seed=settings.seed, pretrain_num=settings.pretrain_scenes
    )
    out = _demo_folder(out_dir, synth)
    data, encoders, run = out / "synthav", out / "encoders", out / ("run_pcm" if settings.pcm else "run")
    steps = 6 if settings.beside else 5
    _step(
        1,
        steps,
        f"SynthAV: {settings.scenes} '{settings.preset}' scenes + {settings.pretrain_scenes} for pretraining "
        "the small visual and audio encoders (stand-ins for ImageNet / AudioSet)",
    )
    encoder_info = prepare_synthav(
        data,
        encoders,
        synth,
        pretrain_epochs=settings.pretrain_epochs,
        pretrain_seed=settings.seed,
        workers=settings.workers,
        progress=progress,
    )
    _step(2, steps, f"training SSPL ({'w/' if settings.pcm else 'w/o'} PCM) for {settings.epochs} epochs")
    config = demo_config(settings, encoders)
    result = train_synthav(config, data, run, progress=progress)
    beside = _train_beside(out, data, encoders, settings, steps, progress) if settings.beside else None

    _step(steps - 2, steps, "evaluating on the held-out test scenes")
    # the demo's own evaluation folders: a rerun replaces the evaluations' outputs there (and nothing else)
    scores = evaluate_synthav(
        config,
        data,
        encoders,
        run,
        eval_dir=out / "eval",
        untrained_checkpoint=out / "untrained" / "checkpoint.pt",
        untrained_eval_dir=out / "untrained" / "eval",
        save_overlays=OVERLAYS,
        progress=progress,
    )
    beside_eval = None
    if beside:
        run_dir, eval_dir = out / f"run_{settings.beside}", out / f"eval_{settings.beside}"
        beside_eval = evaluate(
            run_dir, data, "synth", eval_dir, save_overlays=OVERLAYS, overwrite=True, progress=progress
        )
    rows = score_rows(scores, settings.beside and beside_label(settings.beside), beside_eval)
    _write_curves(out / "figures", scores, result, settings.beside, beside_eval, beside)

    _step(steps - 1, steps, "localizing test scenes and the bundled real video")
    video_paths = _localize(out, data, run, settings, progress)

    _step(steps, steps, "writing the report")
    summary = {
        "settings": asdict(settings),
        "metrics": rows,
        "epochs_trained": result.epochs_completed,
        "best_epoch": result.best_epoch,
        "sspl": _method_record(config, result, "SSPL"),
        "beside": beside
        and {
            **_method_record(beside[0], beside[1], beside_label(settings.beside)),
            "metrics": _scores(beside_eval.result),
        },
        "data": _split_sizes(data),
        "evaluation": {"split": "test", "scenes": scores.trained.result.num_samples, "protocol": "synth"},
        "encoders": encoder_info.get("metrics", {}),
        "outputs": {k: str(v) for k, v in video_paths.items()},
    }
    summary["run"] = _run_record(out_dir, settings, started, clock)
    pairs = beside_pairs(out, scores.trained, beside_eval, beside_label(settings.beside)) if beside else []
    summary["page"] = str(write_demo_page(out, summary, scores.trained, video_paths, pairs))
    atomic_save_json(out / "summary.json", summary)
    return summary


def _split_sizes(data: Path) -> dict[str, int]:
    """Scenes of the main splits (the encoders' pretraining split aside)."""
    sizes = Counter(r.split for r in read_manifest(data) if r.ok)
    return {split: sizes[split] for split in ("train", "val", "test")}


def score_rows(scores: SynthAVEvaluation, beside_name: str | None = None, beside=None) -> list[dict]:
    """The metrics table: SSPL trained, SSPL untrained, the oracle query, the method beside SSPL (when
    there is one), the trivial maps."""
    return [
        {"map": "SSPL, trained", **_scores(scores.trained.result)},
        {"map": "SSPL, untrained (epoch 0)", **_scores(scores.untrained.result)},
        {"map": "oracle query (feature at the object's centre)", **_scores(scores.oracle)},
        *([{"map": f"{beside_name}, trained", **_scores(beside.result)}] if beside else []),
        *({"map": f"{kind} (trivial)", **_scores(b)} for kind, b in scores.trained.baselines.items()),
    ]


def _write_curves(
    figures: Path, scores: SynthAVEvaluation, result: TrainResult, beside_name, beside_eval, beside
) -> None:
    """The success curves of every map (test) and the validation learning curves."""
    label = beside_name and beside_label(beside_name)
    curves = {
        "SSPL trained": scores.trained.result.success_curve,
        **({f"{label} trained": beside_eval.result.success_curve} if beside_eval else {}),
        "SSPL untrained": scores.untrained.result.success_curve,
        "oracle query": scores.oracle.success_curve,
        **{k: b.success_curve for k, b in scores.trained.baselines.items()},
    }
    atomic_save_image(figures / "success_curves.png", success_curves_plot(curves, title="SynthAV test"))
    histories = {"SSPL": result.history, **({label: beside[1].history} if beside else {})}
    atomic_save_image(
        figures / "learning_curve.png",
        learning_curves_plot(
            histories,
            references={"oracle query (test)": scores.oracle.ciou_success_rate},
            title="cIoU@0.5 on the validation scenes",
        ),
    )


def _localize(out: Path, data: Path, run: Path, settings: DemoSettings, progress: bool) -> dict:
    """Localize a few test scenes through ``localize_image`` (a contact sheet, and the PCM steps of the
    last with PCM) and the bundled real video; returns the video's output paths."""
    figures = out / "figures"
    model, preprocess = load(run)
    test_rows = [r for r in read_manifest(data) if r.ok and r.split == "test"][: settings.localize_scenes]
    scene_images, labels = [], []
    for row in test_rows:
        found = localize_image(model, preprocess, data / row.frame, data / row.audio, pcm_steps=settings.pcm)
        scene_images.append(found.overlay())
        labels.append(row.id)
    atomic_save_image(figures / "scenes.png", contact_sheet(scene_images, labels=labels, thumb_width=256))
    if settings.pcm and test_rows:
        atomic_save_image(figures / "pcm_steps.png", pcm_strip(found.image, found.step_maps))
    # overwrite: a rerun (or a killed one) re-localizes the 5-s clip in seconds
    _, video_paths = write_video_outputs(
        model,
        preprocess,
        demo_video(),
        out / "real_video",
        fps=settings.video_fps,
        progress=progress,
        overwrite=True,
    )
    return video_paths


def _scores(result) -> dict:
    return {"cIoU@0.5": result.ciou_success_rate, "AUC": result.auc, "scenes": result.num_samples}
