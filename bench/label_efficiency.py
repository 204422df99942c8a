"""Compute-matched label-efficiency benchmark, scored on a test split carved out before anything is trained.

    python bench/label_efficiency.py --data /work/shared/data/tufts --unlabelled /work/shared/data/mlua_caries \
        --work /tmp/le --fractions 0.1,0.25,1.0 --folds 0,1,2 --teacher-time 00:10:00 --extra-time 00:05:00 \
        --preset cpu --out bench/label_efficiency.md [--resume] [--set train.threads=1 ...]

1. `prepare` curates --data and --unlabelled once (WORK/curate: duplicate groups). A seeded share (--test-share) of
   --data's labelled images, whole duplicate groups with every copy (unlabelled ones too), is the test split
   (WORK/test_split.json). Nothing later (checkpoint choice, threshold, post-processing) looks at it.
2. Per label fraction f: WORK/f<f>/data holds symlinks to the other images: f of --data's labelled images with their
   masks (whole groups, taken in one seeded order, so smaller fractions nest in larger ones), the rest of --data
   unlabelled, plus --unlabelled; `prepare` makes WORK/f<f>/run with group-aware folds. The labelled-only teacher
   trains on each of --folds for --teacher-time; every schedule then starts from that teacher with the same
   --extra-time per fold model (`toothseg.pseudo.schedules.retrain`).
3. Every fold model of every arm is scored on the test split at threshold 0.5, without TTA or post-processing, at
   the original image size. Arms are compared with --reference paired by fold and image: the per-image difference
   averaged over folds, its 95 % bootstrap CI over test images, and each fold's mean difference.
4. WORK/results.json holds every per-image score, budgets, steps and the machine; --out (default
   WORK/label_efficiency.md) gets the markdown table and, next to it, the Dice-vs-label-fraction plot (.png).
   --table-only re-makes both from results.json; --combine A.json B.json ... --out F.md makes one table and plot
   from several runs on the same test split (e.g. one fraction each, run in different sessions).

--resume reuses every finished piece and continues unfinished training; without it an existing WORK is refused.
Real data never leaves WORK (keep it under /tmp): only symlinks and the runs' own outputs are written there.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from toothseg.data.layout import Sample, read_index
from toothseg.durations import parse_hhmmss
from toothseg.errors import ToothsegError
from toothseg.folds_arg import parse_folds
from toothseg.run.folder import read_json, setup_logging, write_json

sys.path.insert(0, str(Path(__file__).resolve().parent))
from label_hiding import group_units, take_units, train_effort, unit_of  # noqa: E402
from workdir import fresh_work  # noqa: E402

TEACHER = "teacher"
METRICS = ("dice", "iou", "hd95")
THRESHOLD = 0.5
RESUMED_SETTINGS = ("data", "unlabelled", "preset", "set", "teacher_time", "extra_time", "test_share", "seed")


# -- splits ------------------------------------------------------------------------------------------------------
def carve(eligible: list[str], items: dict, test_share: float, seed: int) -> tuple[list[str], list[str]]:
    """(test keys, the other keys in the seeded order their labels are kept in), whole duplicate groups at a time."""
    units = group_units(sorted(eligible), items)
    order = sorted(units)
    random.Random(seed).shuffle(order)
    test = take_units(units, order, max(1, round(test_share * len(eligible))))
    taken = {unit_of(k, items) for k in test}
    return test, [k for u in order if u not in taken for k in units[u]]


def kept_labels(rest: list[str], items: dict, fraction: float) -> list[str]:
    """The first ``fraction`` of ``rest`` (in its order), whole groups: fractions of one order nest."""
    units = group_units(rest, items)
    return take_units(units, list(units), max(1, round(fraction * len(rest))))


def scenario_roles(samples: list[Sample], items: dict, test: list[str], kept: list[str],
                   data_sources: set[str]) -> dict[str, str]:
    """{key: 'labelled' | 'unlabelled'} of one scenario; every member of a test key's group is left out."""
    blocked = {unit_of(k, items) for k in test}
    kept_units = {unit_of(k, items) for k in kept}
    roles = {}
    for s in samples:
        u = unit_of(s.key, items)
        if u in blocked:
            continue
        labelled = s.labelled and s.source in data_sources and u in kept_units
        roles[s.key] = "labelled" if labelled else "unlabelled"
    return roles


