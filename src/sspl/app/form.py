"""The upload form's body (``multipart/form-data``, what a browser's ``FormData`` and ``curl -F`` send),
split into its files. The standard library's ``cgi`` parser is gone from Python 3.13, so the few lines that
the app needs are here.
"""

from __future__ import annotations

import re

from ..errors import DataError
from .jobs import Upload

__all__ = ["boundary_of", "parse_form"]

_PARAM = re.compile(r';\s*([A-Za-z0-9_-]+)="([^"]*)"')


def boundary_of(content_type: str) -> bytes:
    """The boundary of a ``multipart/form-data`` content type.

    Raises:
        DataError: another content type, or no boundary.
    """
    kind, _, params = content_type.partition(";")
    match = re.search(r'boundary="?([^";]+)"?', params)
    if kind.strip().lower() != "multipart/form-data" or match is None:
        raise DataError(f"send the files as multipart/form-data, got {content_type or 'no content type'}")
    return match.group(1).encode("latin-1")


def parse_form(body: bytes, boundary: bytes) -> dict[str, Upload]:
    """The non-empty file fields of a form body by field name (empty file inputs are left out).

    Raises:
        DataError: a malformed body.
    """
    delimiter = b"--" + boundary
    pieces = body.split(b"\r\n" + delimiter)
    if not pieces[0].startswith(delimiter) or not pieces[-1].startswith(b"--"):
        raise DataError("malformed form upload (its boundaries do not match)")
    uploads: dict[str, Upload] = {}
    for piece in [pieces[0][len(delimiter) :], *pieces[1:-1]]:
        head, sep, data = piece.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        if not sep:
            raise DataError("malformed form upload (a part without headers)")
        params = _disposition(head.decode("utf-8", "replace"))
        if "filename" not in params or not (params["filename"] or data):
            continue  # a text field, or a file input left empty
        uploads[params.get("name", "")] = Upload(params.get("name", ""), params["filename"], data)
    return uploads


def _disposition(head: str) -> dict[str, str]:
    for line in head.split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-disposition":
            return dict(_PARAM.findall(value))
    return {}
