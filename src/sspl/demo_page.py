"""The page of ``sspl demo`` (``index.html``): what ran, the held-out scores, the curves, SSPL's evaluated maps
beside those of the method trained with it, scenes through ``localize_image`` and the real video, playing.

Everything the page states comes from the demo's ``summary.json`` (the same dict), so the two cannot differ.
"""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from .io import atomic_save_image
from .viz import contact_sheet, metric_label, write_html_report
from .weights import KNOWN_WEIGHTS, status

__all__ = ["beside_pairs", "what_ran_rows", "write_demo_page"]


def beside_pairs(out: Path, sspl_eval, beside_eval, label: str) -> list[tuple[str, str]]:
    """Each held-out scene drawn by both evaluations, SSPL's map left and the other method's (``label``)
    right, as ``figures/beside/<id>.png``; returns ``(path relative to out, caption)`` per scene."""
    folder = out / "figures" / "beside"
    pairs = []
    for left in sorted((sspl_eval.out_dir / "overlays").glob("*.png")):
        right = beside_eval.out_dir / "overlays" / left.name
        if not right.is_file():
            continue
        scene = left.stem
        with Image.open(left) as a, Image.open(right) as b:
            sheet = contact_sheet(
                [a.copy(), b.copy()],
                labels=[
                    f"SSPL: cIoU {sspl_eval.result.cious[scene]:.2f}",
                    f"{label}: cIoU {beside_eval.result.cious[scene]:.2f}",
                ],
                columns=2,
                thumb_width=max(a.width, 224),
            )
        atomic_save_image(folder / f"{scene}.png", sheet)
        pairs.append((f"figures/beside/{scene}.png", scene))
    return pairs


def _method_text(record: dict, table_s1: tuple[float, float] | None, scale: float | None) -> str:
    words = [
        f"{record['label']}{' w/ PCM' if record['pcm'] else ' w/o PCM' if record['method'] == 'sspl' else ''}, "
        "on the frozen pretrained encoders; AdamW"
    ]
    if record["method"] == "sspl":
        words.append(
            f"lr {record['lr']:g} (audio transform g) and lr_head {record['lr_head']:g} (SimSiam head)"
        )
        if table_s1 and scale and scale != 1:
            words.append(
                f"= {scale:g}x the paper's Table S1 SoundNet-Flickr rates ({table_s1[0]:g}, {table_s1[1]:g}), "
                "picked on SynthAV's validation split (docs/results.md)"
            )
    else:
        words.append(f"lr {record['lr']:g}")
    return (
        " ".join(words)
        + f"; minibatch {record['batch_size']}, {record['epochs']} epochs, training seed {record['training_seed']}, "
        f"augmentations {' + '.join(record['augmentations'])}"
    )


def _selected_text(record: dict) -> str:
    value = record["selected_value"]
    shown = "-" if value is None else f"{value:.3f}"
    return f"epoch {record['selected_epoch']} of {record['epochs']} (best {metric_label(record['selected_by'])}: {shown})"


def what_ran_rows(summary: dict) -> list[dict]:
    """The page's "What ran" table (``setting``, ``value``), from the demo's summary."""
    run, settings, sspl, data = summary["run"], summary["settings"], summary["sspl"], summary["data"]
    versions = ", ".join(f"{k} {v}" for k, v in run["versions"].items())
    scale = settings["lr_scale"]
    table_s1 = (sspl["lr"] / scale, sspl["lr_head"] / scale) if scale else None
    rows = [
        ("command", run["command"]),
        ("seed", f"{run['seed']} (scenes, encoder pretraining; training seed {sspl['training_seed']})"),
        ("torch threads", str(run["torch_threads"])),
        ("versions", versions),
        ("started (UTC)", run["started_utc"]),
        ("wall time", f"{run['wall_time_s']:.0f} s ({run['wall_time_s'] / 60:.1f} min), set-up excluded"),
        (
            "data",
            f"{sum(data.values())} SynthAV '{settings['preset']}' scenes: {data.get('train', 0)} training, "
            f"{data.get('val', 0)} validation (model selection), {data.get('test', 0)} test (held out); "
            f"encoders pretrained with labels on {settings['pretrain_scenes']} other scenes for "
            f"{settings['pretrain_epochs']} epochs, then frozen",
        ),
        ("SSPL", _method_text(sspl, table_s1, scale)),
        ("SSPL: selected epoch", _selected_text(sspl)),
    ]
    beside = summary.get("beside")
    if beside:
        rows += [
            (beside["label"], _method_text(beside, None, None)),
            (f"{beside['label']}: selected epoch", _selected_text(beside)),
        ]
    ev = summary["evaluation"]
    rows.append(
        (
            "evaluation",
            f"{ev['scenes']} held-out {ev['split']} scenes, the '{ev['protocol']}' protocol: each map upsampled to "
            "224 x 224, masked at 0.5 of its min-max range, scored by cIoU against the sounding object's box; "
            "cIoU@0.5 = share of scenes with cIoU >= 0.5, AUC = area under the success curve",
        )
    )
    return [{"setting": k, "value": v} for k, v in rows]


