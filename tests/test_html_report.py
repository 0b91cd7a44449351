"""The report page's videos and table cells (sspl.html_report): what the demo's page is built from."""

from __future__ import annotations

import pytest

from sspl.errors import DataError
from sspl.html_report import write_html_report


def test_a_video_plays_in_the_page_from_a_relative_path(tmp_path):
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "heat map.mp4").write_bytes(b"\x00")
    path = write_html_report(
        tmp_path / "index.html", "t", [{"title": "Video", "videos": [("clips/heat map.mp4", "the <clip>")]}]
    )
    text = path.read_text()
    assert (
        '<figure><video controls preload="auto" src="clips/heat%20map.mp4"><a href="clips/heat%20map.mp4">'
        "the &lt;clip&gt;</a></video><figcaption>the &lt;clip&gt;</figcaption></figure>"
    ) in text
    with pytest.raises(DataError, match=r"bad.html: report video .*gone.mp4 does not exist"):
        write_html_report(tmp_path / "bad.html", "t", [{"title": "x", "videos": ["gone.mp4"]}])
    assert not (tmp_path / "bad.html").exists()


def test_text_cells_are_left_aligned_and_numbers_right(tmp_path):
    text = write_html_report(
        tmp_path / "index.html",
        "t",
        [{"title": "x", "table": [{"setting": "command", "value": "sspl demo", "n": 3}]}],
    ).read_text()
    assert '<tr><td class="text">command</td><td class="text">sspl demo</td><td>3</td></tr>' in text
    assert "td.text { text-align: left; }" in text
