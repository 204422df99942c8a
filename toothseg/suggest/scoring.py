"""How much a label would teach the model: disagreement among bundle members x TTA views and fused-map entropy.

Both scores are oriented "higher = more worth labelling" and lie in [0, 1]. They are the complements of the
pseudo-label confidences (`toothseg.pseudo.confidence`), so one definition serves both uses.
"""

from __future__ import annotations

import numpy as np

from toothseg.predict.fusion import fuse
from toothseg.pseudo.confidence import agreement, entropy


def uncertainty(views: np.ndarray, weights: list[float] | None = None, threshold: float = 0.5) -> dict[str, float]:
    """``disagreement`` (1 - mean pairwise Dice of the views' masks), ``entropy`` (mean binary entropy of the fused
    map over the predicted tooth region) and their mean, ``score``; plus the fused map's tooth fraction."""
    v = np.asarray(views, dtype=np.float32)
    if v.ndim != 3 or v.shape[0] < 2:
        raise ValueError(f"need (M >= 2, H, W) member views, got shape {v.shape}")
    fused = fuse(list(v), weights)
    dis = 1.0 - agreement(v, fused, threshold)
    ent = 1.0 - entropy(v, fused, threshold)
    return {"score": 0.5 * (dis + ent), "disagreement": dis, "entropy": ent,
            "tooth_fraction": float((fused > threshold).mean())}
