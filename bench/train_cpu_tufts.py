"""Issue 4's benchmark: the `cpu` preset on tufts fold 0 with a wall-clock budget, scored on fold 0's validation set.

    python bench/train_cpu_tufts.py --data ../shared/data/tufts --out /tmp/bench_tufts --max-time 00:30:00

Runs `toothseg.api.prepare` (group-aware folds after duplicate curation) unless OUT/run is prepared already, then
`toothseg.api.train(run, fold=0, max_time=...)`. Scores are the fold-0 OOF rows train writes: the best checkpoint
(by val Dice) predicting every validation image at its original resolution, threshold 0.5, no TTA or
post-processing; Dice, IoU and HD95 (px) from toothseg.evaluate.metrics. Real-data outputs stay under OUT
(keep it in /tmp: the data is licensed).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from toothseg.run.family import read_oof, summarise


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=Path("../shared/data/tufts"))
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench_tufts"))
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--max-time", default="00:30:00")
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="config override key=value")
    ap.add_argument("--resume", action="store_true", help="continue an interrupted bench in OUT")
    a = ap.parse_args()
    from workdir import fresh_work

    a.out = fresh_work(a.out, a.resume)

    import toothseg.api as ts

    run = a.out / "run"
    t0 = time.perf_counter()
    if not (run / "folds.json").is_file():
        ts.prepare([a.data], run, preset=a.preset, overrides=a.overrides)
    t_prep = time.perf_counter() - t0
    t1 = time.perf_counter()
    out = ts.train(run, fold=a.fold, preset=a.preset, max_time=a.max_time, overrides=a.overrides,
                   resume=a.resume)
    t_train = time.perf_counter() - t1
    res = {"command": "python bench/train_cpu_tufts.py " + " ".join(
        [f"--data {a.data}", f"--out {a.out}", f"--preset {a.preset}", f"--max-time {a.max_time}",
         f"--fold {a.fold}"] + [f"--set {o}" for o in a.overrides]),
        "date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.processor() or platform.machine()}, "
        f"{__import__('os').cpu_count()} CPUs", "prepare_s": round(t_prep, 1), "train_s": round(t_train, 1),
        "models": {}}
    for tag in out["models"]:
        fd = run / "train" / tag / f"fold{a.fold}"
        fit = json.loads((fd / "fit.json").read_text())
        s = summarise(read_oof(fd / "oof.csv"))
        res["models"][tag] = {"val_dice": s["dice"], "val_iou": s["iou"], "val_hd95": s["hd95"], "n_val": s["n"],
                              "steps": fit["global_step"], "epochs": fit["epochs"],
                              "fit_seconds": round(fit["seconds"], 1),
                              "best_val_dice_network_res": fit["best_val_dice"]}
    (a.out / "bench_train.json").write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
