"""The config reference (``docs/config.md``), generated from the typed config of :mod:`sspl.config`.

Every key's type and default come from the dataclass fields, its description from the ``Attributes:``
section of the dataclass docstring, so the reference cannot drift from the code. Regenerate it with::

    python -m sspl.cli.config_reference > docs/config.md
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from typing import Any

import yaml

from ..config import Config, ConfigError
from ..models.methods.attention import AttentionOptions
from ..models.methods.hardway import HardWayOptions

#: the typed ``method_options`` of each method that takes some
METHOD_OPTIONS = {"attention": AttentionOptions, "hardway": HardWayOptions}

REGENERATE = "python -m sspl.cli.config_reference > docs/config.md"

INTRO = f"""\
# Configuration reference

<!-- Generated from src/sspl/config.py by `{REGENERATE}`; do not edit by hand. -->

`sspl train` builds its config from the defaults below (the paper's SSPL w/ PCM settings), then a YAML file
(`--config FILE`, see `configs/`), then `section.key=value` overrides on the command line, e.g.
`sspl train --config configs/flickr10k_pcm.yaml --data DATA --run-dir RUN optim.lr_head=1e-4 model.pcm=false`.
`sspl train --print-config` (with the same `--config` and overrides) prints the resolved config as YAML and
exits without training; the same YAML is saved as `config.yaml` in every run directory.
Override values are read as YAML scalars: `null` for none, `true`/`false`, lists as `[crop,hflip]`.
"""


def attribute_docs(cls: type) -> dict[str, str]:
    """The ``name: description`` entries of a class docstring's ``Attributes:`` section, each on one line."""
    lines = inspect.cleandoc(cls.__doc__ or "").splitlines()
    docs: dict[str, str] = {}
    inside, name = False, None
    for line in lines:
        if line.strip() == "Attributes:":
            inside = True
            continue
        if not inside:
            continue
        if line and not line.startswith(" "):  # the next section
            break
        text = line.strip()
        if not text:
            continue
        head, sep, rest = text.partition(":")
        if sep and line.startswith("    ") and not line.startswith("     ") and head.isidentifier():
            name = head
            docs[name] = rest.strip()
        elif name is not None:
            docs[name] = f"{docs[name]} {text}"
    return docs


def _default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def _yaml_value(value: Any) -> str:
    """A value as it is written in a YAML file or a ``key=value`` override."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1000)
    return text.removesuffix("\n").removesuffix("\n...")


def _cell(text: str) -> str:
    """Docstring text as a Markdown table cell: RST literals and roles as code spans, pipes escaped."""
    text = re.sub(r"(?::\w+:)?``?([^`]+)``?", r"`\1`", text)
    return text.replace("|", "\\|")


def _table(cls: type, prefix: str, fields: list[dataclasses.Field]) -> list[str]:
    docs = attribute_docs(cls)
    missing = [f.name for f in fields if f.name not in docs]
    if missing:
        raise ConfigError(
            f"{cls.__name__}: no description of {', '.join(missing)} in its docstring's Attributes section"
        )
    rows = ["| key | type | default | description |", "| --- | --- | --- | --- |"]
    for f in fields:
        value = _cell(_yaml_value(_default(f)))
        rows.append(f"| `{prefix}{f.name}` | `{_cell(str(f.type))}` | `{value}` | {_cell(docs[f.name])} |")
    return rows


def _summary(cls: type) -> str:
    return _cell(inspect.cleandoc(cls.__doc__ or "").split("\n\n")[0].replace("\n", " "))


def _section(title: str, cls: type, prefix: str) -> list[str]:
    return ["", title, "", _summary(cls), "", *_table(cls, prefix, list(dataclasses.fields(cls)))]


def config_reference() -> str:
    """The Markdown text of ``docs/config.md``."""
    fields = dataclasses.fields(Config)
    sections = [f for f in fields if dataclasses.is_dataclass(f.default_factory)]
    top = [f for f in fields if f not in sections]
    out = [INTRO, "## Top level", "", _summary(Config), "", *_table(Config, "", top)]
    for f in sections:
        out += _section(f"## `{f.name}` ({f.default_factory.__name__})", f.default_factory, f"{f.name}.")
    for method, cls in METHOD_OPTIONS.items():
        out += _section(f"## `method_options` of `method: {method}` ({cls.__name__})", cls, "method_options.")
    return "\n".join(out) + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(config_reference(), end="")
