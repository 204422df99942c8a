"""Does labelling the 50 X-rays `toothseg suggest` picks teach the model more than 50 random ones?

    python bench/active_learning.py --data /work/shared/data/tufts --work /tmp/al --preset cpu \
        --max-time 00:30:00 --seeds 0,1,2 --threads 2 --tag tufts-cpu

1. `toothseg prepare DATA` once (WORK/full): duplicate groups and group-aware folds.
2. A held-out TEST split is carved first, whole duplicate groups at a time (``--test-fraction``, split seed fixed);
   it is never used for any choice, only scored at the end. Unlabelled copies of test images are left out too.
3. Per seed: ``--label-fraction`` of the remaining labelled images (whole groups) keep their masks (run ``base``);
   the rest form the pool, with masks hidden. ``base`` trains on its labels (``--train-folds`` of its folds).
4. ``toothseg suggest base --n N --strategy S`` picks N pool images (``--strategy``: spread, the default,
   typical or uncertain); the control picks N at random from the same candidates (seeded). Their real masks stand
   in for the human. Another ``--strategy`` in the same WORK (``--resume``) adds its own picks and suggest arm and
   shares the base, random and continue arms, so strategies are compared on the same random control.
5. Each arm (``suggest``, ``random``) is the base run plus its N picks in the training set of every fold: same
   folds, same validation images, same config, seed and budget. ``--retrain scratch`` (the default) trains each
   arm from the same initial weights; ``--retrain warm`` fine-tunes each arm's fold k from the base's fold k, as a
   user would after labelling (`toothseg train --init-from`), so the arms share their first stretch of training and
   differ less by chance. ``--continue-arm`` adds a third warm arm with no new labels (the base fine-tuned as long
   on its own labels): the arms minus it is what the N labels add beyond the extra steps.
6. `toothseg predict` + `toothseg evaluate` score base and both arms on TEST; the comparison is paired per image
   and per seed (mean Dice difference, bootstrap CI, Wilcoxon signed-rank test). It is also given over the test
   images with teeth alone, with the edentulous ones (empty masks) counted apart: on those Dice is 0 or 1, so a
   handful of them decide a 149-image mean by whole points either way.
7. ``--pool-eval N`` (200 by default) also scores the arms on a seeded sample of N pool images with their real
   masks, over those that neither arm picked (nor a copy of a pick): a second held-out set, disjoint from TEST and
   from every label, holding several times as many edentulous X-rays. It is where a strategy may be chosen, so
   that TEST stays untouched by the choice.
8. ``--base-postprocess`` also scores both arms through the base bundle's threshold and post-processing. Each
   arm's bundle re-tunes them on its fold's few validation images, and a larger minimum blob size alone can wipe
   out the prediction of an X-ray with few teeth; with both fixed, the arms differ by their weights alone.

Writes bench/active_learning[-TAG].md and .json. Real data never leaves WORK (put it under /tmp); WORK must be new
unless ``--resume`` (which continues every step where it stopped, including interrupted training).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import random
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from toothseg.data.layout import read_index  # noqa: E402
from toothseg.folds_arg import parse_folds  # noqa: E402
from workdir import fresh_work  # noqa: E402
from toothseg.run.folder import read_json, write_json  # noqa: E402
from toothseg.suggest.strategy import DEFAULT, STRATEGIES  # noqa: E402

ARMS = ("suggest", "random")
UNSUFFIXED = "typical"  # its picks and arm carry no strategy suffix in WORK (it was the first strategy benchmarked)


# ------------------------------------------------------------------------------------------------ running verbs
def toothseg(*args: str, log: Path) -> None:
    """Run one `toothseg` verb of this checkout as a subprocess (its own memory and threads), logging to ``log``."""
    cmd = [sys.executable, "-c", "from toothseg.cli import main; main()", *map(str, args)]
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with log.open("a") as f:
        f.write(f"$ toothseg {' '.join(map(str, args))}\n")
        f.flush()
        rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    print(f"  toothseg {args[0]} {args[1] if len(args) > 1 else ''} ({time.time() - t0:.0f} s, rc {rc})", flush=True)
    if rc != 0:
        raise SystemExit(f"toothseg {args[0]} failed (exit {rc}); see {log}")


# ------------------------------------------------------------------------------------------------ splitting
def groups_of(keys: list[str], items: dict) -> dict[str, list[str]]:
    """Keys by duplicate group (an ungrouped key is its own group)."""
    out: dict[str, list[str]] = defaultdict(list)
    for k in keys:
        g = items.get(k, {}).get("group")
        out[f"g{g}" if g is not None else f"k{k}"].append(k)
    return out


def take_groups(keys: list[str], items: dict, fraction: float, seed: int) -> set[str]:
    """About ``fraction`` of ``keys``, whole duplicate groups at a time, in a seeded random order."""
    groups = groups_of(keys, items)
    order = sorted(groups)
    random.Random(seed).shuffle(order)
    target = max(1, round(fraction * len(keys)))
    chosen: set[str] = set()
    for g in order:
        if len(chosen) >= target:
            break
        chosen.update(groups[g])
    return chosen


def link_labelled(samples: dict, keys: list[str], folder: Path) -> None:
    """``folder``/images and /masks as symlinks to the real files of ``keys`` (the real data stays where it is)."""
    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for k in keys:
        s = samples[k]
        for sub, src in (("images", s.image_path), ("masks", s.mask_path)):
            link = folder / sub / f"{s.image_id}{Path(src).suffix}"
            if not link.exists():
                link.symlink_to(Path(src).resolve())


def carve_test(full: Path, work: Path, fraction: float, seed: int) -> dict:
    """The held-out test split (labelled keys) and everything that shares a duplicate group with it."""
    path = work / "split.json"
    if path.is_file():
        return read_json(path)
    items = read_json(full / "curation.json")["items"]
    samples = read_index(full / "samples.csv")
    usable = [s.key for s in samples if s.labelled and items.get(s.key, {}).get("use", "train") == "train"]
    test = take_groups(usable, items, fraction, seed)
    test_groups = {items[k].get("group") for k in test if items.get(k, {}).get("group") is not None}
    tainted = sorted(s.key for s in samples if s.key not in test and items.get(s.key, {}).get("group") in test_groups
                     and items.get(s.key, {}).get("group") is not None)
    link_labelled({s.key: s for s in samples}, sorted(test), work / "test")
    split = {"test": sorted(test), "excluded_copies_of_test": tainted, "seed": seed, "fraction": fraction}
    write_json(path, split)
    return split


def heldout_pool(full: Path, work: Path, pool: set[str], n: int, seed: int) -> dict[str, str]:
    """A seeded sample of ``n`` pool images, linked with their real masks into WORK/pool_heldout, as a second
    held-out set: no arm trains on them unless it picks them (those are left out of each comparison). Returns
    {key: image_id}."""
    path = work / "pool_heldout.json"
    if path.is_file():
        return read_json(path)["images"]
    by_key = {s.key: s for s in read_index(full / "samples.csv")}
    keys = sorted(random.Random(2000 + seed).sample(sorted(pool), min(n, len(pool))))
    link_labelled(by_key, keys, work / "pool_heldout")
    images = {k: by_key[k].image_id for k in keys}
    write_json(path, {"seed": 2000 + seed, "images": images})
    return images


def unseen(images: dict[str, str], picked: set[str], items: dict) -> set[str]:
    """Image ids of ``images`` that neither a pick nor a copy of one (same duplicate group) put into training."""
    groups = {items.get(k, {}).get("group") for k in picked} - {None}
    return {iid for k, iid in images.items() if k not in picked and items.get(k, {}).get("group") not in groups}


def write_run(full: Path, out: Path, labelled: set[str], extra_train: set[str], unlabelled: set[str]) -> None:
    """A run folder from WORK/full: ``labelled`` keep their masks and folds (restricted to them), ``extra_train``
    join every fold's training set with their real masks, ``unlabelled`` are listed without masks."""
    out.mkdir(parents=True, exist_ok=True)
    samples = read_index(full / "samples.csv")
    with (out / "samples.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["key", "source", "image_id", "image_path", "mask_path"])
        for s in samples:
            if s.key in labelled or s.key in extra_train:
                w.writerow([s.key, s.source, s.image_id, s.image_path, s.mask_path])
            elif s.key in unlabelled:
                w.writerow([s.key, s.source, s.image_id, s.image_path, ""])
    folds = read_json(full / "folds.json")
    extra = sorted(extra_train)
    write_json(out / "folds.json", {k: {"train": [x for x in v["train"] if x in labelled] + extra,
                                        "val": [x for x in v["val"] if x in labelled]} for k, v in folds.items()})
    cur = read_json(full / "curation.json")
    keep = labelled | extra_train | unlabelled
    items = {}
    for k, it in cur["items"].items():
        if k not in keep:
            continue
        use = str(it.get("use", "train"))
        if use.startswith("label-from:") and use.split(":", 1)[1] not in labelled | extra_train:
            it = {**it, "use": "train", "reason": "its labelled copy is hidden in this scenario"}
        items[k] = it
    cur["items"] = items
    write_json(out / "curation.json", cur)
    shutil.copyfile(full / "config.yaml", out / "config.yaml")


# ------------------------------------------------------------------------------------------------ stages
def train_run(run: Path, folds: list[str], budget: list[str], log: Path, init_from: Path | None = None) -> None:
    """Train ``folds`` of ``run`` (finished ones kept, interrupted ones resumed); with ``init_from`` (the base run)
    each fold starts from that run's fold (`toothseg train --init-from`)."""
    for k in folds:
        fd_done = any((run / "train").glob(f"*/fold{k}/oof.csv")) if (run / "train").is_dir() else False
        if fd_done and (run / "bundle" / "bundle.json").is_file():
            continue
        resume = any((run / "train").glob(f"*/fold{k}/*.ckpt")) if (run / "train").is_dir() else False
        warm = ["--init-from", init_from] if init_from is not None else []
        toothseg("train", run, "--fold", k, *budget, *warm, *(["--resume"] if resume else []), log=log)


def score(run: Path, test: Path, threads: int, log: Path, name: str = "test", extra: Sequence[str] = ()) -> dict:
    """``run``'s bundle scored on the labelled folder ``test`` (cached in RUN/{name}_pred and RUN/{name}_eval);
    ``extra``: more `toothseg predict` options."""
    pred, ev = run / f"{name}_pred", run / f"{name}_eval"
    if not (ev / "summary.json").is_file():
        toothseg("predict", run / "bundle", test / "images", "--out", pred, "--no-overlay", "--threads", threads,
                 *extra, log=log)
        toothseg("evaluate", pred / "masks", test, "--out", ev, "--overwrite", log=log)
    with (ev / "metrics.csv").open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("status", "ok") == "ok"]
    dice = {r["image_id"]: float(r["dice"]) for r in rows}
    return {"mean_dice": float(np.mean(list(dice.values()))), "dice": dice,
            "empty_gt": sorted(r["image_id"] for r in rows if int(r["gt_px"]) == 0),
            "empty_pred": sorted(r["image_id"] for r in rows if int(r["pred_px"]) == 0)}


