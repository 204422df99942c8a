"""A trained `SegModule` back from its checkpoint, through the one safe loader (`toothseg.models.checkpoint`)."""

from __future__ import annotations

from pathlib import Path

from toothseg.errors import InputError, first_line
from toothseg.models.checkpoint import load_checkpoint, load_strict
from toothseg.train.module import SegModule


def module_from_checkpoint(path: str | Path) -> SegModule:
    """Rebuild the `SegModule` from a checkpoint's ``hyper_parameters`` and load its weights (instead of
    ``SegModule.load_from_checkpoint``, which unpickles with ``weights_only=False``)."""
    ckpt = load_checkpoint(path)
    hp = ckpt.get("hyper_parameters")
    try:
        module = SegModule(model=dict(hp["model"]), scale=list(hp["scale"]), resize=str(hp["resize"]),
                           train=dict(hp["train"]))
    except Exception as exc:  # missing keys or values the config no longer accepts
        raise InputError(path, f"checkpoint settings unusable ({exc.__class__.__name__}: "
                         f"{first_line(exc, 120)})", "re-train this fold") from None
    load_strict(module, ckpt["state_dict"], path, "the model its settings describe", "re-train this fold")
    module.on_load_checkpoint(ckpt)
    return module
