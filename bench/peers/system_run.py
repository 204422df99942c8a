"""Time any system's prediction command on the benchmark sets and score it with ``toothseg evaluate``.

    python3 bench/peers/system_run.py --name toothseg-cpu --work /tmp/bench/systems \
        --set val-tufts=/tmp/evalset0/tufts --set cross-ufba425=../shared/data/ufba425 \
        -- toothseg predict RUN/bundle {images} --out {out} --folds 0

Each ``--set NAME=DIR`` is a dataset folder with ``images/`` and ``masks/``. The command after ``--`` runs once per
set with ``{images}`` -> ``DIR/images`` and ``{out}`` -> ``WORK/NAME/SET/pred``, timed the same way nnunet_run.py
times ``nnUNetv2_predict`` (measure.py: wall clock including start-up and model loading, largest-process RSS, peak
process-tree PSS). Its masks (in ``pred/``, ``pred/masks/`` or ``pred/<source>/``, named by image stem) are scored
with ``toothseg evaluate pred DIR``. Writes ``WORK/NAME/results.json``; ``--table`` merges every system's
results.json under WORK (and nnunet_run.py's, given with ``--nnunet``) into one markdown table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from measure import run_measured  # noqa: E402

IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm"}


METRICS = ("dice", "iou", "hd95", "nsd")


def score(pred: Path, gt: Path, out: Path, toothseg: str = "toothseg") -> dict:
    """``toothseg evaluate PRED GT --out OUT``; returns the summary's path, image counts and metric means."""
    cmd = [toothseg, "evaluate", str(pred), str(gt), "--out", str(out), "--overwrite"]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    s = json.loads((out / "summary.json").read_text())
    means = {m: (s.get("metrics", {}).get(m) or {}).get("mean") for m in METRICS}
    return {"summary": str(out / "summary.json"), "n": s.get("n_images"), "missing": len(s.get("missing", [])),
            **means}


def run_system(name: str, work: Path, sets: dict[str, Path], cmd: list[str], toothseg: str = "toothseg") -> dict:
    root = work / name
    root.mkdir(parents=True, exist_ok=True)
    res = {"system": name, "cmd": " ".join(cmd), "started": dt.datetime.now().isoformat(timespec="seconds"),
           "load_avg_before": os.getloadavg(), "sets": {}}
    for set_name, data in sets.items():
        images = data / "images"
        n = sum(1 for p in images.iterdir() if p.suffix.lower() in IMAGE_EXT)
        out = root / set_name / "pred"
        if out.exists():  # a bench output of ours, never the user's data
            shutil.rmtree(out)
        full = [c.replace("{images}", str(images)).replace("{out}", str(out)) for c in cmd]
        m = run_measured(full, dict(os.environ), root / set_name / "predict.log")
        if m["rc"] != 0:
            raise SystemExit(f"{name} on {set_name}: exit {m['rc']}, see {m['log']}")
        res["sets"][set_name] = {**m, "images": n, "images_per_s": round(n / m["wall_s"], 3),
                                 **score(out, data, root / set_name / "eval", toothseg)}
        print(f"{name} {set_name}: {n} images in {m['wall_s']} s ({res['sets'][set_name]['images_per_s']} img/s, "
              f"peak {m['tree_peak_pss_gib']} GiB) Dice {res['sets'][set_name]['dice']}", flush=True)
    res["finished"] = dt.datetime.now().isoformat(timespec="seconds")
    (root / "results.json").write_text(json.dumps(res, indent=2))
    return res


def _f(v: float | None, nd: int = 3) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def table(work: Path, nnunet: list[Path]) -> str:
    """One row per (system, set): accuracy from toothseg evaluate, and speed/memory of the timed predict command."""
    rows = []
    for f in sorted(work.glob("*/results.json")):
        r = json.loads(f.read_text())
        for set_name, e in r["sets"].items():
            rows.append((set_name, r["system"], e))
    for f in nnunet:
        r = json.loads(f.read_text())
        for key, e in r.get("evaluate", {}).items():
            p = r["predict"][key]
            set_name, mode = key.rsplit("_", 1)
            rows.append((set_name, f"nnU-Net v2 2d ({'mirror TTA' if mode == 'tta' else 'no TTA'})",
                         {**e, **{k: p[k] for k in ("images", "images_per_s", "tree_peak_pss_gib", "max_rss_gib")}}))
    lines = ["| set | system | n | Dice | IoU | HD95 px | NSD@2px | images/s | peak GiB (tree PSS / largest RSS) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for set_name, system, e in sorted(rows, key=lambda r: (r[0], -(r[2].get("dice") or 0))):
        lines.append(f"| {set_name} | {system} | {e['n']} | {_f(e['dice'])} | {_f(e['iou'])} | "
                     f"{_f(e['hd95'], 1)} | {_f(e['nsd'])} | {e['images_per_s']} | "
                     f"{e['tree_peak_pss_gib']} / {e['max_rss_gib']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    argv = sys.argv[1:]
    cmd = argv[argv.index("--") + 1:] if "--" in argv else []
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", help="system name (folder under WORK)")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--set", action="append", default=[], metavar="NAME=DIR", help="dataset with images/ and masks/")
    ap.add_argument("--toothseg", default="toothseg")
    ap.add_argument("--table", type=Path, help="write the merged markdown table here")
    ap.add_argument("--nnunet", type=Path, nargs="*", default=[], help="nnunet_run.py results.json file(s)")
    a = ap.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    if cmd:
        if not a.name or not a.set:
            ap.error("a command needs --name and at least one --set")
        sets = {}
        for spec in a.set:
            k, _, v = spec.partition("=")
            d = Path(v).resolve()
            if not (d / "images").is_dir() or not (d / "masks").is_dir():
                ap.error(f"--set {spec}: {d} needs images/ and masks/ folders")
            sets[k] = d
        run_system(a.name, a.work, sets, cmd, a.toothseg)
    if a.table:
        a.table.parent.mkdir(parents=True, exist_ok=True)
        a.table.write_text(table(a.work, a.nnunet))
        print(a.table.read_text())


if __name__ == "__main__":
    main()
