"""The ktsa PyTorch extension against plain torch.

kto_loss: every variant ('kto', 'kto_log_sigmoid', 'ktsa', 'apo_zero_unpaired',
'bco') and option (beta, desirable_weight, undesirable_weight, gamma, a scalar or
per-example z0) against a plain-torch implementation of the published formulas
in float64 (1e-12 relative), and torch.autograd.gradcheck in float64.
sequence_logprob / token_kl: ktsa's kernels take float32 / float16 / bfloat16
logits (fp32 lanes, fp64 sums), so they are compared with plain torch in float64
on the same float32 values (1e-5 relative, values and gradients, options and
strided inputs included); gradcheck needs float64 inputs, which these kernels do
not take. fused_head_logprob (hidden, lm_head weight, bias; the fused linear
head): value and the hidden / weight / bias gradients against plain torch
(linear, log_softmax, gather, masked sum) in float64 on the same float32
values, 1e-5 relative (the same fp32-GEMM argument as the C++ test). Bad
arguments raise ValueError naming them.

Usage: python3 test_torch_extension.py <directory holding the built module> <README.md>
"""
import sys

import torch

sys.path.insert(0, sys.argv[1] if len(sys.argv) > 1 else ".")
import ktsa_torch_ext as kt  # noqa: E402

torch.manual_seed(0)
failures = []
checks = [0]


def check(cond, what):
    checks[0] += 1
    if not cond:
        failures.append(what)
        print("FAIL:", what)


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-300)).item()


def raises(fn, text):
    try:
        fn()
    except ValueError as e:
        return text in str(e)
    return False


# Plain torch, written from the formulas (docs/conventions: TRL's).
def plain_seq_logprob(logits, labels, ignore_index=-100, shift=False, reduction="sum"):
    lp = torch.log_softmax(logits, -1)
    y = labels
    if shift:
        y = torch.cat([labels[:, 1:], torch.full_like(labels[:, :1], ignore_index)], 1)
    mask = y != ignore_index
    tok = lp.gather(2, torch.where(mask, y, 0).unsqueeze(2)).squeeze(2) * mask
    s = tok.sum(1)
    return s / mask.sum(1).clamp_min(1) if reduction == "mean" else s


def plain_token_kl(a, b, labels, ignore_index=-100, shift=False, reduction="sum"):
    la, lb = torch.log_softmax(a, -1), torch.log_softmax(b, -1)
    y = labels
    if shift:
        y = torch.cat([labels[:, 1:], torch.full_like(labels[:, :1], ignore_index)], 1)
    mask = y != ignore_index
    s = ((la.exp() * (la - lb)).sum(-1) * mask).sum(1)
    return s / mask.sum(1).clamp_min(1) if reduction == "mean" else s


def plain_kto(pol, ref, d, z0, variant, beta=0.1, desirable_weight=1.0, undesirable_weight=1.0,
              gamma=1.0, delta=0.0):
    r = pol - ref
    s = torch.sigmoid
    ls = torch.nn.functional.logsigmoid
    wd, wu = desirable_weight, undesirable_weight
    if variant in ("kto", "ktsa"):
        l = torch.where(d, wd * (1 - s(beta * (r - z0))), wu * (1 - s(beta * (z0 - r))))
        if variant == "ktsa":
            l = l - gamma * r
    elif variant == "kto_log_sigmoid":
        l = torch.where(d, -wd * ls(beta * (r - z0)), -wu * ls(beta * (z0 - r)))
    elif variant == "apo_zero_unpaired":
        l = torch.where(d, wd * (1 - s(beta * r)), wu * s(beta * r))
    elif variant == "bco":
        l = torch.where(d, -wd * ls(beta * r - delta), -wu * ls(-(beta * r - delta)))
    return l.mean()


