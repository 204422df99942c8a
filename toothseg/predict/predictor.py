"""Inference: the in-memory `Predictor` (used by pseudo-labelling too) and the `toothseg predict` batch verb.

A `Predictor` runs every member (fold x model x scale) on an image, with TTA, maps each member's probability back to
the original resolution, and fuses them with the bundle's weights; the bundle's OOF-tuned threshold and
post-processing then give the mask. The batch verb streams images through a small reader pool and a bounded window
of work, so memory stays flat over thousands of images, and torch/ONNX Runtime use every core.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import toothseg
from toothseg.atomic import file_sha256
from toothseg.data.io import read_image
from toothseg.data.preprocess import Placement, from_network, to_network
from toothseg.errors import ConfigError, ToothsegError
from toothseg.predict.bundle_format import Bundle, load_bundle
from toothseg.predict.engines import TorchRunner, cpu_threads
from toothseg.predict.inputs import expand_inputs
from toothseg.predict.outputs import (OutputPaths, completion, image_record, mark_output_folder, summary_row,
                                      write_outputs, write_summary)
from toothseg.predict.postprocess import postprocess
from toothseg.predict.threshold import binarise
from toothseg.predict.tta import TTA, Runner, parse_tta, run_views, scaled_size
from toothseg.preflight import ensure_writable_dir

log = logging.getLogger("toothseg")

Geometry = tuple[tuple[int, int], str]  # (network (h, w), resize mode)
Prepared = dict[Geometry, tuple[np.ndarray, Placement]]


@dataclass(frozen=True)
class Net:
    runner: Runner
    scale: tuple[int, int]
    resize: str
    weight: float
    name: str


def _tta_items(tta: bool | Sequence[str] | None, default: list[str]) -> list[str]:
    if tta is None:
        return list(default)
    if tta is True:
        return list(default) or ["hflip"]
    if tta is False:
        return []
    return list(tta)


class Predictor:
    """Fused tooth probabilities and masks for single images.

    ``source`` is a bundle (path or `Bundle`) or a list of ``(torch model, (h, w), resize, weight)``; ``folds``
    keeps only those folds' members (speed over accuracy), ``tta`` is None (the bundle's), True, False or a list such
    as ``["hflip", "scale:1.25"]``; ``threshold``/``postprocess`` override the bundle's OOF-tuned choices.
    """

    def __init__(self, source: str | Path | Bundle | list[tuple[Any, tuple[int, int], str, float]],
                 engine: str = "torch", folds: list[int] | None = None, tta: bool | Sequence[str] | None = None,
                 threshold: float | None = None, postprocess: dict | None = None, threads: int | None = None) -> None:
        if engine not in ("torch", "onnxruntime"):
            raise ConfigError(f"unknown engine '{engine}'; use torch or onnxruntime")
        self.engine = engine
        self.threads = cpu_threads(threads)
        if isinstance(source, (str, Path)):
            source = load_bundle(source)
        if isinstance(source, Bundle):
            self.bundle: Bundle | None = source
            self.defaults = {"tta": source.tta, "threshold": source.threshold, "postprocess": source.postprocess}
            chosen = source.select(folds)
            self.configure(tta, threshold, postprocess, _validate_only=True)
            nets = [self._member_net(source, m) for m in chosen]
        else:
            if engine != "torch":
                raise ConfigError("in-memory models run with engine 'torch'; export a bundle for onnxruntime")
            self.bundle = None
            self.defaults = {"tta": ["hflip"], "threshold": 0.5,
                             "postprocess": {"min_component": 0, "fill_holes": False}}
            import torch

            torch.set_num_threads(self.threads)
            nets = [Net(TorchRunner(m), tuple(s), r, float(w), f"model{i}") for i, (m, s, r, w) in enumerate(source)]
        if not nets:
            raise ConfigError("no model to predict with")
        total = sum(n.weight for n in nets)
        if total <= 0:
            raise ConfigError("fusion weights of the chosen members sum to 0")
        self.nets = [Net(n.runner, n.scale, n.resize, n.weight / total, n.name) for n in nets]
        self.configure(tta, threshold, postprocess)

    def configure(self, tta: bool | Sequence[str] | None = None, threshold: float | None = None,
                  postprocess: dict | None = None, _validate_only: bool = False) -> "Predictor":
        """Change TTA / threshold / post-processing without reloading the networks (None = the bundle's)."""
        tta_cfg = parse_tta(_tta_items(tta, self.defaults["tta"]))
        if self.engine == "onnxruntime" and any(s != 1.0 for s in tta_cfg.scales):
            raise ConfigError("scale TTA needs engine 'torch' (ONNX graphs are exported at the training scale)")
        thr = float(self.defaults["threshold"] if threshold is None else threshold)
        if not 0.0 <= thr <= 1.0:
            raise ConfigError(f"threshold {thr} must be in [0, 1]")
        pp = {**self.defaults["postprocess"], **(postprocess or {})}
        if int(pp.get("min_component", 0)) < 0:
            raise ConfigError(f"min_component {pp['min_component']} must be >= 0 (pixels)")
        if _validate_only:
            return self
        self.tta: TTA = tta_cfg
        self.threshold = thr
        self.postprocess = {"min_component": int(pp.get("min_component", 0)),
                            "fill_holes": bool(pp.get("fill_holes", False))}
        self.geometries: list[Geometry] = sorted({(scaled_size(n.scale, s), n.resize) for n in self.nets
                                                  for s in self.tta.scales})
        return self

    def _member_net(self, b: Bundle, m) -> Net:
        if self.engine == "torch":
            import torch

            torch.set_num_threads(self.threads)
            runner: Runner = TorchRunner(b.load_network(m))
        else:
            from toothseg.predict.onnx_engine import OnnxRunner

            if not m.onnx:
                raise ToothsegError(f"{b.root}: member {m.name} has no ONNX model; run "
                                    f"'toothseg export {b.root} --format onnx' first")
            runner = OnnxRunner(b.file(m.onnx, inside=False), self.threads)
        return Net(runner, tuple(m.scale), m.resize, m.weight, m.name)

    # ------------------------------------------------------------------------------------------------ per image
    def prepare(self, img_u8: np.ndarray) -> Prepared:
        """Network inputs for every geometry the members and TTA scales need (safe to run in reader threads)."""
        return {g: to_network(img_u8, g[0], g[1]) for g in self.geometries}

    def iter_members(self, batch: Sequence[Prepared]) -> Iterator[tuple[int, list[np.ndarray]]]:
        """(member index, probabilities at original size per image), one member at a time (bounded memory)."""
        for mi, net in enumerate(self.nets):
            acc: list[np.ndarray | None] = [None] * len(batch)
            for s in self.tta.scales:
                g = (scaled_size(net.scale, s), net.resize)
                x = np.stack([p[g][0] for p in batch])[:, None]
                probs = run_views(net.runner, x, self.tta.hflip)
                for i, p in enumerate(batch):
                    o = from_network(probs[i], p[g][1])
                    acc[i] = o if acc[i] is None else acc[i] + o
            n = np.float32(len(self.tta.scales))
            yield mi, [a / n if n != 1 else a for a in acc]  # type: ignore[operator]

    def predict_proba_batch(self, batch: Sequence[Prepared]) -> list[np.ndarray]:
        """Fused probabilities (float32, original size) for prepared images, run as one batch per member."""
        fused: list[np.ndarray | None] = [None] * len(batch)
        for mi, probs in self.iter_members(batch):
            w = np.float32(self.nets[mi].weight)
            for i, p in enumerate(probs):
                fused[i] = w * p if fused[i] is None else fused[i] + w * p
        return [np.clip(f, 0.0, 1.0) for f in fused]  # type: ignore[arg-type]

    def predict_proba(self, img_u8: np.ndarray) -> np.ndarray:
        """Fused tooth probability of one uint8 X-ray, float32 at its original size."""
        return self.predict_proba_batch([self.prepare(img_u8)])[0]

    def predict_members(self, img_u8: np.ndarray) -> list[np.ndarray]:
        """Each member's probability (after TTA) at original size, in member order (see ``member_names``)."""
        return [p[0] for _, p in self.iter_members([self.prepare(img_u8)])]

    @property
    def member_names(self) -> list[str]:
        return [n.name for n in self.nets]

    def to_mask(self, prob: np.ndarray) -> np.ndarray:
        """Threshold + the chosen post-processing."""
        return postprocess(binarise(prob, self.threshold), self.postprocess["min_component"],
                           self.postprocess["fill_holes"])

    def predict_mask(self, img_u8: np.ndarray) -> np.ndarray:
        return self.to_mask(self.predict_proba(img_u8))

    def settings(self) -> dict:
        return {"threshold": self.threshold, "postprocess": self.postprocess, "engine": self.engine,
                "members": self.member_names, "tta": self.tta.describe()}


# ------------------------------------------------------------------------------------------------------ batch verb
def _error_text(exc: BaseException, path: Path) -> str:
    if isinstance(exc, ToothsegError):
        return str(exc)
    return f"{path}: {exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")


