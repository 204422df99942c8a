"""Turning the user's INPUT arguments (files, folders, globs) into a list of image files, in a stable order.

Folders are searched recursively, following links, but never into ``--out`` or any other folder `toothseg predict`
wrote (its masks and overlays are not X-rays), and never twice into the same folder (a link loop ends there).
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

from toothseg.data.io import IMAGE_SUFFIXES, is_image_file
from toothseg.predict.outputs import is_output_folder


def _inside_output(p: Path, excluded: list[Path]) -> Path | None:
    """The output folder ``p`` lies in (``--out`` or a folder toothseg predict wrote), else None."""
    r = p.resolve()
    for parent in [r, *r.parents]:
        if parent in excluded or is_output_folder(parent):
            return parent
    return None


def expand_inputs(items: list[str], exclude: list[str | Path] | None = None
                  ) -> tuple[list[Path], list[tuple[str, str]], list[str]]:
    """Files are taken as given, folders are searched recursively for images, anything else is a glob.

    Returns the images (deduplicated, sorted within each argument), (argument, problem) pairs for arguments that
    yield nothing usable (a batch job reports them and carries on), and notes on what was passed over on purpose:
    files reached twice (links, repeated arguments), link loops, toothseg output folders.
    """
    excluded = [Path(e).expanduser().resolve() for e in exclude or []]
    seen: dict[Path, Path] = {}
    files: list[Path] = []
    problems: list[tuple[str, str]] = []
    notes: list[str] = []

    def add(p: Path) -> None:
        r = p.resolve()
        if r in seen:
            notes.append(f"{p}: same file as {seen[r]} (a link or a repeated argument); predicted once")
        else:
            seen[r] = p
            files.append(p)

    def walk(top: Path) -> list[Path]:
        found: list[Path] = []
        visited: set[tuple[int, int]] = set()
        for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
            d = Path(dirpath)
            st = d.stat()
            if (st.st_dev, st.st_ino) in visited:
                notes.append(f"{d}: folder reached again through a link (a loop or a duplicate); searched once")
                dirnames[:] = []
                continue
            visited.add((st.st_dev, st.st_ino))
            out = _inside_output(d, excluded)
            if out is not None:
                notes.append(f"{d}: toothseg predict output ({out}); not searched for X-rays")
                dirnames[:] = []
                continue
            dirnames.sort()
            found += [d / f for f in filenames if is_image_file(d / f)]
        return sorted(found)

    for item in items:
        p = Path(item).expanduser()
        if p.is_file():
            out = _inside_output(p.parent, excluded)
            if out is not None:
                problems.append((item, f"is toothseg predict output (in {out}), not an X-ray; pass the input images"))
            elif p.suffix.lower() in IMAGE_SUFFIXES:
                add(p)
            else:
                problems.append((item, f"unsupported file type '{p.suffix}'; use PNG, JPEG, TIFF, BMP or DICOM"))
        elif p.is_dir():
            found = walk(p)
            if not found:
                problems.append((item, "folder holds no PNG/JPEG/TIFF/BMP/DICOM images (toothseg output folders "
                                       "are not searched)"))
            for q in found:
                add(q)
        else:
            found = sorted(Path(q) for q in glob.glob(str(p), recursive=True) if is_image_file(Path(q)))
            kept = [q for q in found if _inside_output(q.parent, excluded) is None]
            if len(kept) < len(found):
                notes.append(f"{item}: {len(found) - len(kept)} match(es) inside toothseg predict output; left out")
            if not kept:
                problems.append((item, "no such file, and no image matches it as a pattern; check the path"))
            for q in kept:
                add(q)
    return files, problems, notes
