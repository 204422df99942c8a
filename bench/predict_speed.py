"""Predict throughput and peak memory on this CPU for 320x640 X-rays: single model vs 5-fold ensemble + hflip TTA,
PyTorch vs ONNX Runtime, each measured end to end (`toothseg.api.predict`: read, infer, write outputs) in its own
process, so peak RSS is that configuration's alone.

    python bench/predict_speed.py                      # cpu-preset architecture, random weights, 5 folds
    python bench/predict_speed.py --bundle RUN/bundle  # a trained bundle (exports ONNX into a copy under --work)

Speed does not depend on weight values, so random weights measure the same as trained ones of that architecture.
Images/s is counted after model loading (load time is reported separately).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SIZE = (320, 640)


def make_fake_run(root: Path, folds: int = 5, seed: int = 0) -> Path:
    """A run folder with `folds` random-weight checkpoints of the cpu preset's network at 320x640."""
    import torch

    from toothseg.config import build_config, save_config
    from toothseg.models.factory import create_model

    cfg = build_config("cpu")
    run = root / "run"
    save_config(cfg, run / "config.yaml")
    tag = f"{cfg.model.name}-{cfg.model.encoder}-{SIZE[0]}x{SIZE[1]}"
    model_d = cfg.model.model_dump(mode="json")
    for k in range(folds):
        torch.manual_seed(seed + k)
        net = create_model(cfg.model, load_weights=False)
        fd = run / "train" / tag / f"fold{k}"
        fd.mkdir(parents=True, exist_ok=True)
        torch.save({"state_dict": {"model." + n: v for n, v in net.state_dict().items()},
                    "hyper_parameters": {"model": model_d, "scale": list(SIZE), "resize": "resize"}}, fd / "best.ckpt")
    (run / "train" / tag / "model.json").write_text(json.dumps(
        {"tag": tag, "model": model_d, "scale": list(SIZE), "resize": "resize", "folds": list(range(folds))}))
    return run


def make_inputs(folder: Path, n: int, seed: int = 0) -> Path:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        img = rng.normal(70, 15, SIZE).clip(0, 255).astype(np.uint8)
        for k in range(14):
            cv2.ellipse(img, (40 + 40 * k, 120 + 80 * (k % 2)), (14, 50), 0, 0, 360, int(rng.integers(150, 230)), -1)
        cv2.imwrite(str(folder / f"opg{i:04d}.png"), img)
    return folder


def peak_rss_mib() -> float:
    """This process's peak resident memory. VmHWM, not getrusage: ru_maxrss survives exec, so a child started by a
    big parent would report the parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def worker(spec: dict) -> None:
    """Run one configuration; print its summary and this process's peak RSS as JSON."""
    from toothseg.api import predict

    s = predict(spec["bundle"], [spec["inputs"]], spec["out"], engine=spec["engine"], folds=spec["folds"],
                tta=spec["tta"], overwrite=True, batch_size=spec["batch_size"], threads=spec["threads"],
                save_prob=False, overlay=True)
    print("RESULT " + json.dumps({**{k: getattr(s, k) for k in ("n_ok", "n_failed", "seconds", "load_seconds",
                                                                 "images_per_s", "n_members", "engine", "tta")},
                                  "peak_rss_mib": peak_rss_mib()}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, help="a trained bundle (default: random-weight cpu-preset 5-fold bundle)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/toothseg_predict_speed"))
    ap.add_argument("--n-single", type=int, default=24, help="images for the single-model runs")
    ap.add_argument("--n-ensemble", type=int, default=8, help="images for the ensemble runs")
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="compute threads (default: all cores)")
    ap.add_argument("--engines", default="torch,onnxruntime")
    ap.add_argument("--reuse", action="store_true", help="reuse the bundle and inputs already in WORK")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(json.loads(a.worker))
        return

    from toothseg.predict.bundle_build import build_bundle
    from toothseg.predict.bundle_format import load_bundle
    from toothseg.predict.export import export

    from workdir import fresh_work

    a.work = fresh_work(a.work, a.reuse, "--reuse")
    if a.bundle is None:
        bundle = a.work / "run" / "bundle"
        if not (bundle / "bundle.json").is_file():
            build_bundle(make_fake_run(a.work))
        source = "cpu preset (unet, tu-tf_efficientnetv2_b0, decoder 128-64-32-16-16), random weights, 5 folds"
    else:
        bundle = a.work / "bundle"
        if not (bundle / "bundle.json").is_file():
            shutil.copytree(load_bundle(a.bundle).root, bundle, ignore=shutil.ignore_patterns("onnx"))
        source = f"trained bundle {a.bundle}"
    if "onnxruntime" in a.engines and not any(m.onnx for m in load_bundle(bundle).members):
        export(bundle, overwrite=True)
    b = load_bundle(bundle)
    first = b.folds[0]
    inputs_single = make_inputs(a.work / "in_single", a.n_single)
    inputs_ens = make_inputs(a.work / "in_ensemble", a.n_ensemble, seed=1)
    cases = [("single model, no TTA", [first], False, inputs_single),
             (f"{len(b.folds)}-fold ensemble + hflip TTA", None, True, inputs_ens)]
    rows = []
    for label, folds, tta, inputs in cases:
        for engine in a.engines.split(","):
            spec = {"bundle": str(bundle), "inputs": str(inputs), "out": str(a.work / "out" / f"{engine}-{len(rows)}"),
                    "engine": engine, "folds": folds, "tta": tta, "batch_size": a.batch_size, "threads": a.threads}
            t = time.perf_counter()
            p = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True)
            line = next((ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if p.returncode != 0 or line is None:
                sys.exit(f"{label} / {engine} failed:\n{p.stderr[-3000:]}")
            r = json.loads(line[7:])
            r.update(case=label, wall_s=round(time.perf_counter() - t, 1))
            rows.append(r)
            print(f"{label:34s} {engine:12s} {r['images_per_s']:.3f} images/s  peak {r['peak_rss_mib']:.0f} MiB  "
                  f"(load {r['load_seconds']:.1f} s, {r['n_ok']} images)", flush=True)
    print("\n| configuration | engine | members x views | images/s | s/image | peak RSS (MiB) | load (s) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        views = 2 if "hflip" in r["tta"] else 1
        print(f"| {r['case']} | {r['engine']} | {r['n_members']} x {views} | {r['images_per_s']:.3f} | "
              f"{1 / r['images_per_s']:.2f} | {r['peak_rss_mib']:.0f} | {r['load_seconds']:.1f} |")
    print(f"\nsource: {source}; input {SIZE[0]}x{SIZE[1]} PNG; batch {a.batch_size}; threads "
          f"{a.threads or len(os.sched_getaffinity(0))}; load average {os.getloadavg()[0]:.1f}")
    (a.work / "results.json").write_text(json.dumps({"rows": rows, "source": source}, indent=2))


if __name__ == "__main__":
    main()
