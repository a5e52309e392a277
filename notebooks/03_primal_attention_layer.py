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
# # 3. The Primal-Attention layer
#
# [Open in Colab](https://colab.research.google.com/github/primal-np/primal_np/blob/main/notebooks/03_primal_attention_layer.ipynb)
# (the setup cell below installs primal_np there; see the [notebooks' README](README.md)).
#
# The layer the paper trains turns the KSVD of notebook 2 into a network layer: cosine
# features of the queries and keys, projection weights that depend on the input, and
# both the $e$- and the $r$-scores in the output — with no N×N matrix anywhere. This
# notebook draws the two attention layers side by side with their costs, walks through
# one forward pass shape by shape, builds the bridge from notebook 2's problem to the
# layer (the data-dependent weights $f(X)$, the kernel they imply, and the two readings of
# the coupling term), checks the paper ↔ code conventions numerically
# ($\Lambda_\text{paper} = \lambda^2/N$), and measures time and memory against N.
#
# Theory: [docs/theory.md §4](../docs/theory.md#4-the-primal-attention-layer) *The
# Primal-Attention layer* and §5 *The KSVD loss*; notation:
# [§0](../docs/theory.md#0-notation); every convention of the authors' code:
# [docs/conformance.md](../docs/conformance.md).

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
import os
import time
import tracemalloc

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before NumPy loads BLAS (README)
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import FancyBboxPatch

import primal_np as pn
from primal_np.compare import rel_error
from primal_np.layer import sample_indices

np.set_printoptions(precision=3, suppress=True, linewidth=100)
rng = np.random.default_rng(0)

# %% [markdown]
# ## Two layers, one picture
#
# Per head, canonical attention forms the N×N logits $S = QK^\top/\sqrt p$ and the attention
# matrix $P = \operatorname{softmax}(S)$, then mixes the values, $O = PV$: time $O(N^2p)$ and
# memory $O(N^2)$ per head, $O(N^2D)$ for the layer. The primal layer never forms an N×N
# matrix: it projects the cosine features onto $s$ directions, $E = \Phi_q W_{e|X}$ and
# $R = \Phi_k W_{r|X}$, at $O(Nps)$ per head, and builds its weights from $n = s\cdot m$
# sampled rows $F$ of the input, at $O(nps)$. (Red: arrays that grow like $N^2$.)


# %%
def draw_pipeline(ax, y, boxes, color):
    """Boxes (label, shape, cost, quadratic?) from left to right at height y, with arrows."""
    xs = np.linspace(0.09, 0.91, len(boxes))
    for i, (x0, (label, shape, cost, quad)) in enumerate(zip(xs, boxes, strict=True)):
        face = "#f6c6c6" if quad else color
        ax.add_patch(FancyBboxPatch((x0 - 0.08, y - 0.09), 0.16, 0.18, boxstyle="round,pad=0.01",
                                    fc=face, ec="k", lw=1))  # fmt: skip
        ax.text(x0, y + 0.035, label, ha="center", va="center", fontsize=10)
        ax.text(x0, y - 0.045, shape, ha="center", va="center", fontsize=9, color="0.25")
        if cost:
            ax.text(x0, y - 0.14, cost, ha="center", va="top", fontsize=9.5, color="C3")
        if i:
            ax.annotate("", xy=(x0 - 0.083, y), xytext=(xs[i - 1] + 0.083, y),
                        arrowprops=dict(arrowstyle="->", lw=1.2))  # fmt: skip


