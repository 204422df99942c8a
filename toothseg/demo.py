"""`toothseg demo`: every stage end to end on freshly generated synthetic X-rays, in minutes on a CPU.

The demo scores itself honestly: the model is evaluated on a separate synthetic test set drawn with another seed,
never on images it trained on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path

from toothseg.durations import timed
from toothseg.errors import ToothsegError
from toothseg.pipeline import RunResult
from toothseg.run.folder import setup_logging


# Sized for about 3 minutes on 2 CPU cores: 2 folds (every stage still runs: OOF threshold tuning, hard mining,
# pseudo-labels, students), enough epochs for the tiny UNet to learn the synthetic teeth. Its epochs are a few
# steps each, so validating after every one cost about a third as much as training; every 4th epoch and the
# final weights (always validated) are enough to pick best.ckpt under the decaying learning rate.
DEMO_OVERRIDES = ["curate.n_folds=2", "train.epochs=12", "train.val_every=4"]


def _fresh_folder(out: str | Path | None) -> Path:
    if out is None:
        root = Path("runs") / f"demo-{datetime.now():%Y%m%d-%H%M%S}"
    else:
        root = Path(out).expanduser()
    if root.exists() and any(root.iterdir()):
        raise ToothsegError(f"{root}: folder exists and is not empty; pass a new --out folder (the demo never "
                            "overwrites earlier runs)")
    root.mkdir(parents=True, exist_ok=True)
    return root


@dataclass(frozen=True)
class DemoResult:
    root: str
    synth: dict  # the training data's synth summary
    pipeline: RunResult
    predicted: int  # held-out test images predicted
    test_dice: float | None  # mean Dice on them
    report: str
    worklist: str | None  # None without unlabelled images
    review_command: str | None
    timings_s: dict[str, float]
    total_s: float


def demo(out: str | Path | None = None, labelled: int = 48, unlabelled: int = 24, test: int = 12,
         preset: str = "tiny", seed: int = 0, overrides: list[str] | None = None) -> DemoResult:
    """Generate data, check, prepare, train, pseudo-label + retrain, predict, evaluate and report."""
    from toothseg.data.check import check
    from toothseg.data.synth import synth
    from toothseg.evaluate.evaluate import evaluate
    from toothseg.evaluate.report import report
    from toothseg.pipeline import run as run_pipeline
    from toothseg.predict.batch import predict
    from toothseg.suggest.suggest import suggest

    log = setup_logging()
    t0 = time.perf_counter()
    root = _fresh_folder(out)
    timings: dict[str, float] = {}
    lap = partial(timed, timings)
    data = root / "data" / "synth"
    test_dir = root / "data" / "synth_test"
    with lap("synth"):
        synth_summary = synth(data, labelled=labelled, unlabelled=unlabelled, seed=seed)
        synth(test_dir, labelled=test, unlabelled=0, seed=seed + 1000, duplicates=False)

    with lap("check"):
        checked = check([data])
    if not checked.ok:
        raise ToothsegError(f"{data}: the synthetic dataset failed its own check ({len(checked.errors)} errors)")

    run_dir = root / "run"
    with lap("prepare+train+pseudo"):
        pipeline = run_pipeline([data], out=run_dir, preset=preset, overrides=DEMO_OVERRIDES + list(overrides or []))

    pred_dir = root / "predictions"
    with lap("predict"):
        pred = predict(run_dir / "bundle", [str(test_dir / "images")], out=pred_dir)
    with lap("evaluate"):
        ev = evaluate(pred_dir / "masks", test_dir, out=run_dir / "reports")
    with lap("report"):
        html = report(run_dir)

    worklist = None
    if unlabelled:
        with lap("suggest"):
            worklist = suggest(run_dir, n=min(10, unlabelled))

    summary = DemoResult(root=str(root), synth=synth_summary, pipeline=pipeline, predicted=pred.n_ok,
                         test_dice=ev.metrics["dice"]["mean"], report=str(html),
                         worklist=worklist["csv"] if worklist else None,
                         review_command=f"toothseg review {run_dir}" if worklist else None,
                         timings_s={k: round(v, 1) for k, v in timings.items()},
                         total_s=round(time.perf_counter() - t0, 1))
    log.info("demo finished in %.0f s; report: %s", summary.total_s, html)
    return summary
