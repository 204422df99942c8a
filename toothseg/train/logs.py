"""Flatten Lightning's CSVLogger output (one versioned folder per (re)start, train and val on separate rows) into
one ``metrics.csv`` with a row per epoch: ``epoch,step,train_loss,val_loss,val_dice,val_iou,lr``."""

from __future__ import annotations

from pathlib import Path

from toothseg.run.files import read_csv, write_csv

COLUMNS = ("epoch", "step", "train_loss", "val_loss", "val_dice", "val_iou", "lr")
_SOURCE = {"train_loss": ("train_loss_epoch", "train_loss"), "val_loss": ("val_loss",), "val_dice": ("val_dice",),
           "val_iou": ("val_iou",), "lr": ("lr",)}


def _version_key(p: Path) -> int:
    tail = p.parent.name.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else -1


def flatten_metrics(log_root: Path, out_csv: Path) -> list[dict]:
    """Merge every ``log_root/version_*/metrics.csv``; later versions (a resumed run) win for the same epoch."""
    per_epoch: dict[int, dict] = {}
    for f in sorted(Path(log_root).glob("version_*/metrics.csv"), key=_version_key):
        for r in read_csv(f):
            if not r.get("epoch"):
                continue
            e = int(float(r["epoch"]))
            row = per_epoch.setdefault(e, {"epoch": e})
            if r.get("step"):
                row["step"] = max(int(float(r["step"])), int(row.get("step", 0)))
            for col, names in _SOURCE.items():
                for n in names:
                    if r.get(n):
                        row[col] = float(r[n])
                        break
    rows = [per_epoch[e] for e in sorted(per_epoch)]
    write_csv(out_csv, COLUMNS, rows)
    return rows
