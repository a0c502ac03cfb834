"""Early stopping with the semantics of Keras 3 and Lightning, usable without a trainer.

:class:`EarlyStopping` watches one metric per epoch and says when to stop. It works
alone (call :meth:`EarlyStopping.update` yourself) or as a trainer callback
(:meth:`EarlyStopping.on_epoch_end` sets ``trainer.should_stop``).

On the options Keras has (``monitor``, ``mode``, ``patience``, ``min_delta`` in
"abs" mode, ``baseline``, ``start_from_epoch``, ``restore_best``) it stops at the
same epoch as ``keras.callbacks.EarlyStopping`` (3.15) and ``best_epoch`` is the
epoch whose weights Keras restores. The test suite checks this against the real
Keras callback. Keras behaviours worth knowing, all kept here:

* ``patience=N`` stops at the N-th monitored epoch in a row without
  improvement, so ``patience=0`` and ``patience=1`` behave the same: both stop
  at the first epoch that does not improve.
* The first monitored epoch is always an improvement, even a NaN (when
  ``check_finite=False``; after a NaN best nothing improves on it). Hence the
  ``epoch > 0`` guard in Keras's patience check can never fire in Keras 3.15;
  older Keras 3 releases started from a best of +-Inf, where a NaN or Inf first
  value was not an improvement.
* ``baseline`` does not change which epoch is best. It only decides whether an
  improvement resets the wait count, so a run that keeps improving but never
  beats the baseline stops at its first non-improving epoch once ``patience``
  epochs have passed since the start. ``min_delta`` applies to the baseline too.
* Keras restores the best weights at the end of training even when it did not
  stop early; a trainer honouring ``restore_best=True`` should do the same
  (``best_epoch`` is set from the first monitored epoch on).
* Comparisons are done in float32, as Keras does (and Lightning with float32
  metrics), so values closer than float32 resolution (about 1e-7 relative)
  count as ties, not improvements.
* ``mode="auto"`` here means "max" if the name contains "acc", else "min" (the
  classic Keras rule). Keras 3.15 itself infers the direction from the
  model's metric objects and raises for names it cannot infer, such as
  "valid_loss" (only "loss" and "val_loss" are known to it).

The extra options come from Lightning: ``check_finite`` (stop at once on
NaN/Inf), ``stopping_threshold`` (stop once good enough), ``divergence_threshold``
(stop once hopeless), ``min_delta_mode="rel"`` and ``strict``. They are
evaluated in Lightning's order: non-finite, stopping threshold, divergence,
improvement, patience. Unlike Lightning, reaching ``stopping_threshold``
exactly counts, and the epoch that reaches it is still recorded as best when
it improves.
"""

from __future__ import annotations

import enum
import math
import numbers
import operator
import struct
import warnings
from collections.abc import Mapping
from typing import Any, Literal, overload

from ..errors import OverfitlabError, did_you_mean
from .callbacks import Callback

__all__ = ["EarlyStopping", "StopReason"]


class StopReason(enum.StrEnum):
    """Why :class:`EarlyStopping` asked to stop (``NOT_STOPPED`` while it has not)."""

    NOT_STOPPED = "not_stopped"
    PATIENCE = "patience"
    NON_FINITE = "non_finite"
    STOPPING_THRESHOLD = "stopping_threshold"
    DIVERGENCE = "divergence"

    def __str__(self) -> str:
        return self.value


_MODES = ("auto", "max", "min")
_DELTA_MODES = ("abs", "rel")


def _f32(x: float) -> float:
    """Round to the nearest float32, the precision Keras and Lightning compare in."""
    rounded: float = struct.unpack("f", struct.pack("f", x))[0]
    return rounded


def _fmt(x: float | None) -> str:
    return "none" if x is None else f"{x:.6g}"


def _epochs(n: int) -> str:
    return f"{n} epoch" if n == 1 else f"{n} epochs"


