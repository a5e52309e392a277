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
# # 1. Attention as an asymmetric kernel
#
# [Open in Colab](https://colab.research.google.com/github/primal-np/primal_np/blob/main/notebooks/01_attention_as_asymmetric_kernel.ipynb)
# (the setup cell below installs primal_np there; see the [notebooks' README](README.md)).
#
# Canonical softmax attention is a kernel machine written in its **dual form**: the
# output is a kernel expansion over the N tokens, with the values as the expansion
# coefficients. The kernel is **asymmetric**, which is why Primal-Attention starts from
# the SVD of an asymmetric kernel rather than from a Mercer kernel. This notebook shows
# the dual form, measures the asymmetry, and builds a **primal** (finite-feature)
# approximation of softmax attention with positive random features.
#
# Theory: [docs/theory.md §1](../docs/theory.md#1-attention-is-an-asymmetric-kernel-machine)
# *Attention is an asymmetric kernel machine*; notation:
# [§0](../docs/theory.md#0-notation). Everything below calls `primal_np`; nothing is
# re-implemented here.

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

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before NumPy loads BLAS (README)
import matplotlib.pyplot as plt
import numpy as np

import primal_np as pn
from primal_np.compare import rel_error

np.set_printoptions(precision=3, suppress=True, linewidth=100)
rng = np.random.default_rng(0)

# %% [markdown]
# ## The dual form: $O = PV$
#
# For one head with queries $q_i$, keys $k_j$ and values $v_j$ (rows of the projections
# $Q, K, V \in \mathbb R^{N\times p}$), the logits are $S = QK^\top/\sqrt p$ and the attention
# matrix is $P = \operatorname{softmax}(S)$, row by row:
#
# $$
# P_{ij} = \kappa(x_i, x_j) = \operatorname{softmax}_j\!\Big(\tfrac{\langle q(x_i), k(x_j)\rangle}{\sqrt p}\Big),
# \qquad o_i = \sum_{j=1}^N \kappa(x_i, x_j)\, v(x_j), \qquad O = P V .
# $$
#
# $P$ is the kernel matrix of the softmax kernel $\kappa$. `pn.dual_attention` computes
# $O$; `pn.softmax_kernel` returns the N×N matrix $P$ itself (the same matrix as the
# attention weights `cache.attn`).

# %%
N, p = 6, 4
q, k, v = (rng.standard_normal((N, p)) for _ in range(3))

out, cache = pn.dual_attention(q, k, v)
P = pn.softmax_kernel(q, k)
print("P (N×N), rows sum to 1:\n", P)
print("row sums:", P.sum(axis=1))
print("max |O − P V|           =", np.abs(out - P @ v).max())
print("max |P − cache.attn|    =", np.abs(P - cache.attn).max())

# %% [markdown]
# ## Why $P$ is asymmetric
#
# $P_{ij} \ne P_{ji}$ for two independent reasons:
#
# 1. the query and key maps differ, $\langle q(x_i), k(x_j)\rangle \ne \langle q(x_j), k(x_i)\rangle$;
# 2. the softmax normalises **rows**: $P_{ij} = \exp(S_{ij}) / \sum_{t} \exp(S_{it})$ divides
#    row $i$ by its own sum, so even a symmetric logit matrix ($q = k$) gives an
#    asymmetric $P$.
#
# `pn.asymmetry(M)` $= \lVert (M - M^\top)/2 \rVert_F / \lVert M \rVert_F$: 0 for a symmetric
# matrix, 1 for a skew-symmetric one (exercise 3 proves the range). The last row is the
# kernel of the KSVD problem of notebook 2, $K = \Phi_q\Phi_k^\top$ with the cosine feature
# map $\phi(x) = x/\lVert x\rVert$ applied to $q$ and $k$: a factorisation through **two
# different** feature maps, the form an asymmetric kernel takes in a reproducing-kernel
# Banach space. (The Primal-Attention *layer* uses a data-dependent variant of it,
# $\Phi_q F^\top F\,\Phi_k^\top$, built from sampled rows $F$ of the input: notebook 3 and
# docs/theory.md §4.2 ([§4](../docs/theory.md#4-the-primal-attention-layer)).)

