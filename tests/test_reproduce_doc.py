"""docs/reproduce.md stays followable: every `sspl` command in it parses with this CLI, every bundled list and
config it names exists, its weight URLs are the ones sspl downloads, and its links lead somewhere."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from sspl.cli import build_parser
from sspl.config import load_config
from sspl.data.lists import load_list
from sspl.weights import KNOWN_WEIGHTS

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reproduce.md"


def _shell_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def _sspl_commands(text: str) -> list[list[str]]:
    """The argument lists of every `sspl ...` and `torchrun ... -m sspl.cli ...` line of the shell blocks,
    continuation lines joined, shell variables replaced by 1 (a number fits every option that takes one)."""
    commands = []
    for block in _shell_blocks(text):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line.startswith("#") or ("sspl " not in line and "sspl.cli " not in line):
                continue
            words = [w for w in shlex.split(line, comments=True) if w != "${start[@]}"]
            if "-m" in words and "sspl.cli" in words:
                words = words[words.index("sspl.cli") + 1 :]
            elif words and words[0] == "sspl":
                words = words[1:]
            else:
                continue
            commands.append([re.sub(r"\$\{?\w+\}?", "1", w) for w in words])  # $VAR -> 1
    return commands


def test_every_sspl_command_of_the_guide_parses():
    commands = _sspl_commands(DOC.read_text())
    assert len(commands) >= 15  # the guide's commands were found, not skipped
    parser = build_parser()
    for words in commands:
        _, extra = parser.parse_known_args(words)  # exits on an unknown command or a bad option value
        assert all("=" in w and not w.startswith("-") for w in extra), (words, extra)


def test_the_lists_configs_and_weights_the_guide_names_exist():
    text = DOC.read_text()
    commands = _sspl_commands(text)
    names = {
        w[i + 1]
        for w in commands
        for i, a in enumerate(w[:-1])
        if a == "--list" and not re.search(r"[/.]", w[i + 1])
    }
    assert {"flickr_10k", "vggss_144k", "vggss_test_5158", "flickr_test_250_fixed"} <= names
    for name in names:
        assert load_list(name), name
    configs = {w[i + 1] for w in commands for i, a in enumerate(w[:-1]) if a == "--config"}
    configs |= set(re.findall(r"configs/[\w]+\.yaml", text))
    assert configs
    for config in configs:
        load_config(ROOT / config)
    for known in KNOWN_WEIGHTS.values():
        assert f"`{known.url}`" in text, known.url


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("doc", ["reproduce.md", "data.md"])
def test_the_guides_relative_links_lead_to_files_and_headings(doc):
    path = ROOT / "docs" / doc
    links = re.findall(r"\]\(([^)\s]+)\)", path.read_text())
    local = [link for link in links if not link.startswith(("http://", "https://"))]
    assert local
    for link in local:
        target, _, anchor = link.partition("#")
        file = (path.parent / target).resolve() if target else path
        assert file.exists(), link
        if anchor:
            headings = re.findall(r"^#+ (.*)$", file.read_text(), flags=re.M)
            assert anchor in {_slug(h) for h in headings}, link
    if doc == "data.md":
        assert "reproduce.md" in local