def _check_int(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise OverfitlabError(
            f"EarlyStopping {name} must be an integer >= 0, got {value!r}; pass e.g. {name}=3"
        )
    try:
        out = operator.index(value)
    except TypeError:
        raise OverfitlabError(
            f"EarlyStopping {name} must be an integer >= 0, got {value!r}; pass e.g. {name}=3"
        ) from None
    if out < 0:
        raise OverfitlabError(f"EarlyStopping {name} must be >= 0, got {out}; pass 0 or a positive integer")
    return out


@overload
def _check_number(name: str, value: Any, *, optional: Literal[False]) -> float: ...
@overload
def _check_number(name: str, value: Any, *, optional: bool) -> float | None: ...
def _check_number(name: str, value: Any, *, optional: bool) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        what = "a finite number or None" if optional else "a finite number"
        raise OverfitlabError(f"EarlyStopping {name} must be {what}, got {value!r}")
    out = float(value)
    if not math.isfinite(out):
        raise OverfitlabError(f"EarlyStopping {name} must be finite, got {out}; pass a finite number")
    return out


class EarlyStopping(Callback):
    """Stop training when a monitored metric stops improving.

    Call :meth:`update` once per epoch with that epoch's metrics; it returns
    True when training should stop. As a trainer callback, :meth:`on_epoch_end`
    does this and sets ``trainer.should_stop``. Epoch numbers may start anywhere
    and only need to increase; ``best_epoch`` and ``stopped_epoch`` are given in
    the numbering passed to :meth:`update`.

    Args:
        monitor: Key of the metric to watch in the metrics mapping.
        mode: "min" (lower is better), "max" (higher is better) or "auto":
            "max" if ``monitor`` contains "acc", else "min". Resolved into
            ``mode_``.
        patience: Number of monitored epochs in a row without improvement after
            which to stop (Keras counting, where 0 and 1 both stop at the first
            non-improving epoch).
        min_delta: Amount by which a value must beat the best to count as an
            improvement; >= 0.
        min_delta_mode: "abs": beat the best by ``min_delta``; "rel": beat it by
            ``min_delta * |best|`` (e.g. 0.01 means 1%).
        baseline: If set, an improvement resets the wait count only when it
            also beats this value (by ``min_delta``), as in Keras; a run that
            never beats it stops after ``patience`` epochs.
        start_from_epoch: Number of first :meth:`update` calls to ignore
            entirely (warm-up); no criterion is checked during them. Calls
            skipped for a missing metric (``strict=False``) count too, as in
            Keras.
        restore_best: Whether the trainer should restore the weights of
            ``best_epoch`` at the end (Keras ``restore_best_weights``); this
            class only records ``best_epoch`` and flags ``is_best``.
        check_finite: Stop at once when the monitored value is NaN or +-Inf.
        stopping_threshold: Stop once the value is at least as good as this
            (``<=`` in "min" mode, ``>=`` in "max" mode).
        divergence_threshold: Stop once the value is worse than this (``>`` in
            "min" mode, ``<`` in "max" mode).
        strict: If the monitored key is missing from the metrics, raise
            (True) or warn and skip that epoch (False).

    Attributes (after :meth:`update`):
        best_epoch: Epoch of the best value (whose weights Keras would restore),
            None before the first monitored epoch.
        best_score: Monitored value at ``best_epoch``, None before.
        stopped_epoch: Epoch at which :meth:`update` returned True, else None.
        wait_count: Keras ``wait``: monitored epochs since the last improvement
            that also beat the baseline.
        is_best: True when the last :meth:`update` recorded a new best (a
            trainer snapshots the weights then).
        stop_reason: A :class:`StopReason`.
        reason: Human-readable reason with the numbers, None while not stopped.
        mode_: The resolved mode, "min" or "max".

    Raises:
        OverfitlabError: On bad arguments (unknown mode or min_delta_mode,
            negative patience, min_delta or start_from_epoch, non-finite
            thresholds, a stopping_threshold not better than the
            divergence_threshold), and in :meth:`update` when the monitored
            metric is missing (with ``strict=True``) or not a number.

    Example:
        >>> es = EarlyStopping(patience=2)
        >>> for epoch, loss in enumerate([0.9, 0.5, 0.6, 0.55, 0.4], 1):
        ...     if es.update(epoch, {"valid_loss": loss}):
        ...         break
        >>> es.stopped_epoch, es.best_epoch, es.best_score
        (4, 2, 0.5)
        >>> es.reason
        'valid_loss did not improve by more than 0 for 2 epochs; best 0.5 at epoch 2'
    """

    def __init__(
        self,
        monitor: str = "valid_loss",
        mode: str = "auto",
        patience: int = 0,
        min_delta: float = 0.0,
        min_delta_mode: str = "abs",
        baseline: float | None = None,
        start_from_epoch: int = 0,
        restore_best: bool = True,
        check_finite: bool = True,
        stopping_threshold: float | None = None,
        divergence_threshold: float | None = None,
        strict: bool = True,
    ) -> None:
        if not isinstance(monitor, str) or not monitor:
            raise OverfitlabError(
                f"EarlyStopping monitor must be a metric name such as 'valid_loss', got {monitor!r}"
            )
        if mode not in _MODES:
            raise OverfitlabError(f"EarlyStopping mode must be one of {', '.join(_MODES)}, got {mode!r}")
        if min_delta_mode not in _DELTA_MODES:
            raise OverfitlabError(
                f"EarlyStopping min_delta_mode must be 'abs' (absolute) or 'rel' (fraction of the best), "
                f"got {min_delta_mode!r}"
            )
        self.monitor = monitor
        self.mode = mode
        self.mode_ = ("max" if "acc" in monitor else "min") if mode == "auto" else mode
        self.patience = _check_int("patience", patience)
        self.start_from_epoch = _check_int("start_from_epoch", start_from_epoch)
        delta = _check_number("min_delta", min_delta, optional=False)
        if delta < 0:
            raise OverfitlabError(
                f"EarlyStopping min_delta must be >= 0, got {delta}; the direction comes from mode, "
                f"so pass {-delta} instead"
            )
        self.min_delta = delta
        self.min_delta_mode = min_delta_mode
        self.baseline = _check_number("baseline", baseline, optional=True)
        self.stopping_threshold = _check_number("stopping_threshold", stopping_threshold, optional=True)
        self.divergence_threshold = _check_number("divergence_threshold", divergence_threshold, optional=True)
        if (
            self.stopping_threshold is not None
            and self.divergence_threshold is not None
            and not self._strictly_better(self.stopping_threshold, self.divergence_threshold)
        ):
            better = "below" if self.mode_ == "min" else "above"
            raise OverfitlabError(
                f"EarlyStopping stopping_threshold {_fmt(self.stopping_threshold)} must be {better} "
                f"divergence_threshold {_fmt(self.divergence_threshold)} in mode {self.mode_!r}, "
                f"otherwise every epoch stops; swap them or drop one"
            )
        self.restore_best = bool(restore_best)
        self.check_finite = bool(check_finite)
        self.strict = bool(strict)
        self.reset()

    # ------------------------------------------------------------------ state

    def reset(self) -> EarlyStopping:
        """Forget everything seen so far (keeps the configuration); returns self."""
        self.updates = 0  # update() calls seen, warm-up and skipped ones included
        self.wait_count = 0
        self.best_score: float | None = None
        self.best_epoch: int | None = None
        self.stopped_epoch: int | None = None
        self.is_best = False
        self.stop_reason = StopReason.NOT_STOPPED
        self.reason: str | None = None
        self.last_value: float | None = None
        self.best_weights: dict[str, Any] | None = None
        self._loaded = False
        return self

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly; plain Python values."""
        return {
            "monitor": self.monitor,
            "mode": self.mode_,
            "updates": self.updates,
            "wait_count": self.wait_count,
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "stopped_epoch": self.stopped_epoch,
            "is_best": self.is_best,
            "stop_reason": self.stop_reason.value,
            "reason": self.reason,
            "last_value": self.last_value,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output; missing keys take their fresh values."""
        if not isinstance(state, Mapping):
            raise OverfitlabError(
                f"EarlyStopping.load_state_dict needs the dict from state_dict(), got {type(state).__name__}"
            )
        for key, mine in (("monitor", self.monitor), ("mode", self.mode_)):
            if key in state and state[key] != mine:
                raise OverfitlabError(
                    f"EarlyStopping state was saved with {key}={state[key]!r} "
                    f"but this one has {key}={mine!r}; "
                    f"use the same {key} to resume, or start fresh without loading the state"
                )
        try:
            reason = StopReason(state.get("stop_reason", StopReason.NOT_STOPPED.value))
        except ValueError:
            raise OverfitlabError(
                f"EarlyStopping state has unknown stop_reason {state['stop_reason']!r}; "
                f"expected one of {', '.join(r.value for r in StopReason)}"
            ) from None
        self.reset()
        best_epoch = state.get("best_epoch")
        # A state with a best value is past the warm-up and its first update.
        self.updates = int(state.get("updates", 0 if best_epoch is None else self.start_from_epoch + 1))
        self.wait_count = int(state.get("wait_count", 0))
        best = state.get("best_score")
        self.best_score = None if best is None else float(best)
        self.best_epoch = best_epoch
        self.stopped_epoch = state.get("stopped_epoch")
        self.is_best = bool(state.get("is_best", False))
        self.stop_reason = reason
        self.reason = state.get("reason")
        last = state.get("last_value")
        self.last_value = None if last is None else float(last)
        self._loaded = True

    # ------------------------------------------------------------- comparing

    def _delta(self, reference: float) -> float:
        if self.min_delta_mode == "rel":
            return self.min_delta * abs(reference) if math.isfinite(reference) else 0.0
        return self.min_delta

    def _improves(self, value: float, reference: float) -> bool:
        """Keras ``_is_improvement``: beats reference by min_delta, compared in float32."""
        if self.mode_ == "min":
            return _f32(value + self._delta(reference)) < _f32(reference)
        return _f32(value - self._delta(reference)) > _f32(reference)

    def _strictly_better(self, a: float, b: float) -> bool:
        return _f32(a) < _f32(b) if self.mode_ == "min" else _f32(a) > _f32(b)

    def _at_least_as_good(self, a: float, b: float) -> bool:
        return _f32(a) <= _f32(b) if self.mode_ == "min" else _f32(a) >= _f32(b)

    def _delta_text(self) -> str:
        if self.min_delta_mode == "rel":
            return f"{self.min_delta * 100:g}% of the best"
        return f"{self.min_delta:g}"

    def _best_text(self) -> str:
        if self.best_epoch is None:
            return "no best value yet"
        return f"best {_fmt(self.best_score)} at epoch {self.best_epoch}"

    # --------------------------------------------------------------- deciding

    def _stop(self, epoch: int, why: StopReason, message: str) -> bool:
        self.stopped_epoch = epoch
        self.stop_reason = why
        self.reason = message
        return True

    def _go_on(self) -> bool:
        self.stopped_epoch = None
        self.stop_reason = StopReason.NOT_STOPPED
        self.reason = None
        return False

    def update(self, epoch: int, metrics: Mapping[str, Any]) -> bool:
        """Record one epoch's metrics; return True when training should stop now.

        Raises:
            OverfitlabError: ``metrics`` lacks ``monitor`` (with ``strict=True``),
                or its value is not a number.
        """
        self.is_best = False
        self.updates += 1
        if not isinstance(metrics, Mapping):
            raise OverfitlabError(
                f"EarlyStopping.update needs a mapping of metric name to value, got {type(metrics).__name__}"
            )
        raw = metrics.get(self.monitor)
        if raw is None:
            available = ", ".join(sorted(str(k) for k in metrics)) or "none"
            message = (
                f"EarlyStopping monitors {self.monitor!r} but epoch {epoch} has no such metric "
                f"(available: {available}); set monitor to one of them"
            )
            if self.strict:
                raise OverfitlabError(message + ", or strict=False to skip such epochs")
            warnings.warn(message, RuntimeWarning, stacklevel=2)
            return self._go_on()
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise OverfitlabError(
                f"EarlyStopping metric {self.monitor!r} must be a number, got {raw!r} at epoch {epoch}"
            ) from None
        if self.updates <= self.start_from_epoch:
            return self._go_on()  # warm-up: ignored entirely, like Keras
        self.last_value = value

        if self.check_finite and not math.isfinite(value):
            return self._stop(
                epoch,
                StopReason.NON_FINITE,
                f"{self.monitor} = {_fmt(value)} at epoch {epoch} is not finite; {self._best_text()}",
            )

        # Keras bookkeeping: wait counts every monitored epoch; the first monitored
        # epoch is always an improvement (so Keras's "epoch > 0" guard on the
        # patience check can never fire and is left out); only beating the
        # baseline too resets wait.
        self.wait_count += 1
        improved = self.best_score is None or self._improves(value, self.best_score)
        if improved:
            self.best_score = value
            self.best_epoch = epoch
            self.is_best = True
            if self.baseline is None or self._improves(value, self.baseline):
                self.wait_count = 0

        if self.stopping_threshold is not None and self._at_least_as_good(value, self.stopping_threshold):
            op = "<=" if self.mode_ == "min" else ">="
            return self._stop(
                epoch,
                StopReason.STOPPING_THRESHOLD,
                f"{self.monitor} reached stopping_threshold: {_fmt(value)} {op} "
                f"{_fmt(self.stopping_threshold)} at epoch {epoch}; {self._best_text()}",
            )
        if self.divergence_threshold is not None and self._strictly_better(self.divergence_threshold, value):
            op = ">" if self.mode_ == "min" else "<"
            return self._stop(
                epoch,
                StopReason.DIVERGENCE,
                f"{self.monitor} diverged: {_fmt(value)} {op} divergence_threshold "
                f"{_fmt(self.divergence_threshold)} at epoch {epoch}; {self._best_text()}",
            )
        if improved:
            return self._go_on()
        if self.wait_count >= self.patience:
            assert self.best_score is not None  # not improved: an earlier epoch set the best
            if self.baseline is not None and not self._improves(self.best_score, self.baseline):
                message = (
                    f"{self.monitor} did not beat baseline {_fmt(self.baseline)} by more than "
                    f"{self._delta_text()} in {_epochs(self.wait_count)}; {self._best_text()}"
                )
            else:
                message = (
                    f"{self.monitor} did not improve by more than {self._delta_text()} "
                    f"for {_epochs(self.wait_count)}; {self._best_text()}"
                )
            return self._stop(epoch, StopReason.PATIENCE, message)
        return self._go_on()

    # ---------------------------------------------------------- as a callback

    # As a callback it also keeps the best epoch's weights and, with ``restore_best``,
    # puts them back into ``trainer.model`` when fit ends, whatever ended it (patience,
    # a threshold, or the last epoch), as Keras's restore_best_weights does when it stops.
    # ``best_weights`` is that copy (a state_dict), None before the first best epoch.

    def on_fit_start(self, trainer: Any) -> None:
        # Re-used across fits like Keras (fresh state each fit), unless a state
        # was just loaded to resume.
        if not self._loaded:
            self.reset()
        self._loaded = False
        names = getattr(trainer, "metric_names", None)
        if self.strict and names is not None and self.monitor not in names:
            raise OverfitlabError(
                f"EarlyStopping monitors {self.monitor!r}, which this trainer never records: "
                f"{did_you_mean(self.monitor, names)}it records {', '.join(names)}"
            )

    def on_epoch_end(self, trainer: Any, epoch: int, metrics: Mapping[str, float]) -> None:
        stop = self.update(epoch, metrics)
        model = getattr(trainer, "model", None)  # any object with the trainer's attributes
        if self.is_best and self.restore_best and model is not None:
            # Cloned: the next steps change the live tensors.
            self.best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if stop:
            trainer.should_stop = True

    def on_fit_end(self, trainer: Any) -> None:
        model = getattr(trainer, "model", None)
        if self.restore_best and self.best_weights is not None and model is not None:
            model.load_state_dict(self.best_weights)

    def __repr__(self) -> str:
        return (
            f"EarlyStopping(monitor={self.monitor!r}, mode={self.mode_!r}, patience={self.patience}, "
            f"min_delta={self.min_delta:g}, min_delta_mode={self.min_delta_mode!r})"
        )
