"""docs/CONFIG.md's key tables, generated from the schemas (``python -m configs --markdown``).

Each table sits between ``<!-- keys:<name>:begin -->`` and ``<!-- keys:<name>:end -->`` in docs/CONFIG.md;
``python -m configs --write`` replaces them in place and ``tests/test_config_schema.py`` fails when they differ.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

from configs import schema
from configs.audioset_strong import AudioSetStrong
from configs.downstream import Downstream
from configs.t4 import Stage1, Stage2


def _cell(value: Any) -> str:
    return "`" + repr(value).replace("|", "\\|") + "`"


def markdown_key_table(schemas: Mapping[str, type]) -> str:
    """One row per key of the experiment schemas ``{column title: root block}``: key, type, defaults, meaning."""
    names = list(schemas)
    header = "| key | type | " + " | ".join(f"default: {n}" for n in names) + " | meaning |"
    lines = [header, "|" + "---|" * (len(names) + 3)]
    for path, type_text, defaults, doc in schema.key_rows(schemas):
        cells = [_cell(defaults[n]) if n in defaults else "—" for n in names]
        type_cell = "`" + type_text.replace("|", "\\|") + "`"
        meaning = doc.replace("|", "\\|")
        lines.append(f"| `{path}` | {type_cell} | " + " | ".join(cells) + f" | {meaning} |")
    return "\n".join(lines) + "\n"


def tables() -> dict[str, str]:
    """Every generated table of docs/CONFIG.md, by marker name."""

    return {"t4": markdown_key_table({"ex_stage1": Stage1, "ex_stage2": Stage2}),
            "audioset_strong": markdown_key_table({"ex_audioset_strong": AudioSetStrong}),
            "downstream": markdown_key_table({"ex_downstream": Downstream})}


def _span(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- keys:{name}:begin -->\n)(.*?)(<!-- keys:{name}:end -->)", re.S)


def stale_tables(doc: Path) -> list[str]:
    """The names of the tables whose text in ``doc`` differs from the schema (or is missing)."""
    text = doc.read_text()
    stale = []
    for name, table in tables().items():
        match = _span(name).search(text)
        if match is None or match.group(2) != table:
            stale.append(name)
    return stale


def write_tables(doc: Path) -> None:
    text = doc.read_text()
    for name, table in tables().items():
        if _span(name).search(text) is None:
            raise ValueError(f"{doc} has no '<!-- keys:{name}:begin -->' ... '<!-- keys:{name}:end -->' markers")
        text = _span(name).sub(lambda m: m.group(1) + table + m.group(3), text)
    doc.write_text(text)
