#!/usr/bin/env python3
"""Reference values of the regularized incomplete beta function for
tests/test_metrics_special.cpp, from Debian's python3-mpmath at 50+ digits.

    python3 tools/reference/incomplete_beta_reference.py > tests/data/incomplete_beta_reference.inc

Independent of ktsa's algorithms: each tail is the positive-term
hypergeometric series I_x(a, b) = x^a y^b / (a B(a, b)) 2F1(a + b, 1; a + 1; x)
(mpmath's hyp2f1), summed on the side of the mean where it converges, with
log B from mpmath's loggamma at 50 digits (no cancellation at that precision
for a + b <= 1e10); the other tail is 1 minus it at a precision raised until
it has 40 digits. Also printed: kappa = |x I'(x) / I| for each tail, the
condition number with respect to x (the tests allow 8 ulp of x times it where
it exceeds ~100, i.e. they test the backward error there).
"""
import signal
import sys
import mpmath as mp


def tails(a, b, x):
    a, b, x = mp.mpf(a), mp.mpf(b), mp.mpf(x)
    y = 1 - x
    below = x * (a + b) <= a  # x at or below the mean
    dps = 60
    while True:
        with mp.workdps(dps):
            if below:
                aa, bb, xx, yy = a, b, x, y
            else:
                aa, bb, xx, yy = b, a, y, x
            lf = aa * mp.log(xx) + bb * mp.log(yy) - (mp.loggamma(aa) + mp.loggamma(bb) - mp.loggamma(aa + bb))
            if lf < -2000:  # far below the double range: only "the other tail is 1" matters
                direct = mp.exp(lf)
            else:
                direct = mp.exp(lf) / aa * mp.hyp2f1(aa + bb, 1, aa + 1, xx, maxterms=10**8)
            other = 1 - direct
            if other == 0 or -mp.log10(abs(other)) + 45 < dps:
                break
            dps = int(-mp.log10(abs(other))) + 60
    with mp.workdps(dps):
        lower, upper = (direct, other) if below else (other, direct)
        la = (a - 1) * mp.log(x) + (b - 1) * mp.log(y) - (mp.loggamma(a) + mp.loggamma(b) - mp.loggamma(a + b))
        dens = mp.exp(la)
        kl = x * dens / lower if lower > 0 else mp.inf
        ku = x * dens / upper if upper > 0 else mp.inf
        return lower, upper, kl, ku


def lit(v):
    v = mp.mpf(v)
    if v == 0:
        return "0.0"
    if mp.isinf(v):
        return "HUGE_VAL"
    if abs(v) < mp.mpf("2.2250738585072014e-308"):
        return "0.0"  # below the normal range: the test then allows an absolute 1e-300
    return mp.nstr(v, 20, min_fixed=1, max_fixed=0).replace("e+", "e")


class Timeout(Exception):
    pass


def on_alarm(signum, frame):
    raise Timeout()


def main():
    signal.signal(signal.SIGALRM, on_alarm)
    mp.mp.dps = 50
    ulp1 = 2.0 ** -53
    pairs = [
        (0.5, 0.5), (1, 1), (2.5, 3.5), (0.001, 5), (5, 0.001), (0.01, 0.02), (20, 30),
        (12, 200), (15.5, 1e6), (0.5, 1e5 + 0.5), (1, 1e7), (2, 1e9), (1e7, 0.001),
        (3, 1e7 - 2), (1e5, 1e5), (1e3, 9e4), (1e5 + 1, 1e7 - 1e5), (1e7 + 1, 1e9 - 1e7),
        (4e7 + 0.5, 1e9 - 4e7 + 0.5), (5e9, 5e9), (2e8, 9.8e9), (0.5, 1e10), (1e10, 2.5),
    ]
    rows = []
    for a, b in pairs:
        A, B = mp.mpf(a), mp.mpf(b)
        m = A / (A + B)
        sd = mp.sqrt(A * B / ((A + B) ** 2 * (A + B + 1)))
        xs = set()
        for k in (-30, -8, -3, -1, -0.2, 0, 0.2, 1, 3, 8, 30):
            v = m + k * sd
            if 0 < v < 1:
                xs.add(float(v))
        for v in (1e-300, 1e-100, 1e-20, 1e-9, 0.3, 0.5, 0.9, 1 - 1e-9, 1 - 2 * ulp1, 1 - ulp1):
            xs.add(v)
        for x in sorted(xs):
            signal.alarm(60)  # points mpmath cannot sum within a minute are left out
            try:
                lo, up, kl, ku = tails(a, b, x)
            except Exception as e:
                sys.stderr.write(f"skipped a={a} b={b} x={x!r}: {type(e).__name__}\n")
                continue
            finally:
                signal.alarm(0)
            # keep the rows whose tails are not both below the double range
            if lo < mp.mpf(1e-305) and up < mp.mpf(1e-305):
                continue
            rows.append((a, b, x, lo, up, kl, ku))
            print(f"  {{{float(a)!r}, {float(b)!r}, {x!r}, {lit(lo)}, {lit(up)}, {lit(kl)}, {lit(ku)}}},",
                  flush=True)
    sys.stderr.write(f"{len(rows)} rows\n")


if __name__ == "__main__":
    main()
