import pytest

from functional_heads.evaluation.stats import bootstrap_ci, mcnemar


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
