#!/usr/bin/env python3
"""Reference Clopper-Pearson and Jeffreys bounds for tests/test_metrics_special.cpp,
from python3-mpmath at 50 digits:

    python3 tools/reference/interval_reference.py > tests/data/interval_reference.inc

Each bound is the root of one beta tail (the lower tail for a lower bound,
the upper tail for an upper bound) equal to alpha / 2, found by mpmath's
bracketed Anderson-Bjorck solver on tails() of incomplete_beta_reference.py
(the positive-term hypergeometric series at 50+ digits).
"""
import os
import sys

import mpmath as mp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from incomplete_beta_reference import lit, tails  # noqa: E402


def density(a, b, t):
    a, b, t = mp.mpf(a), mp.mpf(b), mp.mpf(t)
    return mp.exp((a - 1) * mp.log(t) + (b - 1) * mp.log(1 - t)
                  - (mp.loggamma(a) + mp.loggamma(b) - mp.loggamma(a + b)))


def root(f, sign, a, b, lo, hi):
    """Root of f (increasing if sign = 1) in [lo, hi]: bisection (geometric
    while the bracket spans decades) to 1e-6 relative, then Newton."""
    lo, hi = max(mp.mpf(lo), mp.mpf(10) ** -40), mp.mpf(hi)
    while (hi - lo) > mp.mpf(10) ** -6 * hi:
        mid = mp.sqrt(lo * hi) if hi > 4 * lo else (lo + hi) / 2
        if sign * f(mid) < 0:
            lo = mid
        else:
            hi = mid
    t = (lo + hi) / 2
    for _ in range(12):
        step = f(t) / (sign * density(a, b, t))
        t -= step
        if abs(step) < mp.mpf(10) ** -45 * t:
            break
    return t


def bounds(x, n, conf, method):
    alpha = 1 - mp.mpf(conf)  # conf as the double the test passes
    half = alpha / 2
    a_lo, b_lo = (x, n - x + 1) if method == "cp" else (x + mp.mpf(0.5), n - x + mp.mpf(0.5))
    a_up, b_up = (x + 1, n - x) if method == "cp" else (x + mp.mpf(0.5), n - x + mp.mpf(0.5))
    p = mp.mpf(x) / n
    lower = mp.mpf(0)
    upper = mp.mpf(1)
    if x > 0:
        lower = root(lambda t: tails(a_lo, b_lo, t)[0] - half, 1, a_lo, b_lo, mp.mpf(10) ** -40, p)
    if x < n:
        upper = root(lambda t: tails(a_up, b_up, t)[1] - half, -1, a_up, b_up, p,
                     1 - mp.mpf(10) ** -40)
    return lower, upper


def main():
    mp.mp.dps = 50
    cases = [(0, 5, 1 - 1e-10), (2, 10**7, 0.5), (2, 10**7, 0.95), (4, 20, 0.95)]
    for n in (10**5, 10**7, 10**9):
        for x in (0, 1, 2, n // 100, n // 25, n - 1, n):
            for conf in (0.95, 0.5, 1 - 1e-10):
                cases.append((x, n, conf))
    for x, n, conf in cases:
        for method in ("cp", "jeffreys"):
            lo, up = bounds(x, n, conf, method)
            m = "clopper_pearson" if method == "cp" else "jeffreys"
            print(f"  {{{x}, {n}, {conf!r}, interval_method::{m}, {lit(lo)}, {lit(up)}}},",
                  flush=True)


if __name__ == "__main__":
    main()
