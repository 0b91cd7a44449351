"""The web app's HTTP side: the page, the upload, the job status and the result files.

Routes (all on one local address):

- ``GET /``: the page (:file:`sspl/assets/app/index.html`).
- ``POST /api/jobs``: a ``multipart/form-data`` upload (``video`` [+ ``audio``], or ``image`` + ``audio``)
  -> ``202 {"id": ...}``; a bad form -> ``400 {"error": "..."}``, too large -> ``413``.
- ``GET /api/jobs/ID``: the job's :meth:`~sspl.app.jobs.Job.status` (state, progress, error, warnings,
  output file names).
- ``GET /files/ID/NAME``: one output file (byte ranges served, so the video can be seeked).
"""

from __future__ import annotations

import html
import json
import logging
import re
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path

from ..errors import DataError
from .form import boundary_of, parse_form
from .jobs import JobRunner

__all__ = ["AppServer", "Handler", "page_html"]

log = logging.getLogger(__name__)

CONTENT_TYPES = {".mp4": "video/mp4", ".png": "image/png", ".npy": "application/octet-stream"}
_FILE_ROUTE = re.compile(r"^/files/([0-9a-f]{16})/([A-Za-z0-9._-]+)$")
_JOB_ROUTE = re.compile(r"^/api/jobs/([0-9a-f]{16})$")


def page_html(checkpoint: str, notes: list[str]) -> bytes:
    """The page, naming the checkpoint and showing ``notes`` (e.g. a SynthAV model on real media)."""
    text = resources.files("sspl").joinpath("assets/app/index.html").read_text(encoding="utf-8")
    notes_html = "".join(f"<p class='note'>{html.escape(n)}</p>" for n in notes)
    return text.replace("{{checkpoint}}", html.escape(checkpoint)).replace("{{notes}}", notes_html).encode()


class AppServer(ThreadingHTTPServer):
    """A threaded HTTP server holding the page and the :class:`~sspl.app.jobs.JobRunner`."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], runner: JobRunner, page: bytes, max_upload_bytes: int):
        self.runner, self.page, self.max_upload_bytes = runner, page, max_upload_bytes
        super().__init__(address, Handler)  # closes the server (and so the runner) when it cannot bind

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"

    def server_close(self) -> None:
        super().server_close()
        self.runner.close()


class Handler(BaseHTTPRequestHandler):
    server: AppServer
    server_version = "sspl-app"

    def log_message(self, format: str, *args) -> None:  # requests are not news; the debug log has them
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, self.server.page, "text/html; charset=utf-8")
        elif match := _JOB_ROUTE.match(path):
            job = self.server.runner.get(match.group(1))
            if job is None:
                self._json(HTTPStatus.NOT_FOUND, {"error": "no such job (the app was restarted?)"})
            else:
                self._json(HTTPStatus.OK, job.status())
        elif match := _FILE_ROUTE.match(path):
            self._file(*match.groups())
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"{path}: not found"})

    def do_POST(self) -> None:
        if self.path.split("?", 1)[0] != "/api/jobs":
            self._json(HTTPStatus.NOT_FOUND, {"error": f"{self.path}: not found"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        limit = self.server.max_upload_bytes
        if length > limit:
            self.close_connection = True  # the body is not read
            self._json(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                {"error": f"upload of {length / 1e6:.1f} MB is over the app's limit of {limit / 1e6:.0f} MB"},
            )
            return
        try:
            uploads = parse_form(self.rfile.read(length), boundary_of(self.headers.get("Content-Type", "")))
            job = self.server.runner.submit(uploads)
        except DataError as e:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(e)})
            return
        self._json(HTTPStatus.ACCEPTED, {"id": job.id, "status": f"/api/jobs/{job.id}"})

    def _file(self, job_id: str, name: str) -> None:
        job = self.server.runner.get(job_id)
        paths = {p.name: p for p in job.outputs.values()} if job is not None else {}
        if name not in paths:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"{name}: no such result (expired?)"})
            return
        path = Path(paths[name])
        try:
            size = path.stat().st_size
        except FileNotFoundError:  # expired meanwhile
            self._json(HTTPStatus.NOT_FOUND, {"error": f"{name}: no such result (expired?)"})
            return
        kind = CONTENT_TYPES.get(path.suffix, "application/octet-stream")
        extra = {"Accept-Ranges": "bytes"}
        if kind == "application/octet-stream":
            extra["Content-Disposition"] = f'attachment; filename="{name}"'
        start, end = 0, size - 1
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
        if match and any(match.groups()):
            first, last = match.groups()
            start = int(first) if first else max(0, size - int(last))
            end = min(size - 1, int(last)) if first and last else size - 1
            if start > end:
                extra["Content-Range"] = f"bytes */{size}"
                self._send(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, b"", kind, extra)
                return
            extra["Content-Range"] = f"bytes {start}-{end}/{size}"
        with open(path, "rb") as f:  # only the range asked for is read (a seek in a long video)
            f.seek(start)
            data = f.read(max(0, end - start + 1))
        status = HTTPStatus.PARTIAL_CONTENT if "Content-Range" in extra else HTTPStatus.OK
        self._send(status, data, kind, extra)

    def _json(self, status: HTTPStatus, payload: dict) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _send(
        self, status: HTTPStatus, body: bytes, kind: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