# %%
N, p = 32, 8
x = rng.standard_normal((N, p))
W_q, W_k = rng.standard_normal((p, p)) / np.sqrt(p), rng.standard_normal((p, p)) / np.sqrt(p)
q_, k_ = x @ W_q.T, x @ W_k.T
scale = 1 / np.sqrt(p)

phi_q, _ = pn.cosine_normalize(q_)
phi_k, _ = pn.cosine_normalize(k_)
cosine_K, _ = pn.kernel_matrix(phi_q, phi_k)
rows = {
    "softmax P, W_q ≠ W_k": pn.softmax_kernel(q_, k_),
    "softmax P, W_q = W_k (symmetric logits)": pn.softmax_kernel(q_, q_),
    "exp(S) unnormalised, W_q = W_k": np.exp(scale * q_ @ q_.T),
    "cosine K = Φ_q Φ_kᵀ, W_q ≠ W_k": cosine_K,
}
for name, M in rows.items():
    print(f"{name:<42} asymmetry = {pn.asymmetry(M):.3f}")

# %%
P = rows["softmax P, W_q ≠ W_k"]
skew = 0.5 * (P - P.T)
fig, axes = plt.subplots(1, 2, figsize=(9, 4), constrained_layout=True)
im0 = axes[0].imshow(P, cmap="viridis")
axes[0].set(title="softmax attention P (row i, column j)", xlabel="key j", ylabel="query i")
fig.colorbar(im0, ax=axes[0], label="P_ij (dimensionless weight)")
lim = np.abs(skew).max()
im1 = axes[1].imshow(skew, cmap="RdBu_r", vmin=-lim, vmax=lim)
axes[1].set(
    title=f"skew part (P − Pᵀ)/2, asymmetry {pn.asymmetry(P):.2f}", xlabel="key j", ylabel="query i"
)
fig.colorbar(im1, ax=axes[1], label="(P_ij − P_ji)/2")
plt.show()

# %% [markdown]
# **What to see:** the skew part (right) is of the same order as $P$ itself (left), so
# no symmetric (Mercer) kernel describes softmax attention; a symmetric $P$ would make
# the right panel uniformly white.
#
# ## The values are dual variables
#
# $o_i = \sum_j \kappa(x_i, x_j)\, v_j$ has the shape of a kernel machine's dual
# representation $f(x) = \sum_j \alpha_j \kappa(x, x_j)$: the values $v_j$ play the role of
# the dual coefficients $\alpha_j$, one per training point (token). In the KSVD view
# (docs/theory.md §2.6, notebook 2) the dual projection scores of a kernel matrix $K$ are
#
# $$ e(x_i) = \sum_j \kappa(x_i, x_j)\, h_{r_j}, \qquad r(x_j) = \sum_i \kappa(x_i, x_j)\, h_{e_i},
# \qquad E = K H_r,\quad R = K^\top H_e, $$
#
# so canonical attention ($K = P$) is the $e$-score with the values in the place of $H_r$.
# `pn.dual_scores` computes both scores; with $H_r = V$ its $E$ is exactly the attention
# output, and its $R = P^\top H_e$ is the part of the asymmetric kernel that canonical
# attention never uses.

# %%
v_ = rng.standard_normal((N, 3))
out, _ = pn.dual_attention(q_, k_, v_)
(E, R), _ = pn.dual_scores(P, v_, v_)  # H_e = H_r = V
print("max |E − attention output| =", np.abs(E - out).max())
print("max |R − E| (what canonical attention leaves out) =", np.abs(R - E).max().round(3))

