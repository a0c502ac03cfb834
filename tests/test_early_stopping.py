"""EarlyStopping: scripted sequences worked out by hand, and parity with keras.callbacks.EarlyStopping."""

from __future__ import annotations

import doctest
import itertools
import json
import math
import os
import statistics
from types import SimpleNamespace

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")

import overfitlab.training.early_stopping as es_module  # noqa: E402
from overfitlab.errors import OverfitlabError
from overfitlab.training.early_stopping import EarlyStopping, StopReason

NAN = float("nan")
INF = float("inf")


def run(values, monitor="valid_loss", epochs=None, **kwargs):
    """Feed values (epochs 1, 2, ... unless given); return (callback, stop epoch or None, is_best flags)."""
    es = EarlyStopping(monitor=monitor, **kwargs)
    epochs = list(range(1, len(values) + 1)) if epochs is None else epochs
    flags = []
    for epoch, value in zip(epochs, values, strict=True):
        stop = es.update(epoch, {monitor: value, "train_loss": 0.0})
        flags.append(es.is_best)
        if stop:
            return es, epoch, flags
    return es, None, flags


# ---------------------------------------------------------------- patience


def test_lightning_patience_example_stops_at_fifth_update():
    es, stop, _ = run([6, 5, 5, 5, 5, 5], patience=3)
    assert stop == 5  # index 4, as in Lightning's own test
    assert es.stopped_epoch == 5
    assert es.best_epoch == 2 and es.best_score == 5.0  # ties are not improvements
    assert es.wait_count == 3
    assert es.stop_reason is StopReason.PATIENCE
    assert es.reason == "valid_loss did not improve by more than 0 for 3 epochs; best 5 at epoch 2"


def test_patience_zero_stops_at_first_non_improving_epoch():
    es, stop, _ = run([1.0, 0.9, 0.95, 0.5], patience=0)
    assert stop == 3 and es.best_epoch == 2
    assert "for 1 epoch;" in es.reason
    # Keras counting: patience 1 stops at the same epoch, patience 2 one later
    assert run([1.0, 0.9, 0.95, 0.5], patience=1)[1] == 3
    assert run([1.0, 0.9, 0.95, 0.96], patience=2)[1] == 4


def test_not_stopped_state_and_is_best_flags():
    es, stop, flags = run([1.0, 0.9, 0.9, 0.8], patience=5)
    assert stop is None
    assert flags == [True, True, False, True]
    assert es.stop_reason is StopReason.NOT_STOPPED and es.reason is None and es.stopped_epoch is None
    assert es.best_epoch == 4 and es.best_score == 0.8


def test_any_increasing_epoch_numbering():
    es, stop, _ = run([6, 5, 5, 5, 5, 5], patience=3, epochs=[10, 20, 30, 40, 50, 60])
    assert stop == 50 and es.best_epoch == 20


def test_float32_ties_are_not_improvements():
    # Keras and Lightning compare in float32: 1 - 1e-9 rounds to 1.0.
    es, stop, _ = run([1.0, 1.0 - 1e-9], patience=0)
    assert stop == 2 and es.best_epoch == 1
    es, stop, _ = run([1.0, 1.0 - 1e-6], patience=0)
    assert stop is None and es.best_epoch == 2


# ---------------------------------------------------------------- min_delta


def test_min_delta_abs():
    values = [1.0, 0.95, 0.85, 0.8, 0.78]
    es, stop, _ = run(values, patience=2, min_delta=0.1)
    # 0.95: not 0.1 below 1.0 (wait 1); 0.85: yes (best); 0.8, 0.78: not 0.1 below 0.85 -> wait 2
    assert stop == 5 and es.best_epoch == 3 and es.best_score == 0.85
    assert "by more than 0.1 for 2 epochs" in es.reason
    es, stop, _ = run(values, patience=2)
    assert stop is None and es.best_epoch == 5


def test_min_delta_rel_min_mode():
    values = [100.0, 95.0, 89.0, 85.0, 80.0, 79.0, 78.0]
    es, stop, _ = run(values, patience=2, min_delta=0.1, min_delta_mode="rel")
    # need 10% below best: 95 no; 89 < 90 yes; 85 no (needs < 80.1); 80 < 80.1 yes; 79, 78 no (need < 72)
    assert stop == 7 and es.best_epoch == 5 and es.best_score == 80.0
    assert "10% of the best" in es.reason
    es, stop, _ = run(values, patience=2, min_delta=0.1, min_delta_mode="abs")
    assert stop is None and es.best_epoch == 7


