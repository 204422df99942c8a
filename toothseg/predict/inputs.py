"""Turning the user's INPUT arguments (files, folders, globs) into a list of image files, in a stable order."""

from __future__ import annotations

import glob
from pathlib import Path

from toothseg.data.io import IMAGE_SUFFIXES, is_image_file


def expand_inputs(items: list[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files are taken as given, folders are searched recursively for images, anything else is a glob.

    Returns the images (deduplicated, sorted within each argument) and (argument, problem) pairs for arguments that
    yield nothing usable, so a batch job can report them and carry on.
    """
    seen: set[Path] = set()
    files: list[Path] = []
    problems: list[tuple[str, str]] = []

    def add(p: Path) -> None:
        r = p.resolve()
        if r not in seen:
            seen.add(r)
            files.append(p)

    for item in items:
        p = Path(item).expanduser()
        if p.is_file():
            if p.suffix.lower() in IMAGE_SUFFIXES:
                add(p)
            else:
                problems.append((item, f"unsupported file type '{p.suffix}'; use PNG, JPEG, TIFF, BMP or DICOM"))
        elif p.is_dir():
            found = sorted(q for q in p.rglob("*") if is_image_file(q))
            if not found:
                problems.append((item, "folder holds no PNG/JPEG/TIFF/BMP/DICOM images"))
            for q in found:
                add(q)
        else:
            found = sorted(Path(q) for q in glob.glob(str(p), recursive=True) if is_image_file(Path(q)))
            if not found:
                problems.append((item, "no such file, and no image matches it as a pattern; check the path"))
            for q in found:
                add(q)
    return files, problems