fig, ax = plt.subplots(figsize=(12, 4.6), constrained_layout=True)
ax.set(xlim=(0, 1), ylim=(0, 1))
ax.axis("off")
ax.text(0.01, 0.96, "canonical attention (dual form), one head", fontsize=11, weight="bold")
draw_pipeline(ax, 0.74, [
    ("$X$", "N × D", "", False),
    ("$Q, K, V$", "N × p each", "$O(NDp)$", False),
    (r"$S = QK^\top/\sqrt{p}$", "N × N", "$O(N^2p)$", True),
    (r"$P = \mathrm{softmax}(S)$", "N × N", "$O(N^2)$", True),
    ("$O = PV$", "N × p", "$O(N^2p)$", False),
], "#dbe8f6")  # fmt: skip
ax.text(0.01, 0.47, "Primal-Attention, one head", fontsize=11, weight="bold")
draw_pipeline(ax, 0.25, [
    ("$X$", "N × D", "", False),
    (r"$Q, K\ \to\ \Phi_q, \Phi_k$", "N × p each", "$O(NDp)$", False),
    (r"$W_{e|X} = F^\top W_e$", "p × s   (F: n × p)", "$O(nps)$", False),
    (r"$E = \Phi_q W_{e|X}$,  $R$", "N × s each", "$O(Nps)$", False),
    (r"$O = [E, R]\,W_c^\top$", "N × p", "$O(Nsp)$", False),
], "#dcefd9")  # fmt: skip
ax.text(0.5, 0.0, "per layer, besides the O(ND²) projections both have:  canonical O(N²D) time, "
        "O(HN²) memory   ·   primal O((N + n)Ds) time, O(ND + HNs) memory — linear in N",
        ha="center", fontsize=9.5)  # fmt: skip
plt.show()

# %% [markdown]
# ## One forward pass, shape by shape
#
# A tiny LRA layer (the authors' Long Range Arena variant): $D = 8$ channels in $H = 2$
# heads of $p = 4$, rank $s = 2$, `rank_multi` $m = 3$, so $n = s\,m = 6$ sampled tokens;
# a batch of $B = 2$ sequences of $N = 10$ tokens. The parameters, under primal_np's
# names and the authors' state-dict names:

# %%
cfg = pn.PrimalAttentionConfig(dim=8, num_heads=2, low_rank=2, rank_multi=3, variant="lra")
params = pn.init_primal_attention_params(cfg, seed=0)
authors = pn.to_state_dict(params, cfg)
print(f"H = {cfg.num_heads}, p = {cfg.head_dim}, s = {cfg.low_rank}, n = {cfg.num_samples}")
for (ours, arr), theirs in zip(params.items(), authors, strict=True):
    print(f"  {ours:<4} {str(arr.shape):<11} {theirs}")

B, N = 2, 10
x = rng.standard_normal((B, N, cfg.dim))
y, cache = pn.primal_attention(x, params, cfg)
print("x", x.shape, "→ y", y.shape)

# %% [markdown]
# `pn.primal_attention` is one call. Below, each step of docs/theory.md §4.1 is recomputed with
# primal_np's own building blocks (`pn.linear`, `pn.split_heads`, `pn.cosine_normalize`,
# `pn.primal_scores`, `pn.merge_heads`) and held against the layer's cache with
# `rel_error`; the printed shapes are the point.

# %%
H, p, s = cfg.num_heads, cfg.head_dim, cfg.low_rank
P = params

# 1. projections (biased), split into heads: head h owns channels [h·p, (h+1)·p)
Q, _ = pn.linear(x, P["wq"], P["bq"])
K_, _ = pn.linear(x, P["wk"], P["bk"])
Qh, _ = pn.split_heads(Q, H)
Kh, _ = pn.split_heads(K_, H)
print(f"1. Q = X W_qᵀ + b_q        {Q.shape} → heads {Qh.shape}  (B, H, N, p)")

# 2. cosine feature map φ(x) = x / max(‖x‖, 1e-12), row by row
phi_q, _ = pn.cosine_normalize(Qh)
phi_k, _ = pn.cosine_normalize(Kh)
print(f"2. Φ_q = φ(Q_h)            {phi_q.shape}  rel_error {rel_error(phi_q, cache.phi_q):.0e}")

# 3. data-dependent weights: F = rows idx of head h's channels of the *layer input*
idx = sample_indices(cfg, N)
F, _ = pn.split_heads(x[:, idx, :], H)
we_x = np.swapaxes(F, -1, -2) @ P["we"]  # W_{e|X} = Fᵀ W_e
wr_x = np.swapaxes(F, -1, -2) @ P["wr"]
print(f"3. idx = {idx}  F {F.shape} (B, H, n, p)")
print(f"   W_e {P['we'].shape} (H, n, s) → W_e|X = Fᵀ W_e {we_x.shape} (B, H, p, s)  "
      f"rel_error {rel_error(we_x, cache.we_x):.0e}")  # fmt: skip

