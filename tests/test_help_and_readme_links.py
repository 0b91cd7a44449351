"""What a new user reads first points where it should: `sspl prepare --help` names every bundled list
(generated from the list registry, so vggss_test_5158 and any list added later appear), and the README's
training section links the config reference."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from sspl.cli import build_parser
from sspl.data.lists import BUNDLED_LISTS, bundled_list_names

ROOT = Path(__file__).resolve().parents[1]


def _prepare_help() -> str:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return " ".join(sub.choices["prepare"].format_help().split())  # line breaks of the wrapped help joined


def test_prepare_help_lists_every_bundled_list():
    text = _prepare_help()
    assert "vggss_test_5158" in text
    for name in bundled_list_names():
        assert re.search(rf"\b{name}\b", text), name


def test_the_bundled_list_names_cover_the_list_files_in_the_assets():
    files = {
        p.name.removesuffix(".gz")
        for p in resources.files("sspl").joinpath("assets", "lists").iterdir()
        if p.name.endswith(".gz")
    }
    assert files == set(BUNDLED_LISTS.values())
    assert set(bundled_list_names()) == {*BUNDLED_LISTS, "vggss_test_5158"}


def test_readme_training_section_links_the_config_reference():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Train and evaluate", 1)[1].split("\n## ", 1)[0]
    assert "](docs/config.md)" in section
    assert (ROOT / "docs" / "config.md").is_file()