def link_scenario(roles: dict[str, str], samples: dict[str, Sample], out: Path, sources: list[str]) -> list[Path]:
    """Symlink each scenario image (and kept mask) as OUT/<source>/{images,masks,unlabelled}/; returns the dataset
    folders in ``sources`` order. Real files are never copied."""
    if out.exists():
        shutil.rmtree(out)  # our own folder of links, rebuilt whole
    for key, role in sorted(roles.items()):
        s = samples[key]
        img = Path(s.image_path)
        sub = "images" if role == "labelled" else "unlabelled"
        links = [(out / s.source / sub / f"{s.image_id}{img.suffix}", img)]
        if role == "labelled":
            links.append((out / s.source / "masks" / f"{s.image_id}{Path(s.mask_path).suffix}", Path(s.mask_path)))
        for dst, src in links:
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.symlink_to(src.resolve())
    return [out / src for src in sources if (out / src).is_dir()]


# -- scoring -----------------------------------------------------------------------------------------------------
def score_test(run: Path, ckpt: Path, items: list, out: Path, resume: bool) -> list[dict]:
    """Per-image Dice/IoU/HD95 of one fold model on the test items (raw output at 0.5, original size) ->
    OUT/oof.csv (score_fold's file, here of the test images); reused while newer than the checkpoint."""
    from toothseg.run.folder import open_run
    from toothseg.run.family import read_oof
    from toothseg.train.oof import score_fold

    csv_path = out / "oof.csv"
    if resume and csv_path.is_file() and csv_path.stat().st_mtime >= ckpt.stat().st_mtime:
        return read_oof(csv_path)
    score_fold(open_run(run).load_config(), ckpt, items, out)
    shutil.rmtree(out / "oof", ignore_errors=True)  # the probability maps are not needed, and large
    return read_oof(csv_path)  # as stored, so a resumed run reports the very same numbers


def paired_difference(arm: dict[str, list[dict]], ref: dict[str, list[dict]], metric: str, n_boot: int = 10000,
                      seed: int = 0) -> dict:
    """``arm`` minus ``ref`` on ``metric``, paired by fold and image ({fold: [per-image rows]} each).

    The per-image difference is averaged over the folds both have; its mean gets a percentile bootstrap 95 % CI
    over test images (fixed seed); ``per_fold`` holds each fold's mean difference (the fold-to-fold spread).
    """
    folds = sorted(set(arm) & set(ref), key=int)
    if not folds:
        raise ValueError("no fold scored in both arms")
    a = [{r["key"]: r[metric] for r in arm[k]} for k in folds]
    b = [{r["key"]: r[metric] for r in ref[k]} for k in folds]
    keys = sorted(set.intersection(*[set(x) & set(y) for x, y in zip(a, b)]))
    if not keys:
        raise ValueError("no test image scored in both arms")
    d = np.array([[x[i] - y[i] for i in keys] for x, y in zip(a, b)])  # folds x images
    per_image = d.mean(axis=0)
    idx = np.random.default_rng(seed).integers(0, len(keys), size=(n_boot, len(keys)))
    lo, hi = np.percentile(per_image[idx].mean(axis=1), [2.5, 97.5])
    return {"mean": float(per_image.mean()), "ci95": [float(lo), float(hi)],
            "per_fold": {k: float(v) for k, v in zip(folds, d.mean(axis=1))}, "n_images": len(keys),
            "n_boot": n_boot, "seed": seed}


def arm_means(folds: dict[str, dict]) -> dict[str, float]:
    """Mean of each metric over every (fold, image) score, i.e. the mean of the fold means."""
    return {m: float(np.mean([r[m] for f in folds.values() for r in f["scores"]])) for m in METRICS}