# %% [markdown]
# Evaluating the dual form costs $O(N^2 p)$ time and $O(N^2)$ memory: every output sums
# over all N tokens. A **primal** form replaces the kernel by explicit finite features,
# $\kappa(x, z) \approx \langle\phi_q(x), \phi_k(z)\rangle$ with $\phi \in \mathbb R^{p_\phi}$,
# so that $O \approx \Phi_q(\Phi_k^\top V)$ costs $O(N p_\phi p)$ and never forms an N×N matrix.
#
# ## A primal approximation of softmax attention: positive random features
#
# For $w_a \sim \mathcal N(0, I)$, $a = 1..p_\phi$, the positive random features
#
# $$ g(z) = \frac{e^{-\lVert z\rVert^2/2}}{\sqrt{p_\phi}}\big[e^{w_1^\top z}, \dots, e^{w_{p_\phi}^\top z}\big]
# \quad\text{satisfy}\quad \mathbb E_w\,\langle g(x), g(z)\rangle = e^{x^\top z} $$
#
# (exercise 4 derives this). With $\tilde q = q\,p^{-1/4}$, $\tilde k = k\,p^{-1/4}$ (so
# $\tilde q^\top\tilde k = q^\top k/\sqrt p$), dividing by the row sums gives
# $\hat P_{ij} = \langle g(\tilde q_i), g(\tilde k_j)\rangle / \sum_{t}\langle g(\tilde q_i), g(\tilde k_t)\rangle \to P_{ij}$
# as $p_\phi \to \infty$. `pn.random_feature_softmax_kernel` returns $\hat P$ (as an N×N
# matrix, for comparison); the primal evaluation of the same output uses only the
# $N\times p_\phi$ feature matrices, associating the product the other way:
#
# $$ \hat O = \operatorname{diag}\!\big(G_q (G_k^\top \mathbf 1)\big)^{-1}\, G_q\, (G_k^\top V). $$

# %%
p_phi = 256
w = pn.draw_random_features(p, p_phi, seed=1)  # (p_φ, p), w_a ~ N(0, I)
P_hat = pn.random_feature_softmax_kernel(q_, k_, w)
G_q, _ = pn.positive_random_features(q_ * scale**0.5, w)  # (N, p_φ), all entries > 0
G_k, _ = pn.positive_random_features(k_ * scale**0.5, w)
O_primal = (G_q @ (G_k.T @ v_)) / (G_q @ G_k.sum(axis=0))[:, None]  # no N×N array
print(f"primal Ô (N×p_φ) against dual P̂ V (N×N): rel_error {rel_error(O_primal, P_hat @ v_):.0e}")
print(f"p_φ = {p_phi}: ‖P̂ − P‖_F / ‖P‖_F = {np.linalg.norm(P_hat - P) / np.linalg.norm(P):.3f}")

# %% [markdown]
# ### Error against the number of features
#
# The kernel estimate is a Monte Carlo average over $p_\phi$ features, so its error should
# fall like $p_\phi^{-1/2}$ — but with a constant that grows quickly with the size of the
# inputs: the variance of one feature product is of order
# $e^{2\tilde q^\top\tilde k}\,(e^{\lVert\tilde q + \tilde k\rVert^2} - 1)$.
# Below: a fixed sequence of N = 64 tokens, p = 16, at three input scales (queries and
# keys multiplied by c, which sets the mean $\lVert\tilde q\rVert^2$), and 20 independent
# draws of $w$ (seeds 0–19) for every $p_\phi$; relative Frobenius errors of the kernel and
# of the attention output.

# %%
N, p, n_draws = 64, 16, 20
x = rng.standard_normal((N, p))
W_q, W_k = rng.standard_normal((p, p)) / np.sqrt(p), rng.standard_normal((p, p)) / np.sqrt(p)
v_ = rng.standard_normal((N, 8))
widths = 2 ** np.arange(1, 13)  # p_φ = 2 … 4096 features
scales = (0.25, 0.5, 1.0)