def base_postprocess(base: Path) -> list[str]:
    """`toothseg predict` options that apply the base bundle's OOF-tuned threshold and post-processing."""
    b = read_json(base / "bundle" / "bundle.json")
    pp = b["postprocess"]
    return ["--threshold", str(b["threshold"]), "--min-component", str(pp["min_component"]),
            "--fill-holes" if pp["fill_holes"] else "--no-fill-holes"]


def arm_dir(work: Path, arm: str, variant: str, retrain: str) -> Path:
    """The run folder of ``arm`` in a seed's WORK (the suggest arm carries its strategy's suffix)."""
    name = f"{arm}{variant}" if arm == "suggest" else arm
    return work / (name if retrain == "scratch" else f"{name}-{retrain}")


def paired(a: dict[str, float], b: dict[str, float], seed: int = 0) -> dict:
    """Per-image paired comparison of a vs b: mean difference, bootstrap 95% CI, Wilcoxon p, wins."""
    from scipy.stats import wilcoxon

    keys = sorted(set(a) & set(b))
    d = np.array([a[k] - b[k] for k in keys])
    rng = np.random.default_rng(seed)
    boots = [rng.choice(d, len(d)).mean() for _ in range(2000)] if len(d) else [np.nan]
    try:
        p = float(wilcoxon(d).pvalue) if len(d) and np.any(d != 0) else 1.0
    except ValueError:
        p = float("nan")
    return {"n": len(keys), "mean_diff": float(d.mean()) if len(d) else float("nan"),
            "ci95": [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))], "wilcoxon_p": p,
            "images_better": int((d > 0).sum()), "images_worse": int((d < 0).sum())}


