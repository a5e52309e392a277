# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 5. Validating your implementation
#
# [Open in Colab](https://colab.research.google.com/github/primal-np/primal_np/blob/main/notebooks/05_validating_your_implementation.ipynb)
# (the setup cell below installs primal_np there; see the [notebooks' README](README.md)).
#
# primal_np is a reference: its job is to tell whether *your* attention or
# Primal-Attention code — PyTorch, JAX, CUDA — computes the same thing. This notebook
# shows the three tools, in the order one usually needs them:
#
# 1. **golden vectors** — files of inputs, outputs and gradients that any language can
#    read, and `golden check` to judge a candidate's results;
# 2. **the comparison policy** (`primal_np.compare`) — when is a difference a bug and when
#    is it rounding, in float64 and in low precision;
# 3. **adapters** (`primal_np.adapters`) — call a Python candidate over a grid of shapes,
#    masks and precisions; here a softmax backward with a planted bug is caught, and
#    PyTorch's `scaled_dot_product_attention` passes.
#
# The full description: [docs/validation.md](../docs/validation.md). Notation:
# [docs/theory.md §0](../docs/theory.md#0-notation) (tokens $i, j$; $P$ the attention matrix).

# %%
# Setup: on a hosted service (Google Colab) install primal_np from its repository.
# Where primal_np is already importable (a clone, CI) this cell does nothing.
import importlib.util
import subprocess
import sys

REPO_URL = "https://github.com/primal-np/primal_np"  # placeholder (notebooks/README.md)
if importlib.util.find_spec("primal_np") is None:
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", f"primal-np @ git+{REPO_URL}"], check=True
    )

# %%
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before NumPy loads BLAS (README)
import matplotlib.pyplot as plt
import numpy as np

import primal_np as pn
from primal_np import golden
from primal_np.adapters import check_dual_attention
from primal_np.compare import DEFAULT_K, FLOOR_EPS, PRECISIONS, compare, emulate_precision
from primal_np.golden.check import check_candidate

rng = np.random.default_rng(0)

# %% [markdown]
# ## A candidate implementation
#
# Below is "your" implementation: canonical attention written independently of
# primal_np, with einsum and its own softmax. It follows the conventions primal_np
# documents — mask `True` = may attend, causal top-left aligned, scale $1/\sqrt d$ by
# default, a query that sees no key gives 0 — and its backward has a switch that drops
# the row-sum term of the softmax VJP, the most common hand-derivation slip:
#
# $$ P = \operatorname{softmax}(S) \;\Rightarrow\; \bar S = P \circ \big(\bar P - \operatorname{rowsum}(\bar P \circ P)\big),
# \qquad\text{bug: } \bar S = P \circ \bar P $$
#
# (exercise 3 derives the correct form).
#
# This is the code under test, not part of primal_np.


# %%
def _probs(q, k, mask, causal, scale):
    N, M, d = q.shape[-2], k.shape[-2], q.shape[-1]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    s = np.einsum("...id,...jd->...ij", q, k) * q.dtype.type(scale)
    visible = np.ones((N, M), bool) if mask is None else np.asarray(mask, bool)
    if causal:
        visible = visible & np.tri(N, M, dtype=bool)  # key j visible to query i iff j ≤ i
    s = np.where(visible, s, -np.inf)
    top = s.max(axis=-1, keepdims=True)
    e = np.exp(s - np.where(np.isfinite(top), top, 0))  # a fully masked row: all zeros
    z = e.sum(axis=-1, keepdims=True)
    return np.divide(e, z, out=np.zeros_like(e), where=z > 0), scale


def my_attention(q, k, v, mask=None, causal=False, scale=None):
    p, _ = _probs(q, k, mask, causal, scale)
    return np.einsum("...ij,...je->...ie", p, v)


def my_attention_backward(q, k, v, mask, causal, scale, dout, rowsum_term=True):
    p, scale = _probs(q, k, mask, causal, scale)
    dv = np.einsum("...ij,...ie->...je", p, dout)
    dp = np.einsum("...ie,...je->...ij", dout, v)
    if rowsum_term:
        dp = dp - (dp * p).sum(axis=-1, keepdims=True)
    ds = p * dp
    dq = np.einsum("...ij,...jd->...id", ds, k) * q.dtype.type(scale)
    dk = np.einsum("...ij,...id->...jd", ds, q) * q.dtype.type(scale)
    return dq, dk, dv


