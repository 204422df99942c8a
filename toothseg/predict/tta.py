"""Test-time augmentation: horizontal flip (an OPG is nearly left-right symmetric) and optional extra input scales.

Each augmented view's probabilities are mapped back (un-flipped, resized to the original image) and averaged.
Written as ``["hflip", "scale:1.25"]`` in the config/bundle (``predict.tta``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from toothseg.errors import ConfigError

Runner = Callable[[np.ndarray], np.ndarray]  # (B, 1, H, W) float32 network input -> (B, H, W) float32 probability


@dataclass(frozen=True)
class TTA:
    hflip: bool = False
    scales: tuple[float, ...] = (1.0,)

    def describe(self) -> list[str]:
        return (["hflip"] if self.hflip else []) + [f"scale:{s:g}" for s in self.scales if s != 1.0]


def parse_tta(items: list[str]) -> TTA:
    """``["hflip", "scale:1.25"]`` -> TTA; unknown items are a config error."""
    hflip, scales = False, [1.0]
    for it in items:
        it = str(it).strip().lower()
        if it == "hflip":
            hflip = True
        elif it.startswith("scale:"):
            try:
                s = float(it.split(":", 1)[1])
            except ValueError:
                s = -1.0
            if not 0.25 <= s <= 4:
                raise ConfigError(f"TTA '{it}': the scale must be a number in [0.25, 4] (e.g. scale:1.25)")
            if s not in scales:
                scales.append(s)
        elif it in ("", "none"):
            continue
        else:
            raise ConfigError(f"unknown TTA '{it}'; use 'hflip' and/or 'scale:<factor>' (e.g. scale:1.25)")
    return TTA(hflip, tuple(scales))


def scaled_size(size: tuple[int, int], s: float) -> tuple[int, int]:
    """``size`` times ``s``, rounded to multiples of 32 (what encoders with 5 down-samplings need)."""
    return tuple(max(32, int(v * s / 32.0 + 0.5) * 32) for v in size)  # type: ignore[return-value]


def run_views(runner: Runner, x: np.ndarray, hflip: bool) -> np.ndarray:
    """Probabilities for a batch, averaged with the flipped view when ``hflip`` (one forward of 2B images)."""
    if not hflip:
        return runner(x)
    b = x.shape[0]
    p = runner(np.ascontiguousarray(np.concatenate([x, x[..., ::-1]], axis=0)))
    return 0.5 * (p[:b] + p[b:, :, ::-1])