def run_seed(args, full: Path, split: dict, seed: int, test_dir: Path, budget: list[str]) -> dict:
    work = args.work / f"seed{seed}"
    log = work / "bench.log"
    items = read_json(full / "curation.json")["items"]
    samples = read_index(full / "samples.csv")
    excluded = set(split["test"]) | set(split["excluded_copies_of_test"])
    rest = [s.key for s in samples if s.labelled and s.key not in excluded
            and items.get(s.key, {}).get("use", "train") == "train"]
    plan_path = work / "plan.json"
    if plan_path.is_file():
        plan = read_json(plan_path)
    else:
        labelled = take_groups(rest, items, args.label_fraction, seed)
        plan = {"labelled": sorted(labelled), "pool": sorted(set(rest) - labelled)}
        write_json(plan_path, plan)
    labelled, pool = set(plan["labelled"]), set(plan["pool"])
    print(f"seed {seed}: {len(labelled)} labelled, {len(pool)} in the pool, {len(split['test'])} test", flush=True)

    base = work / "base"
    if not (base / "samples.csv").is_file():
        write_run(full, base, labelled, set(), pool)
    train_run(base, args.train_folds, budget, log)

    # a second strategy in the same WORK gets its own picks and suggest arm; base, random and continue are shared
    variant = "" if args.strategy == UNSUFFIXED else f"-{args.strategy}"
    picks_path = work / f"picks{variant}.json"
    if picks_path.is_file():
        picks = read_json(picks_path)
        made = picks.get("strategy", "uncertain")  # a picks.json without a strategy holds k-center picks
        if made != args.strategy:
            raise SystemExit(f"{picks_path}: picked with --strategy {made}; resume with it or use a new --work")
    else:
        toothseg("suggest", base, "--n", args.n, "--strategy", args.strategy, "--threads", args.threads, log=log)
        wl = read_json(base / "suggest" / "worklist.json")
        candidates = sorted({it for it in pool if items.get(it, {}).get("use", "train") == "train"}
                            - set(wl["skipped"]))
        picks = {"suggest": [it["key"] for it in wl["items"]],
                 "random": sorted(random.Random(1000 + seed).sample(candidates, min(args.n, len(candidates)))),
                 "candidates": len(candidates), "strategy": args.strategy}
        write_json(picks_path, picks)
    for other in sorted(work.glob("picks*.json")):
        if other != picks_path and read_json(other).get("random") != picks["random"]:
            raise SystemExit(f"{other}: its random picks differ from {picks_path.name}'s, so one random arm cannot "
                             "serve both; use a new --work")

    out = {"seed": seed, "labelled": len(labelled), "pool": len(pool), "picked": {a: len(picks[a]) for a in ARMS},
           "overlap": len(set(picks["suggest"]) & set(picks["random"]))}
    scores = {"base": score(base, test_dir, args.threads, log)}
    arms = {arm: set(picks[arm]) for arm in ARMS}
    if args.continue_arm:  # the base fine-tuned on its own labels alone: what the steps give without new labels
        arms["continue"] = set()
    for arm, extra in arms.items():
        run = arm_dir(work, arm, variant, args.retrain)
        if not (run / "samples.csv").is_file():
            write_run(full, run, labelled, extra, pool - extra)
        train_run(run, args.train_folds, budget, log, init_from=base if args.retrain == "warm" else None)
        scores[arm] = score(run, test_dir, args.threads, log)
    out["cpu"] = cpu_name()
    out["test_dice"] = {k: v["mean_dice"] for k, v in scores.items()}
    out["per_image"] = {k: v["dice"] for k, v in scores.items()}  # lets later runs pool seeds per image
    v = versus_random(scores, None, seed)
    out["suggest_vs_random"], out["suggest_vs_random_teeth"] = v["all"], v["teeth"]
    out["empty_gt"] = sorted(v["empty"])
    out["empty_right"] = {k: len(v["empty"] & set(s["empty_pred"])) for k, s in scores.items()}
    out["suggest_vs_base"] = paired(scores["suggest"]["dice"], scores["base"]["dice"], seed)
    out["random_vs_base"] = paired(scores["random"]["dice"], scores["base"]["dice"], seed)
    if "continue" in scores:
        for arm in ARMS:
            out[f"{arm}_vs_continue"] = paired(scores[arm]["dice"], scores["continue"]["dice"], seed)
    # the held-out pool sample, less what either arm trained on: the same images for both
    held = unseen(heldout_pool(full, work, pool, args.pool_eval, seed), set(picks["suggest"]) | set(picks["random"]),
                  items) if args.pool_eval else None
    if held is not None:
        out["heldout"] = score_heldout_pool(args, work, held, arms, variant, seed, log)
    if args.base_postprocess:
        out["base_postprocess"] = score_base_postprocess(args, work, held, variant, test_dir, seed, log)
    write_json(work / f"result{variant}{'' if args.retrain == 'scratch' else '-' + args.retrain}.json", out)
    return out


