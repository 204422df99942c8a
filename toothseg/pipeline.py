"""`toothseg run DATA... --out RUN`: prepare -> train -> pseudo-label + retrain (students) -> bundle.

Stages talk through the run folder, so a failed or interrupted pipeline can be continued stage by stage
(``toothseg train RUN --resume`` ...).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from toothseg.config import build_config
from toothseg.durations import parse_hhmmss, timed
from toothseg.folds_arg import parse_folds
from toothseg.preflight import ensure_writable_dir
from toothseg.run.folder import open_run, setup_logging

log = logging.getLogger("toothseg")


@dataclass
class RunResult:
    """Each stage's summary (as that stage's verb returns it) and the seconds it took."""

    run: str
    prepare: dict | str | None = None  # "skipped (resume)" when a finished prepare was kept
    train: dict = field(default_factory=dict)
    pseudo: dict | None = None  # None: no unlabelled images or the 'labelled' schedule
    bundle: str | None = None  # rebuilt after the students trained
    timings_s: dict[str, float] = field(default_factory=dict)


def run(data_dirs: list[str | Path], out: str | Path, preset: str = "cpu", config: str | Path | None = None,
        overrides: list[str] | None = None, fold: int | str = "all", max_time: str | None = None,
        resume: bool = False, overwrite: bool = False) -> RunResult:
    """Chain the stages on ``data_dirs`` into run folder ``out``; returns each stage's summary and timing.

    ``resume`` skips a finished prepare and continues training from last checkpoints; ``overwrite`` redoes both.
    """
    from toothseg.curate.prepare import prepare
    from toothseg.train.engine import train

    # everything that can be refused is refused before curation and training start
    if max_time is not None:
        parse_hhmmss(max_time, "--max-time")
    build_config(preset, yaml_path=config, overrides=overrides)
    ensure_writable_dir(out)
    rd = open_run(out, create=True)
    setup_logging(rd)
    summary = RunResult(str(rd.root))
    with timed(summary.timings_s, "prepare"):
        if resume and rd.folds.is_file() and not overwrite:
            log.info("%s: already prepared; skipping prepare", rd.root)
            summary.prepare = "skipped (resume)"
        else:
            summary.prepare = prepare(list(data_dirs), rd.root, preset=preset, config=config, overrides=overrides,
                                      overwrite=overwrite)
    with timed(summary.timings_s, "train"):
        summary.train = train(rd.root, fold=fold, max_time=max_time, resume=resume, overwrite=overwrite)

    cfg = rd.load_config()
    has_unlabelled = any(not smp.labelled for smp in rd.read_samples())
    if cfg.pseudo.schedule != "labelled" and has_unlabelled:
        from toothseg.predict.bundle_build import build_bundle
        from toothseg.pseudo.schedules import retrain

        with timed(summary.timings_s, "pseudo+retrain"):
            # students start from their teacher's fold weights; after an interruption finished stages are reused
            summary.pseudo = retrain(rd.root, folds=parse_folds(fold, "--fold"), max_time=max_time,
                                     resume=not overwrite)
        summary.bundle = str(build_bundle(rd.root))  # the bundle now fuses the students too
    elif not has_unlabelled:
        log.info("no unlabelled images: pseudo-labelling skipped")
    return summary