# %% [markdown]
# ## 1. Golden vectors
#
# `golden.export(DIR)` (or `python -m primal_np golden export DIR`) writes a
# `manifest.json` and one `.npz` per case: arrays `input.*`, `param.*`, `cotangent.*`
# (a random upstream gradient, never all-ones), `output.*` and `grad.*` (the gradients of
# $\sum \langle \text{cotangent}, \text{output}\rangle$), all float64, written without pickling.

# %%
start_dir = Path.cwd()
work_dir = Path(tempfile.mkdtemp(prefix="primal_np-nb5-"))
os.chdir(work_dir)  # a scratch directory, so that the printed paths are short: golden/...
golden_dir = Path("golden")
golden.export(golden_dir)
manifest = json.loads((golden_dir / "manifest.json").read_text())
for case in manifest["cases"]:
    with np.load(golden_dir / case["file"], allow_pickle=False) as data:
        kinds = sorted({name.split(".")[0] for name in data.files})
    print(f"{case['name']:<28} op {case['op']:<18} arrays: {', '.join(kinds)}")

# %% [markdown]
# A candidate reads a case's inputs, computes its outputs and gradients with the case's
# cotangent, and saves them under the same names; the file name names the case.

# %%
name = "dual_attention_masked"
with np.load(golden_dir / f"{name}.npz", allow_pickle=False) as data:
    a = dict(data)
config = next(c for c in manifest["cases"] if c["name"] == name)["config"]
print("config:", {k: config[k] for k in ("scale", "causal", "mask", "fully_masked_row")})


def run_candidate(a, dtype, rowsum_term=True):
    q, k, v, dout = (
        a[key].astype(dtype) for key in ("input.q", "input.k", "input.v", "cotangent.out")
    )
    mask = a["input.mask"]
    out = my_attention(q, k, v, mask)
    dq, dk, dv = my_attention_backward(q, k, v, mask, False, None, dout, rowsum_term)
    return {"output.out": out, "grad.q": dq, "grad.k": dk, "grad.v": dv}


good = golden_dir / f"{name}.mine-fp64.npz"
np.savez(good, **run_candidate(a, np.float64))
print(check_candidate(golden_dir, good))

# %% [markdown]
# The same check from a shell, where the exit status is what CI looks at (0: pass,
# 1: an array outside its bound, missing, misshapen or non-finite; 2: unreadable input).
# Here the candidate has the row-sum bug:

# %%
bad = golden_dir / f"{name}.mine-buggy-fp64.npz"
np.savez(bad, **run_candidate(a, np.float64, rowsum_term=False))
cmd = [sys.executable, "-m", "primal_np", "golden", "check", str(golden_dir)]
cmd += ["--candidate", str(bad)]
proc = subprocess.run(cmd, capture_output=True, text=True)
print(proc.stdout)
print("exit status:", proc.returncode)

# %% [markdown]
# ## 2. The comparison policy
#
# Errors are measured per array, relative to the size of the reference $r$ (primal_np in
# float64): $\text{err} = \max|c - r|$.
#
# * **float64 candidates** pass iff $\text{err} \le 10^{-10}\max|r| + 10^{-12}$. Two correct
#   float64 evaluations differ only by rounding ($\approx 10^{-16}$ relative per operation);
#   $10^{-10}$ leaves a wide margin and still catches a gradient off by $10^{-8}$.
# * **float32 / float16 / bfloat16 candidates** follow the flash-attention rule: at most
#   $k = 2$ times primal_np's *own* error in that precision, plus a rounding floor,
#
#   $$ \text{err}(c) \le k\cdot\text{err}(\text{primal\_np in that precision}) + 2\,\varepsilon\max|r| + 10^{-12}. $$
#
#   The bound is not guessed per precision: it is what the reference achieves on the same
#   inputs, so it grows with the conditioning of the case.
#
# Here `compare` is called without `scales=`, so the floor is measured against $\max|r|$.
# The adapters and the golden dual-attention cases measure it against each array's
# *operand magnitude* $A \ge \max|r|$ instead — the size of the terms the array is formed
# from, times the conditioning of the softmax at large logits and of long sums — so that
# gradients that are zero in exact arithmetic (the key bias of any attention layer) and
# logits in the hundreds raise no false alarms (docs/validation.md derives it); their
# tables print the rule with $A$.
#
# The float32 candidate against the golden case, with the bound worked out per array:

# %%
case = golden.build_case(name)  # carries a hook that re-runs primal_np in any dtype
inputs = {key: x for key, x in a.items() if key.startswith(("input.", "cotangent."))}
own = emulate_precision(case.recompute, inputs, "float32")
reference = {key: x for key, x in a.items() if key.startswith(("output.", "grad."))}
cand32 = run_candidate(a, np.float32)
report = compare(cand32, reference, precision="float32", own=own)
print(report)

# %%
eps32 = PRECISIONS["float32"][0]  # 2⁻²³
rows = report.rows
fig, ax = plt.subplots(figsize=(7, 3.8), constrained_layout=True)
xs = np.arange(len(rows))
ax.bar(xs - 0.27, [r.own_err for r in rows], 0.27, label="primal_np's own float32 error")
ax.bar(xs, [FLOOR_EPS * eps32 * r.ref_scale for r in rows], 0.27, label="rounding floor 2·ε·max|r|")
ax.bar(xs + 0.27, [r.max_abs_err for r in rows], 0.27, label="candidate's error")
for x0, r in zip(xs, rows, strict=True):
    ax.hlines(r.bound, x0 - 0.42, x0 + 0.42, color="k", lw=2,
              label=f"bound = {DEFAULT_K:g}·own + floor" if x0 == 0 else None)  # fmt: skip
ax.set(xticks=xs, xticklabels=[r.name for r in rows], yscale="log",
       ylabel="max |c − r| (absolute, log)", title=f"float32 candidate on {name}")  # fmt: skip
ax.set_ylim(top=ax.get_ylim()[1] * 8)  # room for the legend
ax.legend(fontsize=8, loc="upper left", ncol=2)
plt.show()

# %% [markdown]
# **What to see:** for every array the candidate's error (right bar) stays under the
# black bound, which is built from primal_np's own float32 error (left bar) and the
# rounding floor (middle bar). A correct float32 kernel lands at the order of primal_np's
# own error; a gradient off by $10^{-4}$ relative would sit more than two orders of
# magnitude above the bound.
#
# ## 3. Adapters: a grid of shapes, masks and precisions
#
# `check_dual_attention(fn, backward=...)` draws inputs for each point of a grid
# (batch and head axes, N ≠ M, N = 1, d = 1, random masks, a fully masked row, broadcast
# masks, causal, logits in the hundreds, sums of 512–1024 terms), rounds them to each precision, calls the candidate, and judges every
# output and gradient with the policy above. The correct candidate:


# %%
def backward_ok(q, k, v, mask, causal, scale, dout):
    return my_attention_backward(q, k, v, mask, causal, scale, dout)


def backward_buggy(q, k, v, mask, causal, scale, dout):
    return my_attention_backward(q, k, v, mask, causal, scale, dout, rowsum_term=False)


report_ok = check_dual_attention(my_attention, backward=backward_ok)
print(report_ok)

# %% [markdown]
# The same candidate with the row-sum term dropped. The report's first lines give the
# verdict per (grid point, precision); after them comes one table per failing pair, of
# which we print the first:

# %%
report_bad = check_dual_attention(my_attention, backward=backward_buggy)
print(str(report_bad).split("\n\n")[0])
print()
print(report_bad.failures[0].report)

# %% [markdown]
# **Reading the report:** `output.out` and `grad.v` pass — the forward pass and the value
# gradient do not involve the softmax backward — while `grad.q` and `grad.k` fail at
# every point, by orders of magnitude, with the worst entry's candidate and reference
# values side by side. The bug is localised to the path through the softmax before any
# debugger is opened.
#
# ## PyTorch's SDPA passes
#
# If PyTorch is installed, its `scaled_dot_product_attention` (autograd for the backward)
# is a third implementation to hold against the reference — in float64, float32 and
# bfloat16. (SDPA takes either a mask or `is_causal`, so the causal triangle is folded
# into the mask.)