def rf_errors(c, widths, draws):
    """Relative errors of P̂ and of Ô at input scale c: arrays (len(widths), draws)."""
    q_, k_ = c * x @ W_q.T, c * x @ W_k.T
    P = pn.softmax_kernel(q_, k_)
    O, _ = pn.dual_attention(q_, k_, v_)
    eP, eO = np.empty((len(widths), len(draws))), np.empty((len(widths), len(draws)))
    for a, width in enumerate(widths):
        for b, seed in enumerate(draws):
            P_hat = pn.random_feature_softmax_kernel(
                q_, k_, pn.draw_random_features(p, int(width), seed=seed)
            )
            eP[a, b] = np.linalg.norm(P_hat - P) / np.linalg.norm(P)
            eO[a, b] = np.linalg.norm(P_hat @ v_ - O) / np.linalg.norm(O)
    return eP, eO, np.mean(np.sum(q_**2, axis=1)) / np.sqrt(p)  # mean ‖q̃‖²


err_P, err_O, q_norm2 = zip(*(rf_errors(c, widths, range(n_draws)) for c in scales), strict=True)
print("mean ‖q̃‖²   slope (p_φ ≥ 32)   kernel error at p_φ = 4096   output error at p_φ = 4096")
for c_i in range(len(scales)):
    slope = np.polyfit(np.log(widths[4:]), np.log(err_P[c_i][4:].mean(axis=1)), 1)[0]
    print(
        f"{q_norm2[c_i]:10.2f}   {slope:16.2f}   {err_P[c_i][-1].mean():26.3f}"
        f"   {err_O[c_i][-1].mean():26.3f}"
    )

# %%
fig, ax = plt.subplots(figsize=(6.5, 4.2), constrained_layout=True)
for c_i in range(len(scales)):
    mean, std = err_P[c_i].mean(axis=1), err_P[c_i].std(axis=1)
    label = f"mean ‖q̃‖² = {q_norm2[c_i]:.2f}"
    ax.errorbar(widths, mean, yerr=std, marker="o", ms=4, capsize=3, label=label)
ref = err_P[0].mean(axis=1)[4] * np.sqrt(widths[4] / widths)
ax.plot(widths, ref, "k--", lw=1, label="reference ∝ p_φ^(−1/2)")
ax.set(
    xscale="log",
    yscale="log",
    xlabel="number of random features p_φ",
    ylabel="relative error ‖P̂ − P‖_F / ‖P‖_F (dimensionless)",
    title=f"Positive random features → softmax kernel (N={N}, p={p}, {n_draws} draws)",
)
ax.legend()
ax.grid(True, which="both", alpha=0.3)
plt.show()

# %% [markdown]
# **What to see:** for small inputs (bottom curve) the error follows the dashed
# $p_\phi^{-1/2}$ line (fitted slope printed above, close to −0.5) and the error bars (one
# standard deviation over the 20 draws) shrink with it. Each fourfold increase of
# $\lVert\tilde q\rVert^2$ raises the whole curve, and at the largest scale — still modest
# logits — even 4096 features leave a large error: the constant grows exponentially
# with the logits, so a random primal approximation of *peaked* softmax attention needs
# very many features. Primal-Attention takes another route: instead of approximating the
# softmax kernel, it learns the projections of an asymmetric kernel SVD directly in the
# primal (notebooks 2 and 3).
#
# ## Exercises
#
# Each exercise has a worked solution below it, folded away: try first, then open it.
# The solution cells run with the rest of the notebook (and in CI).
#
# **Exercise 1 (change a parameter and predict).** `pn.softmax_kernel(q, k, scale=τ)`
# sets the temperature of the softmax. For a fresh sequence ($N = 32$, $p = 8$,
# $W_q \ne W_k$), predict the asymmetry of $P$ as $\tau \to 0$ and as $\tau$ grows large,
# then scan $\tau \in \{10^{-3}, 10^{-2}, \dots, 10^{2}\}$.
#
# <details>
# <summary>Solution</summary>
#
# As $\tau \to 0$ every logit goes to 0 and $P \to \mathbf 1\mathbf 1^\top/N$, which is
# symmetric: the asymmetry goes to 0 (linearly in $\tau$). As $\tau$ grows, each row
# concentrates on its largest logit, $P \to$ a 0/1 matrix with one 1 per row. Such a
# matrix is symmetric only by accident (if "$i$ attends most to $j$" always came with "$j$
# attends most to $i$"), so the asymmetry grows toward that of the one-hot selection
# matrix. If none of its ones were mirrored (and none on the diagonal),
# $\lVert(P - P^\top)/2\rVert_F^2 = \lVert P\rVert_F^2/2$ and the asymmetry would be
# $1/\sqrt 2$; each mirrored pair or diagonal one lowers it a little.
#
# </details>