def test_min_delta_rel_max_mode():
    es, stop, _ = run(
        [1.0, 1.05, 1.2, 1.25, 1.3], mode="max", patience=2, min_delta=0.1, min_delta_mode="rel"
    )
    # 1.05 <= 1.1 no; 1.2 > 1.1 yes; 1.25, 1.3 <= 1.32 no
    assert stop == 5 and es.best_epoch == 3


# ---------------------------------------------------------------- modes


def test_mode_max_and_min_on_same_sequence():
    values = [0.5, 0.6, 0.6, 0.55]
    es, stop, _ = run(values, mode="max", patience=2)
    assert (stop, es.best_epoch, es.best_score) == (4, 2, 0.6)
    es, stop, _ = run(values, mode="min", patience=2)
    assert (stop, es.best_epoch, es.best_score) == (3, 1, 0.5)


@pytest.mark.parametrize(
    "monitor, mode, expected",
    [
        ("valid_acc", "auto", "max"),
        ("train_accuracy", "auto", "max"),
        ("valid_loss", "auto", "min"),
        ("valid_error", "auto", "min"),
        ("valid_acc", "min", "min"),
        ("valid_loss", "max", "max"),
    ],
)
def test_mode_resolution(monitor, mode, expected):
    assert EarlyStopping(monitor=monitor, mode=mode).mode_ == expected


def test_auto_mode_accuracy_maximises():
    es, stop, _ = run([0.5, 0.7, 0.6, 0.65], monitor="valid_acc", patience=2)
    assert stop == 4 and es.best_epoch == 2 and es.best_score == 0.7


# ---------------------------------------------------------------- baseline


def test_baseline_never_beaten_stops_after_patience_epochs_from_start():
    # Keras: every epoch improves on the best, but none beats the baseline, so wait is never reset.
    es, stop, _ = run([0.9, 0.8, 0.7, 0.75], patience=2, baseline=0.5)
    assert stop == 4 and es.best_epoch == 3 and es.best_score == 0.7
    assert es.reason.startswith("valid_loss did not beat baseline 0.5")
    es, stop, _ = run([0.9, 0.8, 0.7, 0.75], patience=2)
    assert stop is None


def test_baseline_beaten_resets_wait():
    es, stop, _ = run([0.9, 0.4, 0.45, 0.46], patience=2, baseline=0.5)
    assert stop == 4 and es.best_epoch == 2
    assert "did not improve" in es.reason


def test_baseline_makes_stop_earlier_than_without():
    assert run([0.9, 0.95, 0.95], patience=2, baseline=0.5)[1] == 2
    assert run([0.9, 0.95, 0.95], patience=2)[1] == 3


# ---------------------------------------------------------------- start_from_epoch


def test_start_from_epoch_ignores_first_updates():
    es = EarlyStopping(patience=0, start_from_epoch=2)
    assert es.update(1, {"valid_loss": 5.0}) is False
    assert es.update(2, {"valid_loss": 9.0}) is False
    assert es.best_epoch is None and not es.is_best
    assert es.update(3, {"valid_loss": 1.0}) is False
    assert es.best_epoch == 3 and es.is_best
    assert es.update(4, {"valid_loss": 2.0}) is True
    assert es.stopped_epoch == 4


def test_start_from_epoch_ignores_non_finite_warmup():
    es, stop, _ = run([NAN, INF, 1.0, 0.5], start_from_epoch=2)
    assert stop is None and es.best_epoch == 4


# ---------------------------------------------------------------- non-finite


@pytest.mark.parametrize("bad", [NAN, INF, -INF])
def test_check_finite_stops_at_once(bad):
    es, stop, _ = run([1.0, 0.5, bad, 0.1], patience=5)
    assert stop == 3 and es.stop_reason is StopReason.NON_FINITE
    assert es.best_epoch == 2 and es.best_score == 0.5
    assert "not finite" in es.reason and "best 0.5 at epoch 2" in es.reason


