# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""A chain's result folder written as a whole: the files go to a new folder beside it, which then replaces it by
renames, so that a run killed at any moment leaves the complete old or the complete new folder.

The new folder is ``<parent>/.publishing/<name>.new-<pid>``; the old one is renamed to ``<name>.old-<pid>`` there,
the new one to ``<parent>/<name>``, and the old one is deleted. :func:`recover` finds what a killed run left in
``.publishing`` and restores the old folder (where the new one was not yet in place) or removes the leftovers.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from mstl_monai.pipeline.lock import pid_alive

__all__ = ["STAGING", "RESULT_FILES", "write_folder", "write_text_atomic", "recover"]

#: the folder beside the result folders where a new folder is written and the old one waits to be deleted
STAGING = ".publishing"
#: the files the pipeline writes into a chain's result folder (any other file there is carried over)
RESULT_FILES = ("chain.json", "metrics.json", "predictions.csv", "timing.json", "sstl_m_probe.json")


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``path`` through a temporary file and a rename: it holds the old or the new text, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_folder(target: str | os.PathLike, files: dict[str, str | os.PathLike]) -> list[str]:
    """Replace the folder ``target`` by one holding ``files`` (name -> a file to copy, or the text as ``str``).

    Files of the old folder that the pipeline does not write (not :data:`RESULT_FILES`) are carried over.

    Returns:
        the names carried over from the old folder.
    """
    target = Path(target)
    staging = target.parent / STAGING
    staging.mkdir(parents=True, exist_ok=True)
    new, old = staging / f"{target.name}.new-{os.getpid()}", staging / f"{target.name}.old-{os.getpid()}"
    for leftover in (new, old):
        if leftover.exists():
            shutil.rmtree(leftover)
    new.mkdir()
    for name, src in files.items():
        if isinstance(src, str):
            (new / name).write_text(src)
        else:
            shutil.copyfile(src, new / name)
    kept = []
    if target.is_dir():
        for p in sorted(target.iterdir()):
            if p.name not in files and p.name not in RESULT_FILES:
                (shutil.copytree if p.is_dir() else shutil.copyfile)(p, new / p.name)
                kept.append(p.name)
        os.rename(target, old)
    os.rename(new, target)
    if old.exists():
        shutil.rmtree(old)
    _remove_if_empty(staging)
    return kept


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


def recover(target: str | os.PathLike, dry_run: bool = False) -> list[str]:
    """Restore or remove what an interrupted :func:`write_folder` of ``target`` left; one line per thing done.

    The old folder comes back where the new one never took its place; other leftovers are removed. Leftovers of a
    process that still runs are left alone. ``dry_run``: only say what the next run will do.
    """
    target = Path(target)
    staging = target.parent / STAGING
    if not staging.is_dir():
        return []
    pattern = re.compile(rf"{re.escape(target.name)}\.(new|old)-(\d+)")
    lines = []
    for p in sorted(staging.iterdir()):
        m = pattern.fullmatch(p.name)
        if m is None:
            continue
        pid = int(m.group(2))
        if pid != os.getpid() and pid_alive(pid):
            lines.append(f"{p}: process {pid} is publishing {target} now; left alone")
        elif m.group(1) == "old" and not target.exists():
            if dry_run:
                lines.append(f"interrupted publish of {target}: its previous folder is {p}; a run restores it")
            else:
                os.rename(p, target)
                lines.append(f"restored {target} from {p} (the previous folder, left by an interrupted publish)")
        elif dry_run:
            lines.append(f"interrupted publish of {target}: {p} is left over; a run removes it")
        else:
            shutil.rmtree(p)
            lines.append(f"removed {p}, left by an interrupted publish of {target}")
    if not dry_run:
        _remove_if_empty(staging)
    return lines
