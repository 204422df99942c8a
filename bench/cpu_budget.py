"""One CPU benchmark run, side by side: toothseg's cpu preset, the plain smp script and ablation arms, each on
tufts fold 0 under the same wall-clock budget on the same machine, scored by the same scorer.

    python bench/cpu_budget.py WORK [--max-time 00:30:00] [--mimic-avx2] [--threads 2] \\
        [--arm ema="--set train.ema_decay=0.99" --arm onecycle="--set train.schedule=onecycle"] [--resume]

The data is prepared once (``toothseg prepare DATA --out WORK/run --preset cpu``); every toothseg arm trains fold 0
in its own copy of that run's index files (``WORK/arms/NAME/run``; no image is copied) with ``--profile``, and its
out-of-fold probabilities (original size) are thresholded at 0.5. The smp arm is ``bench/baseline_smp_unet.py`` on
the same folds.json, predicting the same validation images. Both are scored by ``toothseg evaluate`` against the
validation masks (linked, not copied, under ``WORK/gt``). Per arm: the CPU (``lscpu`` model name; avx2,
avx512_bf16, amx flags), ONEDNN_MAX_CPU_ISA, precision, optimizer steps, images seen, seconds used of the budget,
val Dice/IoU/HD95. Writes ``WORK/results.json`` and ``WORK/results.md`` (a table to splice into bench/RESULTS.md).

``--resume`` skips finished arms and continues an unfinished toothseg arm from its last checkpoint (the smp arm
restarts); without it an existing WORK is refused. ``--mimic-avx2`` runs every arm (smp too) with
``ONEDNN_MAX_CPU_ISA=AVX2`` and fp32, as on a CPU without AVX-512/bf16/AMX.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parents[1]
INDEX_FILES = ("config.yaml", "samples.csv", "folds.json", "curation.json", "duplicates.csv", "splits_final.json")
SMP = "smp"
TOOTHSEG = "toothseg"


def cpu_info() -> dict:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    flags = set(fields.get("Flags", "").split())
    return {"model": fields.get("Model name", "?").strip(), "avx2": "avx2" in flags,
            "avx512_bf16": "avx512_bf16" in flags, "amx": bool({"amx_bf16", "amx_tile"} & flags),
            "cores": os.cpu_count()}


def toothseg_cmd(*args: str) -> list[str]:
    return [sys.executable, "-c", "from toothseg.cli import main; main()", *args]


def run(cmd: list[str], env: dict, log: Path) -> None:
    print("+", shlex.join(cmd), flush=True)
    with log.open("a") as fh:
        subprocess.run(cmd, check=True, env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO)


def arm_env(mimic_avx2: bool) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if mimic_avx2:
        env["ONEDNN_MAX_CPU_ISA"] = "AVX2"
    return env


def prepare(work: Path, data: Path, fold: int, env: dict) -> tuple[list[str], Path, Path]:
    """Prepare once; link fold ``fold``'s validation images and masks (by image stem) under WORK/gt."""
    rd = work / "run"
    if not (rd / "folds.json").is_file():
        run(toothseg_cmd("prepare", str(data), "--out", str(rd), "--preset", "cpu"), env, work / "prepare.log")
    sys.path.insert(0, str(REPO))
    from toothseg.data.layout import read_index

    samples = {s.key: s for s in read_index(rd / "samples.csv")}
    val = json.loads((rd / "folds.json").read_text())[str(fold)]["val"]
    images, masks = work / "gt" / "images", work / "gt" / "tufts" / "masks"
    for d in (images, masks):
        d.mkdir(parents=True, exist_ok=True)
    for k in val:
        s = samples[k]
        for src, d in ((Path(s.image_path), images), (Path(s.mask_path), masks)):
            link = d / f"{s.image_id}{src.suffix}"
            if not link.exists():
                link.symlink_to(src)
    return val, images, masks.parent