# 4. projection scores
(E, R), _ = pn.primal_scores(phi_q, phi_k, we_x, wr_x)
print(f"4. E = Φ_q W_e|X, R = Φ_k W_r|X   {E.shape} (B, H, N, s)  rel_error "
      f"{rel_error(E, cache.escore):.0e}, {rel_error(R, cache.rscore):.0e}")  # fmt: skip

# 5. head output [E, R] W_cᵀ + b_c, one 2s → p map shared by all heads
O, _ = pn.linear(np.concatenate([E, R], axis=-1), P["wc"], P["bc"])
print(f"5. [E, R] {np.concatenate([E, R], -1).shape} → O = [E, R] W_cᵀ + b_c {O.shape}")

# 6. heads merged, output projection
merged, _ = pn.merge_heads(O)
y_walk, _ = pn.linear(merged, P["wo"], P["bo"])
print(f"6. merge {merged.shape} → Y = merged W_oᵀ + b_o {y_walk.shape}  "
      f"rel_error {rel_error(y_walk, y):.0e}")  # fmt: skip

# %% [markdown]
# The largest arrays are $B\times N\times D$ (projections) and $B\times H\times N\times s$
# (scores): no array grows like $N^2$. The cost is $O(BNps)$ for the scores plus
# $O(BND^2)$ for the projections. The value projection of canonical attention is gone;
# the $r$-scores take its place in the output. At a KSVD solution
# $R = K^\top H_e = H_r\Sigma$: they lie along the **right** singular directions of the
# kernel, the side of the asymmetric kernel that canonical attention ($O = PV$, an
# $e$-score) never uses.

# %%
big = sorted(
    ((name, a.shape) for name, a in cache._asdict().items() if isinstance(a, np.ndarray)),
    key=lambda t: -np.prod(t[1]),
)
for name, shape in big[:5]:
    print(f"  cache.{name:<7} {shape}")

# %% [markdown]
# ## From notebook 2's problem to the layer
#
# **The data-dependent weights $f(X)$.** The paper's general KSVD uses $f(X)\phi$ with a
# data-dependent $f(X)$. The layer realises it as $W_{e|X} = F_h^\top W_e$:
# $F_h \in \mathbb R^{n\times p}$ holds n rows of the layer input (head $h$'s channels) at
# evenly spaced positions, so the $p\times s$ projection weights are recomputed for every
# sequence from shared parameters $W_e \in \mathbb R^{n\times s}$. Positions follow the
# authors' `torch.linspace(0, N − 1, n, dtype=int)`; the LRA layer always takes
# $n = s\,m$ of them and repeats positions when $N < n$, the vision layer takes all tokens
# when $N \le s\,m$ ([docs/conformance.md](../docs/conformance.md), discrepancies 5 and 6).

# %%
for n_tok in (4, 10, 100):
    print(f"N = {n_tok:>3}: lra {sample_indices(cfg, n_tok)}")
vis = pn.PrimalAttentionConfig(8, 2, 2, 3, variant="vision", num_tokens=4)
print(f"N =   4: vision {sample_indices(vis, 4)} (all tokens, n = min(N, s·m))")

dw = np.linalg.norm(cache.we_x[0] - cache.we_x[1]) / np.linalg.norm(cache.we_x[0])
print(f"\nW_e|X differs between the two sequences of the batch: relative difference {dw:.2f}")
fixed = pn.PrimalAttentionConfig(8, 2, 2, 3, variant="lra", data_dependent=False)
_, c_fixed = pn.primal_attention(x, pn.init_primal_attention_params(fixed, seed=0), fixed)
print(f"data_dependent=False: W_e has shape {c_fixed.params['we'].shape} (H, p, s), "
      f"we_x = {c_fixed.we_x}")  # fmt: skip

