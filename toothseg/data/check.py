"""`toothseg check`: read every image and mask of one or more dataset folders and list what is wrong with them.

Finding problems before training matters because a bad file otherwise surfaces as a crash hours into a run,
or silently as a wrong label. Levels: error (the file cannot be used), warning (suspicious, used anyway),
info (legitimate but worth knowing, e.g. empty masks of edentulous patients).
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from toothseg.data.io import mask_from_array, read_image, read_mask_array
from toothseg.data.layout import Problem, Sample, discover
from toothseg.errors import InputError, ToothsegError
from toothseg.run.files import write_csv

LEVELS = ("error", "warning", "info")
STANDARD_MASK_VALUES = ({0, 255}, {0, 1})


@dataclass
class CheckReport:
    """Every problem found plus per-source counts (images, labelled, unlabelled, empty masks, per-level)."""

    problems: list[Problem] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.level == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def write_csv(self, path: str | Path) -> None:
        write_csv(Path(path), ["level", "source", "file", "problem", "fix"],
                  ([p.level, p.source, p.path, p.problem, p.fix] for p in self.problems))

    def table(self, max_info: int | None = 10) -> str:
        """Human-readable problem table and per-source counts; info rows beyond `max_info` are summarised."""
        lines: list[str] = []
        rows = sorted(self.problems, key=lambda p: (LEVELS.index(p.level), p.source, p.path))
        shown = [p for p in rows if p.level != "info"] + [p for p in rows if p.level == "info"][:max_info]
        if shown:
            wf = min(60, max(len("file"), *(len(p.path) for p in shown)))
            wp = min(70, max(len("problem"), *(len(p.problem) for p in shown)))
            lines.append(f"{'level':<8} {'file':<{wf}}  {'problem':<{wp}}  fix")
            for p in shown:
                path = p.path if len(p.path) <= wf else "..." + p.path[-(wf - 3):]
                lines.append(f"{p.level:<8} {path:<{wf}}  {p.problem:<{wp}}  {p.fix}")
            hidden = len(rows) - len(shown)
            if hidden:
                lines.append(f"... and {hidden} more info rows (write them all with --csv FILE)")
            lines.append("")
        cols = ["images", "labelled", "unlabelled", "empty_masks", "error", "warning", "info"]
        ws = max([len("source"), *(len(s) for s in self.counts)])
        lines.append(f"{'source':<{ws}} " + " ".join(f"{c:>11}" for c in cols))
        for src, c in sorted(self.counts.items()):
            lines.append(f"{src:<{ws}} " + " ".join(f"{c.get(k, 0):>11}" for k in cols))
        n = Counter(p.level for p in self.problems)
        lines.append(f"{n['error']} errors, {n['warning']} warnings, {n['info']} info in {self.seconds:.1f} s")
        return "\n".join(lines)


def _check_sample(s: Sample) -> tuple[list[Problem], bool]:
    """Read one sample's image and mask; return its problems and whether the mask is empty."""
    problems: list[Problem] = []
    empty = False

    def add(level: str, path: Path, problem: str, fix: str) -> None:
        problems.append(Problem(level, str(path), problem, fix, s.source))

    img = None
    try:
        img = read_image(s.image_path)
        if int(img.max()) - int(img.min()) < 2:
            add("warning", s.image_path, "image is blank (one gray level)", "re-export the X-ray or remove it")
    except InputError as exc:
        add("error", s.image_path, exc.problem, exc.fix)
    if s.mask_path is None:
        return problems, empty
    try:
        raw = read_mask_array(s.mask_path)
        mask = mask_from_array(raw, s.mask_path)
    except InputError as exc:
        add("error", s.mask_path, exc.problem, exc.fix)
        return problems, empty
    values = set(np.unique(raw).tolist()) if raw.ndim == 2 else None
    if values is not None and not any(values <= std for std in STANDARD_MASK_VALUES):
        shown = sorted(values)[:8]
        add("warning", s.mask_path, f"unexpected mask values {shown}{'...' if len(values) > 8 else ''}; "
            "read as non-zero = tooth", "save binary masks with 0 = background, 255 = tooth")
    if img is not None and mask.shape != img.shape:
        add("error", s.mask_path, f"mask size {mask.shape[1]}x{mask.shape[0]} differs from image size "
            f"{img.shape[1]}x{img.shape[0]}", "re-export the mask at the image's size")
    if not mask.any():
        empty = True
        add("info", s.mask_path, "empty mask (no tooth pixels)", "fine for edentulous patients; else re-label")
    return problems, empty


def check(data_dirs: list[str | Path], csv_path: str | Path | None = None, workers: int = 1,
          overwrite: bool = False) -> CheckReport:
    """Check dataset folders; bad files become rows of the report, never exceptions.

    csv_path: also write every finding there (refused if it exists, unless overwrite).
    workers > 1 reads files in a process pool (worth it only on large datasets with spare cores).
    """
    if not data_dirs:
        raise ToothsegError("no dataset folder given; pass one or more DIRs with images/ and masks/")
    if csv_path is not None and Path(csv_path).exists() and not overwrite:
        raise InputError(csv_path, "output file exists", "pass --overwrite or choose another --csv path")
    t0 = time.perf_counter()
    ds = discover([Path(d) for d in data_dirs], strict=False)
    report = CheckReport(problems=list(ds.problems))
    counts: dict[str, dict[str, int]] = defaultdict(Counter)
    for s in ds.samples:
        counts[s.source]["images"] += 1
        counts[s.source]["labelled" if s.labelled else "unlabelled"] += 1
    if workers > 1 and len(ds.samples) > 50:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(_check_sample, ds.samples, chunksize=32))
    else:
        results = [_check_sample(s) for s in ds.samples]
    for s, (problems, empty) in zip(ds.samples, results):
        report.problems.extend(problems)
        counts[s.source]["empty_masks"] += int(empty)
    for p in report.problems:
        counts[p.source][p.level] += 1
    report.counts = {k: dict(v) for k, v in counts.items()}
    report.seconds = time.perf_counter() - t0
    if csv_path is not None:
        report.write_csv(csv_path)
    return report
