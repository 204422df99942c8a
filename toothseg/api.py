"""The Python API: one function behind each CLI verb.

    import toothseg.api as ts
    ts.synth("data/synth", labelled=40, unlabelled=20)
    ts.prepare(["data/synth"], out="runs/a")
    ts.train("runs/a", fold="all")
"""

from __future__ import annotations

import importlib
from typing import Any

_FUNCTIONS = {
    "synth": "toothseg.data.synth:synth",
    "check": "toothseg.data.check:check",
    "prepare": "toothseg.curate.prepare:prepare",
    "train": "toothseg.train.engine:train",
    "pseudo_label": "toothseg.pseudo.label:pseudo_label",
    "run": "toothseg.pipeline:run",
    "bundle": "toothseg.predict.bundle_build:build_bundle",
    "predict": "toothseg.predict.batch:predict",
    "export": "toothseg.predict.export:export",
    "evaluate": "toothseg.evaluate.evaluate:evaluate",
    "report": "toothseg.evaluate.report:report",
    "suggest": "toothseg.suggest.suggest:suggest",
    "review": "toothseg.review.server:review",
    "demo": "toothseg.demo:demo",
}

__all__ = list(_FUNCTIONS)


def __getattr__(name: str) -> Any:
    # Lazy so `import toothseg.api` stays fast and each stage pulls in only its own dependencies.
    if name not in _FUNCTIONS:
        raise AttributeError(f"module 'toothseg.api' has no attribute '{name}'")
    mod, fn = _FUNCTIONS[name].split(":")
    return getattr(importlib.import_module(mod), fn)
