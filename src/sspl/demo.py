"""``sspl demo``: the whole pipeline in a few CPU minutes, without downloads, ending in one HTML page.

Steps 1-3 are the SynthAV pipeline of :mod:`sspl.engine.synthav`, which the experiments run too; each step
resumes where a killed run stopped (that module's resume rule), so rerunning the command finishes the job:

1. generate a small SynthAV set (:mod:`sspl.data.synth`) with its encoder-pretraining split, and pretrain
   the small visual and audio encoders on that split (the stand-in for ImageNet / AudioSet pretraining,
   which cannot be downloaded here; :mod:`sspl.engine.pretrain`);
2. train SSPL on the set with those encoders frozen (:func:`sspl.engine.synthav.train_synthav`);
3. evaluate it on the held-out test scenes beside the untrained model, the oracle query and the trivial
   maps (:func:`sspl.engine.synthav.evaluate_synthav`);
4. localize a few test scenes through the user-facing API (:func:`sspl.localize.localize_image`) and
   the bundled real video (:func:`sspl.localize.write_video_outputs`) -- honestly labelled: a model
   trained on synthetic shapes shows the video pipeline, not real-world localization;
5. write ``index.html`` with the metrics table, success and learning curves, overlays and the video.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from .api import load
from .config import Config
from .data.manifest import META_NAME, read_manifest, read_meta
from .data.synth import MAX_SCENES, PRESETS, SynthConfig, synth_config
from .engine.synthav import (
    SynthAVEvaluation,
    evaluate_synthav,
    prepare_synthav,
    synthav_config,
    train_synthav,
)
from .engine.train import TrainResult
from .errors import DataError
from .io import atomic_save_image, atomic_save_json, output_folder_blocked
from .localize import localize_image, write_video_outputs
from .viz import contact_sheet, learning_curves_plot, pcm_strip, success_curves_plot, write_html_report
from .weights import KNOWN_WEIGHTS, status

__all__ = ["DEMO_VIDEO", "DemoSettings", "demo_video", "run_demo"]

log = logging.getLogger(__name__)

#: The bundled real clip (see ``sspl/assets/videos/PROVENANCE.md``).
DEMO_VIDEO = "single_source__p04SYXuBSQ.mp4"


def demo_video() -> Path:
    """Path of the bundled real clip."""
    return Path(str(resources.files("sspl") / "assets" / "videos" / DEMO_VIDEO))


@dataclass(frozen=True)
class DemoSettings:
    """What the demo generates and trains (defaults: about 2.5 minutes on a 2-core CPU).

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
        train_overrides: further ``key=value`` overrides of the training config.
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
    train_overrides: tuple[str, ...] = ()

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
        if self.epochs < 1 or self.pretrain_epochs < 1:
            problems.append(f"epochs {self.epochs}, pretrain_epochs {self.pretrain_epochs}: at least 1")
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


def _step(number: int, text: str) -> None:
    log.info("[%d/5] %s", number, text)


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
    if (data / META_NAME).is_file() and read_meta(data).get("synth") != synth.to_json():
        raise DataError(
            f"{out}: holds a demo of another preset, size or seed; give another --out (or delete {out})"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / DEMO_MARKER).touch()
    for name in ("index.html", "summary.json"):
        (out / name).unlink(missing_ok=True)
    (out / "figures").mkdir(exist_ok=True)
    return out


def _demo_config(settings: DemoSettings, encoders: Path) -> Config:
    return synthav_config(
        encoders,
        pcm=settings.pcm,
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        seed=1234 + settings.seed,
        lr_scale=settings.lr_scale,
        overrides=["train.log_every=5", *settings.train_overrides],
    )


def _weights_notes() -> list[str]:
    notes = []
    for name, known in KNOWN_WEIGHTS.items():
        path, message = status(name)
        if path is not None:
            notes.append(f"{known.description}: found at {message}; real-data training can use it.")
        else:
            notes.append(f"{known.description}: {message}.")
    return notes


