"""Decisions over stages of seeds, checked against scipy and published group-sequential tables."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from overfitlab.sequential import (
    Answer,
    Design,
    boundaries,
    combined,
    decide,
    obf_spent,
    simulated,
    stage_z,
)


def test_boundaries_equal_the_published_obrien_fleming_type_values():
    """Lan-DeMets O'Brien-Fleming-type spending, 3 equally spaced looks, one-sided 0.025:
    3.7103, 2.5114, 1.9930 (Jennison & Turnbull's tables; gsDesign's sfLDOF)."""
    assert boundaries([1 / 3, 2 / 3, 1.0], 0.025) == pytest.approx((3.7103, 2.5114, 1.9930), abs=2e-4)
    # One look: the fixed-sample critical value.
    assert boundaries([1.0], 0.025)[0] == pytest.approx(sps.norm.ppf(0.975), abs=1e-9)


@pytest.mark.parametrize("fractions, alpha", [((0.3, 0.6, 1.0), 0.0025), ((0.5, 1.0), 0.01)])
def test_boundaries_spend_exactly_alpha_by_scipys_multivariate_normal(fractions, alpha):
    """P(Z_k ≥ b_k for some k) = alpha and each look spends what the spending function allows,
    computed independently from the Z's joint normal law (corr √(t_i / t_j))."""
    b = boundaries(fractions, alpha)
    t = np.array(fractions)
    cov = np.sqrt(np.minimum.outer(t, t) / np.maximum.outer(t, t))
    for k in range(1, len(t) + 1):
        stay = sps.multivariate_normal.cdf(
            np.array(b[:k]), np.zeros(k), cov[:k, :k], abseps=1e-8, releps=1e-6
        )
        assert 1 - stay == pytest.approx(obf_spent(t[k - 1], alpha), rel=2e-3, abs=2e-6)


def test_a_stage_z_is_the_one_sided_paired_t_test_of_scipy():
    d = np.array([0.011, 0.02, -0.004, 0.016])
    p_up = sps.ttest_1samp(d, 0.005, alternative="greater").pvalue
    p_down = sps.ttest_1samp(d, 0.005, alternative="less").pvalue
    assert stage_z(d, 0.005, True) == pytest.approx(sps.norm.isf(p_up), rel=1e-9)
    assert stage_z(d, 0.005, False) == pytest.approx(sps.norm.isf(p_down), rel=1e-9)
    assert stage_z(d[:1], 0.0, True) == 0.0  # one seed: no test, no evidence


def test_one_stage_is_the_bonferroni_adjusted_paired_t_test():
    """With every seed at once the decision is scipy's one-sided t-test at α/(2K) and the
    interval its t-interval at 1 − α/K."""
    rng = np.random.default_rng(3)
    design = Design(stages=(6,), remedies=5, margin=0.01)
    for _ in range(30):
        d = rng.normal(rng.uniform(-0.03, 0.03), rng.uniform(0.003, 0.02), 6)
        got = decide("r", [d], design)
        low, high = sps.t.interval(1 - 0.05 / 5, 5, loc=d.mean(), scale=sps.sem(d))
        assert (got.low, got.high) == pytest.approx((low, high), abs=1e-7)
        helps = sps.ttest_1samp(d, 0.0, alternative="greater").pvalue < 0.05 / 10
        assert (got.answer is Answer.HELPS) == helps
        assert (got.answer is Answer.NO_EFFECT) == (-0.01 < low and high < 0.01 and not helps)


def test_the_combined_statistic_weights_stages_by_their_planned_seeds():
    d1, d2 = np.array([0.01, 0.02, 0.015]), np.array([0.0, 0.01, 0.02, 0.005])
    w = (math.sqrt(3), 2.0)
    expect = (w[0] * stage_z(d1, 0.0, True) + w[1] * stage_z(d2, 0.0, True)) / math.sqrt(3 + 4)
    assert combined([d1, d2], w, 0.0, True) == pytest.approx(expect)


def test_intervals_stay_inside_the_range_of_an_accuracy_difference():
    design = Design(stages=(5, 5), remedies=10, margin=0.01)
    got = decide("r", [np.array([0.3, -0.2, 0.5])], design)
    assert -1.0 <= got.low <= got.high <= 1.0


def _study(effects, sds, design, rng):
    """One simulated adaptive study: each remedy's stages until decided, futile or spent."""
    return [simulated(effect, sd, design, rng) for effect, sd in zip(effects, sds, strict=True)]


def test_no_false_claim_in_simulated_null_studies_beyond_five_percent():
    """Ten remedies equal to the baseline with the digits' unequal spreads (paired std from
    0.004 to 0.05): the chance of any "helps" or "hurts" claim is at most 5 % (Bonferroni over
    20 one-sided tests of independent-looking remedies spends nearly all of it: 4.9 %). 1,000
    studies here, the rate's 95 % Clopper-Pearson interval must reach down to 5 %;
    benchmarks/calibration.py runs thousands more."""
    rng = np.random.default_rng(0)
    design = Design(stages=(5, 5), remedies=10, margin=0.01)
    sds = [0.004, 0.006, 0.008, 0.01, 0.012, 0.015, 0.02, 0.03, 0.04, 0.05]
    studies, false = 1000, 0
    for _ in range(studies):
        answers = _study([0.0] * 10, sds, design, rng)
        false += any(a.answer in (Answer.HELPS, Answer.HURTS) for a in answers)
    lower = sps.beta.ppf(0.025, false, studies - false + 1) if false else 0.0
    assert lower <= 0.05 and false / studies <= 0.065


