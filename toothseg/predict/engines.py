"""Running one member network on a batch: `TorchRunner` (PyTorch) or `OnnxRunner` (ONNX Runtime on the CPU, the
deployment path that needs neither PyTorch nor Lightning).

Both return probabilities (sigmoid of the tooth logit) as float32 (B, H, W) numpy arrays, so TTA, fusion and
outputs are engine-independent and the two engines can be compared pixel for pixel.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from toothseg.errors import InputError, first_line

INPUT_NAME = "image"  # of exported ONNX graphs
OUTPUT_NAME = "prob"


def cpu_threads(threads: int | None = None) -> int:
    """Threads to use: all cores this process may run on unless told otherwise."""
    if threads:
        return int(threads)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


class TorchRunner:
    """A PyTorch network in eval mode, run under ``inference_mode``."""

    def __init__(self, model) -> None:
        import torch

        self.torch = torch
        self.model = model.eval()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            logits = self.model(self.torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
            return self.torch.sigmoid(logits)[:, 0].float().numpy()


class OnnxRunner:
    """One exported member; its graph outputs probabilities (B, 1, H, W)."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = cpu_threads(threads)
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for invalid models
            raise InputError(path, f"ONNX Runtime cannot load it ({first_line(exc, 200)})",
                             "re-export with 'toothseg export BUNDLE --format onnx --overwrite'") from None
        shape = self.session.get_inputs()[0].shape
        self.size = tuple(d if isinstance(d, int) else None for d in shape[2:4])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.size[0] is not None and tuple(x.shape[2:4]) != self.size:
            raise ValueError(f"ONNX model takes {self.size[0]}x{self.size[1]} inputs, got {x.shape[2]}x{x.shape[3]}")
        out = self.session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(x, dtype=np.float32)})[0]
        return out[:, 0]