def versus_random(scores: dict[str, dict], keep: set[str] | None, seed: int) -> dict:
    """suggest - random over the images in ``keep`` (all when None), and over those of them with teeth; plus each
    arm's Dice there and the edentulous images."""
    dice = {arm: {k: v for k, v in s["dice"].items() if keep is None or k in keep} for arm, s in scores.items()}
    empty = set(scores["random"]["empty_gt"]) & set(dice["random"])
    teeth = {arm: {k: v for k, v in dice[arm].items() if k not in empty} for arm in ARMS}
    return {"dice": dice, "empty": empty, "all": paired(dice["suggest"], dice["random"], seed),
            "teeth": paired(teeth["suggest"], teeth["random"], seed)}


def score_heldout_pool(args, work: Path, held: set[str], arms: dict, variant: str, seed: int, log: Path) -> dict:
    """The arms scored on the held-out pool sample, over the ``held`` images that neither arm's picks (nor their
    copies) put into training: the same images for both, and many more edentulous ones than the test split has."""
    scores = {arm: score(arm_dir(work, arm, variant, args.retrain), work / "pool_heldout", args.threads, log,
                         name="pool") for arm in arms}
    v = versus_random(scores, held, seed)
    dice, empty = v["dice"], v["empty"]
    out = {"n": len(held), "sampled": len(read_json(work / "pool_heldout.json")["images"]),
           "dice": {arm: float(np.mean(list(d.values()))) for arm, d in dice.items()},
           "per_image": dice, "empty_gt": sorted(empty),
           "empty_right": {arm: len(empty & set(s["empty_pred"])) for arm, s in scores.items()},
           "suggest_vs_random": v["all"], "suggest_vs_random_teeth": v["teeth"]}
    if "continue" in dice:
        for arm in ARMS:
            out[f"{arm}_vs_continue"] = paired(dice[arm], dice["continue"], seed)
    return out