# %%
try:
    import torch
    import torch.nn.functional as F
except ImportError:
    torch = None
    print("torch is not installed: skipping the PyTorch check")


def make_sdpa(bfloat16=False):
    """SDPA as a candidate (forward, backward). With bfloat16=True the adapter's float32
    arrays (holding bfloat16 values) are converted to torch.bfloat16 losslessly, the
    computation runs in bfloat16, and the results are returned as float32."""

    def to_numpy(x):  # bfloat16 → float32 is exact; other dtypes are kept
        return (x.float() if bfloat16 else x).numpy()

    def run(q, k, v, mask, causal, scale, dout=None):
        t = [torch.from_numpy(np.ascontiguousarray(x)) for x in (q, k, v)]
        t = [(x.to(torch.bfloat16) if bfloat16 else x).requires_grad_(dout is not None) for x in t]
        if causal:  # SDPA takes a mask or is_causal, not both: fold the triangle in
            tri = np.tri(q.shape[-2], k.shape[-2], dtype=bool)
            mask = tri if mask is None else (np.asarray(mask, bool) & tri)
        attn_mask = None if mask is None else torch.from_numpy(np.ascontiguousarray(mask))
        out = F.scaled_dot_product_attention(*t, attn_mask=attn_mask, scale=scale)
        if dout is None:
            return to_numpy(out.detach())
        out.backward(torch.from_numpy(np.ascontiguousarray(dout)).to(out.dtype))
        return tuple(to_numpy(x.grad) for x in t)

    def forward(q, k, v, mask, causal, scale):
        return run(q, k, v, mask, causal, scale)

    def backward(q, k, v, mask, causal, scale, dout):
        return run(q, k, v, mask, causal, scale, dout)

    return forward, backward


if torch is not None:
    torch.manual_seed(0)
    print(f"torch {torch.__version__}\n")
    fwd, bwd = make_sdpa()
    print(check_dual_attention(fwd, backward=bwd, dtypes=("float64", "float32")), "\n")
    fwd16, bwd16 = make_sdpa(bfloat16=True)
    print(check_dual_attention(fwd16, backward=bwd16, dtypes=("bfloat16",)))

# %% [markdown]
# **What to see:** every (grid point, precision) pair passes; in float64 the worst
# error is a tiny fraction of the $10^{-10}$ bound (two correct float64 implementations
# agree to rounding), and in float32 and bfloat16 PyTorch stays within twice primal_np's
# own error in that precision. A fully masked query row gives 0 in PyTorch 2.13, as in
# primal_np (earlier versions returned NaN, which this check reports as a failing row).

# %%
os.chdir(start_dir)
shutil.rmtree(work_dir)  # the golden files were only for this notebook

# %% [markdown]
# ## Exercises
#
# Each exercise has a worked solution below it, folded away: try first, then open it.
# The solution cells run with the rest of the notebook (and in CI).
#
# **Exercise 1 (change a parameter and predict).** A subtler bug: the candidate's
# $\bar Q$ is right up to a relative error of $10^{-6}$ (multiply it by $1 + 10^{-6}$).
# Predict the verdict of `check_dual_attention` in float64 and in float32, then run it.
#
# <details>
# <summary>Solution</summary>
#
# float64 fails at every point: its bound is $10^{-10}$ relative, so the error exceeds
# it by a factor of $10^3$–$10^4$ at the ordinary points, and still by 5–300 at the
# large-logit ones, where the operand magnitude (which includes the softmax's
# conditioning) widens the bound. float32 passes at every point: primal_np's own float32
# error on these inputs is a few $10^{-7}$ relative (rounding of $2^{-24} \approx 6\cdot
# 10^{-8}$ per operation, accumulated), and the bound — twice that, plus the floor
# $2\varepsilon A$ on the operand magnitude $A \ge \max|r|$ — is larger than $10^{-6}$
# relative everywhere: the candidate's worst error is 0.03–0.6 of it. A low-precision
# check cannot see an error of the size of the precision's own noise — which is why a
# candidate is first compared in float64.
#
# </details>


