"""The one door for reading checkpoints and weight files: tensors and plain containers only, never code.

Every ``.ckpt``/``.pt``/``.pth`` toothseg reads (fold checkpoints, resume state, init weights, bundle members)
goes through `safe_load`, i.e. ``torch.load(weights_only=True)``. A file whose unpickling needs anything beyond
tensors, numbers, strings and containers is refused: run folders and bundles are shared between people, and an
unpickled file can run any code it likes.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

from toothseg.atomic import atomic_path
from toothseg.errors import InputError, first_line

# What a finished model's checkpoint keeps: every reader (bundle building, OOF scoring, warm starts, hard mining,
# the stability filter) needs only the weights, the settings that rebuild the network and the step they were taken
# at. The weights in ``state_dict`` are the EMA average when training averaged them (Lightning's EMA callback puts
# it there and the raw weights under ``current_model_state``, which is dropped with the optimizer state).
WEIGHTS_KEYS = ("state_dict", "hyper_parameters", "hparams_name", "epoch", "global_step",
                "pytorch-lightning_version", "toothseg_schedule")


def safe_load(path: str | Path, fix: str = "re-create it with toothseg (re-train or rebuild the bundle)") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with every failure turned into one `InputError` line."""
    import torch

    p = Path(path)
    if not p.is_file():
        raise InputError(p, "file not found", fix)
    if p.stat().st_size == 0:
        raise InputError(p, "empty file (an interrupted copy or save?)", fix)
    try:
        return torch.load(str(p), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"(?:unsupported|Unsupported global:) GLOBAL ([\w.]+)", str(exc))
        if found:  # the file names a Python callable to run while loading
            raise InputError(p, "refused: loading it would need arbitrary unpickling, which can run code "
                             f"(it references {found.group(1)})",
                             f"use only checkpoints toothseg wrote; {fix}") from None
        raise InputError(p, "not a plain PyTorch weights file (unsupported pickle content; not loaded)", fix) from None
    except Exception as exc:  # torch raises many types for damaged files (EOFError, RuntimeError, KeyError, ...)
        msg = first_line(exc, default=exc.__class__.__name__).split(". ")[0][:120]
        raise InputError(p, f"truncated or not a PyTorch file ({msg})", fix) from None


def load_strict(net: Any, state_dict: dict, path: str | Path, what: str, fix: str) -> Any:
    """``net`` with ``state_dict`` loaded strictly: weights that do not fit fail here, as one `InputError` line
    naming the first mismatches, not later as a torch traceback."""
    try:
        net.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise InputError(path, f"weights do not fit {what} ({' '.join(str(exc).split())[:200]})", fix) from None
    return net


def load_checkpoint(path: str | Path) -> dict:
    """A Lightning checkpoint toothseg wrote: a dict with ``state_dict`` and ``hyper_parameters``."""
    ckpt = safe_load(path, "re-train this fold ('toothseg train RUN --fold K --overwrite')")
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise InputError(path, "not a toothseg checkpoint (no state_dict)", "re-train this fold")
    return ckpt


def save_weights_only(src: str | Path, dst: str | Path | None = None) -> None:
    """Rewrite checkpoint ``src`` (to ``dst``, default in place, atomically) with only `WEIGHTS_KEYS`.

    Done on the finished file rather than with ModelCheckpoint(save_weights_only=True): that skips the callbacks'
    checkpoint hooks, so under EMA it would store the raw weights instead of the validated average.
    """
    import torch

    ckpt = load_checkpoint(src)
    with atomic_path(dst or src) as tmp:
        torch.save({k: ckpt[k] for k in WEIGHTS_KEYS if k in ckpt}, tmp)
