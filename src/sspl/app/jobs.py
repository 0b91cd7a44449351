"""The web app's localization jobs: each upload gets its own folder under one temporary root, is run through
the library (:func:`sspl.localize.write_video_outputs`, :func:`~sspl.localize.localize_image` and
:func:`~sspl.localize.write_image_outputs`) on the model loaded once, one job at a time, with its progress,
the library's warnings and a one-line message when the input is bad. Only the last few jobs' files are kept;
:meth:`JobRunner.close` removes the root and everything in it.
"""

from __future__ import annotations

import logging
import math
import queue
import re
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import DataError, SSPLError

if TYPE_CHECKING:
    from torch import nn

    from ..api import Preprocess

__all__ = ["KEEP_FINISHED", "Job", "JobRunner", "Upload"]

log = logging.getLogger(__name__)

#: Finished jobs whose files are kept for the page to show; older ones are removed.
KEEP_FINISHED = 8
#: The form's file fields.
FIELDS = ("video", "image", "audio")


@dataclass
class Upload:
    """One uploaded file: the form field, the name it had on the user's machine, its bytes."""

    field: str
    filename: str
    data: bytes


@dataclass
class Job:
    """One localization: its inputs (saved under ``folder``), state and results."""

    id: str
    folder: Path
    inputs: dict[str, Path]
    names: dict[str, str]  # saved path -> the name the user uploaded, for messages
    state: str = "queued"  # queued, running, done, error, expired
    stage: str = "waiting for the model"
    done: int = 0
    total: int = 0
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    outputs: dict[str, Path] = field(default_factory=dict)
    seconds: float | None = None

    def user_text(self, text: str) -> str:
        """``text`` with the saved inputs' paths replaced by the names the user uploaded."""
        for path, name in self.names.items():
            text = text.replace(path, name)
        return text.replace(str(self.folder) + "/", "")

    def status(self) -> dict:
        """What the page shows: state, progress, message, warnings and the outputs' file names."""
        return {
            "id": self.id,
            "state": self.state,
            "stage": self.stage,
            "done": self.done,
            "total": self.total,
            "error": self.error,
            "warnings": list(self.warnings),
            "outputs": {key: path.name for key, path in self.outputs.items()},
            "seconds": self.seconds,
        }


