#!/usr/bin/env python3
"""Expected ktsa-eval rank output for the tests/data/eval_*big_grades* and
*subnormal* files, computed independently in exact rational arithmetic
(Python integers for 2^rel - 1 gains, fractions; log2 ranks from mpmath at 50
digits), trec_eval's conventions (score descending, ties by docid descending,
judged queries present in the run, mean over them):

    python3 tools/reference/trec_reference.py QRELS RUN K [exp] > EXPECTED
"""
import sys
from fractions import Fraction

import mpmath as mp


def read(path, fields):
    out = {}
    for line in open(path):
        f = line.split()
        if not f or f[0].startswith("#"):
            continue
        out.setdefault(f[0], []).append(f[:fields])
    return out


def main():
    mp.mp.dps = 50
    qrels_path, run_path, k = sys.argv[1], sys.argv[2], int(sys.argv[3])
    exp = len(sys.argv) > 4 and sys.argv[4] == "exp"
    qrels = {q: {f[2]: int(f[3]) for f in rows} for q, rows in read(qrels_path, 4).items()}
    run = read(run_path, 6)
    gain = (lambda r: (2 ** r - 1) if r > 0 else 0) if exp else (lambda r: max(r, 0))
    sums = {m: mp.mpf(0) for m in ("recip_rank", "P", "recall", "ndcg_cut", "map_cut", "success")}
    nq = 0
    for q, judged in qrels.items():
        if q not in run:
            continue
        nq += 1
        # mpmath parses the score text exactly (subnormals included)
        docs = sorted(run[q], key=lambda f: (mp.mpf(f[4]), f[2].encode()), reverse=True)
        grades = [judged.get(f[2], 0) for f in docs]
        R = sum(1 for g in judged.values() if g >= 1)
        rr = next((Fraction(1, i + 1) for i, g in enumerate(grades) if g >= 1), Fraction(0))
        top = grades[:k]
        hits = sum(1 for g in top if g >= 1)
        ap, h = Fraction(0), 0
        for i, g in enumerate(top):
            if g >= 1:
                h += 1
                ap += Fraction(h, i + 1)
        dcg = sum(mp.mpf(gain(g)) / mp.log(i + 2, 2) for i, g in enumerate(top))
        ideal = sorted(judged.values(), reverse=True)[:k]
        idcg = sum(mp.mpf(gain(g)) / mp.log(i + 2, 2) for i, g in enumerate(ideal))
        sums["recip_rank"] += mp.mpf(rr.numerator) / rr.denominator if R else 0
        sums["P"] += mp.mpf(hits) / k if R else 0
        sums["recall"] += mp.mpf(hits) / R if R else 0
        sums["ndcg_cut"] += dcg / idcg if R and idcg > 0 else 0
        sums["map_cut"] += (mp.mpf(ap.numerator) / ap.denominator) / R if R else 0
        sums["success"] += 1 if hits else 0
    print("%-22s\t%s\t%6.4f" % ("recip_rank", "all", float(sums["recip_rank"] / nq)))
    for m in ("P", "recall", "ndcg_cut", "map_cut", "success"):
        print("%-22s\t%s\t%6.4f" % (f"{m}_{k}", "all", float(sums[m] / nq)))


if __name__ == "__main__":
    main()
