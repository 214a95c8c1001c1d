#!/usr/bin/env python3
"""Times PyTorch (CPU) on the shapes of ktsa_bench_host and prints ktsa's speed-up.

Runs the ktsa benchmark binary with --benchmark_format=json, times the
equivalent PyTorch expressions with the same number of threads, and prints one
row per operation: ktsa GB/s, ktsa / read ceiling (same run), PyTorch GB/s and
ktsa's speed-up over PyTorch. Bytes are logits bytes read (both tensors for
token KL), as in ktsa_bench_host.

  /usr/bin/python3 bench/compare_torch_cpu.py --bench build/release/bench/ktsa_bench_host

PyTorch expressions (what a CPU trainer would write):
  logprob_fwd       log_softmax(x).gather(y).sum(seq)
  logprob_bwd       (onehot(y) - softmax(x)) * g              (from a saved lse, as ktsa)
  logprob_fwd_grad  autograd of log_softmax(x).gather(y).sum()  (forward + backward)
  token_kl          kl_div(log_softmax(b), log_softmax(a), log_target=True).sum(-1)

Fused linear head (B x T x H x V = 8 x 256 x 512 x 32000, f32), one KTO step:
  torch             linear(h, W) -> log_softmax -> gather -> sum(seq) -> KTO loss -> backward
                    (grad of h and W), timed, and its peak RSS beyond the inputs from a
                    fresh child process (ru_maxrss)
  ktsa              host/fused_linear_step, _gemm_only and _materialised from the same
                    ktsa_bench_host run (peak_extra_bytes counter)

  /usr/bin/python3 bench/compare_torch_cpu.py --only-fused     (just that table)
"""
import argparse
import json
import os
import subprocess
import sys
import time

import torch

SHAPES = [(2048, 32000), (512, 152064)]
DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16}
BATCH = 8