def _safe_name(filename: str, fallback: str) -> str:
    """A file name without folders or odd characters (the outputs are named after it)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(filename.replace("\\", "/")).name).strip("._")
    return name[-100:] or fallback


def check_form(uploads: dict[str, Upload]) -> None:
    """A video (and optionally a sound), or an image and a sound; each file non-empty.

    Raises:
        DataError: what is missing or wrong, in one line.
    """
    unknown = sorted(set(uploads) - set(FIELDS))
    if unknown:
        raise DataError(f"unknown form field(s) {unknown}; send video, or image and audio")
    if ("video" in uploads) == ("image" in uploads):
        raise DataError("upload a video, or an image and a sound (not both, not neither)")
    if "image" in uploads and "audio" not in uploads:
        raise DataError("an image needs a sound file too: its centre 3 s are localized")
    for upload in uploads.values():
        if not upload.data:
            raise DataError(f"{upload.filename or upload.field}: the uploaded file is empty")


class _Warnings(logging.Handler):
    """Collects the library's warnings raised by one thread (the job's) into the job."""

    def __init__(self, job: Job) -> None:
        super().__init__(logging.WARNING)
        self.job, self.thread = job, threading.get_ident()

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.job.warnings.append(self.job.user_text(record.getMessage()))


class JobRunner:
    """Saves uploads as jobs and runs them in one worker thread on ``model`` (see the module docstring)."""

    def __init__(self, model: nn.Module, preprocess: Preprocess, *, keep: int = KEEP_FINISHED) -> None:
        self.model, self.preprocess, self.keep = model, preprocess, keep
        self.root = Path(tempfile.mkdtemp(prefix="sspl-app-"))
        self._jobs: dict[str, Job] = {}
        self._finished: list[Job] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._worker = threading.Thread(target=self._work, name="sspl-app-jobs", daemon=True)
        self._worker.start()

    def submit(self, uploads: dict[str, Upload]) -> Job:
        """Check the form, save the files in a new job folder and queue the job.

        Raises:
            DataError: a bad form (:func:`check_form`).
        """
        check_form(uploads)
        job_id = uuid.uuid4().hex[:16]
        folder = self.root / job_id
        inputs, names = {}, {}
        for key, upload in uploads.items():
            path = folder / "inputs" / key / _safe_name(upload.filename, key)
            path.parent.mkdir(parents=True)
            path.write_bytes(upload.data)
            inputs[key], names[str(path)] = path, upload.filename or key
        job = Job(job_id, folder, inputs, names)
        with self._lock:
            self._jobs[job_id] = job
        self._queue.put(job)
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def close(self) -> None:
        """Stop (a running video at its next frame, queued jobs not started) and remove every job's files."""
        self._closing.set()
        self._queue.put(None)
        self._worker.join(timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            job.state, start = "running", time.perf_counter()
            error = "the app is stopping" if self._closing.is_set() else self._attempt(job)
            job.seconds = round(time.perf_counter() - start, 2)
            if error is not None:
                shutil.rmtree(job.folder, ignore_errors=True)  # before the page hears of the failure
                job.outputs, job.error, job.state = {}, error, "error"
                continue
            with self._lock:
                self._finished.append(job)
                old = self._finished[: max(0, len(self._finished) - self.keep)]
                self._finished = self._finished[len(old) :]
            for gone in old:  # before this job is said done, so that what the page sees is what is kept
                gone.state, gone.outputs = "expired", {}
                shutil.rmtree(gone.folder, ignore_errors=True)
            job.stage, job.state = "done", "done"

    def _attempt(self, job: Job) -> str | None:
        """Run the job; the message for the page when it fails."""
        handler = _Warnings(job)
        logging.getLogger("sspl").addHandler(handler)
        try:
            self._localize(job)
        except (SSPLError, OSError, ValueError) as e:
            return job.user_text(str(e))
        except Exception as e:  # a bug, not the input: said as such, with the traceback in the console
            log.exception("sspl app: job %s failed", job.id)
            return f"internal error ({type(e).__name__}: {job.user_text(str(e))})"
        finally:
            logging.getLogger("sspl").removeHandler(handler)
        return None

    def _localize(self, job: Job) -> None:
        from ..localize import write_video_outputs

        out = job.folder / "outputs"
        if "image" in job.inputs:
            self._localize_image(job, out)
            return
        video = job.inputs["video"]
        job.stage, job.total = "reading the video", _expected_frames(video)

        def on_frame(index: int, *_) -> None:
            if self._closing.is_set():
                raise SSPLError("the app is stopping")  # write_video_outputs removes what it began
            job.done, job.stage = index + 1, "localizing frame by frame"

        _, paths = write_video_outputs(
            self.model,
            self.preprocess,
            video,
            out,
            audio_path=job.inputs.get("audio"),
            progress=False,
            on_frame=on_frame,
        )
        job.total = job.done
        job.outputs = paths

    def _localize_image(self, job: Job, out: Path) -> None:
        from ..localize import localize_image, read_image, write_image_outputs

        job.stage, job.total = "reading the image and the sound", 1
        image = read_image(job.inputs["image"])
        result = localize_image(self.model, self.preprocess, image, job.inputs["audio"])
        job.done, job.stage = 1, "writing"
        job.outputs = write_image_outputs(result, out, job.inputs["image"].stem)


def _expected_frames(video: Path) -> int:
    """About how many frames :func:`sspl.localize.localize_video` will map (for the progress bar)."""
    from ..data.video import video_info
    from ..localize import output_fps

    info = video_info(video)
    return max(1, math.floor(info.duration * output_fps(None, info.fps) + 1e-6))