# --- kto_loss: every variant and option, plain torch and gradcheck (float64).
B = 7
pol = (torch.randn(B, dtype=torch.float64) * 3 - 20)
ref = pol.detach() + torch.randn(B, dtype=torch.float64)
d = torch.tensor([1, 0, 1, 1, 0, 0, 1], dtype=torch.bool)
for variant in ("kto", "kto_log_sigmoid", "ktsa", "apo_zero_unpaired", "bco"):
    for opts in ({}, {"beta": 0.4, "desirable_weight": 1.33, "undesirable_weight": 0.7,
                      "gamma": 0.05}):
        for z0 in (0.0, 0.3, torch.rand(B, dtype=torch.float64)):
            name = f"kto_loss {variant} {opts} z0={'tensor' if torch.is_tensor(z0) else z0}"

            def ours(p):
                # bco with after_loss: delta is the state's prior mean, independent of
                # p, so gradcheck's finite differences see the same function.
                state = kt.BcoRunningMean(0.12, 5) if variant == "bco" else None
                extra = {"bco_order": "after_loss"} if variant == "bco" else {}
                return kt.kto_loss(p, ref, d, z0=z0, bco_state=state, variant=variant, **opts,
                                   **extra)

            p1 = pol.clone().requires_grad_(True)
            p2 = pol.clone().requires_grad_(True)
            a = ours(p1)
            b = plain_kto(p2, ref, d, z0, variant, delta=0.12, **opts)
            check(abs(a.item() - b.item()) <= 1e-12 * abs(b.item()), name + " value")
            a.backward()
            b.backward()
            check(rel(p1.grad, p2.grad) <= 1e-12, name + " gradient")
            check(torch.autograd.gradcheck(ours, (pol.clone().requires_grad_(True),)),
                  name + " gradcheck")

# bco's default order (TRL's, before_loss): the batch's beta * r is folded into the
# running mean first; delta carries no gradient (TRL's running mean is detached).
for beta in (0.1, 0.4):
    p1 = pol.clone().requires_grad_(True)
    p2 = pol.clone().requires_grad_(True)
    state = kt.BcoRunningMean(0.12, 5)
    a = kt.kto_loss(p1, ref, d, bco_state=state, variant="bco", beta=beta)
    delta = (0.12 * 5 + (beta * (pol - ref)).sum().item()) / (5 + B)
    b = plain_kto(p2, ref, d, 0.0, "bco", beta=beta, delta=delta)
    check(abs(a.item() - b.item()) <= 1e-12 * abs(b.item()), f"bco before_loss beta={beta} value")
    a.backward()
    b.backward()
    check(rel(p1.grad, p2.grad) <= 1e-12, f"bco before_loss beta={beta} gradient")
    check(state.count == 5 + B and abs(state.mean - delta) <= 1e-14, "bco before_loss state")
    frozen = kt.BcoRunningMean(0.12, 5)
    a = kt.kto_loss(pol, ref, d, bco_state=frozen, variant="bco", beta=beta, bco_order="none")
    b = plain_kto(pol, ref, d, 0.0, "bco", beta=beta, delta=0.12)
    check(abs(a.item() - b.item()) <= 1e-12 * abs(b.item()) and frozen.count == 5,
          f"bco none beta={beta}: delta read, state unchanged")
check(raises(lambda: kt.kto_loss(pol, ref, d, bco_state=kt.BcoRunningMean(), variant="bco",
                                 bco_order="sometimes"), "'bco_order' = 'sometimes'"),
      "bad bco_order rejected")

state = kt.BcoRunningMean()
loss, m = kt.kto_loss(pol, ref, d, bco_state=state, variant="bco", return_metrics=True)
check(state.count == B and m["count/chosen"] == 4 and m["count/rejected"] == 3, "bco state, metrics")
check(abs(m["rewards/chosen"] - (0.1 * (pol - ref))[d].mean().item()) < 1e-12, "rewards/chosen")
z = kt.batch_kl_reference_point(pol, ref)
check(abs(z - max(0.0, (pol - ref).mean().item())) < 1e-12, "batch_kl_reference_point")

# --- sequence_logprob: options and a strided input, against float64 plain torch.
Bt, T, V = 3, 6, 41
big = torch.randn(Bt, 2 * T, V + 5) * 2
labels = torch.randint(V, (Bt, T))
labels[1, 2] = -1
labels[2, :] = -1
for shift in (False, True):
    for reduction in ("sum", "mean"):
        name = f"sequence_logprob shift={shift} {reduction}"
        x = big[:, ::2, :V].detach().requires_grad_(True)  # non-contiguous view
        x64 = x.detach().double().requires_grad_(True)
        a = kt.sequence_logprob(x, labels, ignore_index=-1, shift=shift, reduction=reduction)
        b = plain_seq_logprob(x64, labels, -1, shift, reduction)
        check(a.dtype == torch.float64 and rel(a, b) < 1e-6, name + " value")
        w = torch.tensor([0.5, -1.25, 2.0], dtype=torch.float64)
        (a * w).sum().backward()
        (b * w).sum().backward()
        check(rel(x.grad, x64.grad) < 1e-5, name + " gradient")