# %% [markdown]
# **The kernel the layer implies.** Regroup the score:
# $e_i = W_{e|X}^\top\phi_q(x_i) = W_e^\top\big(F_h\,\phi_q(x_i)\big)$. This is notebook 2's
# problem with the **parameters** $W_e, W_r \in \mathbb R^{n\times s}$ as primal weights and
# the transformed features $\tilde\phi_q = F_h\phi_q \in \mathbb R^n$, i.e.
# $\tilde\Phi_q = \Phi_q F_h^\top$, $\tilde\Phi_k = \Phi_k F_h^\top$ (docs/theory.md §4.2). Its
# kernel matrix is therefore
#
# $$
# K_X = \tilde\Phi_q\tilde\Phi_k^\top = \Phi_q\,F_h^\top F_h\,\Phi_k^\top ,
# $$
#
# not the plain cosine kernel $\Phi_q\Phi_k^\top$: $F_h^\top F_h$ is a data-dependent metric
# between query and key features. Everything of notebook 2 carries over with
# $\Phi \to \tilde\Phi$: at a stationary point $W_e = \tilde\Phi_k^\top H_r = F_h\Phi_k^\top H_r$, so
# $W_{e|X} = F_h^\top F_h\Phi_k^\top H_r$.
#
# **The check.** Take sequence 0, head 0. Solve its KSVD problem by the recipe of
# notebook 2 — SVD of $K_X$, KKT weights, $\Lambda = \Sigma^{-1}$ — write the solution into the
# layer's parameters (the code's $\lambda$ is $\sqrt{N\Lambda}$, since
# $\Lambda_\text{paper} = \lambda^2/N$, below), run the layer, and read its scores:

# %%
b0, h0 = 0, 0
phi_q0, phi_k0, F0 = cache.phi_q[b0, h0], cache.phi_k[b0, h0], cache.F[b0, h0]
tphi_q, tphi_k = phi_q0 @ F0.T, phi_k0 @ F0.T  # Φ̃ = Φ Fᵀ: (N, n)
K_X = tphi_q @ tphi_k.T
print(
    f"K_X = Φ̃_q Φ̃_kᵀ against Φ_q FᵀF Φ_kᵀ: rel_error {rel_error(K_X, phi_q0 @ F0.T @ F0 @ phi_k0.T):.0e}"
)
print(f"rank of K_X: {np.linalg.matrix_rank(K_X)} (≤ min(p, n) = {min(p, cfg.num_samples)}); "
      f"K_X against the cosine kernel Φ_q Φ_kᵀ: rel_error {rel_error(K_X, phi_q0 @ phi_k0.T):.1f}")  # fmt: skip

H_e, H_r, sigma = pn.ksvd(K_X, s)
W_e, W_r, Lam = pn.kkt_weights(tphi_q, tphi_k, H_e, H_r, sigma)  # (n, s), Λ = Σ⁻¹
solved = {k_: v_.copy() for k_, v_ in params.items()}
solved["we"][h0], solved["wr"][h0] = W_e, W_r
solved["lam"][h0] = np.sqrt(N * Lam)  # the code's λ: Λ_paper = λ²/N
_, c_sol = pn.primal_attention(x, solved, cfg)
E0, R0 = c_sol.escore[b0, h0], c_sol.rscore[b0, h0]
print(f"\nlayer's E against H_e Σ: rel_error {rel_error(E0, H_e * sigma):.0e}")
print(f"layer's R against H_r Σ: rel_error {rel_error(R0, H_r * sigma):.0e}")
print(f"layer's W_e|X against Fᵀ F Φ_kᵀ H_r: "
      f"rel_error {rel_error(c_sol.we_x[b0, h0], F0.T @ F0 @ phi_k0.T @ H_r):.0e}")  # fmt: skip
r = pn.kkt_residuals(tphi_q, tphi_k, W_e, W_r, Lam, H_e, H_r, E=E0, R=R0)
print("KKT residuals (1)–(6) with the layer's own E, R:", " ".join(f"{v:.0e}" for v in r))

# %% [markdown]
# **Trace on the parameters, or on the data-dependent weights?** The coupling term of
# $J$ has two readings, and the authors' code offers both (conformance.md, discrepancy 3):
#
# * on the parameters, $\operatorname{Tr}(W_e^\top W_r)$ (the paper; `trace_no_x=True`, every
#   shipped run): exactly notebook 2's problem for the kernel $K_X$;
# * on the data-dependent weights,
#   $\operatorname{Tr}(W_{e|X}^\top W_{r|X}) = \operatorname{Tr}(W_e^\top F_hF_h^\top W_r)$ (the LRA
#   parser's default, `"lra_trace_x"`): a coupling term with the metric $F_hF_h^\top$ — a
#   different problem, whose stationary points are *not* the SVD of $K_X$.
#
# At the solution just built, the zero-value lemma holds for the first reading only. The
# code's per-(sequence, head) value $j_{b,h}$ under each convention (`pn.ksvd_loss`):