def test_non_finite_first_epoch_has_no_best():
    es, stop, _ = run([NAN, 1.0])
    assert stop == 1 and es.best_epoch is None and "no best value yet" in es.reason


def test_check_finite_off_nan_is_no_improvement():
    es, stop, _ = run([1.0, 0.5, NAN, 0.6, 0.7], patience=2, check_finite=False)
    assert stop == 4 and es.stop_reason is StopReason.PATIENCE and es.best_epoch == 2


def test_check_finite_off_nan_first_is_best_like_keras():
    # Keras 3: the first monitored value is always an improvement; nothing beats NaN afterwards.
    es, stop, _ = run([NAN, 0.5, 0.4], patience=1, check_finite=False)
    assert stop == 2 and es.best_epoch == 1


# ---------------------------------------------------------------- thresholds


def test_stopping_threshold_min_inclusive():
    es, stop, _ = run([0.5, 0.3, 0.2, 0.1], patience=10, stopping_threshold=0.2)
    assert stop == 3 and es.stop_reason is StopReason.STOPPING_THRESHOLD
    assert es.best_epoch == 3  # the epoch that reached it is the best
    assert "0.2 <= 0.2" in es.reason


def test_stopping_threshold_max():
    es, stop, _ = run([0.5, 0.85, 0.95], monitor="valid_acc", patience=10, stopping_threshold=0.9)
    assert stop == 3 and es.stop_reason is StopReason.STOPPING_THRESHOLD and "0.95 >= 0.9" in es.reason


def test_divergence_threshold_min_strict():
    es, stop, _ = run([1.0, 4.0, 5.0, 6.0], patience=10, divergence_threshold=5.0)
    assert stop == 4 and es.stop_reason is StopReason.DIVERGENCE
    assert es.best_epoch == 1 and "6 > divergence_threshold 5" in es.reason


def test_divergence_threshold_max():
    es, stop, _ = run([0.5, 0.1, 0.05], mode="max", patience=10, divergence_threshold=0.1)
    assert stop == 3 and es.stop_reason is StopReason.DIVERGENCE


def test_order_non_finite_before_thresholds():
    es, _, _ = run([1.0, NAN], stopping_threshold=0.5, divergence_threshold=2.0)
    assert es.stop_reason is StopReason.NON_FINITE


def test_order_thresholds_before_patience():
    es, stop, _ = run([1.0, 7.0], patience=1, divergence_threshold=5.0)
    assert stop == 2 and es.stop_reason is StopReason.DIVERGENCE
    # 0.09 is not 0.05 below 0.1 (patience would stop) but it reaches the threshold
    es, stop, _ = run([0.1, 0.09], patience=1, min_delta=0.05, stopping_threshold=0.095)
    assert stop == 2 and es.stop_reason is StopReason.STOPPING_THRESHOLD


def test_thresholds_ignore_nan_when_not_checking_finite():
    es, stop, _ = run(
        [1.0, NAN], patience=5, check_finite=False, stopping_threshold=0.5, divergence_threshold=2.0
    )
    assert stop is None


# ---------------------------------------------------------------- missing metric / bad input


def test_strict_missing_monitor_lists_available_sorted():
    es = EarlyStopping()
    with pytest.raises(OverfitlabError) as err:
        es.update(1, {"valid_acc": 0.5, "train_loss": 1.0})
    msg = str(err.value)
    assert "'valid_loss'" in msg and "train_loss, valid_acc" in msg and "\n" not in msg


def test_non_strict_missing_monitor_warns_and_counts_as_epoch():
    es = EarlyStopping(strict=False, start_from_epoch=1, patience=0)
    with pytest.warns(RuntimeWarning, match="valid_loss"):
        assert es.update(1, {"train_loss": 1.0}) is False
    assert es.update(2, {"valid_loss": 1.0}) is False and es.best_epoch == 2
    assert es.update(3, {"valid_loss": 2.0}) is True