x16 = big[:, ::2, :V].to(torch.bfloat16)
check(rel(kt.sequence_logprob(x16, labels, ignore_index=-1),
          plain_seq_logprob(x16.double(), labels, -1)) < 1e-5, "sequence_logprob bfloat16")

# --- token_kl.
a_l = torch.randn(2, 5, 17, requires_grad=True)
b_l = torch.randn(2, 5, 17, requires_grad=True)
mask = torch.zeros(2, 5, dtype=torch.int64)
mask[0, 4] = -100
for shift in (False, True):
    for reduction in ("sum", "mean"):
        name = f"token_kl shift={shift} {reduction}"
        a_l.grad = b_l.grad = None
        a64 = a_l.detach().double().requires_grad_(True)
        b64 = b_l.detach().double().requires_grad_(True)
        ours = kt.token_kl(a_l, b_l, mask, shift=shift, reduction=reduction)
        theirs = plain_token_kl(a64, b64, mask, -100, shift, reduction)
        check(rel(ours, theirs) < 1e-5, name + " value")
        w = torch.tensor([1.5, -0.5], dtype=torch.float64)
        (ours * w).sum().backward()
        (theirs * w).sum().backward()
        check(rel(a_l.grad, a64.grad) < 1e-5 and rel(b_l.grad, b64.grad) < 1e-5, name + " gradient")

# --- The chain logits -> sequence_logprob -> kto_loss, as a trainer runs it.
lg = torch.randn(4, 3, 11, requires_grad=True)
lab = torch.randint(11, (4, 3))
ref4 = torch.randn(4, dtype=torch.float64) - 8
d4 = torch.tensor([True, False, True, False])
ours = kt.kto_loss(kt.sequence_logprob(lg, lab), ref4, d4, z0=0.1, beta=0.5)
lg64 = lg.detach().double().requires_grad_(True)
theirs = plain_kto(plain_seq_logprob(lg64, lab), ref4, d4, 0.1, "kto", beta=0.5)
ours.backward()
theirs.backward()
check(rel(lg.grad, lg64.grad) < 1e-5, "chain gradient")

# --- fused_head_logprob: hidden [B, T, H] and the lm_head weight [V, H], no logits held.
Bf, Tf, Hf, Vf = 3, 7, 13, 41
hbig = torch.randn(Bf, 2 * Tf, Hf + 2)
w0 = torch.randn(Vf, Hf) * 0.5
b0 = torch.randn(Vf)
lab_f = torch.randint(Vf, (Bf, Tf))
lab_f[0, 0] = -100
lab_f[1, 4] = -100
lab_f[2, :] = -100
for shift, reduction, use_bias, chunk_rows in ((False, "sum", True, 4), (True, "sum", False, 5),
                                                (True, "mean", True, 1), (False, "mean", True, 0)):
    name = f"fused_head_logprob shift={shift} {reduction} bias={use_bias} chunk_rows={chunk_rows}"
    h = hbig[:, ::2, :Hf].detach().requires_grad_(True)  # non-contiguous view
    w = w0.clone().requires_grad_(True)
    b = b0.clone().requires_grad_(True) if use_bias else None
    h64 = h.detach().double().requires_grad_(True)
    w64 = w0.double().requires_grad_(True)
    b64 = b0.double().requires_grad_(True) if use_bias else None
    a = kt.fused_head_logprob(h, w, lab_f, bias=b, shift=shift, reduction=reduction,
                              chunk_rows=chunk_rows)
    logits64 = torch.nn.functional.linear(h64, w64, b64)
    ref_f = plain_seq_logprob(logits64, lab_f, -100, shift, reduction)
    check(a.dtype == torch.float64 and rel(a, ref_f) < 1e-5 and a[2].item() == 0.0, name + " value")
    wt = torch.tensor([0.5, -1.25, 2.0], dtype=torch.float64)
    (a * wt).sum().backward()
    (ref_f * wt).sum().backward()
    check(rel(h.grad, h64.grad) < 1e-5, name + " grad hidden")
    check(rel(w.grad, w64.grad) < 1e-5, name + " grad weight")
    if use_bias:
        check(rel(b.grad, b64.grad) < 1e-5, name + " grad bias")
    check(h.grad[2].abs().max().item() == 0.0, name + " all-ignored row has zero gradient")
