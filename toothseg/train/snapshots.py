"""Weight snapshots at 1/3 and 2/3 of training, for ST++-style pseudo-label filtering (`pseudo/stability.py`).

ST++ keeps the unlabelled images whose predictions are stable across a teacher's training: the predictions of its
earlier checkpoints agree with the final one's. The schedule length is only known while training (the time-budget
callback resizes it), so the snapshots are taken when ``global_step`` passes a third and two thirds of the
module's current ``total_steps``. Files: ``snapshot1.pt``, ``snapshot2.pt`` (the network's state dict only).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

from toothseg.atomic import atomic_path

SNAPSHOTS = ("snapshot1.pt", "snapshot2.pt")


class Snapshots(L.Callback):
    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        total = int(getattr(pl_module, "total_steps", 0) or 0)
        if total <= 0 or not trainer.is_global_zero:
            return
        for i, name in enumerate(SNAPSHOTS, start=1):
            path = self.out_dir / name
            if trainer.global_step >= total * i / 3 and not path.is_file():
                with atomic_path(path) as tmp:  # a kill mid-write leaves no half file under the real name
                    torch.save({k: v.detach().cpu() for k, v in pl_module.model.state_dict().items()}, tmp)