def test_non_numeric_metric_raises():
    with pytest.raises(OverfitlabError, match="must be a number"):
        EarlyStopping().update(1, {"valid_loss": "low"})


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"mode": "best"}, "auto, max, min"),
        ({"patience": -1}, "patience must be >= 0"),
        ({"patience": 1.5}, "patience must be an integer"),
        ({"patience": True}, "patience must be an integer"),
        ({"min_delta": -0.1}, "pass 0.1 instead"),
        ({"min_delta": "x"}, "min_delta must be a finite number"),
        ({"min_delta_mode": "percent"}, "'abs'"),
        ({"start_from_epoch": -2}, "start_from_epoch must be >= 0"),
        ({"baseline": NAN}, "baseline must be finite"),
        ({"monitor": ""}, "monitor must be a metric name"),
        ({"stopping_threshold": 1.0, "divergence_threshold": 0.5}, "must be below divergence_threshold"),
        ({"mode": "max", "stopping_threshold": 0.5, "divergence_threshold": 0.5}, "must be above"),
    ],
)
def test_bad_arguments_raise(kwargs, words):
    with pytest.raises(OverfitlabError) as err:
        EarlyStopping(**kwargs)
    assert words in str(err.value)


def test_stop_reason_is_a_string_enum():
    assert StopReason("patience") is StopReason.PATIENCE
    assert str(StopReason.NON_FINITE) == "non_finite" and StopReason.DIVERGENCE == "divergence"


# ---------------------------------------------------------------- state


STATE_CASES = [
    ([6, 5, 5, 5, 5, 5], {"patience": 3}),
    ([0.9, 0.8, 0.7, 0.75, 0.6, 0.65, 0.66], {"patience": 2, "baseline": 0.5}),
    ([3.0, 9.0, 2.0, 2.5, 1.0, 1.2, 1.1, 1.3], {"patience": 1, "start_from_epoch": 2, "min_delta": 0.05}),
    ([0.1, 0.3, 0.3, 0.2, 0.35, 0.34, 0.33], {"monitor": "valid_acc", "patience": 2}),
    ([1.0, 0.5, NAN, 0.6, 0.7], {"patience": 2, "check_finite": False}),
]


def _decisions(es, values, start=0):
    out = []
    for i in range(start, len(values)):
        out.append((es.update(i + 1, {es.monitor: values[i]}), es.is_best, es.wait_count, es.best_epoch))
    return out


@pytest.mark.parametrize("values, kwargs", STATE_CASES)
def test_state_dict_round_trip_resumes_exactly(values, kwargs):
    whole = EarlyStopping(**kwargs)
    expected = _decisions(whole, values)
    assert any(d[0] for d in expected) or kwargs.get("start_from_epoch")  # the case does stop
    for split in range(len(values) + 1):
        first = EarlyStopping(**kwargs)
        head = _decisions(first, values[:split])
        state = json.loads(json.dumps(first.state_dict()))
        second = EarlyStopping(**kwargs)
        second.load_state_dict(state)
        tail = _decisions(second, values, start=split)
        assert head + tail == expected, split
        for attr in ("best_epoch", "stopped_epoch", "wait_count", "stop_reason", "reason", "updates"):
            assert getattr(second, attr) == getattr(whole, attr), (split, attr)
        assert second.best_score == whole.best_score or (
            math.isnan(second.best_score) and math.isnan(whole.best_score)
        )


def test_load_state_dict_tolerates_missing_keys():
    es = EarlyStopping(patience=3)
    es.update(1, {"valid_loss": 1.0})
    es.load_state_dict({})
    assert es.updates == 0 and es.best_epoch is None and es.stop_reason is StopReason.NOT_STOPPED
    es.load_state_dict({"wait_count": 2, "best_score": 0.5, "best_epoch": 3})
    assert es.update(4, {"valid_loss": 0.6}) is True  # third epoch without improvement
    assert es.best_epoch == 3 and es.wait_count == 3


def test_load_state_dict_rejects_other_monitor_and_bad_reason():
    state = EarlyStopping(monitor="valid_acc").state_dict()
    with pytest.raises(OverfitlabError, match="monitor='valid_acc'"):
        EarlyStopping(monitor="valid_loss").load_state_dict(state)
    with pytest.raises(OverfitlabError, match="unknown stop_reason"):
        EarlyStopping().load_state_dict({"stop_reason": "bored"})


