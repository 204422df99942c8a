"""nnU-Net v2 trainer for an equal wall-clock budget on a CPU (bench/peers; copied into nnunetv2's trainer package by
nnunet_run.py, because nnU-Net finds trainer classes only there).

Everything is nnUNetTrainer's (plan, network, loss, augmentation, optimiser, initial LR, batch, patch) except the
things a 1000-epoch x 250-iteration schedule cannot survive on a CPU, where one iteration of the default 2d plan costs
~30 s (docs/mission.md: one epoch alone would be ~2 h; even nnUNetTrainer_1epoch, the shortest trainer that ships,
does 250 + 50 iterations and saves no checkpoint before its end):

- short epochs: NNUNET_ITERS training iterations (default 10) and NNUNET_VAL_ITERS validation iterations (default 2);
- the poly LR schedule (exponent 0.9) runs over the wall-clock budget NNUNET_BUDGET_S (default 1800) instead of over
  1000 epochs, so the LR reaches ~0 when the budget ends, as it does at the end of a full nnU-Net training;
- checkpoint_latest.pth after every epoch (checkpoint_best.pth as usual, on a new best EMA pseudo-Dice);
- training stops before an epoch that would overrun the budget (at the mean epoch time so far) and writes
  checkpoint_final.pth as usual;
- the final full-resolution validation of run_training is skipped (NNUNET_FINAL_VAL=1 keeps it): the benchmark
  predicts the validation fold itself, timed, with nnUNetv2_predict.
"""

import os
from time import time

import numpy as np
import torch

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class nnUNetTrainer_CPUBudget(nnUNetTrainer):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.budget_s = float(os.environ.get("NNUNET_BUDGET_S", "1800"))
        self.num_iterations_per_epoch = int(os.environ.get("NNUNET_ITERS", "10"))
        self.num_val_iterations_per_epoch = int(os.environ.get("NNUNET_VAL_ITERS", "2"))
        self.num_epochs = 100000  # the budget ends training, not the epoch count
        self.save_every = 1
        self._t0 = None

    def on_train_start(self):
        super().on_train_start()
        self._t0 = time()
        self.print_to_log_file(f"CPU budget: {self.budget_s:.0f} s, {self.num_iterations_per_epoch} train + "
                               f"{self.num_val_iterations_per_epoch} val iterations per epoch, poly LR over the budget")

    def on_train_epoch_start(self):
        self.network.train()
        frac = min((time() - self._t0) / self.budget_s, 0.999)
        lr = self.initial_lr * (1 - frac) ** 0.9
        for g in self.optimizer.param_groups:
            g['lr'] = lr
        self.print_to_log_file('')
        self.print_to_log_file(f'Epoch {self.current_epoch}')
        self.print_to_log_file(f"Current learning rate: {np.round(lr, decimals=5)} (budget used {frac:.1%})")
        self.logger.log('lrs', lr, self.current_epoch)

    def run_training(self):
        """Epochs as nnUNetTrainer runs them, but the budget is checked after every iteration: an epoch of ~7 CPU
        minutes (10 iterations at ~40 s) is cut short rather than skipped, so the run uses its whole budget (an
        earlier epoch-granular rule left 7 of 30 minutes unused)."""
        self.on_train_start()
        epochs_done, iters_done, stop = 0, 0, False
        for epoch in range(self.current_epoch, self.num_epochs):
            self.on_epoch_start()
            self.on_train_epoch_start()
            train_outputs = []
            for _ in range(self.num_iterations_per_epoch):
                train_outputs.append(self.train_step(next(self.dataloader_train)))
                iters_done += 1
                elapsed = time() - self._t0
                # one more iteration, plus this epoch's validation (~ the same cost per batch), must fit
                per_iter = elapsed / iters_done
                if elapsed + per_iter * (1 + self.num_val_iterations_per_epoch) > self.budget_s:
                    stop = True
                    break
            self.on_train_epoch_end(train_outputs)
            with torch.no_grad():
                self.on_validation_epoch_start()
                val_outputs = [self.validation_step(next(self.dataloader_val))
                               for _ in range(self.num_val_iterations_per_epoch)]
                self.on_validation_epoch_end(val_outputs)
            self.on_epoch_end()
            epochs_done += 1
            if stop:
                self.print_to_log_file(f"budget reached after {epochs_done} epochs ({iters_done} iterations, "
                                       f"{time() - self._t0:.0f} s)")
                break
        self.on_train_end()

    def perform_actual_validation(self, save_probabilities: bool = False):
        if os.environ.get("NNUNET_FINAL_VAL", "0") == "1":
            super().perform_actual_validation(save_probabilities)
        else:
            self.print_to_log_file("final validation skipped (NNUNET_FINAL_VAL=1 runs it)")
