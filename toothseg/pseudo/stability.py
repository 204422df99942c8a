"""ST++ image filter: how stable a teacher's prediction of an unlabelled image was over its training.

For each fold of the teacher, the snapshots taken at 1/3 and 2/3 of training (`train/snapshots.py`) and the
fold's ``best.ckpt`` predict the image at network resolution; the image's stability is the mean Dice of each
snapshot's mask against the best checkpoint's, averaged over folds. Pseudo-labelling keeps the most stable share
(``pseudo.stability_keep``) among the images its confidence selection kept.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

from toothseg.data.preprocess import to_network
from toothseg.errors import InputError
from toothseg.evaluate.metrics import dice
from toothseg.models.checkpoint import safe_load
from toothseg.run.family import Family
from toothseg.train.restore import module_from_checkpoint
from toothseg.train.snapshots import SNAPSHOTS


class StabilityScorer:
    """Loads every fold's (snapshot1, snapshot2, best) networks of ``train/<tag>``; ``score(img)`` -> [0, 1]."""

    def __init__(self, tag_dir: Path, folds: list[int] | None = None) -> None:
        fold_dirs = [f.path for f in Family(Path(tag_dir)).folds(only=folds)]
        if not fold_dirs:
            raise InputError(tag_dir, "no trained folds to measure stability with", "train the teacher first")
        self.folds: list[list[torch.nn.Module]] = []
        for fd in fold_dirs:
            best = module_from_checkpoint(fd / "best.ckpt")
            self.size, self.resize = tuple(best.hparams["scale"]), best.hparams["resize"]
            nets = []
            for name in SNAPSHOTS:
                path = fd / name
                if not path.is_file():
                    raise InputError(path, "no training snapshot for the stability filter",
                                     "train the teacher with pseudo.stability_keep > 0 set (snapshots are saved "
                                     "during training) or set pseudo.stability_keep=0")
                net = copy.deepcopy(best.model)
                net.load_state_dict(safe_load(path, "retrain the teacher with pseudo.stability_keep > 0"))
                nets.append(net.eval())
            self.folds.append(nets + [best.model.eval()])

    @torch.no_grad()
    def score(self, img_u8: np.ndarray) -> float:
        x, _ = to_network(img_u8, self.size, self.resize)
        t = torch.from_numpy(x)[None, None]
        per_fold = []
        for nets in self.folds:
            masks = [(net(t)[0, 0] > 0).numpy() for net in nets]
            per_fold.append(float(np.mean([dice(m, masks[-1]) for m in masks[:-1]])))
        return float(np.mean(per_fold))
