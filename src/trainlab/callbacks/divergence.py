"""Stop a run whose training loss has become NaN/inf or has exploded, so a sweep moves on within steps."""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor

from trainlab.run.status import DIVERGED

# Which rule caught the loss (bits of the recorded code), for the reason string.
_NONFINITE, _ABOVE_MAX, _EXPLODED = 1, 2, 4


class DivergenceGuard(pl.Callback):
    """Watches the training loss and stops the fit when it diverges:

    - NaN or inf;
    - above `max_loss` (optional, absolute);
    - an explosion: from step `warmup_steps` on, the smoothed loss is above `factor` times its
      best (lowest) value so far AND above the first batch's loss. The smoothed loss is an
      exponential moving average that starts at the first loss and gives each later batch the
      weight 1 - `smoothing` (fastai's LR finder smooths with 0.98 and stops at 4x the best; its
      average is bias-corrected instead, which gives the first batches a large weight: with
      it, one early bad batch of bn_mnist below reaches 2.1x its best at step 20).
      Smoothing keeps one bad batch from counting (at 0.98, a batch would need ~150x the best);
      the second condition keeps a small loss that grows (over-fitting, a fine-tuning bump,
      a loss near 0 that doubles) from counting. `factor=null` turns the rule off.

    Why the defaults (factor 4, smoothing 0.98, warm-up 20 steps), measured on 47 healthy runs
    of 48-600 steps, one seed each: the options of the ready studies' documented sweeps
    (conf/experiment; augment_compare with none, noise and strong; noise_as_l2 with 4 of its 6),
    the Yosinski transfer runs, gradual unfreezing and fine-tuning from its base network, and
    the default study. From step 20 on, where a healthy run's smoothed loss was above its first
    loss, it was at most 1.37x its best (`bn_mnist norm=batchnorm optimizer.lr=10`, whose second
    batch's loss is 33, 14x the first), 2.9x below the factor; then 1.18 (the same without BN)
    and 1.16 (Yosinski BnB+ n=3: fine-tuning that starts at 0.14, with batches up to 0.85);
    every other run <= 1.09, and most never climb above their first loss (flat losses at
    chance, plateaus, regressions). A warm-up of 10 steps would give 1.49; smoothing 0.9, 2.2.
    Explosions: `optimizer=sgd optimizer.lr=10 init=normal init.std=1000 data=digits
    model=mlp` is stopped at step 20 (1.2e5x its best); `experiment=fixup_vs_norm init=default
    norm=none` at step 35 (1.4e14x), before its loss becomes NaN at step 40.

    Each step only keeps its loss (a reference to the device tensor). On the logging steps
    (`trainer.log_every_n_steps`; or every `check_every_n_steps` steps when set) and at the end of
    each epoch the rules run over the steps since the last check at once, on the loss's device
    (a handful of vector ops: the moving average in closed form), and one flag is read back; so
    the guard adds no host-device synchronisation, and almost no host work, to the other steps. After a stop, `diverged_at_step` holds the step at
    which the loss first met a rule and `reason` says what happened; the guard offers them to
    the run's summary (`summary_items`), which marks the run `diverged`. The smoothed history
    is saved in checkpoints: a resumed run goes on with it.
    """

    def __init__(
        self,
        check_every_n_steps: int | None = None,
        max_loss: float | None = None,
        factor: float | None = 4.0,
        smoothing: float = 0.98,
        warmup_steps: int = 20,
    ) -> None:
        name = "callbacks.divergence_guard"
        if check_every_n_steps is not None and check_every_n_steps < 1:
            raise ValueError(
                f"{name}.check_every_n_steps must be >= 1, or null (the logging steps), got {check_every_n_steps}."
            )
        if factor is not None and not factor > 1:
            raise ValueError(f"{name}.factor must be > 1 (or null: no explosion rule), got {factor}.")
        if not 0 <= smoothing < 1:
            raise ValueError(f"{name}.smoothing must be in [0, 1) (0: no smoothing), got {smoothing}.")
        if warmup_steps < 1:
            raise ValueError(f"{name}.warmup_steps must be >= 1, got {warmup_steps}.")
        self.check_every_n_steps = check_every_n_steps
        self.max_loss = math.inf if max_loss is None else float(max_loss)
        self.factor = factor
        self.smoothing = smoothing
        self.warmup_steps = warmup_steps
        self.diverged_at_step: int | None = None
        self.reason: str | None = None
        # (step, reason) of a fit that diverged in other processes, read from their checkpoint
        self._checkpoint_outcome: tuple[int, str] | None = None
        self._steps = 0  # losses folded into the state: a host counter, no read-back
        self._state: dict[str, Tensor] = {}  # 0-d tensors on the loss's device
        self._losses: list[Tensor] = []  # kept since the last fold, on the device
        # the global step of each loss since the last check: the record's last entry indexes it
        self._window_steps: list[int] = []
        self._checked_step: int | None = None
        # the closed form of the moving average divides by smoothing**k: folds of at most this many
        # losses keep smoothing**k a normal float64
        self._fold_size = 64 if smoothing == 0 else max(1, min(64, int(300 / -math.log10(smoothing))))

    # --- the rules, on the device ----------------------------------------------------------

    def _fold(self) -> None:
        """Run the rules over the losses kept since the last fold and update the smoothed loss, the
        best value and the flags; device ops only, no read-back."""
        while self._losses:
            chunk, self._losses = self._losses[: self._fold_size], self._losses[self._fold_size :]
            self._fold_chunk(torch.stack(chunk).detach().double())

    def _fold_chunk(self, losses: Tensor) -> None:
        s, smoothing, k = self._state, self.smoothing, losses.numel()
        if not s:  # the first loss starts the average (each later batch weighs 1 - smoothing)
            first = losses[0]
            s.update(avg=first.clone(), best=first.clone(), start=first.clone())
            s.update(bad=torch.zeros((), dtype=torch.bool, device=losses.device), record=losses.new_zeros(5))
        elif s["avg"].device != losses.device:  # resumed: the checkpoint's history was loaded on the CPU
            s.update({name: value.to(losses.device) for name, value in s.items()})
        s.update({name: value.double() for name, value in s.items() if value.is_floating_point()})
        # avg_i = smoothing * avg_{i-1} + (1 - smoothing) * loss_i, unrolled:
        # avg_i = p_i * avg_prev + (1 - smoothing) * p_i * sum_{j<=i} loss_j / p_j, p_i = smoothing**(i+1)
        if smoothing == 0:
            avg = losses
        else:
            powers = smoothing ** torch.arange(1, k + 1, device=losses.device, dtype=torch.float64)
            avg = powers * s["avg"] + (1 - smoothing) * powers * torch.cumsum(losses / powers, dim=0)
        best = torch.minimum(torch.cummin(avg, dim=0).values, s["best"])
        code = (~torch.isfinite(losses)) * _NONFINITE + (losses > self.max_loss) * _ABOVE_MAX
        if self.factor is not None:
            counted = torch.arange(self._steps + 1, self._steps + k + 1, device=losses.device)
            exploded = (counted >= self.warmup_steps) & (avg > self.factor * best) & (avg > s["start"])
            code = code + exploded * _EXPLODED
        # what the first bad step looked like, kept until it is read back; its step as the index
        # of its loss among those since the last check (the host knows their steps)
        bad = code > 0
        first = bad.to(torch.uint8).argmax().view(1)  # 0 when none is bad: then not recorded
        offset = len(self._window_steps) - len(self._losses) - k  # this chunk's first loss
        positions = torch.arange(offset, offset + k, device=losses.device, dtype=torch.float64)
        # index_select, not [first]: indexing with a tensor reads the index back to the host
        now = torch.stack([code.double(), losses, avg, best, positions]).index_select(1, first).squeeze(1)
        s["record"] = torch.where(s["bad"] | ~bad.any(), s["record"], now)
        s["bad"] = s["bad"] | bad.any()
        s["avg"], s["best"] = avg[-1], best[-1]
        self._steps += k

    def _stop_if_diverged(self, trainer: pl.Trainer) -> None:
        """The one read-back: if a rule fired since the last check, stop the fit and say why.

        Under DDP every process decides together (as Lightning's EarlyStopping does): a process
        that stopped alone would leave the others waiting in the next gradient all-reduce."""
        if self.diverged_at_step is not None:
            return
        self._fold()
        here = bool(self._state["bad"]) if self._state else False
        strategy = getattr(trainer, "strategy", None)  # a Trainer has one; a bare hook call may not
        if not (here if strategy is None else strategy.reduce_boolean_decision(here, all=False)):
            self._window_steps.clear()  # nothing bad up to here: the next record indexes new steps
            return
        if here:
            code, loss, smoothed, best, index = self._state["record"].tolist()
            self.diverged_at_step = self._window_steps[int(index)]
            self.reason = self._explain(int(code), loss, smoothed, best, self.diverged_at_step)
        else:
            self.diverged_at_step = int(trainer.global_step)
            self.reason = f"the training loss of another process diverged by step {self.diverged_at_step}"
        trainer.should_stop = True

    def _explain(self, code: int, loss: float, smoothed: float, best: float, step: int) -> str:
        if code & _NONFINITE:
            return f"training loss became {loss} at step {step}"
        if code & _ABOVE_MAX:
            return f"training loss {loss:.4g} exceeded max_loss={self.max_loss:g} at step {step}"
        start = float(self._state["start"])
        return (
            f"training loss (smoothed) {smoothed:.3g} is {smoothed / best:.3g}x its best {best:.3g} "
            f"after {step} steps (callbacks.divergence_guard.factor={self.factor:g}; it started at "
            f"{start:.3g})"
        )

    # --- Lightning hooks ---------------------------------------------------------------------

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.diverged_at_step is not None:
            return
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None:  # None: the step was skipped (manual optimisation)
            self._losses.append(loss.detach())
            self._window_steps.append(trainer.global_step)
            if len(self._losses) >= self._fold_size:  # bounds what is kept when checks are rare
                self._fold()
        if self._check_due(trainer):  # every process checks here (DDP)
            self._stop_if_diverged(trainer)

    def _check_due(self, trainer: pl.Trainer) -> bool:
        """After the optimizer step of a logging step (or of every `check_every_n_steps`-th step),
        once per step (micro-batches of gradient accumulation leave global_step where it was)."""
        every, step = self.check_every_n_steps or trainer.log_every_n_steps, trainer.global_step
        if not every or step % every or step == self._checked_step:
            return False
        self._checked_step = step
        return True

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._stop_if_diverged(trainer)  # the steps since the last check (once per epoch)

    def summary_items(self, trainer: pl.Trainer) -> dict[str, Any]:
        """The run's outcome for summary.json (trainlab.run.summary.SummaryContributor):
        `diverged`, with the step and the reason, or nothing while the loss is sound."""
        if self.diverged_at_step is not None:
            step, reason = self.diverged_at_step, self.reason
        elif self._checkpoint_outcome is not None:
            step, reason = self._checkpoint_outcome
        else:
            return {}
        return {"status": DIVERGED, "error": reason, "diverged_at_step": step}

    def state_dict(self) -> dict[str, Any]:
        """The smoothed history, and the outcome for readers of the checkpoint (a run whose fit
        ran in spawned processes learns it there). A resumed run restores the history only: if
        the flag was up, its first check stops it again with the same reason."""
        self._fold()
        state = {name: value.tolist() for name, value in self._state.items()}
        if state and state["bad"]:  # the record's step: the global step, not its index here
            state["record"][4] = float(self._window_steps[int(state["record"][4])])
        outcome = {"diverged_at_step": self.diverged_at_step, "reason": self.reason}
        return {"steps": self._steps, **state, **outcome}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._steps = int(state_dict.get("steps", 0))  # a checkpoint from before the guard saved state: 0
        step = state_dict.get("diverged_at_step")
        self._checkpoint_outcome = None if step is None else (int(step), state_dict.get("reason"))
        names = ("avg", "best", "start", "bad", "record")
        self._state, self._losses, self._window_steps = {}, [], []
        if self._steps and all(name in state_dict for name in names):
            self._state = {
                name: torch.tensor(state_dict[name], dtype=torch.bool if name == "bad" else torch.float64)
                for name in names
            }
            if state_dict["bad"]:  # the record's step becomes the only step of the window
                self._window_steps = [int(state_dict["record"][4])]
                self._state["record"][4] = 0
        else:
            self._steps = 0
