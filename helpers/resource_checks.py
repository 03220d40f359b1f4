"""Offline checks of the reference release files (``resources/MANIFEST.json``), for ``download_resources.py``.

Nobody here can download the release, so its digests and exact sizes are unknown until someone records them
(``python download_resources.py --record``). What *is* known offline is each file's structure, and a file that
does not have it is refused before it is placed:

===================== ================================================================================
``check.kind``        the file must
===================== ================================================================================
``sed_checkpoint``    load with the safe loader and hold ``student`` and ``teacher`` SED models of ``arch``
``backbone_checkpoint`` load with the safe loader, be of ``format`` (``models.checkpoints.detect_format``) and
                      convert to an ``arch`` backbone
``tsv``               parse with the reader training uses for ``format`` (``strong``, ``durations``, ``exclude``)
``zip``               extract, and hold every name of ``members`` (relative to the placed folder) and at least
                      ``min_suffix_count`` files ending in ``suffix``
===================== ================================================================================
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

from data_util.tsv import TsvFormatError, read_durations_tsv, read_filename_list, read_strong_tsv
from models.checkpoints import (
    SED_MODES, CheckpointError, arch_of_state_dict, convert_backbone_checkpoint, safe_load, sed_state_dict,
)

TSV_READERS = {"strong": read_strong_tsv, "durations": read_durations_tsv, "exclude": read_filename_list}
FILE_KINDS = ("sed_checkpoint", "backbone_checkpoint", "tsv")
FOLDER_KINDS = ("zip",)


class ResourceCheckError(ValueError):
    """A release file does not have the structure its manifest entry describes."""


def check_file(path: Path, check: Mapping) -> None:
    """Raise ``ResourceCheckError`` (saying what is wrong) unless the file at ``path`` passes ``check``."""
    kind = check.get("kind")
    try:
        if kind == "sed_checkpoint":
            checkpoint = safe_load(path)
            for mode in SED_MODES:
                held = arch_of_state_dict(sed_state_dict(checkpoint, mode, source=str(path)))
                if held != check["arch"]:
                    raise ResourceCheckError(f"its {mode} model is a {held or 'unknown'} model, expected "
                                             f"{check['arch']} (a file of another model under this name?)")
        elif kind == "backbone_checkpoint":
            source_format, _ = convert_backbone_checkpoint(safe_load(path), check["arch"])
            if source_format != check["format"]:
                raise ResourceCheckError(f"it is a {source_format} file, expected {check['format']}")
        elif kind == "tsv":
            TSV_READERS[check["format"]](path)
        else:
            raise ResourceCheckError(f"unknown check kind {kind!r}; expected one of {FILE_KINDS}")
    except (CheckpointError, TsvFormatError) as e:
        raise ResourceCheckError(str(e)) from e


def check_folder(folder: Path, check: Mapping) -> None:
    """Raise ``ResourceCheckError`` unless the extracted archive ``folder`` holds what ``check`` lists."""
    if check.get("kind") not in FOLDER_KINDS:
        raise ResourceCheckError(f"unknown check kind {check.get('kind')!r} for an archive; expected one of {FOLDER_KINDS}")
    missing = [name for name in check.get("members", ()) if not (folder / name).is_file()]
    if missing:
        raise ResourceCheckError(f"the archive lacks {len(missing)} expected file(s): {', '.join(missing)}")
    suffix, needed = check.get("suffix"), int(check.get("min_suffix_count", 0))
    if suffix and needed:
        found = sum(1 for p in folder.rglob(f"*{suffix}") if p.is_file())
        if found < needed:
            raise ResourceCheckError(f"the archive holds {found} {suffix} file(s), expected at least {needed}")
