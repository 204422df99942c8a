"""Inference in memory: the `Predictor` behind `toothseg predict` (`toothseg.predict.batch`), pseudo-labelling and
suggest.

A `Predictor` runs every member (fold x model x scale) on an image, with TTA, maps each member's probability back to
the original resolution, and fuses them with the bundle's weights; the bundle's OOF-tuned threshold and
post-processing then give the mask.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from toothseg.data.io import read_image
from toothseg.data.layout import Sample
from toothseg.data.preprocess import Placement, from_network, to_network
from toothseg.errors import ConfigError, InputError, ToothsegError
from toothseg.predict.bundle_format import Bundle, Member, load_bundle
from toothseg.predict.engines import OnnxRunner, TorchRunner, cpu_threads
from toothseg.predict.postprocess import postprocess
from toothseg.predict.threshold import binarise
from toothseg.predict.tta import TTA, Runner, parse_tta, run_views, scaled_size

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


def _settings(defaults: dict, engine: str, tta: bool | Sequence[str] | None, threshold: float | None,
              postprocess: dict | None) -> tuple[TTA, float, dict]:
    """TTA, threshold and post-processing after overrides (None keeps the default); bad values are one line."""
    default = list(defaults["tta"])
    tta_cfg = parse_tta(default if tta is None else (default or ["hflip"]) if tta is True else [] if tta is False
                        else list(tta))
    if engine == "onnxruntime" and any(s != 1.0 for s in tta_cfg.scales):
        raise ConfigError("scale TTA needs engine 'torch' (ONNX graphs are exported at the training scale)")
    thr = float(defaults["threshold"] if threshold is None else threshold)
    if not 0.0 <= thr <= 1.0:
        raise ConfigError(f"threshold {thr} must be in [0, 1]")
    pp = {**defaults["postprocess"], **(postprocess or {})}
    if int(pp.get("min_component", 0)) < 0:
        raise ConfigError(f"min_component {pp['min_component']} must be >= 0 (pixels)")
    return tta_cfg, thr, {"min_component": int(pp.get("min_component", 0)),
                          "fill_holes": bool(pp.get("fill_holes", False))}


def split_hflip(tta: Sequence[str]) -> tuple[list[str], bool]:
    """``tta`` without hflip, and whether it had it: pseudo-label and suggest run the mirror as separate views
    (`Predictor.member_views`), whose spread is their score, instead of averaging it away."""
    rest = [t for t in tta if str(t).strip().lower() != "hflip"]
    return rest, len(rest) < len(tta)


def read_or_skip(sample: Sample, failed: dict[str, str], stage: str) -> np.ndarray | None:
    """The sample's image, or None once the reason is logged and kept in ``failed[key]``: pseudo-label and suggest
    go on past an unreadable file in the pool."""
    try:
        return read_image(sample.image_path)
    except InputError as exc:
        failed[sample.key] = str(exc)
        log.warning("%s: skipped %s", stage, exc)
        return None


def _member_net(b: Bundle, m: Member, engine: str, threads: int) -> Net:
    if engine == "torch":
        runner: Runner = TorchRunner(b.load_network(m))
    elif not m.onnx:
        raise ToothsegError(f"{b.root}: member {m.name} has no ONNX model; run "
                            f"'toothseg export {b.root} --format onnx' first")
    else:
        runner = OnnxRunner(b.file(m.onnx, inside=False), threads)
    return Net(runner, tuple(m.scale), m.resize, m.weight, m.name)


class Predictor:
    """Fused tooth probabilities and masks for single images, from a bundle (`from_bundle`) or from networks in
    memory (`from_models`).

    ``tta`` is None (the bundle's), True, False or a list such as ``["hflip", "scale:1.25"]``;
    ``threshold``/``postprocess`` override the bundle's OOF-tuned choices.
    """

    def __init__(self, nets: list[Net], defaults: dict, engine: str = "torch", bundle: Bundle | None = None,
                 tta: bool | Sequence[str] | None = None, threshold: float | None = None,
                 postprocess: dict | None = None) -> None:
        if not nets:
            raise ConfigError("no model to predict with")
        total = sum(n.weight for n in nets)
        if total <= 0:
            raise ConfigError("fusion weights of the chosen members sum to 0")
        self.engine, self.bundle, self.defaults = engine, bundle, defaults
        self.nets = [Net(n.runner, n.scale, n.resize, n.weight / total, n.name) for n in nets]
        self.configure(tta, threshold, postprocess)

    @classmethod
    def from_bundle(cls, bundle: str | Path | Bundle, engine: str = "torch", folds: list[int] | None = None,
                    tta: bool | Sequence[str] | None = None, threshold: float | None = None,
                    postprocess: dict | None = None, threads: int | None = None) -> "Predictor":
        """The bundle's members (only those of ``folds``: speed over accuracy) run by ``engine``."""
        if engine not in ("torch", "onnxruntime"):
            raise ConfigError(f"unknown engine '{engine}'; use torch or onnxruntime")
        b = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        defaults = {"tta": b.tta, "threshold": b.threshold, "postprocess": b.postprocess}
        chosen = b.select(folds)
        _settings(defaults, engine, tta, threshold, postprocess)  # bad settings cost no network load
        n_threads = cpu_threads(threads)
        if engine == "torch":
            import torch

            torch.set_num_threads(n_threads)
        nets = [_member_net(b, m, engine, n_threads) for m in chosen]
        return cls(nets, defaults, engine, b, tta, threshold, postprocess)

    @classmethod
    def from_models(cls, models: list[tuple[Any, tuple[int, int], str, float]],
                    tta: bool | Sequence[str] | None = None, threshold: float | None = None,
                    postprocess: dict | None = None, threads: int | None = None) -> "Predictor":
        """Torch networks in memory, each as ``(model, (h, w), resize, weight)``; defaults: hflip TTA, 0.5."""
        import torch

        torch.set_num_threads(cpu_threads(threads))
        nets = [Net(TorchRunner(m), tuple(s), r, float(w), f"model{i}") for i, (m, s, r, w) in enumerate(models)]
        defaults = {"tta": ["hflip"], "threshold": 0.5, "postprocess": {"min_component": 0, "fill_holes": False}}
        return cls(nets, defaults, "torch", None, tta, threshold, postprocess)

    def configure(self, tta: bool | Sequence[str] | None = None, threshold: float | None = None,
                  postprocess: dict | None = None) -> "Predictor":
        """Change TTA / threshold / post-processing without reloading the networks (None = the bundle's)."""
        self.tta, self.threshold, self.postprocess = _settings(self.defaults, self.engine, tta, threshold, postprocess)
        self.geometries: list[Geometry] = sorted({(scaled_size(n.scale, s), n.resize) for n in self.nets
                                                  for s in self.tta.scales})
        return self

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

    def member_views(self, img_u8: np.ndarray, hflip: bool = True) -> np.ndarray:
        """(M, H, W) float32: each member on the image and, with ``hflip``, on its mirror (mapped back); the views
        whose spread pseudo-label confidence and suggest's uncertainty measure."""
        views = self.predict_members(img_u8)
        if hflip:
            views += [m[:, ::-1] for m in self.predict_members(np.ascontiguousarray(img_u8[:, ::-1]))]
        return np.stack(views).astype(np.float32)

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
