"""Statistics over seeds, checked against the formulas written out with numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from overfitlab import stats
from overfitlab.curves import mean_curve
from overfitlab.history import History
from overfitlab.stats import (
    baseline_name,
    compare,
    compare_all,
    describe,
    gap_reduction,
    group_summaries,
    metric_value,
    rank_by_effect,
    t_quantile,
    variant_order,
)

# Student t 97.5% quantiles from a printed table (df = 1, 2, 4, 9).
T_TABLE = {2: 12.7062, 3: 4.3027, 5: 2.7764, 10: 2.2622}


def row(variant, seed, gap, acc=0.9, grid=None, status="complete", **extra):
    base = dict(
        run_id=f"{variant}-{grid}-{seed}",
        variant=variant,
        seed=seed,
        grid_field=None,
        grid_value=grid,
        status=status,
        final_gap_acc=gap,
        peak_valid_acc=acc,
        lowest_valid_loss=0.3,
        final_gap_loss=0.1,
        best_epoch=3,
        stopped_epoch=None,
        final_epoch=5,
        epochs_run=5,
        params=1000,
        seconds=1.5,
    )
    base.update(extra)
    return base


@pytest.mark.parametrize("n", sorted(T_TABLE))
def test_t_quantile_matches_printed_table(n):
    assert t_quantile(n) == pytest.approx(T_TABLE[n], abs=1e-4)


def test_describe_is_mean_plus_minus_t_s_over_root_n():
    values = [0.91, 0.88, 0.93, 0.90, 0.95]
    x = np.array(values)
    mean, s = x.sum() / len(x), math.sqrt(((x - x.mean()) ** 2).sum() / (len(x) - 1))
    half = T_TABLE[5] * s / math.sqrt(5)
    got = describe(values)
    assert got.n == 5
    assert got.mean == pytest.approx(mean)
    assert got.std == pytest.approx(s)
    assert got.low == pytest.approx(mean - half, abs=1e-5)
    assert got.high == pytest.approx(mean + half, abs=1e-5)


def test_describe_undefined_spread_for_one_value_and_skips_nan():
    one = describe([0.5, math.nan, math.inf])
    assert one.n == 1 and one.mean == 0.5
    assert math.isnan(one.std) and math.isnan(one.low) and math.isnan(one.high)
    empty = describe([])
    assert empty.n == 0 and math.isnan(empty.mean)


def test_describe_zero_spread_gives_a_point_interval():
    got = describe([2.0, 2.0, 2.0])
    assert (got.std, got.low, got.high) == (0.0, 2.0, 2.0)


def test_stop_epoch_is_early_stopping_epoch_or_last_epoch():
    assert metric_value(row("a", 0, 0.1, stopped_epoch=4, final_epoch=4), "stop_epoch") == 4
    # final_epoch is the restored best epoch under early stopping: not where training stopped.
    assert metric_value(row("a", 0, 0.1, stopped_epoch=None, final_epoch=3, epochs_run=7), "stop_epoch") == 7
    assert math.isnan(metric_value(row("a", 0, None), "final_gap_acc"))


def test_group_summaries_only_count_completed_runs():
    rows = [row("baseline", s, g) for s, g in enumerate([0.10, 0.12, 0.14])]
    rows.append(row("baseline", 3, 0.9, status="failed"))
    got = group_summaries(rows)[("baseline", None)]["final_gap_acc"]
    assert got.n == 3 and got.mean == pytest.approx(0.12)


def test_paired_difference_matches_hand_computation():
    base_gaps = [0.20, 0.18, 0.25, 0.22]
    remedy_gaps = [0.12, 0.15, 0.16, 0.10]
    # Rows in a shuffled order: pairing must go by seed, not by position.
    base = [row("baseline", s, g) for s, g in enumerate(base_gaps)][::-1]
    remedy = [row("dropout", s, g) for s, g in enumerate(remedy_gaps)]
    got = compare(base, remedy, "final_gap_acc", "dropout")
    d = np.array(remedy_gaps) - np.array(base_gaps)
    n = len(d)
    s = math.sqrt(((d - d.mean()) ** 2).sum() / (n - 1))
    t = d.mean() / (s / math.sqrt(n))
    p = 2 * scipy_stats.t.sf(abs(t), n - 1)
    half = scipy_stats.t.ppf(0.975, n - 1) * s / math.sqrt(n)
    assert got.n == 4
    assert got.mean_diff == pytest.approx(d.mean())
    assert got.low == pytest.approx(d.mean() - half)
    assert got.high == pytest.approx(d.mean() + half)
    assert got.p_value == pytest.approx(p)
    assert got.tells_apart == (d.mean() + half < 0)
    assert gap_reduction(got) == pytest.approx(np.mean(base_gaps) - np.mean(remedy_gaps))


def test_pairs_match_on_seed_and_grid_value_and_drop_unmatched():
    base = [row("baseline", s, 0.2 + 0.01 * s, grid=g) for s in (0, 1) for g in (100, 200)]
    remedy = [
        row("l2", s, 0.1 + 0.01 * s + (0.05 if g == 200 else 0), grid=g)
        for s in (0, 1, 2)
        for g in (100, 200)
    ]
    got = compare(base, remedy, "final_gap_acc")
    assert got.n == 4  # seed 2 has no baseline
    expected = np.mean(
        [(0.1 + 0.01 * s + (0.05 if g == 200 else 0)) - (0.2 + 0.01 * s) for s in (0, 1) for g in (100, 200)]
    )
    assert got.mean_diff == pytest.approx(expected)


def test_undefined_p_value_is_reported_not_raised():
    one = compare([row("baseline", 0, 0.2)], [row("a", 0, 0.1)], "final_gap_acc")
    assert one.n == 1 and one.p_value is None and "one matched seed" in one.note
    assert not one.tells_apart
    flat = compare(
        [row("baseline", s, 0.2) for s in range(3)], [row("a", s, 0.1) for s in range(3)], "final_gap_acc"
    )
    assert flat.p_value is None and "zero variance" in flat.note
    none = compare([row("baseline", 0, 0.2)], [row("a", 1, 0.1)], "final_gap_acc")
    assert none.n == 0 and none.p_value is None and math.isnan(none.mean_diff)


def test_interval_including_zero_cannot_tell_apart():
    base = [row("baseline", s, g) for s, g in enumerate([0.20, 0.10, 0.30])]
    noisy = [row("a", s, g) for s, g in enumerate([0.25, 0.05, 0.28])]
    got = compare(base, noisy, "final_gap_acc")
    assert got.low < 0 < got.high and not got.tells_apart


def test_baseline_is_named_or_first():
    assert baseline_name(["dropout", "baseline", "l2"]) == "baseline"
    assert baseline_name(["small", "large"]) == "small"
    assert baseline_name([]) is None
    rows = [row("x", 0, 0.1), row("y", 0, 0.1)]
    assert variant_order(rows, ["y"]) == ["y", "x"]


def test_rank_by_effect_puts_the_largest_gain_in_held_out_accuracy_first():
    """Ranked by the returned model's valid accuracy, not by the gap: "narrow" closes the gap
    most but loses accuracy (under-fitting), so it ranks last of those with seeds."""
    rows = [row("baseline", s, 0.30, final_valid_acc=0.90 + 0.01 * s) for s in range(3)]
    rows += [row("small", s, 0.25, final_valid_acc=0.91 + 0.012 * s) for s in range(3)]
    rows += [row("big", s, 0.28, final_valid_acc=0.95 + 0.008 * s) for s in range(3)]
    rows += [row("narrow", s, 0.05, final_valid_acc=0.80 + 0.01 * s) for s in range(3)]
    rows += [row("lonely", 9, 0.0)]
    comparisons = compare_all(rows)
    assert set(comparisons) == {"small", "big", "narrow", "lonely"}
    assert rank_by_effect(comparisons) == ["big", "small", "narrow", "lonely"]


def test_mean_curve_averages_over_runs_still_training():
    a = History([{"epoch": e, "valid_acc": v} for e, v in [(1, 0.5), (2, 0.6), (3, 0.7)]])
    b = History([{"epoch": e, "valid_acc": v} for e, v in [(1, 0.3), (2, 0.4)]])
    c = History([{"epoch": e, "valid_acc": v} for e, v in [(1, 0.4), (2, float("nan"))]])
    curve = mean_curve([a, b, c], "valid_acc")
    assert curve.epochs.tolist() == [1, 2, 3]
    assert curve.n.tolist() == [3, 2, 1]
    assert curve.mean.tolist() == pytest.approx([0.4, 0.5, 0.7])
    assert curve.std[0] == pytest.approx(np.std([0.5, 0.3, 0.4], ddof=1))
    assert curve.std[1] == pytest.approx(np.std([0.6, 0.4], ddof=1))
    assert math.isnan(curve.std[2])


@pytest.mark.parametrize("n", [2, 3, 5, 10, 30])
def test_t_quantile_and_paired_p_equal_scipy_stats(n):
    rng = np.random.default_rng(n)
    base, remedy = rng.normal(0.2, 0.03, n), rng.normal(0.17, 0.03, n)
    assert stats.t_quantile(n) == pytest.approx(scipy_stats.t.ppf(0.975, n - 1), rel=1e-12)
    assert stats.t_quantile(n, 0.9) == pytest.approx(scipy_stats.t.ppf(0.95, n - 1), rel=1e-12)
    expected = scipy_stats.ttest_rel(remedy, base).pvalue
    assert stats.paired_t_p_value(remedy - base) == pytest.approx(expected, rel=1e-10)


# --------------------------------------------------------------------------- many comparisons, ranges, power
@pytest.mark.parametrize(
    ("p_values", "expected"),
    [
        # By hand: sorted 0.01, 0.02, 0.03, 0.04 → 4·0.01, 3·0.02, 2·0.03, 1·0.04, made monotone.
        ([0.01, 0.04, 0.03, 0.02], [0.04, 0.06, 0.06, 0.06]),
        ([0.5, None, 0.001], [0.5, None, 0.002]),
        ([0.3, 0.4, 0.9], [0.9, 0.9, 0.9]),
        ([0.2], [0.2]),
        ([None, None], [None, None]),
    ],
)
def test_holm_equals_a_hand_computation(p_values, expected):
    got = stats.holm(p_values)
    assert [g if g is None else round(g, 12) for g in got] == expected


def test_holm_equals_statsmodels_when_it_is_installed():
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    rng = np.random.default_rng(1)
    for _ in range(20):
        p = rng.uniform(0, 0.2, size=int(rng.integers(2, 12)))
        _, expected, _, _ = multitest.multipletests(p, method="holm")
        assert stats.holm(list(p)) == pytest.approx(list(expected), abs=1e-12)


def test_a_study_comparison_is_adjusted_over_every_remedy():
    """Ten remedies that do nothing: unadjusted, some reach p < 0.05 by chance; adjusted, the
    family's chance of any is kept at 5 % (checked over many simulated studies)."""
    rng = np.random.default_rng(0)
    any_raw, any_adjusted, trials = 0, 0, 400
    for _ in range(trials):
        rows = []
        for seed in range(5):
            base = 0.9 + rng.normal(0, 0.01)
            rows.append({"variant": "baseline", "seed": seed, "status": "complete", "final_valid_acc": base})
            for k in range(10):
                value = base + rng.normal(0, 0.01)
                rows.append(
                    {"variant": f"r{k}", "seed": seed, "status": "complete", "final_valid_acc": value}
                )
        found = stats.compare_all(rows, metrics=("final_valid_acc",), baseline="baseline")
        any_raw += any(c["final_valid_acc"].p_value < 0.05 for c in found.values())
        any_adjusted += any(c["final_valid_acc"].tells_apart for c in found.values())
    assert any_raw / trials > 0.25  # about 1 − 0.95¹⁰ = 0.40
    assert any_adjusted / trials < 0.08  # at most 5 %, up to simulation noise