def train_arm(name: str, sets: list[str], a: argparse.Namespace, work: Path, env: dict) -> dict:
    adir = work / "arms" / name
    rd = adir / "run"
    started = (rd / "train").is_dir()
    rd.mkdir(parents=True, exist_ok=True)
    for f in INDEX_FILES:
        if (work / "run" / f).is_file() and not (rd / f).is_file():
            shutil.copyfile(work / "run" / f, rd / f)
    extra = list(sets) + (["--set", f"train.threads={a.threads}"] if a.threads else [])
    if a.mimic_avx2:
        extra += ["--set", "train.precision=32-true"]
    cmd = toothseg_cmd("train", str(rd), "--fold", str(a.fold), "--preset", "cpu", "--max-time", a.max_time,
                       "--profile", *extra, *(["--resume"] if started else []))
    t0 = time.monotonic()
    run(cmd, env, adir / "train.log")
    wall = time.monotonic() - t0
    fold_dir = next((rd / "train").glob(f"*/fold{a.fold}"))
    prof = json.loads((fold_dir / "profile.json").read_text())
    budget = json.loads((fold_dir / "budget.json").read_text())
    pred = adir / "pred"
    pred.mkdir(exist_ok=True)
    for png in (fold_dir / "oof").glob("*/*.png"):  # probability x 255 at the original size -> 0/255 mask
        prob = cv2.imread(str(png), cv2.IMREAD_GRAYSCALE)
        cv2.imwrite(str(pred / png.name), ((prob >= 128) * 255).astype("uint8"))
    return {"precision": prof.get("precision"), "steps": prof["steps"], "images_seen": prof["images"],
            "seconds_used": budget["used_s"], "budget_s": budget["budget_s"], "budget_used": budget["used_share"],
            "fit_wall_s": round(wall, 1), "channels_last": prof.get("channels_last"),
            "workers": prof.get("num_workers"),
            "profile": prof, "sets": sets}


def smp_arm(a: argparse.Namespace, work: Path, env: dict, val_images: Path) -> dict:
    adir = work / "arms" / SMP
    if adir.exists():  # an unfinished smp run cannot resume: start it again
        shutil.rmtree(adir)
    adir.mkdir(parents=True)
    from toothseg.durations import parse_hhmmss

    minutes = parse_hhmmss(a.max_time) / 60
    cmd = [sys.executable, str(REPO / "bench" / "baseline_smp_unet.py"), "--run", str(work / "run"), "--fold",
           str(a.fold), "--minutes", f"{minutes:g}", "--out", str(adir / "baseline.json"),
           "--predict", f"{val_images}:{adir / 'pred'}", *(["--threads", str(a.threads)] if a.threads else [])]
    run(cmd, env, adir / "train.log")
    b = json.loads((adir / "baseline.json").read_text())
    return {"precision": "32-true", "steps": b["steps"], "images_seen": 4 * b["steps"],
            "seconds_used": b["train_seconds"], "budget_s": minutes * 60,
            "budget_used": round(b["train_seconds"] / (minutes * 60), 4), "sets": []}


def score(work: Path, name: str, gt: Path, env: dict) -> dict:
    adir = work / "arms" / name
    out = adir / "evaluate"
    run(toothseg_cmd("evaluate", str(adir / "pred"), str(gt), "--out", str(out), "--overwrite"), env,
        adir / "evaluate.log")
    s = json.loads((out / "summary.json").read_text())
    return {m: (s.get("metrics", {}).get(m) or {}).get("mean") for m in ("dice", "iou", "hd95")} | {
        "n_val": s.get("n_images"), "missing": len(s.get("missing", []))}


