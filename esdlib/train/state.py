"""The state of a run: what :func:`esdlib.train.engine.fit` checkpoints and resumes from.

:class:`RunState` is the schema of a checkpoint's ``state`` (where the run is, its history,
its best epoch) and gives the run record's metrics, :class:`EpochSums` is that of its
``running`` sums of the current epoch, and :func:`record_diagnostics` names the step
diagnostics as the run record's history does.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Any


def record_diagnostics(diagnostics: dict[str, float]) -> dict[str, float]:
    """A training step's loss diagnostics under the keys the run record's history uses.

    The losses name the per-output batch accuracies ``acc_branch1``, ``acc_branch2``, … (shallow
    → deep) and ``acc_main`` (:class:`~esdlib.losses.LossOutput`). The records keep the keys
    they have always had: ``acc_out{i}`` numbers the outputs in the losses' order, **branches
    first, main output last** — ``acc_out0 … acc_out{n−1}`` for ``n`` outputs, so with three
    branches ``acc_out3`` is the main output, and for a single-output method (``bptt``,
    ``ratebp``) ``acc_out0`` is the main output. The history stores their epoch means as
    ``train_acc_out{i}``. Other keys pass unchanged, in their order.

    Args:
        diagnostics: ``StepResult.diagnostics`` of one training step.

    Returns:
        A new dict with the record keys.
    """
    n_branches = sum(k.startswith("acc_branch") for k in diagnostics)
    out = {}
    for k, v in diagnostics.items():
        if k.startswith("acc_branch"):
            k = f"acc_out{int(k[len('acc_branch'):]) - 1}"
        elif k == "acc_main":
            k = f"acc_out{n_branches}"
        out[k] = v
    return out


@dataclass
class EpochSums:
    """Sums of the current training epoch (the checkpoint's ``running``, for exact resume).

    ``diag`` sums the step diagnostics under the record keys (:func:`record_diagnostics`).
    """

    loss: float = 0.0
    correct: float = 0.0
    samples: int = 0
    steps: int = 0
    diag: dict[str, float] = field(default_factory=dict)

    def add(self, loss: float, correct: float, n: int, diag: dict[str, float]) -> None:
        """Add one step of ``n`` samples (``loss`` is the step's mean)."""
        self.loss += loss * n
        self.correct += correct
        self.samples += n
        self.steps += 1
        for k, v in diag.items():
            self.diag[k] = self.diag.get(k, 0.0) + v * n

    def means(self) -> dict[str, float]:
        """``train_loss``, ``train_acc`` and ``train_<diagnostic>``: the epoch's sample means."""
        n = max(self.samples, 1)
        out = {"train_loss": self.loss / n, "train_acc": self.correct / n}
        out.update({f"train_{k}": v / n for k, v in self.diag.items()})
        return out


@dataclass
class RunState:
    """Where a run is and what it has produced: the ``state`` of every checkpoint (format 2).

    Saved with :meth:`to_dict` and read back with :meth:`from_dict`, so checkpoints written
    before this class existed (the same keys, as a plain dict) load unchanged.

    Attributes:
        epoch: epochs completed.
        step_in_epoch: optimiser steps done in the current epoch (its position on resume).
        global_step: optimiser steps done in the whole run.
        history: one entry per completed epoch (the run record's ``history``).
        best_acc: best test accuracy so far (-1 before the first evaluation).
        best_epoch: its epoch (1-based; -1 before the first evaluation).
        train_s: training time so far (seconds, summed over calls).
        last_eval: the last evaluation (:func:`esdlib.train.evaluation.evaluate`).
        first_loss: the run's first training loss (the reference of the "stuck" check).
        divergence: where and why training diverged (never checkpointed: a run stops there).
    """

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_acc: float = -1.0
    best_epoch: int = -1
    train_s: float = 0.0
    last_eval: dict[str, Any] | None = None
    first_loss: float | None = None
    divergence: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint's ``state`` dict (``divergence`` only when set)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.divergence is None:
            del out["divergence"]
        return out

    @classmethod
    def from_dict(cls, saved: Any) -> RunState:
        """The state of a checkpoint, checked: every required key, of its type (an int where
        a float is expected is fine; the optional fields may hold anything or be missing).

        Raises:
            KeyError, TypeError: a missing key or a value of the wrong type (named).
        """
        if not isinstance(saved, dict):
            raise TypeError(f"state is a {type(saved).__name__}, not a dict")
        values = {}
        for f in fields(cls):
            default = f.default if f.default is not MISSING else f.default_factory()
            if default is None:  # optional: last_eval, first_loss, divergence
                if f.name in saved:
                    values[f.name] = saved[f.name]
                continue
            if f.name not in saved:
                raise KeyError(f"state has no {f.name!r}")
            value = saved[f.name]
            want = (int, float) if isinstance(default, float) else type(default)
            if isinstance(value, bool) or not isinstance(value, want):
                raise TypeError(f"state[{f.name!r}] is a {type(value).__name__}, expected "
                                f"{type(default).__name__}")
            values[f.name] = value
        return cls(**values)

    def _result_eval(self, status: str) -> dict[str, Any]:
        """The last evaluation, or nothing for a run that diverged (it has no result)."""
        return {} if status == "diverged" else self.last_eval or {}

    def metrics(self, status: str) -> dict[str, Any]:
        """The run record's ``metrics`` for a run of ``status``: final and best test accuracy,
        the last epoch's training means, test loss, energy and firing rate (results ``None``
        for a diverged run; its history is kept)."""
        hist, ev = self.history, self._result_eval(status)
        result = bool(hist) and status != "diverged"
        metrics: dict[str, Any] = {
            "final_test_acc": hist[-1]["test_acc"] if result else None,
            "best_test_acc": self.best_acc if result else None,
            "best_epoch": self.best_epoch if result else None,
            "epochs_completed": len(hist),
        }
        if result:
            metrics.update({k: v for k, v in hist[-1].items()
                            if k.startswith("train_") and isinstance(v, float)})
            metrics["test_loss"] = hist[-1]["test_loss"]
            metrics.update(ev.get("energy", {}))
            metrics["firing_rate_mean"] = ev["firing_rates"]["mean"]
        return metrics

    def firing_rates(self, status: str) -> dict[str, Any] | None:
        """The run record's ``firing_rates`` (per timestep, per layer, their definition) of the
        last evaluation; ``None`` without one or for a diverged run."""
        ev = self._result_eval(status)
        if not ev:
            return None
        return {k: ev["firing_rates"][k] for k in ("per_timestep", "per_layer", "definition")}
