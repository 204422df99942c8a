"""Refuse to compare systems whose test images differ: fold K's validation keys of two prepared runs must be equal.

    python3 bench/peers/same_split.py RUN_A RUN_B --fold 0

The semi-supervised row prepares its own run (labelled + unlabelled sources); its fold K must validate on exactly the
images the supervised systems are scored on, or its score is not comparable (and a test image could be trained on).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def val_keys(run: Path, fold: int) -> set[str]:
    return set(json.loads((run / "folds.json").read_text())[str(fold)]["val"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_a", type=Path)
    ap.add_argument("run_b", type=Path)
    ap.add_argument("--fold", type=int, default=0)
    a = ap.parse_args()
    va, vb = val_keys(a.run_a, a.fold), val_keys(a.run_b, a.fold)
    if va != vb:
        print(f"fold {a.fold} differs: {len(va - vb)} validation images only in {a.run_a}, {len(vb - va)} only in "
              f"{a.run_b}; prepare both from the same labelled data with the same seed and fold count",
              file=sys.stderr)
        return 1
    print(f"fold {a.fold}: the same {len(va)} validation images in {a.run_a} and {a.run_b}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