# %% tags=["hide-cell"] jupyter={"outputs_hidden": true, "source_hidden": true}
def backward_off(q, k, v, mask, causal, scale, dout):
    dq, dk, dv = my_attention_backward(q, k, v, mask, causal, scale, dout)
    return dq * q.dtype.type(1 + 1e-6), dk, dv


report_off = check_dual_attention(my_attention, backward=backward_off)
print(str(report_off).split("\n\n")[0])

# %% [markdown]
# **Exercise 2 (change a parameter and predict).** Another common slip is the causal
# convention: a candidate that aligns the causal triangle to the **bottom right** (key
# $j$ visible to query $i$ iff $j \le i + M - N$, as some libraries do for decoding with a
# cache) instead of the top left. Which points of the adapter's grid catch it?
#
# <details>
# <summary>Solution</summary>
#
# For $N = M$ the two conventions are the same triangle, so every square causal point
# passes. Only the causal points with $N \ne M$ can tell them apart — the grid has one with
# $N < M$ and one with $N > M$ (for $N > M$ the bottom-right triangle even masks whole
# rows, whose output must then be 0) — and there the forward output already fails.
#
# </details>


# %% tags=["hide-cell"] jupyter={"outputs_hidden": true, "source_hidden": true}
def my_attention_bottom_right(q, k, v, mask=None, causal=False, scale=None):
    if causal:
        N, M = q.shape[-2], k.shape[-2]
        tri = np.tri(N, M, k=M - N, dtype=bool)  # bottom-right aligned: the slip
        mask = tri if mask is None else (np.asarray(mask, bool) & tri)
    return my_attention(q, k, v, mask, False, scale)


report_br = check_dual_attention(my_attention_bottom_right, dtypes=("float64",))
print(str(report_br).split("\n\n")[0])

# %% [markdown]
# **Exercise 3 (derive and check).** Derive the softmax VJP used above: for one row
# $p = \operatorname{softmax}(s)$ and an upstream gradient $\bar p$, show
# $\bar s = p \circ (\bar p - \langle\bar p, p\rangle\mathbf 1)$. Then check both the correct and
# the buggy backward of the candidate against central differences with `pn.gradcheck`,
# independently of any reference implementation.
#
# <details>
# <summary>Solution</summary>
#
# $p_j = e^{s_j}/\sum_t e^{s_t}$ gives $\partial p_j/\partial s_t = p_j(\delta_{jt} - p_t)$. So
# $\bar s_t = \sum_j \bar p_j\,p_j(\delta_{jt} - p_t) = p_t\bar p_t - p_t\sum_j\bar p_j p_j
# = p_t(\bar p_t - \langle\bar p, p\rangle)$. The second term comes from the normalisation:
# raising one logit lowers every other probability. Dropping it (the bug) differentiates
# $e^{s}$ as if each row's sum were a constant.
#
# </details>

# %% tags=["hide-cell"] jupyter={"outputs_hidden": true, "source_hidden": true}
r3 = np.random.default_rng(3)
q3, k3, v3 = r3.standard_normal((4, 3)), r3.standard_normal((5, 3)), r3.standard_normal((5, 2))
dout3 = r3.standard_normal((4, 2))  # random upstream gradient of L = ⟨dout, O⟩


def objective(q, k, v):
    return np.sum(dout3 * my_attention(q, k, v))


for label, rowsum in (("correct", True), ("without the row-sum term", False)):
    dq3, dk3, dv3 = my_attention_backward(q3, k3, v3, None, False, None, dout3, rowsum)
    rep = pn.gradcheck(objective, {"q": q3, "k": k3, "v": v3}, {"q": dq3, "k": dk3, "v": dv3})
    print(f"{label}: {'pass' if rep.ok else 'FAIL'}; max relative error per input",
          {row.name: f"{row.max_rel_err:.1e}" for row in rep.rows})  # fmt: skip