def _weights_notes() -> list[str]:
    notes = []
    for name, known in KNOWN_WEIGHTS.items():
        path, message = status(name)
        if path is not None:
            notes.append(f"{known.description}: found at {message}; real-data training can use it.")
        else:
            notes.append(f"{known.description}: {message}.")
    return notes


def _results_notes(summary: dict) -> list[str]:
    settings, beside = summary["settings"], summary.get("beside")
    notes = [
        f"SSPL ({'with' if settings['pcm'] else 'without'} PCM) trained for {settings['epochs']} epochs on "
        f"synthetic '{settings['preset']}' scenes (SynthAV: shapes whose category fixes their sound), with small "
        "encoders pretrained with supervision on a separate SynthAV split and frozen, as the paper freezes "
        "ImageNet VGG16 and AudioSet VGGish. Scores are on held-out test scenes (cIoU@0.5 with the fixed 0.5 "
        "threshold, and the AUC of the success curve).",
        "The untrained model and the oracle query (the feature at the sounding object's own centre used as the "
        "query) bracket what training can reach with these frozen features; the trivial maps are the floor.",
    ]
    if beside:
        notes.append(
            f"{beside['label']} is the method of this project that localizes best on SynthAV; it was trained "
            "here on the same scenes, encoders, minibatch and seed. Its contrastive loss learns from other "
            "scenes' sounds as negatives, which SSPL's negative-free objective does without: on these scenes "
            "SSPL's map often settles on the background (docs/results.md, section 3)."
        )
    return notes


def write_demo_page(out: Path, summary: dict, ev, video_paths: dict, pairs: list[tuple[str, str]]) -> Path:
    """Write ``out/index.html`` from the demo's summary, SSPL's evaluation ``ev`` and the real video's
    outputs; ``pairs`` are :func:`beside_pairs`' pictures (none: SSPL's overlays alone)."""
    overlays = sorted((ev.out_dir / "overlays").glob("*.png")) if (ev.out_dir / "overlays").is_dir() else []
    video_rel = {k: Path(os.path.relpath(v, out)).as_posix() for k, v in video_paths.items()}
    beside = summary.get("beside")
    sections = [
        {"title": "What ran", "table": what_ran_rows(summary)},
        {"title": "Held-out scores", "notes": _results_notes(summary), "table": summary["metrics"]},
        {
            "title": "Success and learning curves",
            "images": [
                ("figures/success_curves.png", "success rate against the cIoU threshold (test)"),
                ("figures/learning_curve.png", "validation cIoU@0.5 per epoch (epoch 0: untrained)"),
            ],
        },
        {
            "title": f"Held-out test scenes: SSPL beside {beside['label']}"
            if pairs
            else "Held-out test scenes",
            "notes": [
                "Evaluated maps: the ground-truth box of the sounding object (green), the thresholded map "
                "(white outline) and the map itself."
                + (f" Left: SSPL; right: {beside['label']}." if pairs else "")
                + " Below: the same scenes through sspl.localize_image (SSPL)."
            ],
            "images": (pairs or [(p, p.stem) for p in overlays])
            + [("figures/scenes.png", "sspl.localize_image")],
        },
    ]
    if summary["settings"]["pcm"] and (out / "figures" / "pcm_steps.png").is_file():
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
                f"Files: {video_rel['heatmap_video']} (the video below, with its sound); raw maps: "
                f"{video_rel['maps']}.",
            ],
            "videos": [(video_rel["heatmap_video"], "heat-map video (SSPL), with the clip's sound")],
            "images": [(video_rel["contact_sheet"], "frames of the heat-map video")],
        },
        {"title": "Pretrained encoder weights", "notes": _weights_notes()},
    ]
    return write_html_report(out / "index.html", "sspl demo", sections)
