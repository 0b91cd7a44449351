"""``sspl app``: a local web page to try a checkpoint on one's own clip.

Upload a video (its own sound, or a sound file that replaces it), or an image and a sound; the page shows the
progress, then the overlay video with its sound, the contact sheet, or the overlay of the image, with the
raw maps to download, the library's warnings (silent or too short sound, a SynthAV model on real media) and,
for bad input, the library's one-line message naming the uploaded file.

Why the standard library's ``http.server`` and not Gradio, the field's convention for such demos: the app is
one form, a progress bar and a few result files, which a small page and server do without any package
(``pip install sspl`` is enough: no ``[app]`` extra, nothing to keep in step with Gradio's major releases,
no usage analytics sent, nothing listening beyond the chosen address), and it is tested as it runs: plain
HTTP requests in the tests and the page driven in headless Chromium. Gradio would bring dozens of packages
(FastAPI, uvicorn, pandas, pydantic, ...) to do the same.

The server binds to ``127.0.0.1`` by default; it has no authentication, so bind elsewhere only on a network
you trust. Every upload and result lives in one temporary folder (:class:`~sspl.app.jobs.JobRunner`), of
which only the last few jobs are kept, removed when the app stops. Jobs run one at a time on the model loaded
at start; the work is the library's (:mod:`sspl.localize`), none of it is redone here.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .jobs import Job, JobRunner, Upload
from .server import AppServer, page_html

if TYPE_CHECKING:
    from torch import nn

    from ..api import Preprocess

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_MAX_UPLOAD_MB",
    "DEFAULT_PORT",
    "AppServer",
    "Job",
    "Upload",
    "make_server",
]

DEFAULT_HOST = "127.0.0.1"
#: Gradio's port, where a person used to such demos looks first.
DEFAULT_PORT = 7860
DEFAULT_MAX_UPLOAD_MB = 500


def make_server(
    model: nn.Module,
    preprocess: Preprocess,
    *,
    checkpoint: str | os.PathLike = "",
    notes: list[str] | None = None,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
) -> AppServer:
    """The app's server for a loaded model, bound (``port=0`` picks a free port) but not yet serving: call
    ``serve_forever()`` (in a thread, for a test), then ``shutdown()`` and ``server_close()``, which removes
    the temporary folder.

    Args:
        model, preprocess: from :func:`sspl.load`.
        checkpoint: what the page names as the model.
        notes: lines the page shows above the form (e.g. that a SynthAV model means nothing on real media).
        host, port: the address to listen on.
        max_upload_mb: the largest upload accepted.

    Raises:
        OSError: the address cannot be bound (in use, not this machine's).
    """
    page = page_html(os.fspath(checkpoint), notes or [])
    runner = JobRunner(model, preprocess)
    try:
        return AppServer((host, port), runner, page, int(max_upload_mb * 1e6))
    except BaseException:
        runner.close()
        raise