def test_reset_returns_self_and_forgets():
    es, stop, _ = run([1.0, 2.0], patience=0)
    assert stop == 2
    assert es.reset() is es
    assert (es.best_epoch, es.best_score, es.stopped_epoch, es.wait_count) == (None, None, None, 0)
    assert es.stop_reason is StopReason.NOT_STOPPED and es.reason is None
    assert es.update(1, {"valid_loss": 5.0}) is False and es.best_epoch == 1


# ---------------------------------------------------------------- as a callback


def test_callback_sets_should_stop_and_is_reusable():
    es = EarlyStopping(patience=1)
    for _ in range(2):  # a second fit starts fresh, like Keras
        trainer = SimpleNamespace(should_stop=False)
        es.on_fit_start(trainer)
        seen = []
        for epoch, loss in enumerate([1.0, 0.8, 0.9, 0.7], 1):
            es.on_epoch_end(trainer, epoch, {"valid_loss": loss})
            seen.append(trainer.should_stop)
            if trainer.should_stop:
                break
        assert seen == [False, False, True]
        assert es.best_epoch == 2


def test_fit_start_keeps_loaded_state():
    es = EarlyStopping(patience=2)
    es.update(1, {"valid_loss": 1.0})
    state = es.state_dict()
    resumed = EarlyStopping(patience=2)
    resumed.load_state_dict(state)
    resumed.on_fit_start(SimpleNamespace(should_stop=False))
    assert resumed.best_epoch == 1 and resumed.updates == 1


def test_module_docstring_examples():
    result = doctest.testmod(es_module)
    assert result.attempted >= 3 and result.failed == 0


# ---------------------------------------------------------------- Keras parity


class _StandInModel:
    """What keras.callbacks.EarlyStopping touches on self.model: stop_training, weights, metrics."""

    def __init__(self, metrics):
        self.stop_training = False
        self.epoch = None  # the current epoch index stands in for the weights
        self.restored = None
        self.metrics = metrics

    def get_weights(self):
        return [self.epoch]

    def set_weights(self, weights):
        self.restored = weights[0]


@pytest.fixture(scope="module")
def keras():
    return pytest.importorskip("keras")


def _keras_run(keras, values, *, monitor, mode, patience, min_delta, baseline, start):
    """Return (stop index or None, restored index or None) from the real Keras callback."""
    from keras.src.trainers import compile_utils

    # Keras 3.15's mode="auto" reads the metric's direction from model.metrics.
    metrics = [compile_utils.MetricsList([keras.metrics.Accuracy(name="acc")])]
    model = _StandInModel(metrics)
    cb = keras.callbacks.EarlyStopping(
        monitor=monitor,
        mode=mode,
        patience=patience,
        min_delta=min_delta,
        baseline=baseline,
        start_from_epoch=start,
        restore_best_weights=True,
    )
    cb.set_model(model)
    cb.on_train_begin()
    stop = None
    for i, value in enumerate(values):
        model.epoch = i
        cb.on_epoch_end(i, {monitor: value, "loss": 0.0})
        if model.stop_training:
            stop = i
            break
    cb.on_train_end()
    return stop, model.restored


def _our_run(values, epochs, *, monitor, mode, patience, min_delta, baseline, start):
    es = EarlyStopping(
        monitor=monitor,
        mode=mode,
        patience=patience,
        min_delta=min_delta,
        baseline=baseline,
        start_from_epoch=start,
        restore_best=True,
        check_finite=False,
    )
    stop = None
    for i, value in enumerate(values):
        if es.update(epochs[i], {monitor: value, "loss": 0.0}):
            stop = i
            break
    assert es.stopped_epoch == (None if stop is None else epochs[stop])
    restored = None if es.best_epoch is None else epochs.index(es.best_epoch)
    return stop, restored


MODES = [("min", "val_loss"), ("max", "val_loss"), ("auto", "val_loss"), ("auto", "val_acc")]
PATIENCES = [0, 1, 2, 3]
MIN_DELTAS = [0.0, 0.05]
STARTS = [0, 2]

