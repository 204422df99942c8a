"""A fixed, stratified subset of a dataset folder (symlinks to ``images/`` and ``masks/``), for evaluation sets
that every system must predict but whose full size would cost more CPU than the benchmark can spend.

    python3 bench/peers/subset.py ../shared/data/ufba425 --every 3 --out /tmp/bench/evalsets/ufba425_every3

Images are sorted by name and every N-th one is kept (ufba425's names start with the category, ``cate<k>-``, so
this keeps every category's share). Real data stays where it is: only links are written (keep OUT under /tmp).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

EXT = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def make_subset(src: Path, out: Path, every: int) -> list[str]:
    if every < 1:
        raise SystemExit(f"--every {every}: must be >= 1")
    images = sorted(p for p in (src / "images").iterdir() if p.suffix.lower() in EXT)
    masks = {p.stem: p for p in (src / "masks").iterdir() if p.suffix.lower() in EXT}
    labelled = [p for p in images if p.stem in masks]
    if not labelled:
        raise SystemExit(f"{src}: no image with a mask of the same stem in images/ and masks/")
    keep = labelled[::every]
    if out.exists():
        shutil.rmtree(out)
    for sub in ("images", "masks"):
        (out / sub).mkdir(parents=True)
    for p in keep:
        (out / "images" / p.name).symlink_to(p.resolve())
        (out / "masks" / masks[p.stem].name).symlink_to(masks[p.stem].resolve())
    (out / "keys.txt").write_text("".join(f"{p.stem}\n" for p in keep))
    return [p.stem for p in keep]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src", type=Path, help="dataset folder with images/ and masks/")
    ap.add_argument("--every", type=int, default=3)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    kept = make_subset(a.src, a.out, a.every)
    print(f"{len(kept)} images of {a.src} -> {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
