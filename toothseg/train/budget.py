"""Spend a wall-clock budget on training steps: plan how many optimizer steps fit, and end exactly there.

With ``--max-time`` the number of steps that fit is unknown up front. `BudgetSchedule` measures (through
`toothseg.train.phases.PhaseTimes`) what one optimizer step, one validation and one checkpoint write cost, and
every few steps re-plans the total step count so that the remaining steps, the validations and checkpoints they
trigger, and a reserve for the final validation and checkpoint writes all fit in the time left (`plan_total_steps`).
The learning-rate schedule (warm-up and decay) is re-sized to that total each time, the last epoch may be partial,
and when the plan is reached training stops with a validation of the final weights (so they can become best.ckpt).
Lightning's own ``max_time`` Timer stays in place as the hard stop. The time already spent survives ``--resume``
(it is part of this callback's checkpoint state). Under DDP rank 0's plan is broadcast, so every rank stops on
the same step.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L

from toothseg.config import TrainConfig
from toothseg.train.phases import PhaseTimes, now

PROBE_STEPS = 5  # first plan after this many optimizer steps
REPLAN_EVERY = 10  # then re-plan this often (and after every validation)
VAL_COST = 0.35  # before a validation was timed: a validation batch costs about this share of a training batch
SMALL_COST = 0.3  # before both were timed: a half-scale step costs about this share of a full-scale one
MARGIN_S = 2.0  # seconds kept free for what no measurement covers (loop bookkeeping, logger flushes)
WARMUP_MAX_SHARE = 0.2  # warm-up never takes more than this share of the planned steps


def plan_total_steps(done: int, remaining_s: float, step_s: float, val_s: float, ckpt_s: float, val_interval: int,
                     ckpt_interval: int, cap: int, small_share: float = 0.0, small_ratio: float = 1.0) -> int:
    """Largest total of optimizer steps (>= ``done``, <= ``cap``) whose cost from step ``done`` on fits in
    ``remaining_s``: full-scale steps at ``step_s`` (the first ``small_share`` of the total at ``small_ratio`` of
    it), a validation (``val_s``) plus a checkpoint write every ``val_interval`` steps, a checkpoint write every
    ``ckpt_interval`` steps, and in reserve the final validation, two checkpoint writes (best, last) and MARGIN_S.
    """

    def cost(total: int) -> float:
        small_end = int(small_share * total)
        n_small = max(0, min(total, small_end) - done)
        n_full = total - done - n_small
        vals = (total - 1) // max(val_interval, 1) - done // max(val_interval, 1)  # the final one is reserved
        ckpts = total // max(ckpt_interval, 1) - done // max(ckpt_interval, 1)
        return (n_small * small_ratio + n_full) * step_s + vals * (val_s + ckpt_s) + ckpts * ckpt_s

    left = remaining_s - (val_s + 2 * ckpt_s + MARGIN_S)
    lo, hi = done, max(done, cap)
    if cost(lo) > left:
        return done
    while lo < hi:  # cost() grows with the total: bisect for the last total that fits
        mid = (lo + hi + 1) // 2
        if cost(mid) <= left:
            lo = mid
        else:
            hi = mid - 1
    return lo


class BudgetSchedule(L.Callback):
    """Plans, re-plans and ends training on a wall-clock budget of ``budget_s`` seconds (see the module doc);
    ``tcfg`` gives the validation interval, step cap, warm-up and progressive-resizing share."""

    def __init__(self, budget_s: float, phases: PhaseTimes, max_epochs: int, tcfg: TrainConfig, val_batches: int = 0,
                 ckpt_every: int = 0) -> None:
        self.budget_s = float(budget_s)
        self.phases = phases
        self.max_epochs = max_epochs
        self.tcfg = tcfg
        self.val_batches = val_batches
        self.ckpt_every = ckpt_every
        self.planned: int | None = None
        self.spent_before = 0.0  # seconds spent in earlier (resumed) sessions
        self._start: float | None = None
        self._last_plan = -1
        self._replan = False

    def state_dict(self) -> dict[str, Any]:
        return {"spent": self.elapsed(), "planned": self.planned}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.spent_before = float(state_dict.get("spent", 0.0))
        self.planned = state_dict.get("planned")

    def elapsed(self) -> float:
        return self.spent_before + (now() - self._start if self._start is not None else 0.0)

    def remaining(self) -> float:
        return self.budget_s - self.elapsed()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = now()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._replan = True

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if step == self._last_plan or step < PROBE_STEPS:
            return
        if self._replan or self.planned is None or step - self._last_plan >= REPLAN_EVERY:
            self._plan(trainer, pl_module)
        if self.planned is not None and step >= self.planned:
            trainer.should_stop = True
            trainer.check_val_every_n_epoch = 1  # validate the final weights (Lightning does on should_stop)

    def _plan(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        step = trainer.global_step
        self._last_plan, self._replan = step, False
        spe = steps_per_epoch(trainer)
        cap = step_cap(self.max_epochs, spe, self.tcfg.max_steps)
        ratio = self.phases.small_ratio(SMALL_COST)
        step_s = self.phases.step_seconds(ratio)
        if step_s is None:
            return
        batch_s = step_s / max(1, trainer.accumulate_grad_batches)
        val_s = self.phases.val_runs[-1] if self.phases.val_runs else VAL_COST * self.val_batches * batch_s
        writes = self.phases.ckpt_writes
        ckpt_s = sum(writes[-5:]) / len(writes[-5:]) if writes else step_s
        total = plan_total_steps(step, self.remaining(), step_s, val_s if self.val_batches else 0.0, ckpt_s,
                                 spe * self.tcfg.val_every, self.ckpt_every or cap + 1, cap,
                                 self.tcfg.progressive_share, ratio)
        total = int(trainer.strategy.broadcast(total, src=0))
        self.planned = total
        # Let the epoch loop run on into the epoch the plan ends in; this callback stops it on the planned step
        # (and `toothseg.train.validation.ValidationSchedule` validates the last epoch it allows).
        trainer.fit_loop.max_epochs = min(self.max_epochs, max(trainer.current_epoch + 1, math.ceil(total / spe)))
        pl_module.total_steps = total
        if step < getattr(pl_module, "warmup_steps", 0):  # still warming up: size the warm-up to the plan
            pl_module.warmup_steps = min(int(round(self.tcfg.warmup_epochs * spe)), int(WARMUP_MAX_SHARE * total))
        pl_module.apply_schedule()

    def report(self, trainer: L.Trainer) -> dict[str, Any]:
        spe = steps_per_epoch(trainer)
        return {"budget_s": self.budget_s, "used_s": round(self.elapsed(), 2),
                "used_share": round(self.elapsed() / self.budget_s, 4) if self.budget_s else None,
                "planned_steps": self.planned, "steps": int(trainer.global_step), "steps_per_epoch": spe,
                "partial_last_epoch": bool(trainer.global_step % spe)}


def steps_per_epoch(trainer: L.Trainer) -> int:
    return max(1, int(trainer.num_training_batches) // max(1, trainer.accumulate_grad_batches))


def step_cap(epochs: int, spe: int, max_steps: int | None) -> int:
    """The optimizer steps of ``epochs`` epochs of ``spe`` steps, at most ``max_steps`` when that is set (> 0)."""
    return min(epochs * spe, int(max_steps)) if max_steps and max_steps > 0 else epochs * spe