def run_demo(
    out_dir: str | os.PathLike, settings: DemoSettings | None = None, *, progress: bool = True
) -> dict:
    """Run the demo into ``out_dir`` (created; rerunning resumes and rewrites the page).

    The SynthAV steps are :mod:`sspl.engine.synthav`'s pipeline, with its resume rule: a rerun with other
    training settings (another ``lr_scale``, fewer epochs than were trained) starts that run over, and a
    moved demo folder resumes (the checkpoint holds the SynthAV encoders). SSPL with and without PCM are
    two models: each keeps its own run, so switching ``pcm`` loses neither.

    Args:
        out_dir: output folder.
        settings: what to generate and train (default :class:`DemoSettings`).
        progress: progress bars.

    Returns:
        The summary also written to ``out_dir/summary.json``: the metrics of each map, the paths of
        the page and of the main outputs.
    """
    settings = settings or DemoSettings()
    synth = synth_config(
        settings.preset, num=settings.scenes, seed=settings.seed, pretrain_num=settings.pretrain_scenes
    )
    out = _demo_folder(out_dir, synth)
    data, encoders, run = out / "synthav", out / "encoders", out / ("run_pcm" if settings.pcm else "run")

    _step(
        1,
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
    _step(2, f"training SSPL ({'w/' if settings.pcm else 'w/o'} PCM) for {settings.epochs} epochs")
    config = _demo_config(settings, encoders)
    result = train_synthav(config, data, run, progress=progress)

    _step(3, "evaluating on the held-out test scenes")
    # the demo's own evaluation folders: a rerun replaces the evaluations' outputs there (and nothing else)
    scores = evaluate_synthav(
        config,
        data,
        encoders,
        run,
        eval_dir=out / "eval",
        untrained_checkpoint=out / "untrained" / "checkpoint.pt",
        untrained_eval_dir=out / "untrained" / "eval",
        save_overlays=8,
        progress=progress,
    )
    rows = _score_rows(scores)
    _write_curves(out / "figures", scores, result)

    _step(4, "localizing test scenes and the bundled real video")
    video_paths = _localize(out, data, run, settings, progress)

    _step(5, "writing the report")
    summary = {
        "settings": asdict(settings),
        "metrics": rows,
        "epochs_trained": result.epochs_completed,
        "best_epoch": result.best_epoch,
        "encoders": encoder_info.get("metrics", {}),
        "outputs": {k: str(v) for k, v in video_paths.items()},
    }
    summary["page"] = str(_write_page(out, settings, rows, scores.trained, video_paths))
    atomic_save_json(out / "summary.json", summary)
    return summary


def _score_rows(scores: SynthAVEvaluation) -> list[dict]:
    """The metrics table: the trained model, the untrained one, the oracle query, the trivial maps."""
    return [
        {"map": "SSPL, trained", **_scores(scores.trained.result)},
        {"map": "SSPL, untrained (epoch 0)", **_scores(scores.untrained.result)},
        {"map": "oracle query (feature at the object's centre)", **_scores(scores.oracle)},
        *({"map": f"{kind} (trivial)", **_scores(b)} for kind, b in scores.trained.baselines.items()),
    ]


def _write_curves(figures: Path, scores: SynthAVEvaluation, result: TrainResult) -> None:
    """The success curves of every map (test) and the validation learning curve."""
    curves = {
        "SSPL trained": scores.trained.result.success_curve,
        "untrained": scores.untrained.result.success_curve,
        "oracle query": scores.oracle.success_curve,
        **{k: b.success_curve for k, b in scores.trained.baselines.items()},
    }
    atomic_save_image(figures / "success_curves.png", success_curves_plot(curves, title="SynthAV test"))
    atomic_save_image(
        figures / "learning_curve.png",
        learning_curves_plot(
            {"SSPL (validation)": result.history},
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


def _write_page(out: Path, settings: DemoSettings, rows: list[dict], ev, video_paths: dict) -> Path:
    overlays = sorted((ev.out_dir / "overlays").glob("*.png")) if (ev.out_dir / "overlays").is_dir() else []
    video_rel = {k: Path(os.path.relpath(v, out)).as_posix() for k, v in video_paths.items()}
    sections = [
        {
            "title": "What this is",
            "notes": [
                f"SSPL ({'with' if settings.pcm else 'without'} PCM) trained for {settings.epochs} epochs on "
                f"{settings.scenes} synthetic '{settings.preset}' scenes (SynthAV: shapes whose category fixes their "
                "sound), with small encoders pretrained with supervision on a separate SynthAV split and frozen, "
                "as the paper freezes ImageNet VGG16 and AudioSet VGGish. Scores are on held-out test scenes "
                "(cIoU@0.5 with the fixed 0.5 threshold, and the AUC of the success curve).",
                "The untrained model and the oracle query (the feature at the sounding object's own centre used "
                "as the query) bracket what training can reach with these frozen features; the trivial maps are "
                "the floor.",
            ],
            "table": rows,
        },
        {
            "title": "Success and learning curves",
            "images": [
                ("figures/success_curves.png", "success rate against the cIoU threshold (test)"),
                ("figures/learning_curve.png", "validation cIoU@0.5 per epoch"),
            ],
        },
        {
            "title": "Held-out test scenes",
            "notes": [
                "Evaluated maps: the ground-truth box of the sounding object (green), the thresholded map "
                "(white outline) and the map itself. Below: the same scenes through sspl.localize_image."
            ],
            "images": [(p, p.stem) for p in overlays] + [("figures/scenes.png", "sspl.localize_image")],
        },
    ]
    if settings.pcm and (out / "figures" / "pcm_steps.png").is_file():
        sections.append(
            {
                "title": "PCM refinement (paper Fig. 7)",
                "images": [("figures/pcm_steps.png", "map after each PCM step")],
            }
        )
    sections += [
        {
            "title": "A real video (pipeline only)",
            "notes": [
                "This model has only seen synthetic shapes and tones through small synthetic encoders: on a real "
                "clip its map shows the video pipeline working (decoding, a 3-s sound window centred on every "
                "frame, the overlay at the source resolution, the sound muxed back in), not real-world sound "
                "localization. For that, train with the pretrained VGG16 / VGGish weights on real data.",
                f"Heat-map video: {video_rel['heatmap_video']}; raw maps: {video_rel['maps']}.",
            ],
            "images": [(video_rel["contact_sheet"], "frames of the heat-map video")],
        },
        {"title": "Pretrained encoder weights", "notes": _weights_notes()},
    ]
    return write_html_report(out / "index.html", "sspl demo", sections)