class _Progress:
    def __init__(self, total: int, every_s: float = 10.0) -> None:
        self.total, self.every_s = total, every_s
        self.t0 = self.last = time.perf_counter()
        self.step = max(1, total // 20)

    def update(self, done: int, failed: int) -> None:
        now = time.perf_counter()
        if done == self.total or done % self.step == 0 or now - self.last > self.every_s:
            self.last = now
            rate = done / max(now - self.t0, 1e-9)
            log.info("predict: %d/%d images (%.2f/s)%s", done, self.total, rate, f", {failed} failed" if failed else "")


def predict(bundle: str | Path, inputs: list[str], out: str | Path, engine: str = "torch",
            folds: list[int] | None = None, tta: bool | None = None, threshold: float | None = None,
            min_component: int | None = None, fill_holes: bool | None = None, save_prob: bool = False,
            overlay: bool = True, overwrite: bool = False, batch_size: int | None = None, workers: int | None = None,
            threads: int | None = None) -> dict:
    """Segment every image in ``inputs`` (files, folders, globs) into ``out``; returns a summary with failures.

    An image whose complete outputs for the same content (sha256) are in ``out`` is skipped; outputs left by an
    interrupted run are redone; a name already used in ``out`` by a different image is refused for that image
    (``overwrite`` replaces both). Bad files are reported and skipped. ``threshold``, ``min_component`` and
    ``fill_holes`` override the bundle's OOF-tuned choices (None: keep them).
    """
    t0 = time.perf_counter()
    out = ensure_writable_dir(out)  # before the models load: a bad --out costs nothing
    b = load_bundle(bundle)
    files, problems, notes = expand_inputs(list(inputs), exclude=[out])
    for note in notes:
        log.warning("predict: %s", note)
    if not files:
        detail = f": {problems[0][0]}: {problems[0][1]}" if problems else ""
        raise ToothsegError(f"no image to predict among {len(inputs)} input(s){detail}")
    cfg_bs = ((b.meta.get("config") or {}).get("predict") or {}).get("batch_size", 2)
    bs = int(batch_size or cfg_bs)
    if bs < 1:
        raise ConfigError(f"batch size {bs} must be >= 1")
    n_workers = int(workers) if workers else min(4, cpu_threads())
    post = {k: v for k, v in (("min_component", min_component), ("fill_holes", fill_holes)) if v is not None}
    predictor = Predictor(b, engine=engine, folds=folds, tta=tta, threshold=threshold, postprocess=post or None,
                          threads=threads)
    load_s = time.perf_counter() - t0
    ours = mark_output_folder(out)
    settings = {**predictor.settings(), "bundle": str(b.root), "toothseg_version": toothseg.__version__}

    rows: dict[int, dict] = {}
    failures: list[dict] = [{"input": a, "error": f"{a}: {msg}"} for a, msg in problems]
    todo: list[tuple[int, Path, OutputPaths]] = []
    shas: dict[int, str] = {}
    stems: dict[str, Path] = {}
    n_redo = 0

    def refuse(i: int, f: Path, stem: str, err: str) -> None:
        rows[i] = summary_row(stem, f, "failed", error=err)
        failures.append({"input": str(f), "error": err})

    for i, f in enumerate(files):
        stem = f.stem
        paths = OutputPaths(out, stem)
        if stem in stems:
            refuse(i, f, stem, f"{f}: output name '{stem}' is already used by {stems[stem]}; predict them into "
                               "separate --out folders")
            continue
        stems[stem] = f
        try:
            sha = file_sha256(f)
        except OSError as exc:
            refuse(i, f, stem, f"{f}: cannot read ({exc.strerror or exc.__class__.__name__})")
            continue
        state, rec = completion(paths, sha, f)
        if not overwrite:
            if state == "done":
                rows[i] = summary_row(stem, f, "skipped", rec, error="outputs exist; pass --overwrite to redo")
                continue
            if state == "other":
                refuse(i, f, stem, f"{f}: {paths.record} holds the result of a different image "
                                   f"({rec.get('input', '?')}); predict into another --out, or pass --overwrite "
                                   "to replace it")
                continue
            if state == "partial" and not ours:
                refuse(i, f, stem, f"{f}: {paths.mask.parent} already holds '{stem}' files toothseg did not write; "
                                   "choose another --out, or pass --overwrite to replace them")
                continue
        n_redo += state == "partial"
        shas[i] = sha
        todo.append((i, f, paths))
    n_skipped = sum(r["status"] == "skipped" for r in rows.values())
    if n_skipped:
        log.info("predict: %d image(s) already have outputs in %s; skipped (pass --overwrite to redo)", n_skipped, out)
    if n_redo:
        log.info("predict: %d image(s) have incomplete outputs in %s (an interrupted run); redoing them", n_redo, out)

    def load(path: Path) -> tuple[np.ndarray, Prepared]:
        img = read_image(path)
        return img, predictor.prepare(img)

    def finish(i: int, path: Path, paths: OutputPaths, img: np.ndarray, prob: np.ndarray) -> dict:
        mask = predictor.to_mask(prob)
        rec = image_record(path, prob, mask, settings, shas[i])
        return write_outputs(paths, img, prob, mask, rec, save_prob, overlay)

    window = max(2 * bs, 2 * n_workers)
    progress = _Progress(len(todo))
    done = 0
    with ThreadPoolExecutor(n_workers, thread_name_prefix="toothseg-read") as readers, \
            ThreadPoolExecutor(max(1, n_workers // 2), thread_name_prefix="toothseg-write") as writers:
        pending_reads: deque[tuple[int, Path, OutputPaths, Future]] = deque()
        pending_writes: deque[tuple[int, Path, OutputPaths, Future]] = deque()
        queue = iter(todo)

        def fill() -> None:
            while len(pending_reads) < window:
                item = next(queue, None)
                if item is None:
                    return
                pending_reads.append((*item, readers.submit(load, item[1])))

        def fail(i: int, path: Path, paths: OutputPaths, exc: BaseException) -> None:
            nonlocal done
            err = _error_text(exc, path)
            log.warning("predict: skipped %s", err)
            rows[i] = summary_row(paths.stem, path, "failed", error=err)
            failures.append({"input": str(path), "error": err})
            done += 1
            progress.update(done, len(failures) - len(problems))

        def settle_writes(limit: int) -> None:
            nonlocal done
            while len(pending_writes) > limit:
                i, path, paths, fut = pending_writes.popleft()
                try:
                    rows[i] = summary_row(paths.stem, path, "ok", fut.result())
                except Exception as exc:  # a write failure is that image's failure, not the run's
                    fail(i, path, paths, exc)
                    continue
                done += 1
                progress.update(done, len(failures) - len(problems))

        def run_batch(batch: list[tuple[int, Path, OutputPaths, np.ndarray, Prepared]]) -> None:
            try:
                probs = predictor.predict_proba_batch([x[4] for x in batch])
            except Exception as exc:
                if len(batch) > 1:  # isolate the culprit: run the images one by one
                    for x in batch:
                        run_batch([x])
                    return
                i, path, paths = batch[0][:3]
                fail(i, path, paths, exc)
                return
            for (i, path, paths, img, _), prob in zip(batch, probs):
                pending_writes.append((i, path, paths, writers.submit(finish, i, path, paths, img, prob)))
            settle_writes(window)

        fill()
        batch: list[tuple[int, Path, OutputPaths, np.ndarray, Prepared]] = []
        while pending_reads:
            i, path, paths, fut = pending_reads.popleft()
            fill()
            try:
                img, prep = fut.result()
            except Exception as exc:
                fail(i, path, paths, exc)
                continue
            batch.append((i, path, paths, img, prep))
            if len(batch) == bs:
                run_batch(batch)
                batch = []
        if batch:
            run_batch(batch)
        settle_writes(0)

    for k, (arg, msg) in enumerate(problems):
        rows[len(files) + k] = summary_row(Path(arg).stem, arg, "failed", error=f"{arg}: {msg}")
    summary_csv = write_summary(out, [rows[k] for k in sorted(rows)])
    seconds = time.perf_counter() - t0
    n_ok = sum(r["status"] == "ok" for r in rows.values())
    summary = {"out": str(out), "summary_csv": str(summary_csv), "n_inputs": len(files) + len(problems),
               "n_ok": n_ok, "n_skipped": n_skipped, "n_failed": len(failures), "failures": failures,
               "seconds": round(seconds, 3), "load_seconds": round(load_s, 3),
               # throughput after the models are loaded: what a long batch job sees
               "images_per_s": round(n_ok / (seconds - load_s), 4) if seconds > load_s else None,
               **{k: settings[k] for k in ("engine", "threshold", "postprocess", "tta")},
               "n_members": len(predictor.nets), "notes": notes}
    if failures:
        log.warning("predict: %d of %d input(s) failed:\n%s", len(failures), summary["n_inputs"],
                    "\n".join(f"  {f['error']}" for f in failures[:20]) + ("\n  ..." if len(failures) > 20 else ""))
    return summary
