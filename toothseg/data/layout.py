"""Finding samples in dataset folders.

Two layouts are accepted:
  (a) ``DIR/images/*`` + ``DIR/masks/*`` paired by file stem, optional ``DIR/unlabelled/*``;
  (b) nnU-Net v2 raw: ``DIR/imagesTr/NAME_0000.png``, ``DIR/labelsTr/NAME.png``, ``DIR/dataset.json``
      (``imagesTs/`` is read as unlabelled).
The folder name is the sample's *source* (institution) and is kept everywhere, so ``source/image_id`` is unique.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from toothseg.data.io import is_image_file
from toothseg.errors import InputError, ToothsegError
from toothseg.run.files import read_csv, write_csv


@dataclass(frozen=True)
class Sample:
    source: str
    image_id: str
    image_path: Path
    mask_path: Path | None = None

    @property
    def key(self) -> str:
        return f"{self.source}/{self.image_id}"

    @property
    def labelled(self) -> bool:
        return self.mask_path is not None


@dataclass
class Problem:
    """A finding about the dataset. level: error (unusable), warning (suspicious), info (legitimate but notable)."""

    level: str
    path: str
    problem: str
    fix: str = ""
    source: str = ""


@dataclass
class Dataset:
    samples: list[Sample] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def labelled(self) -> list[Sample]:
        return [s for s in self.samples if s.labelled]

    @property
    def unlabelled(self) -> list[Sample]:
        return [s for s in self.samples if not s.labelled]

    def by_key(self) -> dict[str, Sample]:
        return {s.key: s for s in self.samples}


def _images_in(folder: Path) -> list[Path]:
    """The image files of ``folder``; none when it does not exist."""
    return sorted(p for p in folder.iterdir() if is_image_file(p)) if folder.is_dir() else []


def _stem_map(files: list[Path], problems: list[Problem], strip: str = "") -> dict[str, Path]:
    by_stem: dict[str, list[Path]] = defaultdict(list)
    for p in files:
        by_stem[p.stem.removesuffix(strip)].append(p)
    out: dict[str, Path] = {}
    for stem, paths in sorted(by_stem.items()):
        if len(paths) > 1:
            problems.append(
                Problem("error", str(paths[1]), f"duplicate stem '{stem}' ({', '.join(p.name for p in paths)})",
                        "keep one file per stem; rename or remove the others")
            )
        out[stem] = paths[0]
    return out


def _discover_plain(root: Path, source: str, ds: Dataset) -> None:
    images, masks, unl = (_stem_map(_images_in(root / d), ds.problems) for d in ("images", "masks", "unlabelled"))
    _pair(images, masks, unl, source, ds, root / "masks")


def _discover_nnunet(root: Path, source: str, ds: Dataset) -> None:
    try:
        json.loads((root / "dataset.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        ds.problems.append(Problem("error", str(root / "dataset.json"), f"unreadable dataset.json ({exc})",
                                   "fix the JSON or recreate it with nnUNetv2"))
    files = _images_in(root / "imagesTr")
    for p in files:
        if not p.stem.endswith("_0000"):
            ds.problems.append(Problem("warning", str(p), "not channel 0000; toothseg reads single-channel images "
                                       "only", "remove extra channels or rename the file NAME_0000"))
    images = _stem_map([p for p in files if p.stem.endswith("_0000")], ds.problems, strip="_0000")
    masks = _stem_map(_images_in(root / "labelsTr"), ds.problems)
    unl = _stem_map([p for p in _images_in(root / "imagesTs") if p.stem.endswith("_0000")], ds.problems, "_0000")
    _pair(images, masks, unl, source, ds, root / "labelsTr")


def _pair(images: dict[str, Path], masks: dict[str, Path], unl: dict[str, Path], source: str, ds: Dataset,
          mask_dir: Path) -> None:
    for stem, img in images.items():
        m = masks.get(stem)
        if m is None:
            ds.problems.append(Problem("warning", str(img), "image has no mask; used as unlabelled",
                                       f"add {mask_dir}/{stem}.png or move the image to unlabelled/"))
        ds.samples.append(Sample(source, stem, img, m))
    for stem, m in masks.items():
        if stem not in images:
            ds.problems.append(Problem("error", str(m), "mask has no image",
                                       "add the image with the same file stem or remove the mask"))
    for stem, img in unl.items():
        if stem in images:
            ds.problems.append(Problem("error", str(img), f"stem '{stem}' is both labelled and unlabelled",
                                       "keep the image in one folder only"))
            continue
        ds.samples.append(Sample(source, stem, img, None))


def layout_of(root: Path) -> str:
    if (root / "imagesTr").is_dir() or (root / "dataset.json").is_file():
        return "nnunet"
    if any((root / d).is_dir() for d in ("images", "masks", "unlabelled")):
        return "plain"
    return "unknown"


def discover(dirs: list[str | Path], strict: bool = True) -> Dataset:
    """Index the samples of one or more dataset folders.

    strict: raise `InputError` when a folder is unusable (missing, no images, name clash); with strict=False the
    folder becomes an error in `Dataset.problems` and the others are still indexed (what `toothseg check` needs).
    """
    if not dirs:
        raise ToothsegError("no dataset folder given; pass one or more DIRs with images/ and masks/")
    ds = Dataset()
    sources: dict[str, Path] = {}
    for d in dirs:
        root = Path(d).expanduser()
        n_problems = len(ds.problems)
        try:
            _discover_one(root, sources, ds)
        except InputError as exc:
            if strict:
                raise
            ds.problems.append(Problem("error", exc.path, exc.problem, exc.fix))
        for pr in ds.problems[n_problems:]:
            pr.source = pr.source or root.resolve().name
    return ds


def _discover_one(root: Path, sources: dict[str, Path], ds: Dataset) -> None:
    if not root.is_dir():
        raise InputError(root, "dataset folder not found", "pass a folder holding images/ and masks/")
    source = root.resolve().name
    if source in sources:
        raise InputError(root, f"two dataset folders share the name '{source}' (also {sources[source]})",
                         "rename one: the folder name is the source name")
    kind = layout_of(root)
    if kind == "unknown":
        raise InputError(root, "no images/, masks/, unlabelled/ or imagesTr/ folder",
                         "use DIR/images + DIR/masks (+ DIR/unlabelled) or nnU-Net's raw layout")
    sources[source] = root
    n_before = len(ds.samples)
    (_discover_nnunet if kind == "nnunet" else _discover_plain)(root, source, ds)
    if len(ds.samples) == n_before:
        raise InputError(root, "no images found", "put PNG/JPEG/TIFF/BMP/DICOM files in images/ or unlabelled/")


def write_index(ds: Dataset, path: Path) -> None:
    """Save the sample list as CSV so later stages work from the run folder alone."""
    write_csv(path, ["key", "source", "image_id", "image_path", "mask_path"],
              ([s.key, s.source, s.image_id, str(Path(s.image_path).resolve()),
                str(Path(s.mask_path).resolve()) if s.mask_path else ""] for s in ds.samples))


def read_index(path: Path) -> list[Sample]:
    if not path.is_file():
        raise InputError(path, "sample index not found", "run 'toothseg prepare DATA... --out RUN' first")
    return [Sample(r["source"], r["image_id"], Path(r["image_path"]), Path(r["mask_path"]) if r["mask_path"] else None)
            for r in read_csv(path)]