HAND_PICKED = [
    [6, 5, 5, 5, 5, 5],
    [1.0, 0.9, 0.95, 0.85, 0.86, 0.84, 0.9, 0.9, 0.9, 0.9],
    [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1],
    [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0],
    [0.5] * 8,
    [0.3, 0.25, 0.26, 0.2, 0.21, 0.22, 0.23, 0.24, 0.1],
    [0.3, 0.3 - 1e-9, 0.3 - 2e-9, 0.3 + 1e-9, 0.29, 0.29, 0.29, 0.29],
    [0.9, 0.8, 0.7, 0.75, 0.6, 0.65, 0.66, 0.5, 0.51, 0.52, 0.53],
    [0.2, 0.6, 0.55, 0.7, 0.65, 0.64, 0.9, 0.1, 0.1, 0.1],
    [1.0, 0.96, 0.92, 0.88, 0.84, 0.9, 0.95, 1.0, 1.05],
    [NAN, 1.0, 0.5, 0.4, 0.3],
    [1.0, NAN, 0.5, 0.4, NAN, NAN, NAN],
    [INF, 1.0, 0.5, -INF, 0.2, 0.3],
    [0.5],
    [0.5, 0.4],
    [],
]


def _baselines(values, mode, monitor):
    finite = [v for v in values if math.isfinite(v)] or [0.0]
    maximise = mode == "max" or (mode == "auto" and "acc" in monitor)
    unbeatable = max(finite) + 10 if maximise else min(finite) - 10
    return [None, float(statistics.median(finite)), unbeatable]


def _compare(keras, values, epochs, options):
    theirs = _keras_run(keras, values, **options)
    ours = _our_run(values, epochs, **options)
    return None if theirs == ours else (values, options, "keras", theirs, "ours", ours)


def test_keras_parity_hand_picked(keras):
    mismatches = []
    runs = 0
    for values in HAND_PICKED:
        epochs = list(range(1, len(values) + 1))
        for (mode, monitor), patience, min_delta, start in itertools.product(
            MODES, PATIENCES, MIN_DELTAS, STARTS
        ):
            for baseline in _baselines(values, mode, monitor):
                options = dict(
                    monitor=monitor,
                    mode=mode,
                    patience=patience,
                    min_delta=min_delta,
                    baseline=baseline,
                    start=start,
                )
                runs += 1
                bad = _compare(keras, values, epochs, options)
                if bad:
                    mismatches.append(bad)
    assert runs == len(HAND_PICKED) * 4 * 4 * 2 * 2 * 3
    assert not mismatches, f"{len(mismatches)} of {runs} differ, e.g. {mismatches[:3]}"


def test_keras_parity_random_walks(keras):
    rng = np.random.default_rng(20240531)
    mismatches = []
    outcomes = {"stopped": 0, "ran_out": 0, "restored_earlier": 0, "baseline_changed_stop": 0}
    combos = list(itertools.product(MODES, PATIENCES, MIN_DELTAS, STARTS, [False, True]))
    for (mode, monitor), patience, min_delta, start, use_baseline in combos:
        for _ in range(3):  # 64 combos x 3 = 192 sequences
            n = int(rng.integers(1, 31))
            # values on a 1/32 grid: exact in float32, frequent ties, never exactly min_delta apart
            steps = rng.integers(-3, 4, size=n) * (rng.random(n) < 0.8)
            values = [float(v) for v in (rng.integers(0, 64) + np.cumsum(steps)) / 32]
            baseline = float(values[0] + rng.integers(-4, 5) / 32) if use_baseline else None
            if rng.random() < 0.05:
                values[int(rng.integers(0, n))] = NAN
            first = int(rng.integers(-5, 5))
            epochs = [first + 3 * i for i in range(n)]  # any increasing numbering
            options = dict(
                monitor=monitor,
                mode=mode,
                patience=patience,
                min_delta=min_delta,
                baseline=baseline,
                start=start,
            )
            bad = _compare(keras, values, epochs, options)
            if bad:
                mismatches.append(bad)
                continue
            stop, restored = _our_run(values, epochs, **options)
            outcomes["stopped" if stop is not None else "ran_out"] += 1
            if restored is not None and restored != (n - 1 if stop is None else stop):
                outcomes["restored_earlier"] += 1
            if baseline is not None and _our_run(values, epochs, **{**options, "baseline": None})[0] != stop:
                outcomes["baseline_changed_stop"] += 1
    assert not mismatches, f"{len(mismatches)} of {len(combos) * 3} differ, e.g. {mismatches[:3]}"
    # the sequences exercise every kind of outcome
    assert all(count >= 5 for count in outcomes.values()), outcomes
