"""A small self-contained HTML page (inline style, no scripts) of pictures, tables and notes: the
reports of ``sspl evaluate`` and the demo. The pictures come from :mod:`sspl.viz`.
"""

from __future__ import annotations

import html
import os
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import DataError
from .io import atomic_write_text

__all__ = ["ReportSection", "write_html_report"]


@dataclass
class ReportSection:
    """One section of :func:`write_html_report`.

    Attributes:
        title: section heading.
        images: image files, each a path or ``(path, caption)``; a relative path is relative to the
            report's folder. They are linked, not embedded, so keep them beside the report.
        table: rows of a table (dicts; the columns are the keys in order of first appearance; floats
            shown with 3 decimals).
        notes: paragraphs of plain text.
        videos: video files (MP4 that browsers play: H.264, yuv420p), each a path or ``(path, caption)``,
            shown in a ``<video controls>`` element; linked like ``images``.
    """

    title: str
    images: Sequence[str | os.PathLike | tuple[str | os.PathLike, str]] = ()
    table: Sequence[Mapping[str, Any]] = ()
    notes: Sequence[str] = field(default_factory=tuple)
    videos: Sequence[str | os.PathLike | tuple[str | os.PathLike, str]] = ()


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
figure img, figure video { max-width: 100%; border: 1px solid #ccc; }
figcaption { font-size: 0.85em; color: #555; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
td.text { text-align: left; }
""".strip()


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return html.escape("" if value is None else str(value))


def _td(value: Any) -> str:
    # numbers right-aligned to compare down a column, text (a setting, a command) left-aligned
    return f'<td class="text">{_cell(value)}</td>' if isinstance(value, str) else f"<td>{_cell(value)}</td>"


def _section(sec: ReportSection | Mapping[str, Any]) -> ReportSection:
    if isinstance(sec, ReportSection):
        return sec
    unknown = set(sec) - {"title", "images", "table", "notes", "videos"}
    if unknown or "title" not in sec:
        raise ValueError(
            f"a report section needs 'title' and may have images, table, notes, videos; got {sorted(sec)}"
        )
    return ReportSection(**sec)


def _linked(page: Path, root: Path, item, kind: str) -> tuple[str, str]:
    """``(src, caption)`` of an image or video item: its path relative to the page's folder, quoted and
    escaped for an attribute, and its caption (default: the file's name). Raises DataError when the file
    does not exist."""
    file, caption = item if isinstance(item, tuple) else (item, "")
    file = Path(file) if Path(file).is_absolute() else root / file
    if not file.is_file():
        raise DataError(f"{page}: report {kind} {file} does not exist")
    rel = Path(os.path.relpath(file.resolve(), root)).as_posix()
    return html.escape(urllib.parse.quote(rel)), caption or Path(rel).name


def _caption(item) -> str:
    caption = item[1] if isinstance(item, tuple) else ""
    return f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""


def write_html_report(
    path: str | os.PathLike,
    title: str,
    sections: Sequence[ReportSection | Mapping[str, Any]],
) -> Path:
    """Write a small self-contained HTML page (inline style, no scripts) with images, videos, tables and notes.

    Args:
        path: the ``.html`` file (written atomically).
        title: page title and heading.
        sections: :class:`ReportSection` objects, or dicts with the same keys.

    Returns:
        ``path`` as a Path.

    Raises:
        DataError: an image or video file does not exist (a report with broken pictures is not written).
    """
    path = Path(path)
    root = path.parent.resolve()
    body = [f"<h1>{html.escape(title)}</h1>"]
    for sec in map(_section, sections):
        body.append(f"<h2>{html.escape(sec.title)}</h2>")
        notes = [sec.notes] if isinstance(sec.notes, str) else sec.notes
        body += [f"<p>{html.escape(note)}</p>" for note in notes]
        if sec.table:
            columns: list[str] = []
            for row in sec.table:
                columns += [str(k) for k in row if str(k) not in columns]
            body.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in columns) + "</tr>")
            for row in sec.table:
                cells = {str(k): v for k, v in row.items()}
                body.append("<tr>" + "".join(_td(cells.get(c)) for c in columns) + "</tr>")
            body.append("</table>")
        for item in sec.videos:
            src, caption = _linked(path, root, item, "video")
            body.append(
                f'<figure><video controls preload="auto" src="{src}">'
                f'<a href="{src}">{html.escape(caption)}</a></video>{_caption(item)}</figure>'
            )
        for item in sec.images:
            src, caption = _linked(path, root, item, "image")
            alt = html.escape(caption)
            body.append(f'<figure><a href="{src}"><img src="{src}" alt="{alt}"></a>{_caption(item)}</figure>')
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>\n{_CSS}\n</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )
    atomic_write_text(path, page)
    return path
