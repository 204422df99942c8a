"""Running one member network on a batch: PyTorch here, ONNX Runtime in `onnx_engine`.

Both return probabilities (sigmoid of the tooth logit) as float32 (B, H, W) numpy arrays, so TTA, fusion and
outputs are engine-independent and the two engines can be compared pixel for pixel.
"""

from __future__ import annotations

import os

import numpy as np


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
