"""The write-up's four-row pseudo-label ablation on any labelled dataset at a reduced label fraction.

    python bench/ssl_ablation.py --data /work/shared/data/tufts --unlabelled /work/shared/data/mlua_caries \
        --fraction 0.25 --work /tmp/ssl/l25 --preset cpu --max-time 00:30:00 --table bench/ssl_ablation_l25.md

1. `prepare` curates all data once (duplicate groups, group-aware folds) into WORK/full.
2. WORK/scenario is the same run with only FRACTION of the labelled images keeping their masks, chosen by
   duplicate group within each fold (so the folds stay the same, group-aware, validation sets); the other labelled
   images become unlabelled (their masks are kept aside only to measure pseudo-label quality), next to the
   unlabelled sources. Hidden images that are copies of a kept labelled image become "label-from" copies.
3. Rows: labelled only; + pseudo pretrain; + real/pseudo mix; pretrain then mix. The labelled-only models are the
   teacher. Every row gets the same per-model budget (``--max-time``; two-stage schedules split it with
   ``--pretrain-share``), and is validated on the same labelled validation images of the same folds.
4. Writes the markdown table (CV Dice, IoU, HD95) and the confidence-vs-true-Dice Spearman measurement.

Real data never leaves WORK (put it under /tmp); only the table and the JSON of figures go to bench/.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from toothseg.config import load_config
from toothseg.data.io import read_mask
from toothseg.data.layout import read_index
from toothseg.folds_arg import parse_folds
from toothseg.run.folder import open_run, read_json, setup_logging, write_json

sys.path.insert(0, str(Path(__file__).resolve().parent))
from label_hiding import group_units, take_units, train_effort  # noqa: E402
from workdir import fresh_work  # noqa: E402

ROWS = [("labelled", "Labelled only"), ("pretrain", "+ pseudo pretrain"), ("mix", "+ real/pseudo mix"),
        ("pretrain-mix", "pretrain, then mix")]


def keep_fraction(folds: dict, curation: dict, fraction: float, seed: int, full_val: int | None = None) -> set[str]:
    """Labelled keys that keep their masks: FRACTION of each fold's validation keys, whole duplicate groups at a time.

    ``full_val``: that fold's validation keys all keep their masks, so its model (trained on FRACTION of its training
    images) is scored on the same complete validation set as fully supervised systems, and no validation image enters
    the unlabelled pool.
    """
    rng = random.Random(seed)
    kept: set[str] = set()
    for k in sorted(folds, key=int):
        if full_val is not None and int(k) == full_val:
            kept.update(folds[k]["val"])
            continue
        units = group_units(folds[k]["val"], curation)
        order = sorted(units)
        rng.shuffle(order)
        kept.update(take_units(units, order, max(1, round(fraction * len(folds[k]["val"])))))
    return kept


def make_scenario(full: Path, out: Path, fraction: float, seed: int, overrides: dict,
                  full_val: int | None = None) -> dict:
    """Copy the prepared run with only the kept labels; returns {hidden key: real mask path}."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    folds = read_json(full / "folds.json")
    cur = read_json(full / "curation.json")
    items = cur["items"]
    kept = keep_fraction(folds, items, fraction, seed, full_val)
    samples = read_index(full / "samples.csv")
    hidden = {s.key: str(s.mask_path) for s in samples if s.labelled and s.key not in kept}
    # hidden images that are copies of a kept labelled image reuse its real label (as prepare would do)
    kept_by_group: dict = {}
    for key in sorted(kept):
        g = items.get(key, {}).get("group")
        if g is not None:
            kept_by_group.setdefault(g, key)
    for key in hidden:
        g = items.get(key, {}).get("group")
        use = items.get(key, {}).get("use", "train")
        if use == "train" and g is not None and g in kept_by_group:
            items[key] = {**items[key], "use": f"label-from:{kept_by_group[g]}", "reason": "copy of a kept label"}
    for key, it in items.items():  # copies of now-hidden images are ordinary unlabelled images
        use = str(it.get("use", ""))
        if use.startswith("label-from:") and use.split(":", 1)[1] in hidden:
            items[key] = {**it, "use": "train", "reason": "its labelled copy was hidden"}
    with (out / "samples.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["key", "source", "image_id", "image_path", "mask_path"])
        for s in samples:
            w.writerow([s.key, s.source, s.image_id, s.image_path, s.mask_path if s.key not in hidden and s.labelled
                        else ""])
    new_folds = {k: {"train": [x for x in v["train"] if x in kept], "val": [x for x in v["val"] if x in kept]}
                 for k, v in folds.items()}
    write_json(out / "folds.json", new_folds)
    cur["items"] = items
    cur["scenario"] = {"fraction": fraction, "seed": seed, "full_val": full_val, "kept": len(kept),
                       "hidden": len(hidden)}
    write_json(out / "curation.json", cur)
    cfg = load_config(full / "config.yaml")
    for dotted, value in overrides.items():
        sec, key = dotted.split(".", 1)
        setattr(getattr(cfg, sec), key, value)
    open_run(out).save_config(cfg)
    write_json(out / "hidden_truth.json", hidden)  # stays in WORK: real-data paths only
    return hidden


def pseudo_quality(run: Path, hidden: dict[str, str]) -> dict:
    """Spearman of each confidence score with the true Dice of the hard pseudo-label, on hidden-label images."""
    from toothseg.evaluate.metrics import dice
    from toothseg.pseudo.confidence import rank_quality

    scores: dict[str, dict[str, float]] = {}
    truth: dict[str, float] = {}
    with (run / "pseudo" / "scores.csv").open(newline="") as f:
        for r in csv.DictReader(f):
            if r["key"] not in hidden:
                continue
            src, iid = r["key"].split("/", 1)
            hard = read_mask(run / "pseudo" / "hard" / src / f"{iid}.png")
            truth[r["key"]] = dice(hard, read_mask(hidden[r["key"]]))
            scores[r["key"]] = {k: float(v) for k, v in r.items() if k not in ("key", "score", "selected")}
    rho = rank_quality(scores, truth)
    sel = {}
    with (run / "pseudo" / "scores.csv").open(newline="") as f:
        for r in csv.DictReader(f):
            if r["key"] in truth:
                sel.setdefault(r["selected"] == "1", []).append(truth[r["key"]])
    return {"spearman": rho, "n_images": len(truth), "true_dice_mean": float(np.mean(list(truth.values()))),
            "true_dice_selected": float(np.mean(sel.get(True, [np.nan]))),
            "true_dice_rejected": float(np.mean(sel.get(False, [np.nan])))}


def table(rows: list[dict], meta: dict) -> str:
    lines = [f"Tufts-style ablation: {meta['fraction']:.0%} of labels kept ({meta['n_labelled']} labelled, "
             f"{meta['n_unlabelled_pool']} unlabelled images pseudo-labelled), preset `{meta['preset']}` "
             f"{meta['scale']}, folds {meta['folds']}, {meta['max_time']} per model, pretrain share "
             f"{meta['pretrain_share']}, {meta['n_val']} validation images.", "",
             "| Labelled | Pseudo | Pseudo pretrain | CV Dice | IoU | HD95 (px) | pseudo images | steps | "
             "train minutes |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mix = "✓" if r["schedule"] in ("mix", "pretrain-mix") else "×"
        pre = "✓" if r["schedule"] in ("pretrain", "pretrain-mix") else "×"
        lines.append(f"| ✓ | {mix} | {pre} | {r['dice']:.4f} | {r['iou']:.4f} | {r['hd95']:.2f} | {r['n_pseudo']} | "
                     f"{r['steps']} | {r['train_minutes']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import toothseg.api as ts
    from toothseg.pseudo.schedules import retrain

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", nargs="+", required=True, help="labelled dataset folder(s)")
    ap.add_argument("--unlabelled", nargs="*", default=[], help="extra unlabelled dataset folder(s)")
    ap.add_argument("--fraction", type=float, default=0.25, help="share of labelled images that keep their masks")
    ap.add_argument("--work", type=Path, required=True, help="work folder (real data: keep it under /tmp)")
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--set", nargs="*", default=[], metavar="SECTION.KEY=VALUE", help="config overrides")
    ap.add_argument("--max-time", default="00:30:00", help="wall-clock budget per model (HH:MM:SS)")
    ap.add_argument("--pretrain-share", type=float, default=0.3, help="share of a two-stage schedule's budget "
                    "spent on pseudo pretraining (the total equals one model's)")
    ap.add_argument("--folds", default="all", help="folds to train, e.g. 0 or 0,1 (budget knob)")
    ap.add_argument("--rows", default=",".join(r for r, _ in ROWS), help="schedules to run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--full-val-fold", type=int, default=None, metavar="K",
                    help="fold K keeps ALL its validation labels (compare with fully supervised systems on the "
                    "same images; use with --folds K)")
    ap.add_argument("--table", type=Path, required=True, help="markdown table to write (e.g. bench/ssl_l25.md)")
    ap.add_argument("--reuse-prepare", action="store_true", help="reuse WORK/full and, for the same fraction and "
                    "seed, WORK/scenario with its finished rows (continue an interrupted ablation)")
    args = ap.parse_args(argv)

    t_all = time.time()
    fresh_work(args.work, args.reuse_prepare, "--reuse-prepare")
    full, scen = args.work / "full", args.work / "scenario"
    setup_logging(None)
    if not (args.reuse_prepare and (full / "folds.json").is_file()):
        ts.prepare([*args.data, *args.unlabelled], out=full, preset=args.preset, overrides=args.set, overwrite=True)
    prev = read_json(scen / "curation.json").get("scenario", {}) if (scen / "curation.json").is_file() else {}
    same = (prev.get("fraction"), prev.get("seed"), prev.get("full_val")) == (args.fraction, args.seed,
                                                                              args.full_val_fold)
    if args.reuse_prepare and same:  # continue an interrupted ablation: finished rows are reused
        hidden = read_json(scen / "hidden_truth.json")
    else:
        hidden = make_scenario(full, scen, args.fraction, args.seed, {"pseudo.pretrain_share": args.pretrain_share},
                               args.full_val_fold)
    folds = parse_folds(args.folds)
    cfg = load_config(scen / "config.yaml")
    fold_map = read_json(scen / "folds.json")
    use = sorted(fold_map, key=int) if folds is None else [str(k) for k in folds]
    results, timings = [], {}
    teacher = None
    wanted = args.rows.split(",")
    quality = None
    for sched, name in ROWS:
        if sched not in wanted:
            continue
        t0 = time.time()
        r = retrain(scen, schedule=sched, folds=folds, max_time=args.max_time, teacher=teacher)
        if sched == "labelled":
            teacher = r["tag"]
            tp = time.time()
            info = scen / "pseudo" / "pseudo.json"
            if not (args.reuse_prepare and info.is_file() and read_json(info).get("teacher") == teacher):
                ts.pseudo_label(scen, teacher=teacher, folds=folds, overwrite=True)
            timings["pseudo_label_min"] = round((time.time() - tp) / 60, 2)
            quality = pseudo_quality(scen, hidden)
        row = {"schedule": sched, "name": name, **r["rounds"][-1], "minutes": (time.time() - t0) / 60,
               **train_effort(scen / "train" / r["tag"])}
        results.append(row)
        print(f"{name}: Dice {row['dice']:.4f} IoU {row['iou']:.4f} HD95 {row['hd95']:.2f}", flush=True)
    pseudo_info = read_json(scen / "pseudo" / "pseudo.json") if (scen / "pseudo" / "pseudo.json").is_file() else {}
    meta = {"fraction": args.fraction, "n_labelled": sum(len(fold_map[k]["val"]) for k in fold_map),
            "n_unlabelled_pool": pseudo_info.get("n_images"), "n_selected": pseudo_info.get("n_selected"),
            "preset": args.preset, "scale": "x".join(map(str, cfg.train.scales[0])), "folds": ",".join(use),
            "max_time": args.max_time, "pretrain_share": args.pretrain_share, "full_val_fold": args.full_val_fold,
            "n_val": sum(len(fold_map[k]["val"]) for k in use), "overrides": args.set, "seed": args.seed,
            "confidence": pseudo_info.get("confidence"), "select": pseudo_info.get("select"),
            "select_value": pseudo_info.get("select_value"), "total_minutes": round((time.time() - t_all) / 60, 1),
            **timings}
    md = table(results, meta)
    if quality:
        md += ("\nPseudo-label confidence vs true Dice on the {n} hidden-label images (Spearman): ".format(
            n=quality["n_images"]) + ", ".join(f"{k} {v:+.3f}" for k, v in sorted(quality["spearman"].items()))
            + f". True Dice of pseudo-labels: all {quality['true_dice_mean']:.4f}, selected "
            f"{quality['true_dice_selected']:.4f}, rejected {quality['true_dice_rejected']:.4f}.\n")
    args.table.parent.mkdir(parents=True, exist_ok=True)
    args.table.write_text(md)
    args.table.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": results, "pseudo_quality": quality},
                                                          indent=2, default=str))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
