#!/usr/bin/env python3
"""Reference Clopper-Pearson and Jeffreys bounds for tests/test_metrics_special.cpp,
from python3-mpmath at 50 digits:

    python3 tools/reference/interval_reference.py > tests/data/interval_reference.inc

(or one n at a time, e.g. `... interval_reference.py 1000000000`, concatenated).

Each bound is the root of one beta tail (the lower tail for a lower bound,
the upper tail for an upper bound) equal to alpha / 2, by Newton's method on
the log of the tail inside a bisection bracket, at 50 digits. The tail is
tails() of incomplete_beta_reference.py (the positive-term hypergeometric
series) or, for min(a, b) > 1000, tanh-sinh quadrature of the density.
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


def quad_tail(a, b, t, upper):
    """One beta tail by tanh-sinh quadrature of the density (mpmath.quad),
    split at 1, 2, 5, ... 80 standard deviations from t: for min(a, b) > 1000,
    where the hypergeometric series above the mean needs ~1e6 terms."""
    a, b, t = mp.mpf(a), mp.mpf(b), mp.mpf(t)
    sd = mp.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
    ks = (0, 1, 2, 5, 10, 20, 40, 80)
    if upper:
        pts = [t + k * sd for k in ks if t + k * sd < 1] + [mp.mpf(1)]
    else:
        pts = [mp.mpf(0)] + [t - k * sd for k in reversed(ks) if t - k * sd > 0]
    return mp.quad(lambda u: density(a, b, u), pts)


def tail(a, b, t, upper):
    if min(a, b) > 1000:
        return quad_tail(a, b, t, upper)
    return tails(a, b, t)[1 if upper else 0]


def root(f, sign, a, b, lo, hi, guess):
    """Root of f (increasing if sign = 1) in (lo, hi): Newton on log of the
    tail (f + alpha/2) from a normal-approximation guess, bisection (geometric
    across decades) whenever a step leaves the bracket; 1e-45 relative."""
    lo, hi = max(mp.mpf(lo), mp.mpf(10) ** -40), mp.mpf(hi)
    t = mp.mpf(guess) if lo < guess < hi else (lo + hi) / 2
    for _ in range(300):
        ft = f(t)
        if sign * ft < 0:
            lo = t
        else:
            hi = t
        tail = ft + HALF[0]
        # d log tail / dt = +-density / tail
        step = (mp.log(tail) - mp.log(HALF[0])) * tail / (sign * density(a, b, t))
        nt = t - step
        if hi - lo < mp.mpf(10) ** -45 * hi:
            return (lo + hi) / 2
        if not (lo < nt < hi):
            nt = mp.sqrt(lo * hi) if hi > 4 * lo else (lo + hi) / 2
        elif abs(step) < mp.mpf(10) ** -45 * t:
            return nt
        t = nt
    raise RuntimeError("no convergence")


HALF = [None]


def bounds(x, n, conf, method):
    alpha = 1 - mp.mpf(conf)  # conf as the double the test passes
    half = alpha / 2
    a_lo, b_lo = (x, n - x + 1) if method == "cp" else (x + mp.mpf(0.5), n - x + mp.mpf(0.5))
    a_up, b_up = (x + 1, n - x) if method == "cp" else (x + mp.mpf(0.5), n - x + mp.mpf(0.5))
    HALF[0] = half
    p = mp.mpf(x) / n
    # normal-approximation start (only a start: the root is mpmath's)
    z = mp.sqrt(2) * mp.erfinv(1 - alpha)
    sd = mp.sqrt(max(p * (1 - p), mp.mpf(1) / n) / n)
    lower = mp.mpf(0)
    upper = mp.mpf(1)
    if x > 0:
        lower = root(lambda t: tail(a_lo, b_lo, t, False) - half, 1, a_lo, b_lo, mp.mpf(10) ** -40, p,
                     p - z * sd)
    if x < n:
        upper = root(lambda t: tail(a_up, b_up, t, True) - half, -1, a_up, b_up, p,
                     1 - mp.mpf(10) ** -40, p + z * sd)
    return lower, upper


def main():
    mp.mp.dps = 50
    cases = [(0, 5, 1 - 1e-10), (2, 10**7, 0.5), (2, 10**7, 0.95), (4, 20, 0.95)]
    for n in (10**5, 10**7):
        for x in (0, 2, n // 100, n // 25, n - 1):
            for conf in (0.95, 1 - 1e-10):
                cases.append((x, n, conf))
    n = 10**9  # fewer: each bound takes minutes of quadrature here
    cases += [(0, n, 0.95), (2, n, 0.95), (n // 100, n, 0.95), (n // 25, n, 1 - 1e-10),
              (n - 1, n, 0.95)]
    if len(sys.argv) > 1:  # one n only (the cases run in parallel): python3 ... 1000000000
        cases = [c for c in cases if c[1] == int(sys.argv[1])]
    for x, n, conf in cases:
        for method in ("cp", "jeffreys"):
            lo, up = bounds(x, n, conf, method)
            m = "clopper_pearson" if method == "cp" else "jeffreys"
            print(f"  {{{x}, {n}, {conf!r}, interval_method::{m}, {lit(lo)}, {lit(up)}}},",
                  flush=True)


if __name__ == "__main__":
    main()