# %% tags=["hide-cell"] jupyter={"outputs_hidden": true, "source_hidden": true}
r1 = np.random.default_rng(1)  # a fresh sequence: N = 32 tokens, p = 8
x1, Wq1, Wk1 = r1.standard_normal((32, 8)), r1.standard_normal((8, 8)), r1.standard_normal((8, 8))
q1, k1 = x1 @ Wq1.T / np.sqrt(8), x1 @ Wk1.T / np.sqrt(8)
for tau in 10.0 ** np.arange(-3, 3):
    print(
        f"τ = {tau:7.3f}   asymmetry of P = {pn.asymmetry(pn.softmax_kernel(q1, k1, scale=tau)):.4f}"
    )
onehot = np.eye(32)[np.argmax(q1 @ k1.T, axis=1)]  # the τ → ∞ limit: one 1 per row
mirrored = int(np.sum(onehot * onehot.T) - np.trace(onehot)) // 2
print(f"one-hot limit: asymmetry {pn.asymmetry(onehot):.4f} (1/√2 = {1 / np.sqrt(2):.4f}); "
      f"ones on the diagonal: {int(np.trace(onehot))}, mirrored pairs: {mirrored}")  # fmt: skip

# %% [markdown]
# **Exercise 2 (change a parameter and predict).** Double the largest input scale of
# the random-feature experiment, $c = 2$ (mean $\lVert\tilde q\rVert^2 \approx 16$). Predict
# the kernel error at $p_\phi = 4096$ and the fitted slope, then measure them with 5 draws.
#
# <details>
# <summary>Solution</summary>
#
# The variance constant grows like $e^{\lVert\tilde q + \tilde k\rVert^2}$, i.e. by a large
# factor for a fourfold larger $\lVert\tilde q\rVert^2$, so at $p_\phi = 4096$ the estimate is
# no better than at a handful of features at $c = 1/4$: the relative error is of order 1,
# and the fitted slope is near 0 — the $p_\phi^{-1/2}$ regime has not started yet. A few
# huge feature products dominate every row sum, so $\hat P$ is close to a random one-hot
# matrix.
#
# </details>

# %% tags=["hide-cell"] jupyter={"outputs_hidden": true, "source_hidden": true}
eP2, eO2, qn2 = rf_errors(2.0, widths, range(5))
slope2 = np.polyfit(np.log(widths[4:]), np.log(eP2[4:].mean(axis=1)), 1)[0]
print(f"mean ‖q̃‖² = {qn2:.2f}: kernel error at p_φ = 4096: {eP2[-1].mean():.3f} "
      f"(output {eO2[-1].mean():.3f}), slope {slope2:.2f}")  # fmt: skip

