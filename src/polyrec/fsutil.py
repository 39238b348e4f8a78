"""Filesystem helpers shared by everything that writes outputs atomically."""

from __future__ import annotations

import shutil
from pathlib import Path


def replace_dir(tmp: Path, target: Path) -> None:
    """Put the finished folder ``tmp`` at ``target`` (same filesystem): a former ``target`` is
    moved aside first and removed only once the new one is in place."""
    if target.exists():
        old = target.parent / f".{target.name}.old"
        if old.exists():
            shutil.rmtree(old)
        target.rename(old)
        tmp.rename(target)
        shutil.rmtree(old)
    else:
        tmp.rename(target)


__all__ = ["replace_dir"]
