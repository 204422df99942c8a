"""Atomic file writes: every file toothseg writes appears under its final name complete, or not at all.

A writer fills a hidden temporary sibling (same folder, so the rename never crosses file systems; same suffix,
so format-by-extension writers such as OpenCV still work) and renames it over the target. A killed process can
leave only a hidden ``.<name>.<pid>.tmp<suffix>`` file, which no reader takes for a result.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}-{threading.get_ident()}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_copy(src: str | Path, dst: str | Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Content hash of a file (streamed, so a large X-ray never sits in memory twice)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
