"""Convert a prepared run's labelled samples to nnU-Net v2's raw layout, so nnU-Net trains on the same curated data
and the same group-aware split (``splits_final.json`` written by ``prepare``).

Case names are ``source__image_id``, matching the names in ``splits_final.json``. ``toothseg_cases.json`` next to
``dataset.json`` maps every case name back to its toothseg key, so nnU-Net's predictions can be renamed to
``image_id`` stems for ``toothseg evaluate`` (see :func:`rename_predictions`).

nnU-Net reads ``splits_final.json`` from its *preprocessed* folder (``nnUNet_preprocessed/DatasetXXX_Name/``), not
from the raw one: copy it there after ``nnUNetv2_plan_and_preprocess`` (bench/peers/nnunet_run.py does).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np

from toothseg.atomic import atomic_write_text
from toothseg.curate.folds import case_name, nnunet_splits
from toothseg.data.io import read_image, read_mask, write_png
from toothseg.data.layout import Sample
from toothseg.errors import ToothsegError
from toothseg.run.folder import open_run

CASES_FILE = "toothseg_cases.json"


def _case_map(keys: list[str]) -> dict[str, str]:
    """case name -> key; refuses two keys that sanitise to one case name."""
    cases: dict[str, str] = {}
    for key in keys:
        case = case_name(key)
        if case in cases and cases[case] != key:
            raise ToothsegError(f"'{key}' and '{cases[case]}' both become nnU-Net case '{case}'; rename one file")
        cases[case] = key
    return cases


def _fresh_dir(out: Path, overwrite: bool, hint: str) -> None:
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ToothsegError(f"{out}: exists and is not empty; pass overwrite=True or {hint}")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def export_nnunet_raw(run: str | Path, raw_root: str | Path, dataset_id: int = 501, name: str = "Teeth",
                      keys: list[str] | None = None, overwrite: bool = False) -> Path:
    """Write ``raw_root/DatasetXXX_Name/{imagesTr,labelsTr,dataset.json}`` and copy the run's split next to it.

    Only samples that curation kept for training are exported (the same set the folds hold), or ``keys`` (labelled
    ones only). Masks become 0/1 label PNGs; images 8-bit grayscale PNGs, the channel nnU-Net calls ``0``. With
    ``keys`` a subset, ``splits_final.json`` keeps only exported cases. ``overwrite`` replaces the whole folder.
    """
    if not 1 <= dataset_id <= 999:
        raise ToothsegError(f"nnU-Net dataset id {dataset_id}: must be 1..999")
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise ToothsegError(f"nnU-Net dataset name '{name}': use letters, digits, '_' or '-'")
    rd = open_run(run)
    samples = {s.key: s for s in rd.read_samples()}
    folds = {str(k): v for k, v in rd.read_folds().items()}
    if keys is None:
        keys = sorted({k for f in folds.values() for part in ("train", "val") for k in f[part]})
    unknown = [k for k in keys if k not in samples]
    if unknown:
        raise ToothsegError(f"{unknown[0]}: not a sample of {rd.root} ({len(unknown)} unknown keys)")
    keys = [k for k in keys if samples[k].mask_path is not None]
    if not keys:
        raise ToothsegError(f"{rd.root}: no labelled sample to export")
    cases = _case_map(keys)
    out = Path(raw_root) / f"Dataset{dataset_id:03d}_{name}"
    _fresh_dir(out, overwrite, "choose another dataset id")
    for case, key in cases.items():
        s = samples[key]
        write_png(out / "imagesTr" / f"{case}_0000.png", read_image(s.image_path))
        write_png(out / "labelsTr" / f"{case}.png", read_mask(s.mask_path).astype(np.uint8))
    atomic_write_text(out / "dataset.json", json.dumps({
        "channel_names": {"0": "X-ray"},
        "labels": {"background": 0, "tooth": 1},
        "numTraining": len(cases),
        "file_ending": ".png",
        "name": name,
        "description": "exported by toothseg from a prepared run (curated, duplicates resolved)",
    }, indent=2))
    atomic_write_text(out / CASES_FILE, json.dumps(cases, indent=1, sort_keys=True))
    # Derived from folds.json (the split's source of truth) so runs prepared before splits_final.json existed work.
    splits = [{part: [c for c in f[part] if c in cases] for part in ("train", "val")} for f in nnunet_splits(folds)]
    atomic_write_text(out / "splits_final.json", json.dumps(splits, indent=1))
    return out


def export_nnunet_images(samples: list[Sample], out: str | Path, overwrite: bool = False) -> Path:
    """Write ``out/<case>_0000.png`` for each sample (an ``nnUNetv2_predict -i`` folder) plus ``toothseg_cases.json``.

    For prediction only: masks are not written (score against the dataset's own masks with ``toothseg evaluate``).
    """
    out = Path(out)
    cases = _case_map([s.key for s in samples])
    by_key = {s.key: s for s in samples}
    _fresh_dir(out, overwrite, "choose another folder")
    for case, key in cases.items():
        write_png(out / f"{case}_0000.png", read_image(by_key[key].image_path))
    atomic_write_text(out / CASES_FILE, json.dumps(cases, indent=1, sort_keys=True))
    return out


def rename_predictions(pred_dir: str | Path, cases_file: str | Path, out: str | Path) -> dict[str, int]:
    """Copy nnU-Net's ``<case>.png`` predictions to ``out/<source>/<image_id>.png`` (0/1 label PNGs).

    ``toothseg evaluate out GT_DIR`` then finds them by the ground-truth folder's source name. Returns counts per
    source; predictions whose case is not in ``cases_file`` are an error.
    """
    pred_dir, out = Path(pred_dir), Path(out)
    cases = json.loads(Path(cases_file).read_text())
    counts: dict[str, int] = {}
    for p in sorted(pred_dir.glob("*.png")):
        if p.stem not in cases:
            raise ToothsegError(f"{p}: case '{p.stem}' is not in {cases_file}")
        source, image_id = cases[p.stem].split("/", 1)
        (out / source).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, out / source / f"{image_id}.png")
        counts[source] = counts.get(source, 0) + 1
    if not counts:
        raise ToothsegError(f"{pred_dir}: no nnU-Net prediction PNGs found")
    return counts
