"""Which pseudo-labelled images to train on: all, the top k, the best fraction (quantile) or those above a score.

Selection is deterministic (ties broken by key) so a rerun picks the same images; NaN scores are never picked
except by ``all``.
"""

from __future__ import annotations

import math
from typing import Mapping

from toothseg.errors import ConfigError

METHODS = ("all", "topk", "quantile", "threshold")


def check_selection(method: str, value: float) -> None:
    """Raise `ConfigError` (naming pseudo.select / pseudo.select_value) for a method/value pair that cannot work."""
    if method not in METHODS:
        raise ConfigError(f"pseudo.select='{method}' is unknown; choose one of: {', '.join(METHODS)}")
    if method == "topk" and (value < 1 or value != int(value)):
        raise ConfigError(f"pseudo.select_value={value}: topk needs a whole number of images >= 1 (e.g. 200)")
    if method == "quantile" and not 0 < value <= 1:
        raise ConfigError(f"pseudo.select_value={value}: quantile needs the kept fraction in (0, 1] (e.g. 0.8)")
    if method == "threshold" and not 0 <= value <= 1:
        raise ConfigError(f"pseudo.select_value={value}: threshold needs a minimum score in [0, 1] (e.g. 0.9)")


def select(scores: Mapping[str, float], method: str = "quantile", value: float = 0.8) -> dict[str, bool]:
    """Return {key: selected} for every key in ``scores`` (higher score = more trustworthy)."""
    check_selection(method, value)
    if method == "all":
        return {k: True for k in scores}
    finite = {k: float(v) for k, v in scores.items() if v is not None and math.isfinite(float(v))}
    if method == "threshold":
        keep = {k for k, v in finite.items() if v >= value}
    else:
        ranked = sorted(finite, key=lambda k: (-finite[k], k))
        n = int(value) if method == "topk" else math.ceil(value * len(scores))
        keep = set(ranked[:n])
    return {k: k in keep for k in scores}
