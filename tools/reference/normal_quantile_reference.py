#!/usr/bin/env python3
"""Reference values of Phi^-1(p) for tests/test_metrics_special.cpp (python3-mpmath):

    python3 tools/reference/normal_quantile_reference.py

Newton's method on mpmath's ncdf at 80 digits (ncdf is accurate deep in the
tail, p = 5e-324 included), from a rough start; p is the double as written.
"""
import mpmath as mp

mp.mp.dps = 80


def quantile(p):
    p = mp.mpf(p)
    x = -mp.sqrt(-2 * mp.log(p)) if p < 0.5 else mp.mpf(0)
    if p > 0.5:
        return -quantile(1 - p)
    for _ in range(200):
        step = (mp.ncdf(x) - p) / mp.npdf(x)
        x -= step
        if abs(step) < mp.mpf(10) ** -70 * (1 + abs(x)):
            break
    return x


ps = ["5e-324", "1e-310", "2.2250738585072014e-308", "1e-300", "1e-291", "1e-289", "1e-200",
      "1e-100", "1e-20", "1e-10", "1e-4", "0.001", "0.01", "0.02425", "0.025", "0.1", "0.2",
      "0.25", "0.2500000000000001", "0.3", "0.49", "0.49999999999999994", "0.5000000000000001",
      "0.51", "0.75", "0.975", "0.9999999999"]
for s in ps:
    p = float(s)
    print(f"  {{{p!r}, {mp.nstr(quantile(p), 20)}}},")