# -- machine -----------------------------------------------------------------------------------------------------
def machine() -> dict:
    """CPU model and the flags that decide CPU training speed (lscpu), GPU, torch version, date."""
    import torch

    info: dict = {"cpu": None, "cpu_flags": [], "cores": os.cpu_count(), "torch": torch.__version__,
                  "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                  "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        out = ""
    for line in out.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Model name":
            info["cpu"] = value.strip()
        elif key.strip() == "Flags":
            info["cpu_flags"] = sorted(f for f in value.split() if f in ("avx2", "avx512_bf16") or
                                       f.startswith("amx"))
    return info


# -- report ------------------------------------------------------------------------------------------------------
def _ci(p: dict, nd: int) -> str:
    return f"{p['mean']:+.{nd}f} [{p['ci95'][0]:+.{nd}f}, {p['ci95'][1]:+.{nd}f}]"


def arm_label(arm: str) -> str:
    return "teacher (labelled only)" if arm == TEACHER else arm


def table(res: dict, title: str = "# Label efficiency on a held-out test split") -> str:
    s, ts, m = res["settings"], res["test_split"], res["machine"]
    ref = s["reference"]
    lines = [
        title, "",
        f"Labelled data {', '.join(Path(d).name for d in s['data'])}; unlabelled "
        f"{', '.join(Path(d).name for d in s['unlabelled']) or 'none'} plus the hidden labelled images. Test split: "
        f"{ts['n_images']} images ({s['test_share']:.0%} of the labelled ones, whole duplicate groups, seed "
        f"{s['seed']}), carved out before training; scored at threshold {THRESHOLD}, no TTA, no post-processing, "
        f"original size. Preset `{s['preset']}`{' with ' + ' '.join(s['set']) if s['set'] else ''}; folds "
        f"{', '.join(map(str, s['folds']))}; per fold model: teacher {s['teacher_time']}, then every other arm "
        f"starts from it with {s['extra_time']} more.",
        "",
        f"Δ = arm minus `{ref}`, per test image averaged over folds; [95 % bootstrap CI over test images]; per fold: "
        "each fold's mean ΔDice. HD95 in pixels: lower is better. Steps and minutes per fold model (the teacher's "
        "own, the others' extra).",
        "",
        f"Machine: {m['cpu']} ({m['cores']} cores; {' '.join(m['cpu_flags']) or 'no avx2/avx512_bf16/amx'}), GPU "
        f"{m['gpu'] or 'none'}, torch {m['torch']}, {m['date']}.",
        "",
        "| labels | arm | Dice | IoU | HD95 | ΔDice | ΔDice per fold | ΔIoU | ΔHD95 | steps | train min |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for fkey in sorted(res["fractions"], key=float):
        fr = res["fractions"][fkey]
        for arm, a in fr["arms"].items():
            mean = a["mean"]
            vs = fr["vs_reference"].get(arm)
            delta = [_ci(vs["dice"], 4), " ".join(f"{v:+.4f}" for v in vs["dice"]["per_fold"].values()),
                     _ci(vs["iou"], 4), _ci(vs["hd95"], 2)] if vs else ["ref"] * 4 if arm == ref else ["-"] * 4
            steps = np.mean([f["steps"] for f in a["folds"].values()])
            minutes = np.mean([f["train_minutes"] for f in a["folds"].values()])
            lines.append(f"| {float(fkey):.0%} ({fr['n_labelled']}) | {arm_label(arm)} | {mean['dice']:.4f} | "
                         f"{mean['iou']:.4f} | {mean['hd95']:.2f} | {' | '.join(delta)} | {steps:.0f} | "
                         f"{minutes:.1f} |")
    return "\n".join(lines) + "\n"


def plot(res: dict, path: Path) -> None:
    """Test Dice against label fraction, one line per arm; bars: the spread (SD) of the fold means."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fracs = sorted(res["fractions"], key=float)
    arms = list(dict.fromkeys(a for f in fracs for a in res["fractions"][f]["arms"]))
    fig, ax = plt.subplots(figsize=(6.5, 4.3))
    for arm in arms:
        ys, es = [], []  # NaN where a fraction lacks the arm: the line breaks instead of bridging the gap
        for f in fracs:
            a = res["fractions"][f]["arms"].get(arm)
            fold_means = [np.mean([r["dice"] for r in fd["scores"]]) for fd in a["folds"].values()] if a else []
            ys.append(a["mean"]["dice"] if a else np.nan)
            es.append(float(np.std(fold_means)) if a else np.nan)
        ax.errorbar([float(f) for f in fracs], ys, yerr=es, marker="o", capsize=3, label=arm_label(arm))

    def steps(fr: dict) -> str:  # the compute each fraction got (teacher + control): machines differ between runs
        out = []
        for arm in (TEACHER, fr["reference"]):
            a = fr["arms"].get(arm)
            out.append(f"{np.mean([f['steps'] for f in a['folds'].values()]):.0f}" if a else "?")
        return "+".join(out)

    ax.set_xscale("log")
    ax.set_xticks([float(f) for f in fracs], [f"{float(f):.0%}\n{steps(res['fractions'][f])} steps" for f in fracs])
    ax.minorticks_off()
    ax.set_xlabel("labelled images kept (teacher + control steps per fold)")
    ax.set_ylabel("test Dice (mean over folds)")
    ax.set_title(f"Label efficiency, {res['test_split']['n_images']} held-out test images")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(res: dict, out: Path, text: str | None = None) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table(res) if text is None else text)
    plot(res, out.with_suffix(".png"))


def combine(paths: list[Path]) -> tuple[str, dict]:
    """One report from the results.json of several runs (each with its own fractions, settings and machine) that
    scored the same test split: (markdown, the merged results the plot is drawn from)."""
    runs = []
    for path in paths:
        if not path.is_file():
            raise SystemExit(f"{path}: not found; give the results.json (or a copy) of a finished run")
        runs.append((path, read_json(path)))
    first_path, first = runs[0]
    merged: dict = {"fractions": {}, "test_split": first["test_split"]}
    origin: dict[str, Path] = {}
    for path, res in runs:
        if res["test_split"]["keys"] != first["test_split"]["keys"]:
            raise SystemExit(f"{path}: scored another test split than {first_path}; only runs on the same split "
                             "can share a plot")
        for fkey, fr in res["fractions"].items():
            if fkey in origin:
                raise SystemExit(f"{path}: the {float(fkey):.0%} fraction is also in {origin[fkey]}; give each "
                                 "fraction once")
            origin[fkey] = path
            merged["fractions"][fkey] = fr
    runs.sort(key=lambda r: min(map(float, r[1]["fractions"])))
    sections = [table(res, "## " + ", ".join(f"{float(f):.0%}" for f in sorted(res["fractions"], key=float)) +
                      f" labels (`{path.name}`)") for path, res in runs]
    head = ["# Label efficiency on a held-out test split", "",
            f"{len(runs)} benchmark runs on the same {first['test_split']['n_images']}-image test split, one section "
            "each with its own settings and machine. Arms compare within a fraction (one teacher, one machine, one "
            "budget); across fractions the machines, and so the steps a budget buys, may differ.", ""]
    return "\n".join(head) + "\n" + "\n".join(sections), merged


# -- the benchmark -----------------------------------------------------------------------------------------------
def _prepared(run: Path) -> bool:
    return (run / "curation.json").is_file()  # prepare writes it last


def carve_test_split(work: Path, args: argparse.Namespace) -> tuple[dict, list[Sample], dict, list[str]]:
    """Curate --data and --unlabelled together (so unlabelled copies of test images are found and left out too) and
    carve the test split, or reuse both; returns (split, samples, curation items, the other eligible keys in order)."""
    import toothseg.api as ts

    cur = work / "curate"
    if not (args.resume and _prepared(cur)):  # only its groups are used: the fewest folds prepare accepts
        ts.prepare([*args.data, *args.unlabelled], out=cur, preset=args.preset, overrides=args.set, n_folds=2,
                   overwrite=True)
    samples = read_index(cur / "samples.csv")
    items = read_json(cur / "curation.json")["items"]
    data_sources = {Path(d).name for d in args.data}
    eligible = [s.key for s in samples if s.labelled and s.source in data_sources
                and items.get(s.key, {}).get("use", "train") == "train"]
    test, rest = carve(eligible, items, args.test_share, args.seed)
    blocked = {unit_of(k, items) for k in test}
    split = {"seed": args.seed, "share": args.test_share, "n_images": len(test), "keys": test,
             "left_out": sorted(s.key for s in samples if unit_of(s.key, items) in blocked)}
    path = work / "test_split.json"
    if path.is_file() and read_json(path)["keys"] != test:
        raise SystemExit(f"{path}: differs from the split the curation gives now; start a new --work")
    if not path.is_file():
        write_json(path, split)
    return split, samples, items, rest


def scenario(work: Path, fkey: str, samples: list[Sample], items: dict, test: list[str], rest: list[str],
             args: argparse.Namespace) -> dict:
    """Links and `prepare` of one label fraction (reused with --resume when finished)."""
    import toothseg.api as ts

    root = work / f"f{fkey}"
    kept = kept_labels(rest, items, float(fkey))
    data_sources = [Path(d).name for d in args.data]
    roles = scenario_roles(samples, items, test, kept, set(data_sources))
    info = {"fraction": float(fkey), "n_labelled": sum(r == "labelled" for r in roles.values()),
            "n_unlabelled": sum(r == "unlabelled" for r in roles.values()),
            "n_hidden": len(rest) - len(kept), "labelled": sorted(k for k, r in roles.items() if r == "labelled")}
    if args.resume and _prepared(root / "run") and (root / "scenario.json").is_file():
        if read_json(root / "scenario.json")["labelled"] != info["labelled"]:
            raise SystemExit(f"{root}/scenario.json: other labelled images than now; start a new --work")
        return info
    by_key = {s.key: s for s in samples}
    dirs = link_scenario(roles, by_key, root / "data",
                         data_sources + [Path(d).name for d in args.unlabelled])
    ts.prepare(dirs, out=root / "run", preset=args.preset, overrides=args.set, overwrite=True)
    write_json(root / "scenario.json", info)
    return info


def run_fraction(work: Path, fkey: str, info: dict, test_items: list, args: argparse.Namespace) -> dict:
    """Teacher and schedules on every fold, then every fold model on the test split."""
    from toothseg.pseudo.schedules import retrain

    root = work / f"f{fkey}"
    run = root / "run"
    timing_path = root / "timing.json"
    timing = read_json(timing_path) if timing_path.is_file() else {}
    arms: dict[str, dict] = {}
    teacher = None
    for arm in [TEACHER, *args.schedules]:
        t0 = time.time()
        if arm == TEACHER:
            r = retrain(run, schedule="labelled", folds=args.folds, max_time=args.teacher_time)
            teacher = r["tag"]
        else:
            r = retrain(run, schedule=arm, folds=args.folds, teacher=teacher, max_time=args.extra_time)
        timing[arm] = timing.get(arm, 0.0) + time.time() - t0  # includes pseudo-labelling and OOF scoring
        write_json(timing_path, timing)
        tag_dir = run / "train" / r["tag"]
        folds = {}
        for k in args.folds:
            scores = score_test(run, tag_dir / f"fold{k}" / "best.ckpt", test_items,
                                root / "test_scores" / arm / f"fold{k}", args.resume)
            folds[str(k)] = {**train_effort(tag_dir, k), "scores": scores}
        arms[arm] = {"tag": r["tag"], "budget": args.teacher_time if arm == TEACHER else f"+{args.extra_time}",
                     "wall_minutes": round(timing[arm] / 60, 2), "cv": r["rounds"][-1], "folds": folds,
                     "mean": arm_means(folds)}
        print(f"{fkey} {arm}: test Dice {arms[arm]['mean']['dice']:.4f} IoU {arms[arm]['mean']['iou']:.4f} "
              f"HD95 {arms[arm]['mean']['hd95']:.2f}", flush=True)
    ref = {k: f["scores"] for k, f in arms[args.reference]["folds"].items()}
    vs = {arm: {m: paired_difference({k: f["scores"] for k, f in a["folds"].items()}, ref, m, args.bootstrap,
                                     args.seed) for m in METRICS}
          for arm, a in arms.items() if arm != args.reference}
    return {**{k: v for k, v in info.items() if k != "labelled"}, "folds": args.folds, "reference": args.reference,
            "arms": arms, "vs_reference": vs}


def _hhmmss(value: str) -> str:
    try:
        parse_hhmmss(value)
    except ToothsegError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def parse(argv: list[str] | None) -> argparse.Namespace:
    from toothseg.pseudo.schedules import SCHEDULES

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", nargs="+", default=[], help="labelled dataset folder(s); the test split comes from them")
    ap.add_argument("--unlabelled", nargs="*", default=[], help="more dataset folder(s), used as unlabelled only")
    ap.add_argument("--work", type=Path, help="work folder (real data: keep it under /tmp)")
    ap.add_argument("--fractions", default="0.1,0.25,1.0", help="shares of the non-test labelled images kept")
    ap.add_argument("--folds", default="0,1,2", help="folds trained per arm (paired by fold)")
    ap.add_argument("--teacher-time", type=_hhmmss, default="00:10:00", help="labelled-only teacher, per fold")
    ap.add_argument("--extra-time", type=_hhmmss, default="00:05:00", help="every other arm, per fold, on top")
    ap.add_argument("--schedules", default="labelled-continue,consistency,pretrain-mix",
                    help="schedules trained from the teacher (toothseg.pseudo.schedules)")
    ap.add_argument("--reference", default="labelled-continue", help="arm the others are compared with")
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--set", nargs="+", action="extend", default=[], metavar="SECTION.KEY=VALUE",
                    help="config overrides for every run")
    ap.add_argument("--test-share", type=float, default=0.2, help="share of the labelled images held out")
    ap.add_argument("--seed", type=int, default=0, help="test split, label fractions and bootstrap")
    ap.add_argument("--bootstrap", type=int, default=10000, help="bootstrap resamples of the test images")
    ap.add_argument("--out", type=Path, help="markdown table (plot: same name, .png); default WORK/"
                    "label_efficiency.md")
    ap.add_argument("--resume", action="store_true", help="continue WORK: finished pieces are reused")
    ap.add_argument("--table-only", action="store_true", help="re-make the table and plot from WORK/results.json")
    ap.add_argument("--combine", nargs="+", type=Path, metavar="RESULTS", help="one table and plot (--out) from "
                    "the results.json of several runs on the same test split, e.g. one per label fraction")
    a = ap.parse_args(argv)
    if a.combine:
        if not a.out:
            ap.error("--combine: give --out, the markdown file to write (the plot goes next to it)")
        return a
    if not a.work:
        ap.error("--work: give the work folder")
    a.out = a.out or a.work / "label_efficiency.md"
    if a.table_only:
        return a
    try:
        a.fractions = sorted({float(x) for x in a.fractions.split(",")})
        a.folds = sorted(set(parse_folds(a.folds) or []))
    except (ValueError, ToothsegError):
        ap.error("--fractions and --folds are comma-separated numbers, e.g. 0.1,0.25,1.0 and 0,1,2")
    if not a.data:
        ap.error("--data: give the labelled dataset folder(s)")
    if not all(0 < f <= 1 for f in a.fractions):
        ap.error(f"--fractions {a.fractions}: each must be in (0, 1]")
    if not 0 < a.test_share < 1:
        ap.error(f"--test-share {a.test_share}: must be in (0, 1)")
    a.schedules = [s for s in a.schedules.split(",") if s]
    if "labelled" in a.schedules:
        ap.error("--schedules: 'labelled' is the teacher itself; its compute-matched control is labelled-continue")
    unknown = [s for s in a.schedules if s not in SCHEDULES]
    if unknown:
        ap.error(f"--schedules: '{unknown[0]}' is not a schedule of this toothseg ({', '.join(SCHEDULES)})")
    if a.reference not in [TEACHER, *a.schedules]:
        ap.error(f"--reference {a.reference}: must be '{TEACHER}' or one of --schedules ({', '.join(a.schedules)})")
    names = [Path(d).name for d in [*a.data, *a.unlabelled]]
    if len(set(names)) < len(names):
        ap.error("--data/--unlabelled: folder names are the sources and must differ")
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.combine:
        text, merged = combine(args.combine)
        write_report(merged, args.out, text)
        print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
        return 0
    work = args.work
    results_path = work / "results.json"
    if args.table_only:
        if not results_path.is_file():
            raise SystemExit(f"{results_path}: not found; run the benchmark first")
        write_report(read_json(results_path), args.out)
        print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
        return 0
    fresh_work(work, args.resume)
    settings = {"data": [str(Path(d).resolve()) for d in args.data],
                "unlabelled": [str(Path(d).resolve()) for d in args.unlabelled], "preset": args.preset,
                "set": args.set, "teacher_time": args.teacher_time, "extra_time": args.extra_time,
                "test_share": args.test_share, "seed": args.seed}
    settings_path = work / "settings.json"
    if settings_path.is_file():
        old = read_json(settings_path)
        changed = [k for k in RESUMED_SETTINGS if old.get(k) != settings[k]]
        if changed:
            raise SystemExit(f"{settings_path}: --{changed[0].replace('_', '-')} was {old.get(changed[0])!r}, now "
                             f"{settings[changed[0]]!r}; resume with the same settings or choose a new --work")
    work.mkdir(parents=True, exist_ok=True)
    write_json(settings_path, settings)
    setup_logging(None)
    from toothseg.train.dataset import TrainItem

    try:
        split, samples, items, rest = carve_test_split(work, args)
        by_key = {s.key: s for s in samples}
        test_items = [TrainItem(k, by_key[k].image_path, by_key[k].mask_path) for k in split["keys"]]
        res = read_json(results_path) if results_path.is_file() else {"fractions": {}}
        for f in args.fractions:
            fkey = f"{f:g}"
            info = scenario(work, fkey, samples, items, split["keys"], rest, args)
            res["fractions"][fkey] = run_fraction(work, fkey, info, test_items, args)
            res.update({"settings": {**settings, "folds": args.folds, "schedules": args.schedules,
                                     "reference": args.reference, "threshold": THRESHOLD},
                        "test_split": {k: v for k, v in split.items() if k != "left_out"}, "machine": machine()})
            write_json(results_path, res)
            write_report(res, args.out)
    except ToothsegError as exc:
        raise SystemExit(str(exc)) from None
    print(table(res))
    print(f"wrote {results_path}, {args.out} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