def score_base_postprocess(args, work: Path, held: set[str] | None, variant: str, test_dir: Path, seed: int,
                           log: Path) -> dict:
    """suggest - random with both arms predicting through the base bundle's threshold and post-processing, on TEST
    (and the held-out pool sample): the arms then differ by their network weights alone, not also by a threshold and
    a minimum blob size re-tuned on each arm's few validation images."""
    flags = base_postprocess(work / "base")
    out: dict = {"predict_options": flags}
    splits = [("test", test_dir, None)] + ([("heldout", work / "pool_heldout", held)] if held is not None else [])
    for split, folder, keep in splits:
        scores = {arm: score(arm_dir(work, arm, variant, args.retrain), folder, args.threads, log,
                             name=f"{'pool' if split == 'heldout' else 'test'}_basepp", extra=flags) for arm in ARMS}
        v = versus_random(scores, keep, seed)
        out[split], out[f"{split}_teeth"] = v["all"], v["teeth"]
    return out


COMPARABLE = ("preset", "max_time", "set", "n", "strategy", "label_fraction", "test_fraction", "folds",
              "train_folds", "retrain")
DEFAULTS = {"retrain": "scratch"}  # settings older results were run with before they were options


def split_digest(test: list[str]) -> str:
    """A short fingerprint of the test split's keys, so results on another split are never pooled."""
    return hashlib.sha256("\n".join(sorted(test)).encode()).hexdigest()[:16]


def earlier_seeds(paths: list[Path], args: argparse.Namespace, test: list[str], seeds: list[int]) -> list[dict]:
    """The seed results of earlier runs of this benchmark (another session's JSON) with the same settings and test
    split, to pool with this run's seeds; each keeps the CPU it ran on. Results that predate the split's fingerprint
    are checked by its size."""
    out: list[dict] = []
    for path in paths:
        if not path.is_file():
            raise SystemExit(f"{path}: not found; give an active_learning*.json written by this script")
        old = read_json(path)
        a = old["args"]
        differ = [k for k in COMPARABLE if a.get(k, DEFAULTS.get(k)) != getattr(args, k)]
        if Path(a["data"]).name != args.data.name:
            differ.insert(0, "data")
        same_split = old["split"].get("test_digest", split_digest(test)) == split_digest(test) and \
            old["split"]["n_test"] == len(test)
        if differ or not same_split:
            what = differ[0] if differ else "test split"
            was = a.get(what, DEFAULTS.get(what)) if differ else old["split"].get("test_digest", old["split"]["n_test"])
            raise SystemExit(f"{path}: ran with another {what} ({was!r}); only "
                             "seeds of the same settings can be pooled")
        for r in old["seeds"]:
            if r["seed"] in seeds or r["seed"] in [x["seed"] for x in out]:
                raise SystemExit(f"{path}: seed {r['seed']} is given twice; drop it from --seeds or --previous")
            out.append({**r, "cpu": r.get("cpu", old.get("cpu", "unknown")), "from": path.name})
    return out


