"""What `toothseg predict` writes per image, at the image's original resolution, and the run summary.

    OUT/masks/<stem>.png     0/255 tooth mask
    OUT/prob/<stem>.png      tooth probability x 255 (with --save-prob)
    OUT/overlays/<stem>.png  the X-ray with teeth tinted and outlined, for people
    OUT/json/<stem>.json     completion record: input and its sha256, the output files (relative to OUT), size,
                             tooth area, components, mean confidence, settings
    OUT/summary.csv          one row per record in OUT (every batch so far) plus this run's failures
    OUT/.toothseg-predict.json  marks OUT as a predict output folder (input discovery never searches it)

Every file is written under a temporary name and renamed (`toothseg.atomic`); the record goes last. An image is
done only when its record exists, names the same input content (sha256) and every output it lists exists; anything
else is redone, so an interrupted run never leaves a broken result that a re-run would keep.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from toothseg.data.io import write_png
from toothseg.predict.postprocess import count_components
from toothseg.predict.threshold import to_u8
from toothseg.run.files import read_json, write_csv, write_json

SUMMARY_FIELDS = ["stem", "input", "status", "height", "width", "tooth_area_px", "tooth_area_fraction",
                  "n_components", "mean_confidence", "error"]
OVERLAY_RGB = (255, 64, 64)
MARKER = ".toothseg-predict.json"
OUTPUT_DIRS = ("masks", "prob", "overlays", "json")


def is_output_folder(d: Path) -> bool:
    """A folder `toothseg predict` wrote: its marker, or (older versions) summary.csv next to json/."""
    return (d / MARKER).is_file() or ((d / "summary.csv").is_file() and (d / "json").is_dir())


def mark_output_folder(out: Path) -> bool:
    """Write OUT's marker; returns whether OUT was already a predict output folder (files there are ours)."""
    ours = is_output_folder(out)
    if not ours and any((out / d).exists() for d in OUTPUT_DIRS):
        return False  # someone else's masks/ or json/: never claim them
    if not (out / MARKER).is_file():
        write_json(out / MARKER, {"format": "toothseg-predict", "version": 1})
    return True


@dataclass(frozen=True)
class OutputPaths:
    out: Path
    stem: str

    def _file(self, folder: str, suffix: str = ".png") -> Path:
        return self.out / folder / f"{self.stem}{suffix}"

    mask = property(lambda self: self._file("masks"))
    prob = property(lambda self: self._file("prob"))
    overlay = property(lambda self: self._file("overlays"))
    record = property(lambda self: self._file("json", ".json"))

    def existing(self) -> list[Path]:
        return [p for p in (self.mask, self.prob, self.overlay, self.record) if p.exists()]

    def resolve(self, stored: str) -> Path:
        p = Path(stored)
        return p if p.is_absolute() else self.out / p


def completion(paths: OutputPaths, sha256: str, input_path: Path) -> tuple[str, dict | None]:
    """The state of one image's outputs in OUT: ``done`` (record for this very content, all outputs present),
    ``other`` (the record belongs to a different input file), ``partial`` (outputs without a valid record, e.g. a
    killed run), or ``none``."""
    rec = previous_record(paths)
    if not isinstance(rec, dict):
        return ("partial" if paths.existing() else "none"), None
    stored = rec.get("input_sha256")
    if stored is None:  # older record without a hash: only the same input path counts as the same image
        same = Path(str(rec.get("input", ""))).resolve() == input_path.resolve()
    else:
        same = stored == sha256
    if not same:
        return "other", rec
    outs = rec.get("outputs")
    if not isinstance(outs, dict) or not outs or not all(paths.resolve(str(v)).is_file() for v in outs.values()):
        return "partial", rec
    return "done", rec


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


def image_record(path: Path, prob: np.ndarray, mask: np.ndarray, settings: dict, sha256: str) -> dict:
    """Per-image numbers: tooth area, components, mean probability inside the mask (confidence)."""
    area = int(mask.sum())
    return {
        "input": str(path),
        "input_sha256": sha256,
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
    """Write one image's outputs, each atomically; the old record is dropped first and the new one written last,
    so at no moment does a record vouch for outputs that are not complete and its own."""
    paths.record.unlink(missing_ok=True)
    write_png(paths.mask, mask.astype(bool))
    outputs = {"mask": paths.mask.relative_to(paths.out).as_posix()}
    if save_prob:
        write_png(paths.prob, to_u8(prob))
        outputs["prob"] = paths.prob.relative_to(paths.out).as_posix()
    if with_overlay:
        write_png(paths.overlay, overlay(img_u8, mask))
        outputs["overlay"] = paths.overlay.relative_to(paths.out).as_posix()
    record = {**record, "outputs": outputs}
    write_json(paths.record, record)
    return record


def summary_row(stem: str, path: Path | str, status: str, record: dict | None = None, error: str = "") -> dict:
    r = record or {}
    numbers = {k: "" if r.get(k) is None else r[k] for k in SUMMARY_FIELDS[3:-1]}  # height ... mean_confidence
    return {"stem": stem, "input": str(path), "status": status, **numbers, "error": error}


def previous_record(paths: OutputPaths) -> dict | None:
    try:
        return read_json(paths.record)
    except (OSError, ValueError):
        return None


def write_summary(out: Path, rows: list[dict]) -> Path:
    """OUT/summary.csv, rebuilt from every record in OUT (earlier batches included) and this run's ``rows``:
    this run's rows first, in input order, then the records of images not in this run, by name."""
    path = out / "summary.csv"
    listed = {r["stem"] for r in rows if r["status"] != "failed"}
    earlier = []
    for rec_path in sorted((out / "json").glob("*.json")):
        stem = rec_path.stem
        if stem in listed:
            continue
        rec = previous_record(OutputPaths(out, stem))
        if isinstance(rec, dict):
            earlier.append(summary_row(stem, rec.get("input", ""), "ok", rec))
    write_csv(path, SUMMARY_FIELDS, [*rows, *earlier])
    return path
