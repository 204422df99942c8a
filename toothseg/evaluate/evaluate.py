"""`toothseg evaluate`: score predicted masks against ground truth, per image and in summary.

Predictions and ground truth are matched by file stem. Nothing is dropped silently: a ground-truth image without a
usable prediction (missing file, unreadable file, different size) is scored as a failure (Dice 0, distances = the
image diagonal) and listed; prediction files without ground truth are listed as extra; a ground-truth mask that
cannot be read is listed as an error and left out of the summary (there is nothing to score against).
Sizes are never reconciled by resizing: a prediction must be at the ground-truth image's size.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from toothseg.atomic import atomic_write_text
from toothseg.data.io import is_image_file, read_mask
from toothseg.errors import InputError, ToothsegError
from toothseg.evaluate.metrics import METRICS, diagonal, failure_metrics, score_pair
from toothseg.preflight import ensure_writable_dir
from toothseg.run.files import read_csv, to_float, write_csv
from toothseg.run.folder import write_json

log = logging.getLogger("toothseg")

SCORES = (*METRICS, "sts")
CSV_COLUMNS = ("image_id", "source", "status", *SCORES, "height", "width", "gt_px", "pred_px", "note")
OUTPUT_FILES = ("metrics.csv", "summary.json", "summary.md")
PROBLEMS = {"missing": "missing predictions", "failed": "unusable predictions",
            "extra": "predictions without ground truth", "gt_errors": "unreadable ground truth"}
N_BOOT = 2000
BOOT_SEED = 0


def evaluate_arrays(items: Iterable[tuple[str, np.ndarray, np.ndarray]], tolerance: float = 2.0,
                    source: str = "") -> list[dict[str, Any]]:
    """Score ``(image_id, pred, gt)`` bool-mask triples; a shape mismatch becomes a failure row, never an error."""
    rows = []
    for image_id, pred, gt in items:
        pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
        if pred.shape != gt.shape:
            rows.append(_row(image_id, source, "size-mismatch", failure_metrics(gt.shape), gt, None,
                             f"prediction {pred.shape[:2]} vs ground truth {gt.shape[:2]}"))
        else:
            rows.append(_row(image_id, source, "ok", score_pair(pred, gt, tolerance), gt, pred))
    return rows


def _row(image_id: str, source: str, status: str, scores: dict[str, float], gt: np.ndarray,
         pred: np.ndarray | None, note: str = "") -> dict[str, Any]:
    return {"image_id": image_id, "source": source, "status": status, **scores, "height": gt.shape[0],
            "width": gt.shape[1], "gt_px": int(gt.sum()), "pred_px": int(pred.sum()) if pred is not None else "",
            "note": note}


def _bootstrap_ci(x: np.ndarray, n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> tuple[float, float]:
    """95% percentile-bootstrap CI of the mean (fixed seed, so reruns give the same numbers)."""
    if x.size < 2 or np.all(x == x[0]):
        return float(x.mean()), float(x.mean())
    from scipy.stats import bootstrap

    res = bootstrap((x,), np.mean, n_resamples=n_boot, confidence_level=0.95, method="percentile",
                    rng=np.random.default_rng(seed), vectorized=True)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def describe(values: Iterable[float]) -> dict[str, Any]:
    """Mean, median, std (ddof=1) and 95% bootstrap CI of the mean of finite values."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if x.size == 0:
        return {"n": 0, "mean": None, "median": None, "std": None, "ci95": [None, None]}
    lo, hi = _bootstrap_ci(x)
    return {"n": int(x.size), "mean": float(x.mean()), "median": float(np.median(x)),
            "std": float(x.std(ddof=1)) if x.size > 1 else 0.0, "ci95": [lo, hi]}


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Summary over scored rows (failures included as worst scores; rows without ground truth excluded)."""
    scored = [r for r in rows if r["status"] != "gt-error"]
    out: dict[str, Any] = {
        "n_images": len(scored),
        "n_ok": sum(r["status"] == "ok" for r in scored),
        "n_failed": sum(r["status"] != "ok" for r in scored),
        "metrics": {m: describe(r[m] for r in scored) for m in SCORES},
    }
    sources = sorted({r.get("source", "") for r in scored})
    if len(sources) > 1 or (sources and sources[0]):
        out["by_source"] = {s: {"n_images": sum(r.get("source", "") == s for r in scored),
                                "metrics": {m: describe(r[m] for r in scored if r.get("source", "") == s)
                                            for m in SCORES}} for s in sources}
    return out


CONVENTIONS = {
    "distances": "pixels of the ground-truth image; Euclidean, boundary pixel to nearest boundary pixel",
    "boundary": "mask XOR binary erosion (3x3 cross), outside the image counts as background",
    "hd95": "max of the two directional 95th percentiles (MONAI compute_hausdorff_distance, percentile=95)",
    "nsd": "normalised surface Dice at the tolerance, both boundaries pooled (MONAI compute_surface_dice)",
    "empty": "both empty: Dice=IoU=NSD=1, HD=HD95=0; exactly one empty: Dice=IoU=NSD=0, HD=HD95=image diagonal",
    "failures": "missing, unreadable or wrong-size prediction: Dice=IoU=NSD=STS=0, HD=HD95=image diagonal",
    "sts": "0.4*Dice + 0.3*IoU + 0.3*(1 - nHD), nHD = clip(HD / image diagonal, 0, 1), HD = full Hausdorff",
    "ci95": f"percentile bootstrap of the mean, {N_BOOT} resamples, seed {BOOT_SEED}",
}


def summary_markdown(summary: dict[str, Any], title: str = "Evaluation") -> str:
    """The summary as a markdown table (what a person reads; summary.json is what programs read)."""
    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.4f}"

    def table(metrics: dict[str, Any]) -> list[str]:
        lines = ["| metric | mean | median | std | 95% CI (mean) | n |", "|---|---|---|---|---|---|"]
        for m, d in metrics.items():
            lo, hi = d["ci95"]
            lines.append(f"| {m} | {fmt(d['mean'])} | {fmt(d['median'])} | {fmt(d['std'])} | "
                         f"[{fmt(lo)}, {fmt(hi)}] | {d['n']} |")
        return lines

    lines = [f"# {title}", "", f"{summary['n_images']} images scored, {summary['n_failed']} without a usable "
             f"prediction (scored as failures).", ""]
    lines += table(summary["metrics"])
    by_source = summary.get("by_source", {})
    for src, s in by_source.items() if len(by_source) > 1 else ():
        lines += ["", f"## {src} ({s['n_images']} images)", ""] + table(s["metrics"])
    for key, label in PROBLEMS.items():
        items = summary.get(key) or []
        if items:
            shown = ", ".join(str(i) for i in items[:50]) + (f" ... (+{len(items) - 50})" if len(items) > 50 else "")
            lines += ["", f"**{label.capitalize()} ({len(items)}):** {shown}"]
    lines += ["", "## Conventions", ""] + [f"- **{k}**: {v}" for k, v in summary.get("conventions", {}).items()]
    return "\n".join(lines) + "\n"


def _mask_folder(gt_dir: Path) -> tuple[Path, str]:
    """The folder holding the ground-truth masks and the source name (the dataset folder's name)."""
    for sub in ("masks", "labelsTr"):
        if (gt_dir / sub).is_dir():
            return gt_dir / sub, gt_dir.resolve().name
    name = gt_dir.resolve().parent.name if gt_dir.name in ("masks", "labelsTr") else gt_dir.resolve().name
    return gt_dir, name


def _files_by_stem(folder: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and is_image_file(p):
            out.setdefault(p.stem, p)
    return out


def _pred_folder(pred_dir: Path, source: str) -> Path:
    """Predictions directly in PRED_DIR, or in PRED_DIR/<source>/ or PRED_DIR/masks/ (per-source layouts)."""
    for cand in (pred_dir / source, pred_dir / "masks"):
        if cand.is_dir() and any(is_image_file(p) for p in cand.iterdir()):
            return cand
    return pred_dir


@dataclass(frozen=True)
class EvaluateResult:
    """summary.json's content (see `summarise`) plus the paths of the files written."""

    n_images: int
    n_ok: int
    n_failed: int
    metrics: dict[str, dict]  # per score: n, mean, median, std, ci95
    pred_dir: str
    gt_dir: str
    source: str
    tolerance_px: float
    missing: list[str]  # ground truth without a prediction
    failed: list[str]  # unreadable or wrong-size predictions
    extra: list[str]  # predictions without ground truth
    gt_errors: list[str]  # unreadable ground truth
    conventions: dict
    mean_diagonal_px: float
    outputs: dict[str, str]
    by_source: dict[str, dict] | None = None


def evaluate(pred_dir: str | Path, gt_dir: str | Path, out: str | Path | None = None, tolerance: float = 2.0,
             overwrite: bool = False) -> EvaluateResult:
    """Score every ground-truth mask in GT_DIR against the same-stem prediction in PRED_DIR.

    GT_DIR is a dataset folder (``masks/`` or nnU-Net ``labelsTr/``) or a folder of masks. Writes
    ``metrics.csv``, ``summary.json`` and ``summary.md`` to ``out`` (default ``PRED_DIR/evaluation``) and returns
    the summary (with ``missing``, ``failed``, ``extra`` and ``gt_errors`` lists and the output paths).
    """
    pred_dir, gt_dir = Path(pred_dir).expanduser(), Path(gt_dir).expanduser()
    if not pred_dir.is_dir():
        raise InputError(pred_dir, "prediction folder not found", "pass the folder 'toothseg predict' wrote")
    if not gt_dir.is_dir():
        raise InputError(gt_dir, "ground-truth folder not found", "pass a dataset folder with masks/ or a mask folder")
    if tolerance < 0 or not math.isfinite(tolerance):
        raise ToothsegError(f"--tolerance {tolerance}: must be a non-negative number of pixels (e.g. 2)")
    out = ensure_writable_dir(Path(out).expanduser() if out is not None else pred_dir / "evaluation")
    existing = [out / f for f in OUTPUT_FILES if (out / f).exists()]
    if existing and not overwrite:
        raise ToothsegError(f"{existing[0]}: already exists; pass --overwrite to replace it or choose another --out")

    mask_dir, source = _mask_folder(gt_dir)
    gts = _files_by_stem(mask_dir)
    if not gts:
        raise InputError(mask_dir, "no ground-truth masks found", "pass a dataset folder with masks/*.png")
    pred_folder = _pred_folder(pred_dir, source)
    preds = _files_by_stem(pred_folder)
    if not preds:
        raise InputError(pred_folder, "no prediction masks found", "pass the folder holding the predicted PNG masks")
    if not set(preds) & set(gts):
        raise InputError(pred_folder, f"no prediction matches a ground-truth file stem (e.g. '{next(iter(gts))}')",
                         "name each prediction after its image, as 'toothseg predict' does")

    rows: list[dict[str, Any]] = []
    for stem, gt_path in gts.items():
        try:
            gt = read_mask(gt_path)
        except InputError as exc:
            log.info("skipped ground truth: %s", exc)
            rows.append({"image_id": stem, "source": source, "status": "gt-error", "note": str(exc)})
            continue
        if stem not in preds:
            rows.append(_row(stem, source, "missing", failure_metrics(gt.shape), gt, None, "no prediction file"))
            continue
        try:
            pred = read_mask(preds[stem])
        except InputError as exc:
            log.info("unusable prediction: %s", exc)
            rows.append(_row(stem, source, "unreadable", failure_metrics(gt.shape), gt, None, str(exc)))
            continue
        rows.append(row := evaluate_arrays([(stem, pred, gt)], tolerance, source)[0])
        if row["status"] != "ok":
            log.info("%s: %s", preds[stem], row["note"])

    def stems(*statuses: str) -> list[str]:
        return [r["image_id"] for r in rows if r["status"] in statuses]

    summary = summarise(rows)
    summary.update({"pred_dir": str(pred_dir.resolve()), "gt_dir": str(mask_dir.resolve()), "source": source,
                    "tolerance_px": tolerance, "missing": stems("missing"),
                    "failed": stems("unreadable", "size-mismatch"), "extra": sorted(set(preds) - set(gts)),
                    "gt_errors": stems("gt-error"), "conventions": CONVENTIONS,
                    "mean_diagonal_px": float(np.mean([diagonal((r["height"], r["width"])) for r in rows
                                                       if r["status"] != "gt-error"] or [0.0]))})
    rounded = ({k: round(v, 6) if isinstance(v, float) else v for k, v in r.items()} for r in rows)
    write_csv(out / "metrics.csv", CSV_COLUMNS, rounded)
    write_json(out / "summary.json", summary)
    atomic_write_text(out / "summary.md", summary_markdown(summary, f"Evaluation of {pred_dir.name} against {source}"))
    return EvaluateResult(**summary, outputs={f: str(out / f) for f in OUTPUT_FILES})


def read_metrics_csv(path: str | Path) -> list[dict[str, Any]]:
    """Read a metrics.csv written by `evaluate` back into rows with float scores (for the report)."""
    rows: list[dict[str, Any]] = list(read_csv(path))
    for r in rows:
        r.update({m: to_float(r.get(m)) for m in SCORES})
    return rows