def test_intervals_stay_inside_the_range_of_their_quantity():
    from scipy import stats as scipy_stats

    accuracies = [1.0, 0.985, 0.99]
    got = describe(accuracies, scale="logit")
    assert 0 < got.low <= got.mean <= got.high < 1
    plain = describe(accuracies)
    assert plain.high > 1  # the t-interval leaves the range; the logit one does not
    # By hand: the t-interval of the logits (1.0 taken as 1 − 1e-4), mapped back.
    y = np.log(np.clip(accuracies, 1e-4, 1 - 1e-4) / (1 - np.clip(accuracies, 1e-4, 1 - 1e-4)))
    half = scipy_stats.t.ppf(0.975, 2) * y.std(ddof=1) / math.sqrt(3)
    assert got.high == pytest.approx(1 / (1 + math.exp(-(y.mean() + half))))
    epochs = describe([1, 40, 60], scale="log")
    assert epochs.low > 0 and describe([1, 40, 60]).low < 0
    summaries = stats.group_summaries(
        [
            {"variant": "v", "seed": s, "status": "complete", "best_epoch": e}
            for s, e in enumerate((1, 40, 60))
        ]
    )
    assert summaries[("v", None)]["best_epoch"].low > 0


def test_seeds_needed_reaches_the_power_it_promises_in_simulation():
    rng = np.random.default_rng(0)
    for effect in (0.5, 1.0, 2.0):
        n = stats.seeds_needed(effect, 1.0)
        assert n is not None and n >= 2

        def power(seeds: int, effect: float = effect) -> float:
            diffs = rng.normal(effect, 1.0, size=(20_000, seeds))
            t = diffs.mean(1) / (diffs.std(1, ddof=1) / math.sqrt(seeds))
            return float(np.mean(np.abs(t) > stats.t_quantile(seeds)))

        assert power(n) >= 0.78
        if n > 2:
            assert power(n - 1) < 0.82
    assert stats.seeds_needed(0.0, 1.0) is None and stats.seeds_needed(0.1, math.nan) is None