# %%
terms = pn.ksvd_terms_from_cache(c_sol)
_, on_params = pn.ksvd_loss([terms], "lra", trace_no_x=True)
_, on_data = pn.ksvd_loss([terms], "lra_trace_x")
j_p, j_d = on_params.layers[0].j, on_data.layers[0].j  # (B, H)
print(f"trace on the parameters: j[0, 0] = {j_p[b0, h0]:+.1e}   (the lemma: 0)")
print(f"trace on W_e|X, W_r|X:   j[0, 0] = {j_d[b0, h0]:+.3f}")
print(f"Tr(W_eᵀ W_r) = {np.sum(W_e * W_r):.4f}, Tr(W_e|Xᵀ W_r|X) = "
      f"{np.sum(c_sol.we_x[b0, h0] * c_sol.wr_x[b0, h0]):.4f}")  # fmt: skip
print(f"the other sequence, same weights: j[1, 0] = {j_p[1, h0]:+.3f} (shared weights, other K_X)")

# %% [markdown]
# ## Paper ↔ code: $\lambda^2$ versus $\Lambda$, and $\Lambda_\text{paper} = \lambda^2/N$
#
# The paper's objective per sequence and head is
# $J = \tfrac12\sum_i e_i^\top\Lambda e_i + \tfrac12\sum_i r_i^\top\Lambda r_i - \operatorname{Tr}(W_e^\top W_r)$.
# The authors' code computes $\operatorname{mean}_i \tfrac12\lVert\lambda\odot e_i\rVert^2$: $\lambda$
# enters **squared** and tokens are **averaged**. Since
#
# $$ \frac1N\sum_i \tfrac12\lVert\lambda\odot e_i\rVert^2 = \tfrac12\sum_i e_i^\top\,\frac{\operatorname{diag}(\lambda^2)}{N}\,e_i , $$
#
# the code's term is the paper's $J$ with $\Lambda_\text{paper} = \lambda^2/N$ — always
# positive semi-definite, although the code never constrains $\lambda$ (discrepancies 1, 2
# and 7 of [docs/conformance.md](../docs/conformance.md)). Numerically, per (sequence, head),
# the code's term from `pn.ksvd_loss` against the paper's `pn.ksvd_objective` evaluated on
# the layer's own $\Phi_q, \Phi_k, W_{e|X}, W_{r|X}$ (trace on the data-dependent weights,
# the convention `"lra_trace_x"`):

# %%
terms = pn.ksvd_terms_from_cache(cache)
lam = params["lam"]  # (H, s), the code's λ
_, lcache = pn.ksvd_loss([terms], "lra_trace_x")
j_code = lcache.layers[0].j  # (B, H): the code's term inside the square


def paper_J(b, h, Lambda):
    return pn.ksvd_objective(
        cache.phi_q[b, h], cache.phi_k[b, h], cache.we_x[b, h], cache.wr_x[b, h], Lambda
    )


print(" b h    code (λ², mean)   paper Λ = λ²/N    paper Λ = λ² (wrong)")
for b in range(B):
    for h in range(H):
        print(f" {b} {h}   {j_code[b, h]:+.12f}   {paper_J(b, h, lam[h] ** 2 / N):+.12f}"
              f"   {paper_J(b, h, lam[h] ** 2):+.6f}")  # fmt: skip

# %% [markdown]
# The same identity on the whole loss: the code's convention with $\lambda$ equals the
# paper's quadratic and token sum with $\lambda^2/N$ put in the place of $\Lambda$ (here with
# the trace on the parameters, `trace_no_x=True`, as every shipped run of the authors).

