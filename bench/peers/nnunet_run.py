#!/usr/bin/env python3
"""nnU-Net v2 (2d configuration) on a prepared toothseg run, at a wall-clock training budget, scored by toothseg.

    python3 bench/peers/nnunet_run.py RUN --work /tmp/bench/nnunet --budget 00:30:00 \
        --cross ../shared/data/ufba425

Runs with the system Python (toothseg installed); nnU-Net runs from its own venv (bench/peers/nnunet_setup.sh).
Stages (``--stages``, default all, in this order; each writes under WORK and can be re-run alone):

- ``export``: RUN's curated labelled samples -> WORK/nnUNet_raw/DatasetID_NAME (toothseg.data.nnunet_export).
- ``plan``: ``nnUNetv2_plan_and_preprocess -d ID -c 2d --verify_dataset_integrity``; RUN's splits_final.json is
  copied to WORK/nnUNet_preprocessed/DatasetID_NAME/, where nnU-Net reads it, so fold K is toothseg's fold K.
- ``train``: ``nnUNetv2_train ID 2d K -tr TRAINER -device cpu`` under the budget. With the default trainer
  nnUNetTrainer_CPUBudget (nnUNetTrainer_CPUBudget.py) nnU-Net stops itself at the budget; any other trainer
  (e.g. plain nnUNetTrainer) is killed at the budget and the newest checkpoint is used (final > best > latest;
  nnUNetTrainer writes checkpoint_best after an epoch with a new best EMA Dice and checkpoint_latest every 50
  epochs, so after 30 CPU minutes the plain trainer usually has none: reported as such).
- ``predict``: ``nnUNetv2_predict`` on fold K's validation images and on each ``--cross`` dataset, with nnU-Net's
  default mirroring TTA and with ``--disable_tta``; wall time (-> images/s, the whole command incl. start-up and
  model loading) and peak memory (GNU time's max RSS of the largest process, and the sum over the process tree
  PSS sampled every 0.2 s: nnU-Net predicts with worker processes; images/s is
  also given after start-up, from the first 'Predicting' line).
- ``evaluate``: predictions renamed to ``<source>/<image_id>.png`` and scored with ``toothseg evaluate`` against the
  same masks every system is scored on (fold K's validation masks, eval_set.py; the --cross dataset folders).

WORK/results.json collects the figures; WORK/results.md is the table for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from eval_set import make_eval_set  # noqa: E402
from measure import run_measured  # noqa: E402
from system_run import score  # noqa: E402

from toothseg.data.layout import discover, read_index  # noqa: E402
from toothseg.durations import parse_hhmmss  # noqa: E402
from toothseg.data.nnunet_export import (CASES_FILE, export_nnunet_images, export_nnunet_raw,  # noqa: E402
                                         rename_predictions)
from toothseg.run.folder import read_json  # noqa: E402

STAGES = ("export", "plan", "train", "predict", "evaluate")
TRAINER_FILE = HERE / "nnUNetTrainer_CPUBudget.py"


def check(res: dict, what: str) -> None:
    if res["rc"] != 0 and not res["killed_at_budget"]:
        tail = Path(res["log"]).read_text()[-3000:]
        sys.exit(f"{what} failed (exit {res['rc']}); log {res['log']}:\n{tail}")


# ------------------------------------------------------------------ stages

class Bench:
    def __init__(self, a: argparse.Namespace) -> None:
        self.a = a
        self.work = a.work.resolve()
        self.run = a.run.resolve()
        self.ds = f"Dataset{a.dataset_id:03d}_{a.name}"
        self.raw = self.work / "nnUNet_raw"
        self.pre = self.work / "nnUNet_preprocessed"
        self.res = self.work / "nnUNet_results"
        self.bin = a.venv.resolve() / "bin"
        self.env = dict(os.environ, nnUNet_raw=str(self.raw), nnUNet_preprocessed=str(self.pre),
                        nnUNet_results=str(self.res), NNUNET_BUDGET_S=str(parse_hhmmss(a.budget, '--budget')),
                        PATH=f"{self.bin}:{os.environ.get('PATH', '')}")
        self.fold_dir = self.res / self.ds / f"{a.trainer}__nnUNetPlans__2d" / f"fold_{a.fold}"
        self.results_file = self.work / "results.json"
        self.results = json.loads(self.results_file.read_text()) if self.results_file.is_file() else {}

    def save(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        self.results_file.write_text(json.dumps(self.results, indent=1))

    def nn(self, tool: str) -> str:
        exe = self.bin / tool
        if not exe.exists():
            sys.exit(f"{exe} not found: run bench/peers/nnunet_setup.sh {self.a.venv} first")
        return str(exe)

    def export(self) -> None:
        t0 = time.perf_counter()
        out = export_nnunet_raw(self.run, self.raw, self.a.dataset_id, self.a.name, overwrite=True)
        n = json.loads((out / "dataset.json").read_text())["numTraining"]
        self.results["export"] = {"dataset": str(out), "cases": n, "seconds": round(time.perf_counter() - t0, 1)}
        print(f"exported {n} cases to {out}")

    def plan(self) -> None:
        res = run_measured([self.nn("nnUNetv2_plan_and_preprocess"), "-d", str(self.a.dataset_id), "-c", "2d",
                            "-np", str(self.a.np), "--verify_dataset_integrity"], self.env,
                           self.work / "logs" / "plan.log")
        check(res, "nnUNetv2_plan_and_preprocess")
        splits = self.raw / self.ds / "splits_final.json"
        if not splits.is_file():
            sys.exit(f"{splits} missing: prepare the run with toothseg >= the version writing splits_final.json")
        shutil.copyfile(splits, self.pre / self.ds / "splits_final.json")
        plans = json.loads((self.pre / self.ds / "nnUNetPlans.json").read_text())["configurations"]["2d"]
        self.results["plan"] = {**res, "patch_size": plans["patch_size"], "batch_size": plans["batch_size"],
                                "spacing": plans.get("spacing"),
                                "features_per_stage": plans.get("architecture", {}).get("arch_kwargs", {})
                                .get("features_per_stage")}
        print("2d plan:", {k: self.results["plan"][k] for k in ("patch_size", "batch_size")})

    def train(self) -> None:
        budget = parse_hhmmss(self.a.budget, '--budget')
        if self.a.trainer == "nnUNetTrainer_CPUBudget":
            dst = Path(subprocess.check_output([str(self.bin / "python"), "-c",
                       "import nnunetv2.training.nnUNetTrainer as m, os; print(os.path.dirname(m.__file__))"],
                       text=True).strip()) / "variants" / "toothseg_bench"
            dst.mkdir(exist_ok=True)
            (dst / "__init__.py").touch()
            shutil.copyfile(TRAINER_FILE, dst / TRAINER_FILE.name)
            timeout = budget + self.a.grace  # it stops itself; the kill is a safety net
        else:
            timeout = budget
        if self.fold_dir.exists():
            shutil.rmtree(self.fold_dir)
        env = dict(self.env, NNUNET_ITERS=str(self.a.iters), NNUNET_VAL_ITERS=str(self.a.val_iters))
        res = run_measured([self.nn("nnUNetv2_train"), str(self.a.dataset_id), "2d", str(self.a.fold),
                            "-tr", self.a.trainer, "-device", "cpu"], env, self.work / "logs" / "train.log",
                           timeout=timeout, interval=5.0, sample_pss=False)
        check(res, "nnUNetv2_train")
        logs = sorted(self.fold_dir.glob("training_log_*.txt"))
        text = logs[-1].read_text() if logs else ""
        epochs = len(re.findall(r"^.*Epoch time: ", text, re.M))
        ckpt = next((c for c in ("checkpoint_final.pth", "checkpoint_best.pth", "checkpoint_latest.pth")
                     if (self.fold_dir / c).is_file()), None)
        iters = self.a.iters if self.a.trainer == "nnUNetTrainer_CPUBudget" else 250
        dice = re.findall(r"Pseudo dice \[([^\]]*)\]", text)
        cut = re.search(r"budget reached after \d+ epochs \((\d+) iterations", text)
        n_iters = int(cut.group(1)) if cut else epochs * iters
        self.results["train"] = {**res, "trainer": self.a.trainer, "budget_s": budget, "epochs_completed": epochs,
                                 "iterations_completed": n_iters, "checkpoint": ckpt,
                                 "last_pseudo_dice": _floats(dice[-1]) if dice else None, "fold_dir": str(self.fold_dir)}
        print(f"trained {epochs} epochs ({n_iters} iterations) in {res['wall_s']} s; checkpoint: {ckpt}")
        if ckpt is None:
            print("NO CHECKPOINT after the budget: nnU-Net finished no epoch; nothing to predict with",
                  file=sys.stderr)

    def _sets(self) -> dict[str, tuple[list, Path]]:
        """name -> (samples to predict, ground-truth folder for toothseg evaluate)."""
        samples = {s.key: s for s in read_index(self.run / "samples.csv")}
        val_keys = read_json(self.run / "folds.json")[str(self.a.fold)]["val"]
        evalset = self.work / "evalset" / f"fold{self.a.fold}"
        if evalset.exists():
            shutil.rmtree(evalset)
        make_eval_set(self.run, self.a.fold, evalset)
        sets = {}
        by_source: dict[str, list] = {}
        for k in val_keys:
            by_source.setdefault(samples[k].source, []).append(samples[k])
        for source, ss in by_source.items():
            sets[f"val-{source}"] = (ss[: self.a.max_images], evalset / source)
        for d in self.a.cross:
            ds = discover([d])
            lab = [s for s in ds.samples if s.mask_path is not None]
            sets[f"cross-{Path(d).resolve().name}"] = (lab[: self.a.max_images], Path(d).resolve())
        return sets

    def predict(self) -> None:
        ckpt = self.results.get("train", {}).get("checkpoint")
        if ckpt is None:
            print("predict: no checkpoint (see the train stage); skipped", file=sys.stderr)
            return
        out = self.results.setdefault("predict", {})
        for name, (ss, gt) in self._sets().items():
            inp = export_nnunet_images(ss, self.work / "inputs" / name, overwrite=True)
            modes = (self.a.modes if name.startswith("val-") else self.a.cross_modes).split(",")
            for mode in modes:
                pred = self.work / "pred_raw" / f"{name}_{mode}"
                if pred.exists():
                    shutil.rmtree(pred)
                cmd = [self.nn("nnUNetv2_predict"), "-i", str(inp), "-o", str(pred), "-d", str(self.a.dataset_id),
                       "-c", "2d", "-f", str(self.a.fold), "-tr", self.a.trainer, "-chk", ckpt, "-device", "cpu"]
                if mode == "notta":
                    cmd.append("--disable_tta")
                res = run_measured(cmd, self.env, self.work / "logs" / f"predict_{name}_{mode}.log",
                                   first_marker="Predicting ")
                check(res, "nnUNetv2_predict")
                loaded = res["first_marker_s"]
                res.update(images=len(ss), images_per_s=round(len(ss) / res["wall_s"], 3), gt=str(gt),
                           images_per_s_after_load=round(len(ss) / (res["wall_s"] - loaded), 3) if loaded else None,
                           inputs=str(inp), pred_raw=str(pred))
                out[f"{name}_{mode}"] = res
                print(f"{name} {mode}: {len(ss)} images in {res['wall_s']} s = {res['images_per_s']} img/s, "
                      f"({res['images_per_s_after_load']} after {loaded} s start-up), peak {res['tree_peak_pss_gib']} GiB "
                      f"(tree PSS), {res['max_rss_gib']} GiB (largest process RSS)")
                self.save()

    def evaluate(self) -> None:
        out = self.results.setdefault("evaluate", {})
        for key, p in self.results.get("predict", {}).items():
            pred = self.work / "pred" / key
            if pred.exists():
                shutil.rmtree(pred)
            rename_predictions(p["pred_raw"], Path(p["inputs"]) / CASES_FILE, pred)
            out[key] = score(pred, Path(p["gt"]), self.work / "eval" / key, self.a.toothseg)
            print(key, {m: out[key][m] for m in ("n", "missing", "dice", "iou", "hd95", "nsd")})
        self._markdown()

    def _markdown(self) -> None:
        r = self.results
        tr = r.get("train", {})
        lines = [f"nnU-Net v2 {r.get('versions', {}).get('nnunetv2', '?')} 2d, trainer {tr.get('trainer')}, "
                 f"budget {tr.get('budget_s')} s, {tr.get('epochs_completed')} epochs / "
                 f"{tr.get('iterations_completed')} iterations, checkpoint {tr.get('checkpoint')}; "
                 f"plan: patch {r.get('plan', {}).get('patch_size')}, batch {r.get('plan', {}).get('batch_size')}",
                 "", "| set | TTA | n | Dice | IoU | HD95 px | NSD@2px | images/s (after start-up) | "
                 "peak GiB (tree PSS / largest RSS) |", "|---|---|---|---|---|---|---|---|---|"]
        for key, e in r.get("evaluate", {}).items():
            p = r["predict"][key]
            name, mode = key.rsplit("_", 1)
            lines.append(f"| {name} | {'mirror' if mode == 'tta' else 'off'} | {e['n']} | {_f(e['dice'])} | "
                         f"{_f(e['iou'])} | {_f(e['hd95'], 1)} | {_f(e['nsd'])} | {p['images_per_s']} "
                         f"({p.get('images_per_s_after_load')}) | {p['tree_peak_pss_gib']} / {p['max_rss_gib']} |")
        (self.work / "results.md").write_text("\n".join(lines) + "\n")


def _floats(text: str) -> list[float]:
    """Numbers of a logged list such as ``[np.float32(0.3218)]``."""
    return [float(x) for x in re.findall(r"\d+\.\d+(?:e-?\d+)?", text)]


def _f(v, nd: int = 3) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a run folder written by 'toothseg prepare'")
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench/nnunet"))
    ap.add_argument("--venv", type=Path, default=Path("/tmp/nnunet-venv"))
    ap.add_argument("--dataset-id", type=int, default=501)
    ap.add_argument("--name", default="Teeth")
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--budget", default="00:30:00", help="training wall-clock budget HH:MM:SS")
    ap.add_argument("--trainer", default="nnUNetTrainer_CPUBudget",
                    help="nnU-Net trainer class; non-budget trainers are killed at the budget")
    ap.add_argument("--iters", type=int, default=10, help="CPUBudget: training iterations per epoch")
    ap.add_argument("--val-iters", type=int, default=2, help="CPUBudget: validation iterations per epoch")
    ap.add_argument("--grace", type=float, default=600, help="CPUBudget: seconds past the budget before a kill")
    ap.add_argument("--np", type=int, default=2, help="processes for nnU-Net preprocessing")
    ap.add_argument("--cross", nargs="*", default=[], help="other dataset folders to predict and score")
    ap.add_argument("--max-images", type=int, default=None, help="predict at most N images per set (smoke runs)")
    ap.add_argument("--modes", default="tta,notta", help="predict fold K's validation images with mirroring TTA "
                    "(nnU-Net's default) and/or without")
    ap.add_argument("--cross-modes", default="tta,notta", help="the same for each --cross dataset")
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--toothseg", default=shutil.which("toothseg") or "toothseg")
    a = ap.parse_args()
    stages = a.stages.split(",")
    bad = set(stages) - set(STAGES)
    if bad:
        ap.error(f"unknown stages {sorted(bad)}; choose from {','.join(STAGES)}")

    b = Bench(a)
    b.results.setdefault("started", dt.datetime.now().isoformat(timespec="seconds"))
    b.results["machine"] = {"host": platform.node(), "cpus": os.cpu_count(), "cpu": _cpu_model(),
                            "python": platform.python_version()}
    b.results["versions"] = _versions(b.bin / "python")
    b.results["run"] = str(b.run)
    for st in STAGES:
        if st in stages:
            getattr(b, st)()
            b.save()
    b.results["finished"] = dt.datetime.now().isoformat(timespec="seconds")
    b.save()
    print(f"results: {b.results_file}")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _versions(py: Path) -> dict:
    if not py.exists():
        return {}
    code = ("import json, importlib.metadata as m; print(json.dumps({p: m.version(p) for p in "
            "('nnunetv2', 'torch', 'numpy', 'dynamic-network-architectures')}))")
    try:
        return json.loads(subprocess.check_output([str(py), "-c", code], text=True))
    except (subprocess.CalledProcessError, json.JSONDecodeError):
        return {}


if __name__ == "__main__":
    main()