def table(results: dict) -> str:
    c = results["cpu"]
    head = (f"### CPU budget benchmark: tufts fold 0, {results['max_time']} per arm\n\n"
            f"CPU: {c['model']} ({c['cores']} cores; avx2 {c['avx2']}, avx512_bf16 {c['avx512_bf16']}, amx "
            f"{c['amx']}); ONEDNN_MAX_CPU_ISA={results['onednn_max_cpu_isa'] or 'unset'}"
            f"{' (mimicked AVX2, fp32)' if results['mimic_avx2'] else ''}; threads {results['threads'] or 'all'}\n\n"
            "| arm | settings | precision | steps | images | seconds used / budget | val Dice | IoU | HD95 px |\n"
            "|---|---|---|---:|---:|---:|---:|---:|---:|\n")
    rows = []
    for name, r in results["arms"].items():
        if "dice" not in r:
            continue
        rows.append(f"| {name} | {' '.join(r['sets']) or '-'} | {r['precision']} | {r['steps']} | "
                    f"{r['images_seen']} | {r['seconds_used']:.0f} / {r['budget_s']:.0f} "
                    f"({100 * r['budget_used']:.1f}%) | {r['dice']:.4f} | {r['iou']:.4f} | {r['hd95']:.1f} |")
    return head + "\n".join(rows) + "\n"


def parse_arm(spec: str) -> tuple[str, list[str]]:
    if "=" not in spec:
        raise SystemExit(f'--arm {spec!r}: write NAME="--set a=b --set c=d"')
    name, sets = spec.split("=", 1)
    if not name or not name.replace("-", "").replace("_", "").isalnum() or name in (SMP, TOOTHSEG):
        raise SystemExit(f"--arm {spec!r}: NAME must be letters, digits, - or _ and not '{SMP}'/'{TOOTHSEG}'")
    return name, shlex.split(sets)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("work", type=Path)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "tufts")
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--max-time", default="00:30:00")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per arm (default: all cores)")
    ap.add_argument("--arm", action="append", default=[], help='ablation arm: NAME="--set a=b --set c=d"')
    ap.add_argument("--set", dest="sets", action="append", default=[], help="override for every toothseg arm")
    ap.add_argument("--no-smp", action="store_true", help="leave out the smp arm")
    ap.add_argument("--mimic-avx2", action="store_true", help="ONEDNN_MAX_CPU_ISA=AVX2 and fp32 for every arm")
    ap.add_argument("--resume", action="store_true", help="skip finished arms, continue an unfinished one")
    a = ap.parse_args()
    work = a.work.resolve()
    if work.exists() and any(work.iterdir()) and not a.resume:
        raise SystemExit(f"{work}: exists; pass --resume to continue that benchmark or choose a new folder")
    work.mkdir(parents=True, exist_ok=True)
    env = arm_env(a.mimic_avx2)
    common = [x for s in a.sets for x in ("--set", s)]
    arms = {TOOTHSEG: common} | {n: common + s for n, s in map(parse_arm, a.arm)}
    res_path = work / "results.json"
    results = json.loads(res_path.read_text()) if res_path.is_file() else {"arms": {}}
    results.update({"cpu": cpu_info(), "onednn_max_cpu_isa": env.get("ONEDNN_MAX_CPU_ISA"),
                    "mimic_avx2": a.mimic_avx2, "max_time": a.max_time, "threads": a.threads, "fold": a.fold,
                    "data": str(a.data)})
    _, val_images, gt = prepare(work, a.data, a.fold, env)
    order = [TOOTHSEG] + ([] if a.no_smp else [SMP]) + [n for n in arms if n != TOOTHSEG]
    for name in order:
        if "dice" in results["arms"].get(name, {}):
            print(f"{name}: finished earlier; skipped", flush=True)
            continue
        r = smp_arm(a, work, env, val_images) if name == SMP else train_arm(name, arms[name], a, work, env)
        r |= score(work, name, gt, env)
        results["arms"][name] = r
        res_path.write_text(json.dumps(results, indent=2))
        print(f"{name}: Dice {r['dice']:.4f}  {r['steps']} steps  {100 * r['budget_used']:.1f}% of the budget",
              flush=True)
    (work / "results.md").write_text(table(results))
    print(table(results))


if __name__ == "__main__":
    main()