# %%
code_conv = pn.KSVDConvention()  # "lra": λ², token mean, trace on the parameters
paper_quad = pn.KSVDConvention(quadratic="Lambda", tokens="sum")
L_code, _ = pn.ksvd_loss([terms], code_conv)
L_paper, _ = pn.ksvd_loss([terms._replace(lam=lam**2 / N)], paper_quad)
L_wrong, _ = pn.ksvd_loss([terms._replace(lam=lam**2)], paper_quad)
print(f"code, λ:              {L_code:.15f}")
print(f"paper, Λ = λ²/N:      {L_paper:.15f}   rel_error {rel_error(L_paper, L_code):.1e}")
print(f"paper, Λ = λ² (wrong): {L_wrong:.6f}")
print("\npresets:", ", ".join(f"{k}" for k in pn.CONVENTIONS))

# %% [markdown]
# ## Time and memory against N
#
# The primal layer is linear in N, the canonical layer (softmax attention with Q, K, V, O
# projections, `pn.mha_attention`) quadratic: its N×N attention matrix and that matrix's
# gradient dominate. One measurement is forward + backward of one layer with a random
# upstream gradient, $B = 1$, $D = 64$, $H = 4$ ($p = 16$), $s = 8$, $m = 4$, float64,
# one BLAS thread. The project's benchmark (`primal_np.bench`) runs each measurement in a
# fresh process and reports the median of 5 timed runs after a warm-up, and the peak
# resident memory above the inputs; if it is unavailable, the cell falls back to
# `time.perf_counter` and `tracemalloc` in this process. Small N only, so that the notebook
# stays fast; `python -m primal_np bench` measures up to N = 65 536. These two cells are
# tagged `timing`: their outputs are measurements, which change from run to run, so CI's
# output check does not compare them (notebooks/README.md).

# %% tags=["timing"]
D_, H_, S_, M_ = 64, 4, 8, 4
try:
    from primal_np import bench

    method = "primal_np.bench.run_case (subprocess; peak RSS above the inputs)"
except ImportError:
    bench = None
    method = "in-process fallback (perf_counter median of 5; tracemalloc peak)"


def measure_here(layer, N):
    """Fallback: seconds and peak traced bytes of one forward + backward, in this process."""
    r = np.random.default_rng(0)
    x, dy = r.standard_normal((2, 1, N, D_))
    if layer == "primal":
        c = pn.PrimalAttentionConfig(D_, H_, S_, M_, variant="lra")
        prm = pn.init_primal_attention_params(c, seed=0)

        def run():
            return pn.primal_attention_backward(dy, pn.primal_attention(x, prm, c)[1])
    else:
        prm = pn.init_mha_params(D_, seed=0)

        def run():
            return pn.mha_attention_backward(dy, pn.mha_attention(x, prm, num_heads=H_)[1])

    run()  # warm-up
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    tracemalloc.start()
    run()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return float(np.median(times)), peak


def measure(layer, N):
    global bench, method
    if bench is not None:
        try:
            case = bench.Case(layer, "primal_np", N, D=D_, H=H_, s=S_, rank_multi=M_,
                              dtype="float64", repeats=5)  # fmt: skip
            rec = bench.run_case(case, {})
            return rec["fwd_bwd_s"], rec["peak_bytes"]
        except Exception as exc:  # the benchmark module is young; say so and fall back
            print(f"primal_np.bench failed ({type(exc).__name__}: {exc}); falling back")
            bench, method = None, "in-process fallback (perf_counter median of 5; tracemalloc peak)"
    return measure_here(layer, N)


sizes = {"primal": (256, 512, 1024, 2048, 4096, 8192), "canonical": (256, 512, 1024, 2048)}
results = {layer: [measure(layer, n_tok) for n_tok in ns] for layer, ns in sizes.items()}
print("method:", method)
print(f"{'layer':<10}{'N':>6}{'time (ms)':>12}{'peak (MiB)':>12}")
for layer, ns in sizes.items():
    for n_tok, (t, mem) in zip(ns, results[layer], strict=True):
        print(f"{layer:<10}{n_tok:>6}{1e3 * t:>12.2f}{mem / 2**20:>12.2f}")

