#!/usr/bin/env python3
"""The evaluation image sets every system in bench/ is scored on, as symlink folders (no copy of the licensed data).

    python3 bench/peers/eval_set.py RUN --fold 0 --out /tmp/bench/evalsets/fold0

writes OUT/<source>/images/<image_id>.<ext> and OUT/<source>/masks/<image_id>.<ext> for the validation keys of fold K
in RUN/folds.json (the group-aware split `toothseg prepare` made; the same cases as splits_final.json). Then, for any
system:  predict OUT/<source>/images -> PRED/<image_id>.png, and  `toothseg evaluate PRED OUT/<source> --out EVAL`.
The cross-institution set needs no folder: evaluate against the dataset itself (e.g. ../shared/data/ufba425).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from toothseg.data.layout import read_index


def make_eval_set(run: Path, fold: int, out: Path) -> dict[str, int]:
    """Symlink fold ``fold``'s validation images and masks under ``out/<source>/``; returns counts per source."""
    samples = {s.key: s for s in read_index(run / "samples.csv")}
    folds = json.loads((run / "folds.json").read_text())
    if str(fold) not in folds:
        sys.exit(f"{run}/folds.json has no fold {fold} (folds: {', '.join(folds)})")
    counts: dict[str, int] = {}
    for key in folds[str(fold)]["val"]:
        s = samples[key]
        for sub, src in (("images", s.image_path), ("masks", s.mask_path)):
            dst = out / s.source / sub / f"{s.image_id}{Path(src).suffix}"
            dst.parent.mkdir(parents=True, exist_ok=True)
            if dst.is_symlink() or dst.exists():
                dst.unlink()
            os.symlink(Path(src).resolve(), dst)
        counts[s.source] = counts.get(s.source, 0) + 1
    (out / "keys.txt").write_text("\n".join(folds[str(fold)]["val"]) + "\n")
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    print(json.dumps(make_eval_set(a.run, a.fold, a.out)))


if __name__ == "__main__":
    main()