# %% [markdown]
# **Exercise 3 (derive and check).** Prove that $0 \le \text{asymmetry}(M) \le 1$, with 0
# exactly for symmetric and 1 exactly for skew-symmetric $M$. Hint: split
# $M = S + A$ into its symmetric and skew parts and compute $\langle S, A\rangle_F$. Check
# the identity you use, and both extremes, on random matrices.
#
# <details>
# <summary>Solution</summary>
#
# $\langle S, A\rangle_F = \operatorname{Tr}(S^\top A) = \operatorname{Tr}(SA)$ and also
# $= \operatorname{Tr}((SA)^\top) = \operatorname{Tr}(A^\top S^\top) = -\operatorname{Tr}(AS) = -\operatorname{Tr}(SA)$,
# so it is 0. Hence $\lVert M\rVert_F^2 = \lVert S\rVert_F^2 + \lVert A\rVert_F^2$ (Pythagoras), and
# $\text{asymmetry}^2 = \lVert A\rVert_F^2 / (\lVert S\rVert_F^2 + \lVert A\rVert_F^2) \in [0, 1]$:
# 0 iff $A = 0$ (symmetric), 1 iff $S = 0$ (skew-symmetric).
#
# </details>

# %% tags=["hide-cell"] jupyter={"outputs_hidden": true, "source_hidden": true}
M = np.random.default_rng(1).standard_normal((6, 6))
S, A = (M + M.T) / 2, (M - M.T) / 2
print(f"⟨S, A⟩_F = {np.sum(S * A):.1e}")
print(f"‖M‖² = {np.linalg.norm(M) ** 2:.6f},  ‖S‖² + ‖A‖² = "
      f"{np.linalg.norm(S) ** 2 + np.linalg.norm(A) ** 2:.6f}")  # fmt: skip
print(f"asymmetry: random {pn.asymmetry(M):.3f}, symmetric part {pn.asymmetry(S):.3f}, "
      f"skew part {pn.asymmetry(A):.3f}")  # fmt: skip

# %% [markdown]
# **Exercise 4 (derive and check).** Derive $\mathbb E_w\langle g(x), g(z)\rangle = e^{x^\top z}$
# from the Gaussian moment generating function $\mathbb E[e^{w^\top u}] = e^{\lVert u\rVert^2/2}$
# for $w \sim \mathcal N(0, I)$. Check it by Monte Carlo for two small vectors: average
# $\langle g(x), g(z)\rangle$ over 400 independent draws of $p_\phi = 64$ features and compare
# with $e^{x^\top z}$ in units of the standard error of the mean.
#
# <details>
# <summary>Solution</summary>
#
# $\langle g(x), g(z)\rangle = \frac{1}{p_\phi}\sum_a e^{-\lVert x\rVert^2/2 - \lVert z\rVert^2/2}\, e^{w_a^\top(x + z)}$,
# and each term has expectation
# $e^{-\lVert x\rVert^2/2 - \lVert z\rVert^2/2 + \lVert x + z\rVert^2/2} = e^{x^\top z}$,
# since $\lVert x + z\rVert^2 = \lVert x\rVert^2 + 2x^\top z + \lVert z\rVert^2$. The average of
# $p_\phi$ such terms has the same expectation: the estimate is unbiased for every $p_\phi$.
# (The *normalised* $\hat P$ is a ratio of two such estimates and is only consistent, not
# unbiased.) The check lands within two standard errors; the terms are log-normal, with a
# long right tail, so a finite sample mean more often falls a little below the
# expectation than above it.
#
# </details>

# %% tags=["hide-cell"] jupyter={"outputs_hidden": true, "source_hidden": true}
r4 = np.random.default_rng(4)
x4, z4 = 0.25 * r4.standard_normal(p), 0.25 * r4.standard_normal(p)
est = np.array(
    [
        (pn.positive_random_features(x4, w_)[0] @ pn.positive_random_features(z4, w_)[0])
        for w_ in (pn.draw_random_features(p, 64, seed=100 + t) for t in range(400))
    ]
)
sem = est.std(ddof=1) / np.sqrt(est.size)
print(
    f"Monte Carlo mean {est.mean():.4f} ± {sem:.4f} (standard error)   exp(xᵀz) = {np.exp(x4 @ z4):.4f}"
)
print(f"difference in standard errors: {(est.mean() - np.exp(x4 @ z4)) / sem:+.2f}")
