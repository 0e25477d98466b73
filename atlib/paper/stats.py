"""Small-sample statistics for paired comparisons over seeds (the CPU demo): pure Python, no torch.

- ``t_interval``: the Student-t confidence interval of the mean of paired differences (one per seed).
- ``sign_test``: the exact two-sided sign test (binomial, ties dropped).
- ``binomial_se``: the standard error, in points, of one run's test error measured on ``n`` test images.
- ``interval_verdict``: helped / did not help / cannot tell, from where the interval lies with respect to 0.

Everything is computed from the definitions (the t quantile by bisection on the t distribution's CDF, itself the
regularized incomplete beta function evaluated by its continued fraction), so that the numbers can be checked by
hand; ``tests/test_stats.py`` does so on fixed numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

__all__ = ["TInterval", "SignTest", "t_cdf", "t_quantile", "t_interval", "sign_test", "binomial_se",
           "interval_verdict", "HELPED", "HURT", "CANNOT_TELL"]

HELPED, HURT, CANNOT_TELL = "helped", "did not help", "cannot tell at this scale"


def _finite(values: Sequence[float], name: str) -> list[float]:
    out = []
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{name} must be finite numbers, got {name}[{i}]={v!r}")
        out.append(float(v))
    return out


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def _df(df: float) -> float:
    if isinstance(df, bool) or not isinstance(df, (int, float)) or not math.isfinite(df) or df <= 0:
        raise ValueError(f"degrees of freedom must be a finite number > 0, got df={df!r}")
    return float(df)


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom: 1 - I_{df/(df+t^2)}(df/2, 1/2) / 2 for t >= 0."""
    df = _df(df)
    if isinstance(t, bool) or not isinstance(t, (int, float)) or math.isnan(t):
        raise ValueError(f"t must be a number, got t={t!r}")
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t)) if math.isfinite(t) else 0.0
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The t value with P(T <= t) = p (by bisection on ``t_cdf``, to 1e-12)."""
    df = _df(df)
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 < p < 1.0:
        raise ValueError(f"p must be a probability strictly between 0 and 1, got p={p!r}")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    return (lo + hi) / 2.0


@dataclass(frozen=True)
class TInterval:
    """The t interval of a mean: ``mean`` +- ``t`` * ``sd`` / sqrt(``n``)."""

    n: int
    mean: float
    sd: float        # sample standard deviation (n - 1 in the denominator)
    t: float         # the (1 + level) / 2 quantile of t with n - 1 degrees of freedom
    low: float
    high: float
    level: float = 0.95


def t_interval(values: Sequence[float], level: float = 0.95) -> TInterval:
    """The two-sided ``level`` Student-t confidence interval of the mean of ``values`` (n >= 2); for paired
    differences, it assumes they are independent draws from a roughly normal distribution."""
    xs = _finite(values, "values")
    if len(xs) < 2:
        raise ValueError(f"a t interval needs at least 2 values, got {len(xs)}")
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0.0 < level < 1.0:
        raise ValueError(f"level must be strictly between 0 and 1, got level={level!r}")
    n = len(xs)
    mean = math.fsum(xs) / n
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    t = t_quantile((1.0 + level) / 2.0, n - 1)
    half = t * sd / math.sqrt(n)
    return TInterval(n=n, mean=mean, sd=sd, t=t, low=mean - half, high=mean + half, level=float(level))


@dataclass(frozen=True)
class SignTest:
    """Exact sign test of paired differences: ``below`` and ``above`` zero (ties dropped), two-sided ``p``."""

    below: int
    above: int
    ties: int
    p: float         # two-sided: 2 * P(X <= min(below, above)), X ~ Binomial(below + above, 1/2), at most 1

    @property
    def n(self) -> int:
        return self.below + self.above

    @property
    def smallest_p(self) -> float:
        """The smallest two-sided p that ``n`` untied differences can give (all on one side): 2 * 0.5^n."""
        return min(1.0, 2.0 * 0.5 ** self.n) if self.n else 1.0


def sign_test(differences: Sequence[float]) -> SignTest:
    """The exact two-sided sign test of ``differences`` against a median of 0 (zeros are ties, dropped)."""
    xs = _finite(differences, "differences")
    below, above = sum(x < 0 for x in xs), sum(x > 0 for x in xs)
    n, k = below + above, min(below, above)
    p = 1.0 if n == 0 else min(1.0, 2.0 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)
    return SignTest(below=below, above=above, ties=len(xs) - n, p=p)


def binomial_se(error_percent: float, n: int) -> float:
    """Standard error, in points, of a test error of ``error_percent`` % measured on ``n`` images:
    100 * sqrt(p (1 - p) / n) with p = error / 100."""
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ValueError(f"n must be a positive number of test images, got n={n!r}")
    if isinstance(error_percent, bool) or not isinstance(error_percent, (int, float)) \
            or not 0.0 <= error_percent <= 100.0:
        raise ValueError(f"error_percent must be a percentage in 0..100, got error_percent={error_percent!r}")
    p = error_percent / 100.0
    return 100.0 * math.sqrt(p * (1.0 - p) / n)


def interval_verdict(low: float, high: float) -> str:
    """For differences method - baseline of an error (lower is better): ``HELPED`` if the whole interval is below 0,
    ``HURT`` ("did not help") if it is all above 0, else ``CANNOT_TELL``."""
    for name, v in (("low", low), ("high", high)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"interval bounds must be finite numbers, got {name}={v!r}")
    if low > high:
        raise ValueError(f"interval low must not exceed high, got low={low!r} > high={high!r}")
    if high < 0:
        return HELPED
    if low > 0:
        return HURT
    return CANNOT_TELL
