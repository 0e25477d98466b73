"""atlib.paper.stats on fixed numbers worked out by hand (closed forms where they exist, printed tables elsewhere)."""

import math

import pytest

from atlib.paper import stats


# -- the t distribution --------------------------------------------------------------------------------------------
def test_t_cdf_closed_forms():
    # df = 1 is the Cauchy distribution: F(t) = 1/2 + atan(t)/pi, so F(1) = 3/4
    assert stats.t_cdf(1.0, 1) == pytest.approx(0.75, abs=1e-12)
    assert stats.t_cdf(-1.0, 1) == pytest.approx(0.25, abs=1e-12)
    # df = 2: F(t) = 1/2 + t / (2 sqrt(2 + t^2)), so F(1) = 1/2 + 1/(2 sqrt 3) = 0.7886751...
    assert stats.t_cdf(1.0, 2) == pytest.approx(0.5 + 1 / (2 * math.sqrt(3)), abs=1e-12)
    assert stats.t_cdf(0.0, 7) == 0.5


def test_t_quantiles_by_hand_and_from_the_table():
    # df = 1: t = tan(pi (p - 1/2)) = tan(0.475 pi) = 12.7062047...
    assert stats.t_quantile(0.975, 1) == pytest.approx(math.tan(0.475 * math.pi), abs=1e-9)
    # df = 2: t = (2p - 1) sqrt(2 / (4 p (1 - p))) = 0.95 sqrt(2 / 0.0975) = 4.3026527...
    assert stats.t_quantile(0.975, 2) == pytest.approx(0.95 * math.sqrt(2 / 0.0975), abs=1e-9)
    # printed tables (two-sided 95%): 3.182 (3), 2.776 (4), 2.262 (9), 2.042 (30)
    for df, t in ((3, 3.182446), (4, 2.776445), (9, 2.262157), (30, 2.042272)):
        assert stats.t_quantile(0.975, df) == pytest.approx(t, abs=5e-7)
    assert stats.t_quantile(0.025, 4) == pytest.approx(-2.776445, abs=5e-7)  # symmetric
    assert stats.t_quantile(0.5, 4) == 0.0


# -- the interval --------------------------------------------------------------------------------------------------
def test_t_interval_of_five_paired_differences():
    # mean -2; squared deviations 1 + 2.25 + 1 + 0 + 0.25 = 4.5, sd = sqrt(4.5 / 4) = 1.0606602;
    # half width = 2.776445 * 1.0606602 / sqrt(5) = 1.3169835: -3.3169835 .. -0.6830165
    ci = stats.t_interval([-3.0, -0.5, -3.0, -2.0, -1.5])
    assert (ci.n, ci.mean, ci.level) == (5, -2.0, 0.95)
    assert ci.sd == pytest.approx(math.sqrt(1.125), abs=1e-12)
    assert ci.t == pytest.approx(2.776445, abs=5e-7)
    assert (ci.low, ci.high) == (pytest.approx(-3.3169835, abs=1e-6), pytest.approx(-0.6830165, abs=1e-6))
    assert stats.interval_verdict(ci.low, ci.high) == stats.HELPED


def test_t_interval_of_three_and_of_two():
    # +1, +1, +1.5: mean 7/6, sd sqrt(1/12) = 0.2886751, half = 4.3026527 * 0.2886751 / sqrt 3 = 0.7171088
    ci = stats.t_interval([1.0, 1.0, 1.5])
    assert ci.mean == pytest.approx(7 / 6) and ci.sd == pytest.approx(math.sqrt(1 / 12))
    assert (ci.low, ci.high) == (pytest.approx(7 / 6 - 0.7171088, abs=1e-6), pytest.approx(7 / 6 + 0.7171088, abs=1e-6))
    assert stats.interval_verdict(ci.low, ci.high) == stats.HURT
    # two values 0 and 2: mean 1, sd sqrt 2, half = 12.7062047 * sqrt 2 / sqrt 2 = 12.7062047
    ci = stats.t_interval([0.0, 2.0])
    assert (ci.low, ci.high) == (pytest.approx(1 - 12.7062047, abs=1e-6), pytest.approx(1 + 12.7062047, abs=1e-6))
    assert stats.interval_verdict(ci.low, ci.high) == stats.CANNOT_TELL
    # a 90% interval is narrower: t(0.95, 4) = 2.131847
    assert stats.t_interval([-3.0, -0.5, -3.0, -2.0, -1.5], 0.90).t == pytest.approx(2.131847, abs=5e-7)