# %% tags=["timing"]
fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
for ax, col, unit, scale in (
    (axes[0], 0, "time (ms)", 1e3),
    (axes[1], 1, "peak memory (MiB)", 2**-20),
):
    for layer, marker in (("primal", "o"), ("canonical", "s")):
        ns = np.array(sizes[layer])
        vals = np.array([r[col] for r in results[layer]]) * scale
        ax.plot(ns, vals, marker=marker, label=f"{layer} layer")
    for layer, power, style, label in (("primal", 1, "k:", "∝ N"), ("canonical", 2, "k--", "∝ N²")):
        ns = np.array(sizes[layer], dtype=float)
        vals = np.array([r[col] for r in results[layer]]) * scale
        c = np.exp(np.mean(np.log(vals) - power * np.log(ns)))  # least-squares fit in log-log
        ax.plot(ns, c * ns**power, style, lw=1, label=label)
    ax.set(xscale="log", yscale="log", xlabel="sequence length N (tokens)", ylabel=unit)
    ax.set_xticks(sizes["primal"], [str(n_tok) for n_tok in sizes["primal"]], minor=False)
    ax.xaxis.set_minor_locator(plt.NullLocator())
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
axes[0].set_title("forward + backward time, B=1, D=64, H=4, s=8")
axes[1].set_title("peak memory of forward + backward")
fig.suptitle(f"Primal vs canonical attention layer — {method}", fontsize=9)
plt.show()

# %% [markdown]
# **What to see:** the primal layer's time and memory follow the dotted $\propto N$ line
# and the canonical layer's the dashed $\propto N^2$ line (each line is a least-squares fit
# of its constant in log-log; the slope is fixed). At small N the gap is narrower, since
# the $O(ND^2)$ projections common to both layers are a larger share of the work, and
# memory of a few MiB is close to the resolution of the measurement; by N = 2048 the
# canonical layer needs more than an order of magnitude more time and memory than the
# primal layer, and the gap grows linearly with N.
#
# ## Exercises
#
# Each exercise has a worked solution below it, folded away: try first, then open it.
# The solution cells run with the rest of the notebook (and in CI).
#
# **Exercise 1 (change a parameter and predict).** In the tiny layer above, change
# token $j$ of sequence 0 and watch which output rows change. Predict the answer for
# $j = 4$ and for $j = 5$, for the data-dependent layer (`cfg`, sampled positions
# `[0 1 3 5 7 9]`) and for the same layer with `data_dependent=False`.
#
# <details>
# <summary>Solution</summary>
#
# Output row $i$ depends on $e_i = W_e^\top F_h\phi_q(x_i)$ and $r_i$ only. With data-dependent
# weights, every row sees the sampled tokens through $F_h$: changing a **sampled** token
# ($j = 5$) changes every row, changing an unsampled one ($j = 4$) changes row 4 alone.
# With data-independent weights there is no token mixing at all (docs/theory.md §4.1,
# "Where the tokens interact"): only row $j$ changes, for either $j$.
#
# </details>

# %% tags=["hide-cell"] jupyter={"outputs_hidden": true, "source_hidden": true}
p_fixed = pn.init_primal_attention_params(fixed, seed=0)
for name, c_, p_ in (("data-dependent", cfg, params), ("data-independent", fixed, p_fixed)):
    y0, _ = pn.primal_attention(x, p_, c_)
    for j in (4, 5):
        x_j = x.copy()
        x_j[0, j] += 1.0
        y_j, _ = pn.primal_attention(x_j, p_, c_)
        changed = np.flatnonzero(np.abs(y_j[0] - y0[0]).max(axis=1) > 0)
        print(f"{name:<17} token {j} changed → output rows {changed}")

# %% [markdown]
# **Exercise 2 (change a parameter and predict).** Set `rank_multi` $m = 1$, so only
# $n = s = 2$ tokens are sampled. Predict the largest possible rank of the implied kernel
# $K_X = \Phi_q F_h^\top F_h\Phi_k^\top$ (N = 10, p = 4), then measure it for every (sequence,
# head).
#
# <details>
# <summary>Solution</summary>
#
# $K_X = (\Phi_q F_h^\top)(F_h\Phi_k^\top)$ factors through $\mathbb R^n$, so its rank is at most
# $\min(N, p, n) = 2$ — however long the sequence. $n = s\cdot m$ is a rank budget: with
# $m = 1$ the layer's problem has exactly as many nonzero singular values as KSVD
# directions, and the top-$s$ SVD is the whole kernel.
#
# </details>

