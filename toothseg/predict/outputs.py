"""What `toothseg predict` writes per image, at the image's original resolution, and the run summary.

    OUT/masks/<stem>.png     0/255 tooth mask
    OUT/prob/<stem>.png      tooth probability x 255 (with --save-prob)
    OUT/overlays/<stem>.png  the X-ray with teeth tinted and outlined, for people
    OUT/json/<stem>.json     record: input, size, tooth area, components, mean confidence, settings (written last:
                             its presence marks the image as done)
    OUT/summary.csv          one row per input (ok / failed / skipped)
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from toothseg.data.io import write_png
from toothseg.predict.postprocess import count_components
from toothseg.rundir import read_json, write_json

SUMMARY_FIELDS = ["stem", "input", "status", "height", "width", "tooth_area_px", "tooth_area_fraction",
                  "n_components", "mean_confidence", "error"]
OVERLAY_RGB = (255, 64, 64)


@dataclass(frozen=True)
class OutputPaths:
    out: Path
    stem: str

    @property
    def mask(self) -> Path:
        return self.out / "masks" / f"{self.stem}.png"

    @property
    def prob(self) -> Path:
        return self.out / "prob" / f"{self.stem}.png"

    @property
    def overlay(self) -> Path:
        return self.out / "overlays" / f"{self.stem}.png"

    @property
    def record(self) -> Path:
        return self.out / "json" / f"{self.stem}.json"

    def existing(self) -> list[Path]:
        return [p for p in (self.mask, self.prob, self.overlay, self.record) if p.exists()]


def overlay(img_u8: np.ndarray, mask: np.ndarray, alpha: float = 0.35) -> np.ndarray:
    """RGB picture: the X-ray, teeth tinted and outlined."""
    rgb = cv2.cvtColor(img_u8, cv2.COLOR_GRAY2RGB)
    if mask.any():
        tint = np.empty_like(rgb)
        tint[:] = OVERLAY_RGB
        m = mask.astype(bool)
        rgb[m] = (rgb[m] * (1 - alpha) + tint[m] * alpha).astype(np.uint8)
        contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
        thickness = max(1, round(min(mask.shape) / 400))
        cv2.drawContours(rgb, contours, -1, (255, 255, 0), thickness)
    return rgb


def image_record(path: Path, prob: np.ndarray, mask: np.ndarray, settings: dict) -> dict:
    """Per-image numbers: tooth area, components, mean probability inside the mask (confidence)."""
    area = int(mask.sum())
    return {
        "input": str(path),
        "height": int(mask.shape[0]),
        "width": int(mask.shape[1]),
        "tooth_area_px": area,
        "tooth_area_fraction": round(area / mask.size, 6),
        "n_components": count_components(mask),
        "mean_confidence": round(float(prob[mask].mean()), 6) if area else None,
        "mean_certainty": round(float(np.abs(2.0 * prob - 1.0).mean()), 6),
        **settings,
    }


def write_outputs(paths: OutputPaths, img_u8: np.ndarray, prob: np.ndarray, mask: np.ndarray, record: dict,
                  save_prob: bool, with_overlay: bool) -> dict:
    """Write one image's outputs; the JSON record goes last so a crash never leaves a 'done' marker."""
    write_png(paths.mask, mask.astype(bool))
    outputs = {"mask": str(paths.mask)}
    if save_prob:
        write_png(paths.prob, np.clip(np.rint(prob * 255.0), 0, 255).astype(np.uint8))
        outputs["prob"] = str(paths.prob)
    if with_overlay:
        write_png(paths.overlay, overlay(img_u8, mask))
        outputs["overlay"] = str(paths.overlay)
    record = {**record, "outputs": outputs}
    write_json(paths.record, record)
    return record


def summary_row(stem: str, path: Path | str, status: str, record: dict | None = None, error: str = "") -> dict:
    r = record or {}
    return {"stem": stem, "input": str(path), "status": status, "height": r.get("height", ""),
            "width": r.get("width", ""), "tooth_area_px": r.get("tooth_area_px", ""),
            "tooth_area_fraction": r.get("tooth_area_fraction", ""), "n_components": r.get("n_components", ""),
            "mean_confidence": "" if r.get("mean_confidence") is None else r["mean_confidence"], "error": error}


def previous_record(paths: OutputPaths) -> dict | None:
    try:
        return read_json(paths.record)
    except (OSError, ValueError):
        return None


def write_summary(out: Path, rows: list[dict]) -> Path:
    """OUT/summary.csv: an index of this run's inputs (rewritten each run, it never holds results of its own)."""
    path = out / "summary.csv"
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=SUMMARY_FIELDS)
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)
    return path