def test_verdict_follows_the_interval():
    assert stats.interval_verdict(-3.3, -0.7) == "helped"
    assert stats.interval_verdict(0.4, 1.9) == "did not help"
    assert stats.interval_verdict(-1.0, 1.0) == "cannot tell at this scale"
    assert stats.interval_verdict(0.0, 1.0) == "cannot tell at this scale"  # touching 0 is not clear of it


# -- the sign test -------------------------------------------------------------------------------------------------
def test_exact_two_sided_sign_test():
    # 5 of 5 below 0: 2 * (1/2)^5 = 0.0625, the smallest p that 5 seeds can give
    five = stats.sign_test([-3.0, -0.5, -3.0, -2.0, -1.5])
    assert (five.below, five.above, five.ties, five.p, five.smallest_p) == (5, 0, 0, 0.0625, 0.0625)
    # 3 below, 1 above, 1 tie (dropped): n = 4, 2 * (C(4,0) + C(4,1)) / 16 = 10/16
    mixed = stats.sign_test([-1.0, 2.0, -3.0, 0.0, -1.0])
    assert (mixed.below, mixed.above, mixed.ties, mixed.n, mixed.p) == (3, 1, 1, 4, 0.625)
    # 2 below, 1 above: 2 * (1 + 3) / 8 = 1.0; 3 of 3: 2/8 = 0.25
    assert stats.sign_test([-1.0, 1.0, -1.0]).p == 1.0
    assert stats.sign_test([1.0, 1.0, 1.5]).p == 0.25
    assert stats.sign_test([0.0, 0.0]).p == 1.0  # nothing but ties: no evidence either way


# -- the binomial standard error -----------------------------------------------------------------------------------
def test_binomial_standard_error_of_one_run():
    # 100 * sqrt(0.47 * 0.53 / n): 1.5783 points on 1,000 images, 0.4991 on 10,000; 0.5 exactly at 50% on 10,000
    assert stats.binomial_se(47.0, 1000) == pytest.approx(1.5782902, abs=1e-6)
    assert stats.binomial_se(47.0, 10000) == pytest.approx(0.4990992, abs=1e-6)
    assert stats.binomial_se(50.0, 10000) == 0.5
    assert stats.binomial_se(0.0, 10) == 0.0


# -- bad input: one line naming the value --------------------------------------------------------------------------
@pytest.mark.parametrize("call, message", [
    (lambda: stats.t_interval([1.0]), "a t interval needs at least 2 values, got 1"),
    (lambda: stats.t_interval([1.0, math.nan]), "values must be finite numbers, got values[1]=nan"),
    (lambda: stats.t_interval([1.0, 2.0], level=1.0), "level must be strictly between 0 and 1, got level=1.0"),
    (lambda: stats.t_quantile(1.0, 3), "p must be a probability strictly between 0 and 1, got p=1.0"),
    (lambda: stats.t_quantile(0.9, 0), "degrees of freedom must be a finite number > 0, got df=0"),
    (lambda: stats.sign_test([1.0, "x"]), "differences must be finite numbers, got differences[1]='x'"),
    (lambda: stats.binomial_se(120.0, 100), "error_percent must be a percentage in 0..100, got error_percent=120.0"),
    (lambda: stats.binomial_se(47.0, 0), "n must be a positive number of test images, got n=0"),
    (lambda: stats.interval_verdict(1.0, -1.0), "interval low must not exceed high, got low=1.0 > high=-1.0"),
    (lambda: stats.interval_verdict(math.inf, 1.0), "interval bounds must be finite numbers, got low=inf"),
])
def test_bad_input_is_one_line(call, message):
    with pytest.raises(ValueError) as info:
        call()
    assert str(info.value) == message and "\n" not in str(info.value)