# %% tags=["hide-cell"] jupyter={"outputs_hidden": true, "source_hidden": true}
cfg_m1 = pn.PrimalAttentionConfig(dim=8, num_heads=2, low_rank=2, rank_multi=1, variant="lra")
_, c_m1 = pn.primal_attention(x, pn.init_primal_attention_params(cfg_m1, seed=0), cfg_m1)
FtF = np.swapaxes(c_m1.F, -1, -2) @ c_m1.F  # (B, H, p, p)
K_m1 = c_m1.phi_q @ FtF @ np.swapaxes(c_m1.phi_k, -1, -2)  # (B, H, N, N)
print("n =", cfg_m1.num_samples, " rank of K_X per (b, h):", np.linalg.matrix_rank(K_m1).ravel())

# %% [markdown]
# **Exercise 3 (predict).** Flip the sign of the code's $\lambda$ (`params["lam"]` →
# $-\lambda$). Predict the change of the layer's output $Y$ and of the KSVD loss.
#
# <details>
# <summary>Solution</summary>
#
# Neither changes. $\lambda$ does not enter the forward pass at all (only $E$, $R$ do), and
# the loss uses $\lambda^2$: $\Lambda_\text{paper} = \lambda^2/N$ is the same for $\pm\lambda$. This
# is why the unconstrained parameter of the code still gives $\Lambda_\text{paper} \succeq 0$ —
# and why a trained $\lambda$ has no meaningful sign.
#
# </details>

# %% tags=["hide-cell"] jupyter={"outputs_hidden": true, "source_hidden": true}
flipped = {**params, "lam": -params["lam"]}
y_f, c_f = pn.primal_attention(x, flipped, cfg)
L_f, _ = pn.ksvd_loss([pn.ksvd_terms_from_cache(c_f)], "lra")
print(f"output: rel_error {rel_error(y_f, y):.0e}   KSVD loss {L_f:.15f} against {L_code:.15f}")

# %% [markdown]
# **Exercise 4 (derive and check).** For the code's convention `"lra"` (trace on the
# parameters), $L = \big(\operatorname{mean}_{b,h} j_{b,h}\big)^2$ with
# $j_{b,h} = \operatorname{mean}_i\tfrac12\lVert\lambda_h\odot e_{b,h,i}\rVert^2 + \operatorname{mean}_i\tfrac12\lVert\lambda_h\odot r_{b,h,i}\rVert^2 - \operatorname{Tr}(W_{e,h}^\top W_{r,h})$.
# Derive $\partial L/\partial\lambda_{h,l}$, then check your formula against
# `pn.ksvd_loss_backward(1.0, ...)` and against central differences (`pn.gradcheck`).
#
# <details>
# <summary>Solution</summary>
#
# With $\bar j = \operatorname{mean}_{b,h} j_{b,h}$, $\partial L/\partial j_{b,h} = 2\bar j/(BH)$, and
# $\partial j_{b,h}/\partial\lambda_{h,l} = \lambda_{h,l}\big(\operatorname{mean}_i e_{b,h,il}^2 + \operatorname{mean}_i r_{b,h,il}^2\big)$
# (only the head's own $j$ depends on $\lambda_h$). So
#
# $$ \frac{\partial L}{\partial\lambda_{h,l}} = \frac{2\bar j}{BH}\,\lambda_{h,l}\sum_b\big(\operatorname{mean}_i e_{b,h,il}^2 + \operatorname{mean}_i r_{b,h,il}^2\big). $$
#
# </details>

# %% tags=["hide-cell"] jupyter={"outputs_hidden": true, "source_hidden": true}
L0, lc0 = pn.ksvd_loss([terms], "lra")
j_bar = lc0.layers[0].j.mean()
e2 = (terms.escore**2).mean(axis=2).sum(axis=0)  # Σ_b mean_i e², (H, s)
r2 = (terms.rscore**2).mean(axis=2).sum(axis=0)
mine = 2 * j_bar / (B * H) * terms.lam * (e2 + r2)
pkg = pn.ksvd_loss_backward(1.0, lc0).layers[0].lam
fd = pn.gradcheck(lambda lam: pn.ksvd_loss([terms._replace(lam=lam)], "lra")[0],
                  {"lam": terms.lam}, {"lam": mine})  # fmt: skip
print(f"formula against ksvd_loss_backward: rel_error {rel_error(mine, pkg):.0e}")
print(fd)
