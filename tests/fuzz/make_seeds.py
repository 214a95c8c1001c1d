#!/usr/bin/env python3
"""Writes the seed corpora of tests/fuzz/ (run from the repository root).

Each seed is a byte string in the format its harness reads (see the top of
each tests/fuzz/<name>.cpp): targeted cases from issue 16 plus a few seeded
random ones, so a bounded CI run starts from inputs that reach every path.
"""
import os
import random

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")

# fuzz_kernels logit codes (draw_logit): value -> byte
NAN, PINF, NINF, NFMAX, FMAX, P3E38, N3E38, E6, E6P1, DEN, NDEN, M95 = 0, 1, 2, 4, 6, 7, 8, 9, 10, 11, 12, 13


def small(v):
    """Byte for (c - 160) / 8, c >= 64 (v in steps of 1/8)."""
    c = int(round(v * 8)) + 160
    assert 64 <= c < 256, v
    return c


def kernels_seed(B, T, V, flags, opts, a_rows, b_rows, labels, ups):
    s = None
    for cand in range(256):
        if 1 + cand % 3 == B and (cand >> 2) % 5 == T:
            s = cand
            break
    vb = 255 if V == 2050 else (V - 1)
    out = bytes([s, flags, vb, opts])
    for r in a_rows + b_rows:
        assert len(r) == V
        out += bytes(r)
    out += bytes([(y << 3) + 3 if y >= 0 else 0 for y in labels])  # y >= 0: in range; -1: ignore
    out += bytes(ups)
    return out


def write(name, seeds):
    d = os.path.join(ROOT, name)
    os.makedirs(d, exist_ok=True)
    for i, data in enumerate(seeds):
        with open(os.path.join(d, "seed_%02d" % i), "wb") as f:
            f.write(data)


def kernels():
    up1 = [163]  # c % 16 == 3: (c - 128) / 32 = 1.09
    seeds = []
    fm = NFMAX
    # The reproducer: a = [1, 2, -FLT_MAX x 6], b = [2, 1, -FLT_MAX x 3, ~0, -FLT_MAX x 2].
    seeds.append(kernels_seed(1, 1, 8, 0, 8, [[small(1), small(2)] + [fm] * 6],
                              [[small(2), small(1), fm, fm, fm, small(0), fm, fm]], [1], up1))
    # Huge logits: [1e6, 1e6, -FLT_MAX, -inf] and [3e38, 3e38, -3e38, 1].
    seeds.append(kernels_seed(1, 2, 4, 0, 8, [[E6, E6, fm, NINF], [P3E38, P3E38, N3E38, small(1)]],
                              [[E6, E6P1, E6, NINF], [P3E38, N3E38, P3E38, small(1)]], [0, 1], up1))
    # NaN / +inf rows, with and without check_finite (opts bit 2).
    for opts in (8, 12):
        seeds.append(kernels_seed(1, 2, 5, 0, opts, [[small(1), NAN, small(2), NINF, small(0.5)],
                                                     [PINF, small(1), small(2), small(3), small(4)]],
                                  [[small(1)] * 5, [small(2)] * 5], [0, 2], up1))
    # Denormal probabilities and denormal logits.
    seeds.append(kernels_seed(1, 1, 6, 0, 8, [[small(0.125), M95, DEN, NDEN, M95, small(-1)]],
                              [[M95, small(0.125), DEN, DEN, NDEN, small(1)]], [2], up1))
    # Two blocks (V = 2050), masks in the second, f16 / bf16 dtypes, strides, shift, mean.
    rng = random.Random(16)
    for flags, opts in ((0, 8), (2 * 3 + 0, 9), (1 * 3 + 0 + 0x10, 10), (0x40 | 0x20 | 4, 11), (9, 8)):
        V = 2050
        row = lambda: [rng.choice([fm, NINF, small(rng.randrange(-7, 7))]) for _ in range(V)]
        seeds.append(kernels_seed(1, 1, V, flags, opts, [row()], [row()], [rng.randrange(0, 31)], up1))
    for k in range(6):
        seeds.append(bytes(rng.randrange(256) for _ in range(rng.randrange(64, 600))))
    write("kernels", seeds)


def rand_seeds(name, n, lo, hi, seed):
    rng = random.Random(seed)
    write(name, [bytes(rng.randrange(256) for _ in range(rng.randrange(lo, hi))) for _ in range(n)])


def eval_readers():
    seeds = [
        b"\x01" + b"q1 0 d1 1\nq1 0 d2 0\nq2 0 d1 2\n\x00q1 Q0 d1 1 2.5 run\nq1 Q0 d2 2 1.0 run\nq2 Q0 d3 1 9 run\n",
        b"\x0f" + b"q1 0 d1 1\n\x00q1 Q0 d1 1 nan run\nq1 Q0 d1 2 1e400 run\n",
        b"\x00" + b"category,arm,action\nBooks,Base,purchase\nBooks,KTSA,abandon\nBooks,KTSA,add_to_cart\n",
        b"\x30" + b"\"category\",arm,action\n\"Bo,oks\",Base,purchase\nToys,KTSA,purchase\n",
        b"\x20" + b"arm,action,category\nKTSA,purchase,A\nBase,abandon,A\n\"x\"y,1,2\n",
    ]
    write("eval_readers", seeds)


if __name__ == "__main__":
    kernels()
    rand_seeds("loss", 12, 8, 200, 161)
    rand_seeds("metrics", 12, 8, 200, 162)
    eval_readers()