check(raises(lambda: kt.fused_head_logprob(hbig[:, :Tf, :Hf], w0.double(), lab_f),
             "'weight' has dtype Double"), "fused_head_logprob weight dtype")
check(raises(lambda: kt.fused_head_logprob(hbig[0], w0, lab_f), "'hidden' has 2 dimensions"),
      "fused_head_logprob rank")

# --- Rejections name the argument.
check(raises(lambda: kt.kto_loss(pol, ref, d, variant="kto_zero"), "'variant' = 'kto_zero'"),
      "kto_zero is not offered")
check(raises(lambda: kt.kto_loss(pol, ref, d, betta=0.1), "unknown loss option 'betta'"),
      "unknown option")
check(raises(lambda: kt.kto_loss(pol, ref, d, beta=-1.0), "'beta' = -1"), "beta <= 0")
check(raises(lambda: kt.kto_loss(pol, ref, d, variant="bco"), "'bco_state'"), "bco needs a state")
check(raises(lambda: kt.kto_loss(pol[:3], ref, d), "'policy_logps' has length 3"), "length mismatch")
check(raises(lambda: kt.sequence_logprob(big.double()[:, :T, :V], labels), "'logits' has dtype Double"),
      "float64 logits")
check(raises(lambda: kt.sequence_logprob(big[:, :T, :V], labels.float()), "'labels' has dtype Float"),
      "float labels")
check(raises(lambda: kt.sequence_logprob(big[:, :T, :V], labels, reduction="max"),
             "'reduction' = 'max'"), "bad reduction")
check(raises(lambda: kt.sequence_logprob(big[0], labels), "'logits' has 2 dimensions"), "rank")

# --- The README's TRL lines, run with a stand-in for TRL's KTOTrainer and
# compared with TRL's own kto_loss formula (trl/trainer/kto_trainer.py, "kto"
# loss type: kl = (policy_KL - reference_KL).mean().clamp(min=0), then
# 1 - sigmoid(beta (logratio - kl)) / 1 - sigmoid(beta (kl - logratio)), weighted).
if len(sys.argv) > 2:
    readme = open(sys.argv[2]).read()
    block = readme.split("<!-- trl-snippet -->", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]

    class KTOTrainer:
        beta, desirable_weight, undesirable_weight = 0.2, 1.3, 0.8

    scope = {"KTOTrainer": KTOTrainer}
    exec(block, scope)
    trainer = scope["KtsaKTOTrainer"]()
    pc, pr, pkl = (torch.randn(n, dtype=torch.float64) - 9 for n in (3, 2, 5))
    rc, rr, rkl = (x + 0.3 * torch.randn_like(x) for x in (pc, pr, pkl))
    pc.requires_grad_(True)
    losses, cr, rr_, kl = trainer.kto_loss(pc, pr, pkl, rc, rr, rkl)
    t = KTOTrainer
    trl_kl = (pkl - rkl).mean().clamp(min=0)
    trl = torch.cat((t.desirable_weight * (1 - torch.sigmoid(t.beta * ((pc - rc) - trl_kl))),
                     t.undesirable_weight * (1 - torch.sigmoid(t.beta * (trl_kl - (pr - rr))))))
    check(abs(losses.nanmean().item() - trl.nanmean().item()) < 1e-12, "README TRL lines: loss")
    check(abs(kl.item() - trl_kl.item()) < 1e-12 and rel(cr, t.beta * (pc - rc)) < 1e-12,
          "README TRL lines: kl and rewards")
    g1, = torch.autograd.grad(losses.nanmean(), pc)
    g2, = torch.autograd.grad(trl.nanmean(), pc)
    check(rel(g1, g2) < 1e-12, "README TRL lines: gradient")
else:
    check(False, "README path not given: the TRL lines were not run")

if failures:
    print(f"{len(failures)} check(s) failed")
    sys.exit(1)
print(f"ktsa torch extension: all {checks[0]} checks passed")
