import pytest

from functional_heads.evaluation.stats import (
    bootstrap_ci,
    detectable_effect,
    holm,
    items_needed,
    mcnemar,
    paired_bootstrap_test,
    paired_difference,
    power_at,
    rank_correlation,
)


def test_bootstrap_interval_surrounds_the_mean_and_narrows_with_data():
    small = [True] * 6 + [False] * 4
    low, high = bootstrap_ci(small)
    assert low < 0.6 < high
    big_low, big_high = bootstrap_ci(small * 50)
    assert low < big_low < 0.6 < big_high < high
    assert bootstrap_ci([True] * 20) == (1.0, 1.0)


def test_mcnemar_exact_against_hand_computation():
    a = [True, False, False, False, False, False, True, True]
    b = [False, True, True, True, True, True, True, False]
    result = mcnemar(a, b)
    # discordant: a only at 0 and 7, b only at 1..5 -> n = 7, k = 2: p = 2 * (1 + 7 + 21) / 128
    assert (result["a_only"], result["b_only"]) == (2, 5)
    assert result["p"] == pytest.approx(2 * 29 / 128)
    assert mcnemar([True, False], [True, False])["p"] == 1.0
    with pytest.raises(ValueError):
        mcnemar([True], [True, False])


def test_items_needed_matches_the_normal_approximation_by_hand():
    # (z_.975 + z_.8)^2 = 7.849; a 5-point gain with every changed item a fix: 7.849 * (0.05 - 0.0025) / 0.0025
    assert items_needed(0.05) == 150
    assert items_needed(0.05, change_rate=0.15) == 464
    assert items_needed(0.10, change_rate=0.15) > 0 and items_needed(0.10, 0.15) < items_needed(0.05, 0.15)


def test_rank_correlation_with_ties_and_paired_difference():
    assert rank_correlation([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert rank_correlation([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert rank_correlation([1, 1, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486833)  # ties share their mean rank
    gain = paired_difference([1, 0, 1, 0], [1, 1, 1, 0])
    assert gain["mean"] == 0.25 and gain["ci"][0] <= 0.25 <= gain["ci"][1] and gain["n"] == 4


def test_holm_by_hand_and_monotone():
    # sorted p 0.01, 0.02, 0.04, 0.5 times 4, 3, 2, 1: 0.04, 0.06, 0.08, 0.5; given order kept
    assert holm([0.04, 0.5, 0.01, 0.02]) == pytest.approx([0.08, 0.5, 0.04, 0.06])
    assert holm([0.03, 0.02]) == pytest.approx([0.04, 0.04])  # never below a smaller p's adjusted value
    assert holm([0.6, 0.7]) == [1.0, 1.0] and holm([]) == []


def test_detectable_effect_is_the_reverse_of_items_needed():
    assert detectable_effect(150) == pytest.approx(0.0497, abs=1e-3)  # items_needed(0.05) == 150
    for n, rate in [(200, 0.15), (464, 0.15), (40, 0.3), (1000, None), (50, 0.01)]:
        effect = detectable_effect(n, rate)
        assert items_needed(effect, rate) <= n + 1  # this effect is detectable at n items
        assert items_needed(effect * 0.95, rate) > n  # a smaller one is not
    assert detectable_effect(100, 0.3) > detectable_effect(400, 0.3) and detectable_effect(100, 0.1) < \
        detectable_effect(100, 0.3)
    assert detectable_effect(1) <= 1.0
    with pytest.raises(ValueError):
        detectable_effect(0)


def test_power_at_is_what_items_needed_and_detectable_effect_promise():
    for effect, rate in [(0.05, None), (0.05, 0.15), (0.02, 0.035), (0.02, 0.01)]:
        n = items_needed(effect, rate)
        assert 0.8 <= power_at(n, effect, rate) < power_at(n + 50, effect, rate)
        assert power_at(n - 1, effect, rate) < 0.8  # the fewest items that reach it
    assert power_at(200, detectable_effect(200, 0.1), 0.1) == pytest.approx(0.8, abs=1e-6)
    assert power_at(200, 0.02, 0.035) == pytest.approx(0.330, abs=1e-3)  # Phi(sqrt(200*.02^2/(.035-.02^2)) - 1.96)
    assert power_at(200, 0.02, 0.3) < power_at(200, 0.02, 0.035)  # more changed answers, more noise
    with pytest.raises(ValueError):
        power_at(0, 0.05)


def test_paired_bootstrap_test_agrees_with_its_interval():
    a = [0.0] * 60
    b = [1.0] * 12 + [0.0] * 48  # 12 of 60 items worse under b: clearly non-zero
    strong = paired_bootstrap_test(a, b)
    assert strong["mean"] == pytest.approx(0.2) and strong["ci"][0] > 0 and strong["p"] < 0.01 and strong["n"] == 60
    assert strong["p"] >= 1 / 10001  # never 0
    tie = paired_bootstrap_test([1, 0, 1, 0], [1, 0, 1, 0])
    assert tie["mean"] == 0 and tie["p"] == 1.0
    thirds = paired_bootstrap_test([1 / 3, 2 / 3, 1.0, 0.0] * 10, [1 / 3, 2 / 3, 1.0, 0.0] * 10)
    assert thirds["p"] == 1.0  # rounding in the resampled means does not move a difference of 0
    weak = paired_bootstrap_test([0, 0, 0, 0, 0, 0], [1, 0, 0, 0, -1, 0])
    assert weak["p"] > 0.5 and weak["ci"][0] < 0 < weak["ci"][1]
    for seed in range(3):  # p < 0.05 exactly when the 95% interval leaves out 0 (up to resampling ties)
        test = paired_bootstrap_test([0] * 30, [1] * 4 + [0] * 26, seed=seed)
        assert (test["p"] < 0.05) == (test["ci"][0] > 0)
