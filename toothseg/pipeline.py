"""`toothseg run DATA... --out RUN`: prepare -> train -> pseudo-label + retrain (students) -> bundle.

Stages talk through the run folder, so a failed or interrupted pipeline can be continued stage by stage
(``toothseg train RUN --resume`` ...). Later stages are looked up by module so the pipeline grows as they land.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from pathlib import Path

from toothseg.config import build_config
from toothseg.data.layout import read_index
from toothseg.preflight import check_budget, ensure_writable_dir
from toothseg.run.folder import open_run, setup_logging

log = logging.getLogger("toothseg")


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def run(data_dirs: list[str | Path], out: str | Path, preset: str = "cpu", config: str | Path | None = None,
        overrides: list[str] | None = None, fold: int | str = "all", max_time: str | None = None,
        resume: bool = False, overwrite: bool = False) -> dict:
    """Chain the stages on ``data_dirs`` into run folder ``out``; returns each stage's summary and timing.

    ``resume`` skips a finished prepare and continues training from last checkpoints; ``overwrite`` redoes both.
    """
    from toothseg.curate.prepare import prepare
    from toothseg.train.engine import train

    # everything that can be refused is refused before curation and training start
    check_budget(max_time)
    build_config(preset, yaml_path=config, overrides=overrides)
    ensure_writable_dir(out)
    rd = open_run(out, create=True)
    setup_logging(rd)
    summary: dict = {"run": str(rd.root), "timings_s": {}}
    t = time.perf_counter()
    if resume and rd.folds.is_file() and not overwrite:
        log.info("%s: already prepared; skipping prepare", rd.root)
        summary["prepare"] = "skipped (resume)"
    else:
        summary["prepare"] = prepare(list(data_dirs), rd.root, preset=preset, config=config, overrides=overrides,
                                     overwrite=overwrite)
    summary["timings_s"]["prepare"] = time.perf_counter() - t

    t = time.perf_counter()
    summary["train"] = train(rd.root, fold=fold, max_time=max_time, resume=resume, overwrite=overwrite)
    summary["timings_s"]["train"] = time.perf_counter() - t

    cfg = rd.load_config()
    has_unlabelled = any(not smp.labelled for smp in read_index(rd.samples))
    if cfg.pseudo.schedule != "labelled" and has_unlabelled and _has("toothseg.pseudo.schedules"):
        from toothseg.pseudo.schedules import retrain

        t = time.perf_counter()
        folds = None if str(fold) == "all" else [int(fold)]
        # students start from their teacher's fold weights; after an interruption finished stages are reused
        summary["pseudo"] = retrain(rd.root, folds=folds, max_time=max_time, resume=not overwrite)
        summary["timings_s"]["pseudo+retrain"] = time.perf_counter() - t
        if _has("toothseg.predict.bundle"):  # the bundle now fuses the students too
            from toothseg.predict.bundle import build_bundle

            summary["bundle"] = str(build_bundle(rd.root))
    elif not has_unlabelled:
        log.info("no unlabelled images: pseudo-labelling skipped")
    return summary