def test_a_clear_remedy_is_found_and_stops_early_when_it_can():
    rng = np.random.default_rng(1)
    design = Design(stages=(5, 5), remedies=10, margin=0.01)
    found = [_study([0.04], [0.006], design, rng)[0] for _ in range(40)]
    assert sum(d.answer is Answer.HELPS for d in found) >= 38
    assert any(d.stages < 3 for d in found)  # decided before the last stage at least once


# --------------------------------------------------------------------------- a study in stages
def test_auto_seeds_are_stages_of_new_seeds_from_the_first_seed():
    from overfitlab.studies.presets import preset
    from overfitlab.studies.spec import stage_sizes

    sizes = [stage_sizes(n) for n in (10, 7, 4, 3, 15)]
    assert sizes == [(5, 5), (3, 4), (2, 2), (3,), (7, 8)]
    spec = preset("remedies").with_seeds("auto", 10, 40)
    assert spec.stage_seeds() == [(40, 41, 42, 43, 44), (45, 46, 47, 48, 49)]
    assert spec.with_seeds(3).stage_seeds() == [(0, 1, 2)] and spec.with_seeds(3).stages == ()
    # A grid (data-size) is not remedies against a baseline: its seeds run at once.
    assert preset("data-size").stages == ()
    assert type(spec).from_dict(spec.to_dict()) == spec


def _rows(effects: dict[str, float], seeds, spread=0.004, rng=None):
    rng = rng or np.random.default_rng(0)
    rows = []
    for seed in seeds:
        base = 0.95 + rng.normal(0, 0.01)
        rows.append(
            {
                "variant": "baseline",
                "seed": seed,
                "grid_value": None,
                "status": "complete",
                "final_valid_acc": base,
            }
        )
        for name, effect in effects.items():
            rows.append(
                {
                    "variant": name,
                    "seed": seed,
                    "grid_value": None,
                    "status": "complete",
                    "final_valid_acc": base + effect + rng.normal(0, spread),
                }
            )
    return rows


def test_the_next_stage_goes_to_the_baseline_and_the_remedies_still_open():
    """After each stage: decided or futile remedies get no more seeds; the open ones and the
    baseline get the next stage's new seeds; nothing after the last stage."""
    from overfitlab.studies.decisions import decisions, next_stage
    from overfitlab.studies.spec import expand, make_spec

    spec = make_spec(
        {"train_size": 120},
        [("baseline", {}), ("clear", {"l2": 1e-4}), ("unclear", {"l1": 1e-4})],
        "auto",
        max_seeds=6,
    )
    assert spec.stages == (3, 3)
    first = expand(spec)
    assert sorted({p.seed for p in first}) == [0, 1, 2]
    rows = _rows({"clear": 0.04, "unclear": 0.0}, range(3))
    answers = {d.variant: d for d in decisions(rows, spec)}
    more = next_stage(spec, first, rows, [], threads=1)
    open_ = {d for d, a in answers.items() if not a.stopped}
    assert {p.variant for p in more} == {"baseline"} | open_
    assert {p.seed for p in more} == {3, 4, 5}
    assert all(p.config is not None and p.config.threads == 1 for p in more)
    # After the last stage nothing more is planned, whatever is open.
    later = _rows({"clear": 0.04, "unclear": 0.0}, range(6))
    assert next_stage(spec, first + more, later, [], threads=1) == []


def test_a_copy_with_a_seed_offset_trains_on_another_seed_and_pairs_by_the_nominal_one():
    from overfitlab.studies.spec import StudySpec, expand, make_spec

    spec = make_spec({}, [("baseline", {}), ("copy", {"seed_offset": 1000})], [0, 1])
    plans = {(p.variant, p.seed): p.config.seed for p in expand(spec) if p.config is not None}
    assert plans == {("baseline", 0): 0, ("baseline", 1): 1, ("copy", 0): 1000, ("copy", 1): 1001}
    assert StudySpec.from_dict(spec.to_dict()) == spec


def test_a_sentence_shows_the_digits_its_answer_rests_on():
    """An interval end that rounds onto the edge the answer is about gets more digits."""
    from overfitlab.sequential import Decision

    helps = Decision("bn", Answer.HELPS, 0.016, 0.0004, 0.0317, 10, 2, 0.01, "decided")
    assert "[+0.0004, +0.032]" in helps.sentence()
    none = Decision("l1", Answer.NO_EFFECT, 0.0, -0.0091, 0.00998, 10, 2, 0.01, "decided")
    assert "[-0.009, +0.00998]" in none.sentence()
    plain = Decision("x", Answer.UNDECIDED, 0.0, -0.0004, 0.01, 5, 1, 0.01, "futile", 40)
    assert "[-0.000, +0.010]" in plain.sentence()