def over_seeds(diffs: list[float]) -> dict:
    """Mean of per-seed differences, t-based 95 % CI over seeds (the unit that repeats the whole experiment) and
    the number of seeds where it is positive."""
    from scipy.stats import t

    d = np.asarray(diffs, dtype=np.float64)
    n = len(d)
    half = float(t.ppf(0.975, n - 1) * d.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    mean = float(d.mean())
    return {"seeds": n, "mean_diff": mean, "ci95_over_seeds": [mean - half, mean + half],
            "seeds_better": int((d > 0).sum())}


def summarise(results: list[dict]) -> dict:
    """suggest - random over seeds, over all test images and over those with teeth (for the seeds that record
    which are edentulous); and per image, averaged over the seeds whose per-image scores are kept."""
    out = over_seeds([r["suggest_vs_random"]["mean_diff"] for r in results])
    known = [r for r in results if "suggest_vs_random_teeth" in r]
    if known:
        out["teeth"] = {**over_seeds([r["suggest_vs_random_teeth"]["mean_diff"] for r in known]),
                        "edentulous": len(known[0]["empty_gt"]),
                        "edentulous_right": {arm: sum(r["empty_right"][arm] for r in known)
                                             for arm in ("base", *ARMS)}}
    cont = [r for r in results if "random_vs_continue" in r]
    if cont:
        out["vs_continue"] = {arm: over_seeds([r[f"{arm}_vs_continue"]["mean_diff"] for r in cont]) for arm in ARMS}
    held = [r["heldout"] for r in results if "heldout" in r]
    if held:
        out["heldout"] = {**over_seeds([p["suggest_vs_random"]["mean_diff"] for p in held]),
                       "teeth": over_seeds([p["suggest_vs_random_teeth"]["mean_diff"] for p in held]),
                       "images": [p["n"] for p in held], "edentulous": [len(p["empty_gt"]) for p in held],
                       "edentulous_right": {arm: sum(p["empty_right"][arm] for p in held) for arm in ARMS}}
        cont = [p for p in held if "random_vs_continue" in p]
        if cont:
            out["heldout"]["vs_continue"] = {arm: over_seeds([p[f"{arm}_vs_continue"]["mean_diff"] for p in cont])
                                          for arm in ARMS}
    fixed = [r["base_postprocess"] for r in results if "base_postprocess" in r]
    if fixed:
        out["base_postprocess"] = {k: over_seeds([f[k]["mean_diff"] for f in fixed])
                                   for k in ("test", "test_teeth", "heldout", "heldout_teeth") if k in fixed[0]}
    kept = [r for r in results if "per_image" in r]
    if kept:
        keys = sorted(set.intersection(*(set(r["per_image"]["suggest"]) & set(r["per_image"]["random"])
                                         for r in kept)))
        avg = {arm: {k: float(np.mean([r["per_image"][arm][k] for r in kept])) for k in keys} for arm in ARMS}
        out["per_image"] = {"seeds": len(kept), **paired(avg["suggest"], avg["random"])}
        if all("empty_gt" in r for r in kept):
            empty = set().union(*(r["empty_gt"] for r in kept))
            out["per_image_teeth"] = {"seeds": len(kept), **paired(*({k: v for k, v in avg[arm].items()
                                                                       if k not in empty} for arm in ARMS))}
    return out


def table(res: dict) -> str:
    a = res["args"]
    lines = [f"# Active learning: `suggest --strategy {a['strategy']} --n {a['n']}` vs {a['n']} random picks", "",
             f"Data {a['data']}, {res['split']['n_test']} held-out test images (whole duplicate groups), "
             f"{a['label_fraction']:.0%} of the rest labelled; preset `{a['preset']}`, max time "
             f"{a['max_time'] or 'preset'} per model, folds {','.join(a['train_folds'])}, "
             f"extra settings {a['set'] or 'none'}; arms retrained "
             f"{'from the base model' if a.get('retrain') == 'warm' else 'from scratch'}. CPU: {res['cpu']}.", "",
             "| seed | labelled | pool | base Dice | + random Dice | + suggest Dice | suggest - random (95% CI) "
             "| images better / worse | Wilcoxon p | suggest - random, images with teeth (95% CI) "
             "| edentulous right: base / random / suggest | CPU |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["seeds"]:
        d, p = r["test_dice"], r["suggest_vs_random"]
        q, e = r.get("suggest_vs_random_teeth"), r.get("empty_right")
        teeth = f"{q['mean_diff']:+.4f} [{q['ci95'][0]:+.4f}, {q['ci95'][1]:+.4f}]" if q else "not recorded"
        right = f"{e['base']} / {e['random']} / {e['suggest']} of {len(r['empty_gt'])}" if e else "not recorded"
        lines.append(f"| {r['seed']} | {r['labelled']} | {r['pool']} | {d['base']:.4f} | {d['random']:.4f} | "
                     f"{d['suggest']:.4f} | {p['mean_diff']:+.4f} [{p['ci95'][0]:+.4f}, {p['ci95'][1]:+.4f}] | "
                     f"{p['images_better']} / {p['images_worse']} | {p['wilcoxon_p']:.3g} | {teeth} | {right} | "
                     f"{r.get('cpu', res['cpu'])}{' (' + r['from'] + ')' if r.get('from') else ''} |")
    s = res["summary"]
    lo, hi = s.get("ci95_over_seeds", [float("nan")] * 2)
    lines += ["", f"Over {s['seeds']} seed(s): suggest - random = {s['mean_diff']:+.4f} Dice on average, 95% CI over "
              f"seeds [{lo:+.4f}, {hi:+.4f}] (t); suggest better in {s['seeds_better']} of {s['seeds']} seed(s)."]
    if "teeth" in s:
        q = s["teeth"]
        er = q["edentulous_right"]
        lines.append(f"Images with teeth, over the {q['seeds']} seed(s) that record them: {q['mean_diff']:+.4f}, "
                     f"95% CI over seeds [{q['ci95_over_seeds'][0]:+.4f}, {q['ci95_over_seeds'][1]:+.4f}]; suggest "
                     f"better in {q['seeds_better']} of {q['seeds']}. Edentulous test images ({q['edentulous']}) "
                     f"predicted empty, summed over those seeds: base {er['base']}, random {er['random']}, "
                     f"suggest {er['suggest']} of {q['edentulous'] * q['seeds']}.")
    if "vs_continue" in s:
        c = {arm: s["vs_continue"][arm] for arm in ARMS}
        per_seed = ", ".join(f"{r['random_vs_continue']['mean_diff']:+.4f}" for r in res["seeds"]
                             if "random_vs_continue" in r)
        lines.append(f"What the {a['n']} labels add over the base fine-tuned as long on its own labels (`continue`), "
                     f"over {c['random']['seeds']} seed(s): random {c['random']['mean_diff']:+.4f} "
                     f"[{c['random']['ci95_over_seeds'][0]:+.4f}, {c['random']['ci95_over_seeds'][1]:+.4f}] "
                     f"(per seed {per_seed}), suggest {c['suggest']['mean_diff']:+.4f} "
                     f"[{c['suggest']['ci95_over_seeds'][0]:+.4f}, {c['suggest']['ci95_over_seeds'][1]:+.4f}].")
    for key, what in (("per_image", ""), ("per_image_teeth", " (images with teeth)")):
        if key in s:
            q = s[key]
            lines.append(f"Per image{what}, averaged over the {q['seeds']} seed(s) with per-image scores: "
                         f"{q['mean_diff']:+.4f} [{q['ci95'][0]:+.4f}, {q['ci95'][1]:+.4f}], {q['images_better']} "
                         f"better / {q['images_worse']} worse, Wilcoxon p {q['wilcoxon_p']:.3g}.")
    if "heldout" in s:
        lines += ["", pool_text(res)]
    if "base_postprocess" in s:
        b = s["base_postprocess"]
        what = {"test": "test", "test_teeth": "test, images with teeth", "heldout": "held-out pool sample",
                "heldout_teeth": "held-out pool sample, images with teeth"}
        lines += ["", "**With the base bundle's threshold and post-processing for both arms** (over "
                  f"{b['test']['seeds']} seed(s)): suggest - random " + "; ".join(
                      f"{what[k]} {v['mean_diff']:+.4f} [{v['ci95_over_seeds'][0]:+.4f}, "
                      f"{v['ci95_over_seeds'][1]:+.4f}], better in {v['seeds_better']}" for k, v in b.items()) + "."]
    lines += ["", f"Command: `python bench/active_learning.py {res['argv']}`", ""]
    return "\n".join(lines)


def pool_text(res: dict) -> str:
    """The held-out pool sample's figures: a second held-out set, from the same images the arms chose among."""
    s = res["summary"]["heldout"]
    rows = [r for r in res["seeds"] if "heldout" in r]
    per = ", ".join(f"seed {r['seed']} {d['mean_diff']:+.4f} [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}] on "
                    f"{r['heldout']['n']}" for r in rows for d in [r["heldout"]["suggest_vs_random"]])
    lo, hi = s["ci95_over_seeds"]
    q = s["teeth"]
    er = s["edentulous_right"]
    text = (f"**Held-out pool sample** ({rows[0]['heldout']['sampled']} pool images per seed, scored over those that "
            f"neither arm's picks nor their copies put into training): suggest - random {per}. Over {s['seeds']} "
            f"seed(s): {s['mean_diff']:+.4f} [{lo:+.4f}, {hi:+.4f}], suggest better in {s['seeds_better']}; images "
            f"with teeth {q['mean_diff']:+.4f} [{q['ci95_over_seeds'][0]:+.4f}, {q['ci95_over_seeds'][1]:+.4f}]; "
            f"edentulous predicted empty: random {er['random']}, suggest {er['suggest']} of {sum(s['edentulous'])}.")
    if "vs_continue" in s:
        c = s["vs_continue"]
        text += (f" Over `continue` ({c['random']['seeds']} seed(s)): random {c['random']['mean_diff']:+.4f} "
                 f"[{c['random']['ci95_over_seeds'][0]:+.4f}, {c['random']['ci95_over_seeds'][1]:+.4f}], suggest "
                 f"{c['suggest']['mean_diff']:+.4f} [{c['suggest']['ci95_over_seeds'][0]:+.4f}, "
                 f"{c['suggest']['ci95_over_seeds'][1]:+.4f}].")
    return text


def cpu_name() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="labelled dataset folder (e.g. .../tufts)")
    ap.add_argument("--work", type=Path, required=True, help="new work folder (outside the repository)")
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--max-time", default=None, help="wall-clock budget per model HH:MM:SS (default: the preset's)")
    ap.add_argument("--set", action="append", default=[], help="config override section.key=value (repeatable)")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1,2")
    ap.add_argument("--n", type=int, default=50, help="images picked per arm")
    ap.add_argument("--strategy", choices=STRATEGIES, default=DEFAULT, help="`toothseg suggest --strategy` of the "
                    "suggest arm")
    ap.add_argument("--label-fraction", type=float, default=0.10)
    ap.add_argument("--test-fraction", type=float, default=0.20)
    ap.add_argument("--folds", type=int, default=5, help="CV folds of the curation")
    ap.add_argument("--train-folds", default="0", help="folds trained per run: 0, 0,1 or all")
    ap.add_argument("--retrain", choices=("scratch", "warm"), default="scratch", help="arms train from the same "
                    "initial weights (scratch) or fine-tune the base model's folds (warm)")
    ap.add_argument("--continue-arm", action="store_true", help="with --retrain warm: also fine-tune the base on "
                    "its own labels alone for the same budget, to measure what the new labels add beyond the steps")
    ap.add_argument("--pool-eval", type=int, default=200, metavar="N", help="also score the arms on a seeded "
                    "sample of N pool images (less the picks of both arms and their copies): a second held-out set "
                    "(0: off)")
    ap.add_argument("--base-postprocess", action="store_true", help="also score both arms through the base "
                    "bundle's threshold and post-processing, so that they differ by their weights alone")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for training and inference")
    ap.add_argument("--resume", action="store_true", help="continue an interrupted bench in WORK")
    ap.add_argument("--tag", default="", help="suffix of the bench/ output files")
    ap.add_argument("--out-dir", type=Path, help="results .json/.md (default WORK; bench/ holds curated results)")
    ap.add_argument("--previous", type=Path, nargs="+", default=[], metavar="JSON", help="results of earlier runs "
                    "with the same settings (e.g. bench/active_learning-TAG.json): their seeds are pooled with these")
    args = ap.parse_args(argv)
    if args.continue_arm and args.retrain != "warm":
        ap.error("--continue-arm needs --retrain warm (from scratch the base run itself is that control)")
    if args.work.expanduser().resolve().is_relative_to(REPO.resolve()):
        raise SystemExit(f"{args.work}: the work folder holds real data links; put it outside the repository")
    args.work = fresh_work(args.work, args.resume)
    args.out_dir = args.out_dir or args.work
    args.train_folds = [str(k) for k in parse_folds(args.train_folds) or range(args.folds)]
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    sets = [x for s in args.set for x in ("--set", s)] + ["--set", f"train.threads={args.threads}"]
    budget = ["--preset", args.preset, *(["--max-time", args.max_time] if args.max_time else []), *sets]

    full = args.work / "full"
    log = args.work / "bench.log"
    if not (full / "folds.json").is_file():
        shutil.rmtree(full, ignore_errors=True)
        toothseg("prepare", args.data, "--out", full, "--preset", args.preset, "--folds", args.folds, *sets, log=log)
    split = carve_test(full, args.work, args.test_fraction, seed=12345)
    previous = earlier_seeds(args.previous, args, split["test"], seeds)
    results = previous + [run_seed(args, full, split, s, args.work / "test", budget) for s in seeds]
    res = {"args": {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "previous"},
                    "seeds": ",".join(str(r["seed"]) for r in results)},
           "argv": " ".join(sys.argv[1:] if argv is None else argv), "cpu": cpu_name(),
           "split": {"n_test": len(split["test"]), "test_digest": split_digest(split["test"]),
                     "excluded_copies": len(split["excluded_copies_of_test"])},
           "seeds": results, "summary": summarise(results)}
    stem = "active_learning" + (f"-{args.tag}" if args.tag else "")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_json(args.out_dir / f"{stem}.json", res)
    (args.out_dir / f"{stem}.md").write_text(table(res))
    print(table(res))
    return res


if __name__ == "__main__":
    main()
