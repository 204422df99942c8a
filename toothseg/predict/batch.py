"""`toothseg predict`: a folder of X-rays through a `Predictor` into masks, overlays, JSON records and a summary.

Images stream through a small reader pool, batched forward passes and a writer pool inside a bounded window of
work, so memory stays flat over thousands of images and torch/ONNX Runtime use every core.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import toothseg
from toothseg.atomic import file_sha256
from toothseg.data.io import read_image
from toothseg.errors import ConfigError, ToothsegError, first_line
from toothseg.predict.bundle_format import load_bundle
from toothseg.predict.engines import cpu_threads
from toothseg.predict.inputs import expand_inputs
from toothseg.predict.outputs import (OutputPaths, completion, image_record, mark_output_folder, summary_row,
                                      write_outputs, write_summary)
from toothseg.predict.predictor import Predictor, Prepared
from toothseg.preflight import ensure_writable_dir

log = logging.getLogger("toothseg")

Job = tuple[int, Path, OutputPaths]  # (input index, image file, its outputs)


@dataclass(frozen=True)
class PredictOptions:
    """How `predict` runs. ``threshold``, ``min_component`` and ``fill_holes`` override the bundle's OOF-tuned
    choices (None keeps them); ``folds`` keeps only those folds' members; ``batch_size`` None is the bundle's."""

    engine: str = "torch"
    folds: list[int] | None = None
    tta: bool | None = None
    threshold: float | None = None
    min_component: int | None = None
    fill_holes: bool | None = None
    save_prob: bool = False
    overlay: bool = True
    overwrite: bool = False
    batch_size: int | None = None
    workers: int | None = None
    threads: int | None = None


@dataclass(frozen=True)
class PredictResult:
    """What a `predict` call did; ``failures`` lists ``{"input", "error"}`` for every input that gave no mask."""

    out: str
    summary_csv: str
    n_inputs: int
    n_ok: int
    n_skipped: int
    n_failed: int
    failures: list[dict]
    seconds: float
    load_seconds: float
    images_per_s: float | None  # after the models are loaded: what a long batch job sees
    engine: str
    threshold: float
    postprocess: dict
    tta: list[str]
    n_members: int
    notes: list[str]


@dataclass
class _Plan:
    """The images to run and the summary rows of those that will not run (done before, refused, unreadable)."""

    todo: list[Job] = field(default_factory=list)
    shas: dict[int, str] = field(default_factory=dict)
    rows: dict[int, dict] = field(default_factory=dict)
    failures: list[dict] = field(default_factory=list)
    n_skipped: int = 0
    n_redo: int = 0

    def refuse(self, i: int, f: Path | str, err: str) -> None:
        self.rows[i] = summary_row(Path(f).stem, f, "failed", error=err)
        self.failures.append({"input": str(f), "error": err})


def _plan(files: list[Path], problems: list[tuple[str, str]], out: Path, overwrite: bool, ours: bool) -> _Plan:
    plan = _Plan()
    for k, (arg, msg) in enumerate(problems):  # inputs that named no readable image, after the files
        plan.refuse(len(files) + k, arg, f"{arg}: {msg}")
    stems: dict[str, Path] = {}
    for i, f in enumerate(files):
        stem = f.stem
        paths = OutputPaths(out, stem)
        if stem in stems:
            plan.refuse(i, f, f"{f}: output name '{stem}' is already used by {stems[stem]}; predict them into "
                              "separate --out folders")
            continue
        stems[stem] = f
        try:
            sha = file_sha256(f)
        except OSError as exc:
            plan.refuse(i, f, f"{f}: cannot read ({exc.strerror or exc.__class__.__name__})")
            continue
        state, rec = completion(paths, sha, f)
        if not overwrite:
            if state == "done":
                plan.rows[i] = summary_row(stem, f, "skipped", rec, error="outputs exist; pass --overwrite to redo")
                plan.n_skipped += 1
                continue
            if state == "other":
                plan.refuse(i, f, f"{f}: {paths.record} holds the result of a different image "
                                  f"({rec.get('input', '?')}); predict into another --out, or pass --overwrite to "
                                  "replace it")
                continue
            if state == "partial" and not ours:
                plan.refuse(i, f, f"{f}: {paths.mask.parent} already holds '{stem}' files toothseg did not write; "
                                  "choose another --out, or pass --overwrite to replace them")
                continue
        plan.n_redo += state == "partial"
        plan.shas[i] = sha
        plan.todo.append((i, f, paths))
    if plan.n_skipped:
        log.info("predict: %d image(s) already have outputs in %s; skipped (pass --overwrite to redo)",
                 plan.n_skipped, out)
    if plan.n_redo:
        log.info("predict: %d image(s) have incomplete outputs in %s (an interrupted run); redoing them",
                 plan.n_redo, out)
    return plan


def _error_text(exc: BaseException, path: Path) -> str:
    if isinstance(exc, ToothsegError):
        return str(exc)
    return f"{path}: {exc.__class__.__name__}: {first_line(exc)}".rstrip(": ")


class _BatchRun:
    """Runs a plan's images: reads ahead in threads, predicts in batches (a failing batch is retried image by
    image to isolate the culprit), writes in threads; every outcome lands in the plan's rows."""

    def __init__(self, predictor: Predictor, plan: _Plan, settings: dict, opts: PredictOptions, batch_size: int,
                 n_workers: int) -> None:
        self.predictor, self.plan, self.settings, self.opts = predictor, plan, settings, opts
        self.bs, self.n_workers = batch_size, n_workers
        self.window = max(2 * batch_size, 2 * n_workers)
        self.done = self.failed = 0
        self.t0 = self.last_log = time.perf_counter()
        self.reads: deque[tuple[int, Path, OutputPaths, Future]] = deque()
        self.writes: deque[tuple[int, Path, OutputPaths, Future]] = deque()

    def _load(self, path: Path) -> tuple[np.ndarray, Prepared]:
        img = read_image(path)
        return img, self.predictor.prepare(img)

    def _finish(self, i: int, path: Path, paths: OutputPaths, img: np.ndarray, prob: np.ndarray) -> dict:
        mask = self.predictor.to_mask(prob)
        rec = image_record(path, prob, mask, self.settings, self.plan.shas[i])
        return write_outputs(paths, img, prob, mask, rec, self.opts.save_prob, self.opts.overlay)

    def _count(self) -> None:
        """Progress every 5 % of the images, at the end and at least every 10 s."""
        self.done += 1
        now, total = time.perf_counter(), len(self.plan.todo)
        if self.done == total or self.done % max(1, total // 20) == 0 or now - self.last_log > 10.0:
            self.last_log = now
            log.info("predict: %d/%d images (%.2f/s)%s", self.done, total, self.done / max(now - self.t0, 1e-9),
                     f", {self.failed} failed" if self.failed else "")

    def _fail(self, i: int, path: Path, paths: OutputPaths, exc: BaseException) -> None:
        err = _error_text(exc, path)
        log.warning("predict: skipped %s", err)
        self.plan.refuse(i, path, err)
        self.failed += 1
        self._count()

    def _settle_writes(self, limit: int) -> None:
        while len(self.writes) > limit:
            i, path, paths, fut = self.writes.popleft()
            try:
                self.plan.rows[i] = summary_row(paths.stem, path, "ok", fut.result())
            except Exception as exc:  # a write failure is that image's failure, not the run's
                self._fail(i, path, paths, exc)
                continue
            self._count()

    def _run_batch(self, batch: list[tuple[int, Path, OutputPaths, np.ndarray, Prepared]], writers) -> None:
        try:
            probs = self.predictor.predict_proba_batch([x[4] for x in batch])
        except Exception as exc:
            if len(batch) > 1:  # isolate the culprit: run the images one by one
                for x in batch:
                    self._run_batch([x], writers)
                return
            self._fail(*batch[0][:3], exc)
            return
        for (i, path, paths, img, _), prob in zip(batch, probs):
            self.writes.append((i, path, paths, writers.submit(self._finish, i, path, paths, img, prob)))
        self._settle_writes(self.window)

    def run(self) -> None:
        queue = iter(self.plan.todo)
        with ThreadPoolExecutor(self.n_workers, thread_name_prefix="toothseg-read") as readers, \
                ThreadPoolExecutor(max(1, self.n_workers // 2), thread_name_prefix="toothseg-write") as writers:

            def fill() -> None:
                while len(self.reads) < self.window and (job := next(queue, None)) is not None:
                    self.reads.append((*job, readers.submit(self._load, job[1])))

            fill()
            batch: list[tuple[int, Path, OutputPaths, np.ndarray, Prepared]] = []
            while self.reads:
                i, path, paths, fut = self.reads.popleft()
                fill()
                try:
                    img, prep = fut.result()
                except Exception as exc:
                    self._fail(i, path, paths, exc)
                    continue
                batch.append((i, path, paths, img, prep))
                if len(batch) == self.bs:
                    self._run_batch(batch, writers)
                    batch = []
            if batch:
                self._run_batch(batch, writers)
            self._settle_writes(0)


def predict(bundle: str | Path, inputs: list[str], out: str | Path, **settings) -> PredictResult:
    """Segment every image in ``inputs`` (files, folders, globs) into ``out``; returns what it did.

    ``settings`` are `PredictOptions` fields. An image whose complete outputs for the same content (sha256) are in
    ``out`` is skipped; outputs left by an interrupted run are redone; a name already used in ``out`` by a different
    image is refused for that image (``overwrite`` replaces both). Bad files are reported and skipped.
    """
    opts = PredictOptions(**settings)
    t0 = time.perf_counter()
    out = ensure_writable_dir(out)  # before the models load: a bad --out costs nothing
    b = load_bundle(bundle)
    files, problems, notes = expand_inputs(list(inputs), exclude=[out])
    for note in notes:
        log.warning("predict: %s", note)
    if not files:
        detail = f": {problems[0][0]}: {problems[0][1]}" if problems else ""
        raise ToothsegError(f"no image to predict among {len(inputs)} input(s){detail}")
    bs = int(opts.batch_size or ((b.meta.get("config") or {}).get("predict") or {}).get("batch_size", 2))
    if bs < 1:
        raise ConfigError(f"batch size {bs} must be >= 1")
    post = {k: v for k, v in (("min_component", opts.min_component), ("fill_holes", opts.fill_holes))
            if v is not None}
    predictor = Predictor.from_bundle(b, engine=opts.engine, folds=opts.folds, tta=opts.tta,
                                      threshold=opts.threshold, postprocess=post or None, threads=opts.threads)
    load_s = time.perf_counter() - t0
    plan = _plan(files, problems, out, opts.overwrite, mark_output_folder(out))
    run_settings = {**predictor.settings(), "bundle": str(b.root), "toothseg_version": toothseg.__version__}
    n_workers = int(opts.workers) if opts.workers else min(4, cpu_threads())
    _BatchRun(predictor, plan, run_settings, opts, bs, n_workers).run()

    rows, failures = plan.rows, plan.failures
    summary_csv = write_summary(out, [rows[k] for k in sorted(rows)])
    seconds = time.perf_counter() - t0
    n_ok = sum(r["status"] == "ok" for r in rows.values())
    result = PredictResult(
        out=str(out), summary_csv=str(summary_csv), n_inputs=len(files) + len(problems), n_ok=n_ok,
        n_skipped=plan.n_skipped, n_failed=len(failures), failures=failures, seconds=round(seconds, 3),
        load_seconds=round(load_s, 3), images_per_s=round(n_ok / (seconds - load_s), 4) if seconds > load_s else None,
        **{k: run_settings[k] for k in ("engine", "threshold", "postprocess", "tta")},
        n_members=len(predictor.nets), notes=notes)
    if failures:
        log.warning("predict: %d of %d input(s) failed:\n%s", len(failures), result.n_inputs,
                    "\n".join(f"  {f['error']}" for f in failures[:20]) + ("\n  ..." if len(failures) > 20 else ""))
    return result