def best_of(fn, reps):
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def torch_times(n, v, dtype, reps):
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(BATCH, n // BATCH, v, generator=g) * 16 - 8).to(dtype)
    b = (torch.rand(BATCH, n // BATCH, v, generator=g) * 16 - 8).to(dtype)
    y = torch.randint(0, v, (BATCH, n // BATCH, 1), generator=g)
    up = torch.full((BATCH, 1, 1), 0.5, dtype=dtype)
    lse = torch.logsumexp(x.float(), -1, keepdim=True).to(dtype)
    out = {}
    with torch.no_grad():
        out["read_ceiling"] = best_of(lambda: x.sum(), reps)
        out["logprob_fwd"] = best_of(lambda: torch.log_softmax(x, -1).gather(-1, y).sum((1, 2)), reps)

        def bwd():
            grad = -torch.exp(x - lse)
            grad.scatter_add_(-1, y, torch.ones_like(y, dtype=dtype))
            return grad.mul_(up)

        out["logprob_bwd"] = best_of(bwd, reps)
        out["token_kl"] = best_of(
            lambda: torch.nn.functional.kl_div(torch.log_softmax(b, -1), torch.log_softmax(x, -1),
                                               reduction="none", log_target=True).sum(-1),
            reps)

    def fwd_grad():
        xg = x.detach().requires_grad_(True)
        torch.log_softmax(xg, -1).gather(-1, y).sum().backward()
        return xg.grad

    out["logprob_fwd_grad"] = best_of(fwd_grad, reps)
    return out


FUSED = (8, 256, 512, 32000)  # B, T, H, V

FUSED_CHILD = r"""
import resource, sys, time, torch
B, T, H, V, reps, threads = map(int, sys.argv[1:7])
torch.set_num_threads(threads)
g = torch.Generator().manual_seed(1)
h = torch.randn(B, T, H, generator=g)
w = torch.randn(V, H, generator=g) * (2.0 / H ** 0.5)
y = torch.randint(0, V, (B, T, 1), generator=g)
ref = torch.full((B,), -11.0 * T)
desirable = torch.tensor([i % 2 == 0 for i in range(B)])
def rss():  # resident bytes now
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()
def step():
    hg = h.detach().requires_grad_(True)
    wg = w.detach().requires_grad_(True)
    logp = torch.log_softmax(torch.nn.functional.linear(hg, wg), -1).gather(-1, y).squeeze(-1).sum(1)
    r = logp - ref  # z0 = 0, beta = 0.1, kto
    x = torch.where(desirable, 0.1 * r, -0.1 * r)
    (1 - torch.sigmoid(x)).mean().backward()
    return hg.grad, wg.grad
base = rss()
step()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
best = float("inf")
for _ in range(reps):
    t0 = time.perf_counter(); step(); best = min(best, time.perf_counter() - t0)
print(best, peak - base)
"""


def fused_table(ktsa_report, args):
    B, T, H, V = FUSED
    out = subprocess.run([sys.executable, "-c", FUSED_CHILD, *map(str, (B, T, H, V, args.torch_reps, args.threads))],
                         check=True, capture_output=True, text=True).stdout.split()
    torch_s, torch_extra = float(out[0]), float(out[1])
    tail = f"/f32/{B}x{T}x{H}x{V}"
    print(f"\nfused linear head, one KTO step, f32 {B}x{T}x{H}x{V} (BxTxHxV); torch: best of {args.torch_reps}")
    print(f"{'path':<44}{'ms':>10}{'extra MB':>10}{'vs torch':>10}")
    print(f"{'torch (linear, log_softmax, gather, backward)':<44}{torch_s * 1e3:>10.0f}{torch_extra / 1e6:>10.0f}{'1.00':>10}")
    for op in ["fused_linear_step", "fused_linear_gemm_only", "fused_linear_materialised"]:
        r = ktsa_report.get(f"host/{op}{tail}")
        if r is None:
            print(f"host/{op}{tail} missing from the ktsa report")
            continue
        ms = r["real_time"]
        print(f"{'host/' + op:<44}{ms:>10.0f}{r.get('peak_extra_bytes', 0) / 1e6:>10.0f}{torch_s * 1e3 / ms:>9.2f}x")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", default=os.path.join(here, "..", "build", "release", "bench", "ktsa_bench_host"))
    ap.add_argument("--min-time", default="0.2", help="--benchmark_min_time for ktsa_bench_host")
    ap.add_argument("--repetitions", type=int, default=3, help="ktsa repetitions (median is used)")
    ap.add_argument("--torch-reps", type=int, default=3, help="PyTorch timings per op (best is used)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--only-fused", action="store_true", help="only the fused linear head table")
    args = ap.parse_args()

    cmd = [args.bench, "--benchmark_format=json", f"--benchmark_min_time={args.min_time}",
           f"--benchmark_repetitions={args.repetitions}", "--benchmark_report_aggregates_only=true"]
    if args.only_fused:
        cmd.append("--benchmark_filter=fused_linear_(step|gemm_only|materialised)/")
    print("running:", " ".join(cmd), file=sys.stderr)
    report = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    ktsa, fused = {}, {}
    for r in report["benchmarks"]:
        if r.get("aggregate_name", "median") != "median":
            continue
        name = r.get("run_name", r["name"]).replace("/real_time", "")
        if "fused_linear" in name:
            fused[name] = r
        elif "bytes_per_second" in r:
            ktsa[name] = r["bytes_per_second"] / 1e9
    if args.only_fused:
        fused_table(fused, args)
        return

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; ktsa: {os.path.basename(args.bench)}, "
          f"median of {args.repetitions}; GB/s = logits bytes read per second")
    print(f"{'operation':<44}{'ktsa GB/s':>10}{'/ceiling':>10}{'torch GB/s':>12}{'speed-up':>10}")
    for dname, dtype in DTYPES.items():
        for n, v in SHAPES:
            shape = f"{dname}/{n}x{v}"
            times = torch_times(n, v, dtype, args.torch_reps)
            elem = torch.tensor([], dtype=dtype).element_size()
            ceiling = ktsa.get(f"host/read_ceiling/{shape}")
            for op in ["read_ceiling", "logprob_fwd", "logprob_bwd", "logprob_fwd_grad", "token_kl"]:
                tensors = 2 if op == "token_kl" else 1
                torch_gbs = n * v * elem * tensors / times[op] / 1e9
                k = ktsa.get(f"host/{op}/{shape}")
                if k is None:
                    print(f"host/{op}/{shape:<30} missing from the ktsa report")
                    continue
                ratio = f"{k / ceiling:.2f}" if ceiling else "-"
                print(f"{'host/' + op + '/' + shape:<44}{k:>10.2f}{ratio:>10}{torch_gbs:>12.2f}{k / torch_gbs:>9.1f}x")
            sys.stdout.flush()
    fused_table(fused, args)


if __name__ == "__main__":
    main()
