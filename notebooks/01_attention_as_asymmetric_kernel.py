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
# Canonical softmax attention is a kernel machine written in its **dual form**: the
# output is a kernel expansion over the N tokens, with the values as the expansion
# coefficients. The kernel is **asymmetric**, which is why Primal-Attention starts from
# the SVD of an asymmetric kernel rather than from a Mercer kernel. This notebook shows
# the dual form, measures the asymmetry, and builds a **primal** (finite-feature)
# approximation of softmax attention with positive random features.
#
# Theory: [docs/theory.md §1](../docs/theory.md#1-attention-is-an-asymmetric-kernel-machine)
# *Attention is an asymmetric kernel machine*. Everything below calls `primal_np`; nothing
# is re-implemented here.

# %%
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before NumPy loads BLAS (README)
import matplotlib.pyplot as plt
import numpy as np

import primal_np as pn

np.set_printoptions(precision=3, suppress=True, linewidth=100)
rng = np.random.default_rng(0)

# %% [markdown]
# ## The dual form: $O = KV$
#
# For one head with queries $q_i$, keys $k_j$ and values $v_j$ (rows of $Q, K_\text{keys}, V$):
#
# $$
# \kappa(x_i, x_j) = \operatorname{softmax}_j\!\Big(\tfrac{\langle q(x_i), k(x_j)\rangle}{\sqrt{d_k}}\Big),
# \qquad o_i = \sum_{j=1}^N \kappa(x_i, x_j)\, v(x_j), \qquad O = K V .
# $$
#
# `pn.dual_attention` computes $O$; `pn.softmax_kernel` returns the N×N matrix $K$ itself
# (the same matrix as the attention weights `cache.attn`).

# %%
N, d = 6, 4
q, k, v = (rng.standard_normal((N, d)) for _ in range(3))

out, cache = pn.dual_attention(q, k, v)
K = pn.softmax_kernel(q, k)
print("K (N×N), rows sum to 1:\n", K)
print("row sums:", K.sum(axis=1))
print("max |O − K V|           =", np.abs(out - K @ v).max())
print("max |K − cache.attn|    =", np.abs(K - cache.attn).max())

# %% [markdown]
# ## Why $K$ is asymmetric
#
# $K_{ij} \ne K_{ji}$ for two independent reasons:
#
# 1. the query and key maps differ, $\langle q(x_i), k(x_j)\rangle \ne \langle q(x_j), k(x_i)\rangle$;
# 2. the softmax normalises **rows**: $K_{ij} = \exp(s_{ij}) / \sum_{j'} \exp(s_{ij'})$ divides
#    row $i$ by its own sum, so even a symmetric score matrix ($q = k$) gives an
#    asymmetric $K$.
#
# `pn.asymmetry(K)` $= \lVert (K - K^\top)/2 \rVert_F / \lVert K \rVert_F$: 0 for a symmetric
# matrix, 1 for a skew-symmetric one. The last row is the kernel the paper's layer uses,
# $K = \Phi_q\Phi_k^\top$ with the cosine feature map $\varphi(x) = x/\lVert x\rVert$
# applied to $q$ and $k$: a factorisation through **two different** feature maps, the
# form an asymmetric kernel takes in a reproducing-kernel Banach space.

# %%
N, d = 32, 8
x = rng.standard_normal((N, d))
W_q, W_k = rng.standard_normal((d, d)) / np.sqrt(d), rng.standard_normal((d, d)) / np.sqrt(d)
q_, k_ = x @ W_q.T, x @ W_k.T
scale = 1 / np.sqrt(d)

phi_q, _ = pn.cosine_normalize(q_)
phi_k, _ = pn.cosine_normalize(k_)
cosine_K, _ = pn.kernel_matrix(phi_q, phi_k)
rows = {
    "softmax, W_q ≠ W_k": pn.softmax_kernel(q_, k_),
    "softmax, W_q = W_k (symmetric scores)": pn.softmax_kernel(q_, q_),
    "exp(q kᵀ/√d) unnormalised, W_q = W_k": np.exp(scale * q_ @ q_.T),
    "cosine Φ_q Φ_kᵀ, W_q ≠ W_k": cosine_K,
}
for name, M in rows.items():
    print(f"{name:<42} asymmetry = {pn.asymmetry(M):.3f}")

# %%
K = rows["softmax, W_q ≠ W_k"]
skew = 0.5 * (K - K.T)
fig, axes = plt.subplots(1, 2, figsize=(9, 4), constrained_layout=True)
im0 = axes[0].imshow(K, cmap="viridis")
axes[0].set(title="softmax kernel K (row i, column j)", xlabel="key j", ylabel="query i")
fig.colorbar(im0, ax=axes[0], label="K_ij (dimensionless weight)")
lim = np.abs(skew).max()
im1 = axes[1].imshow(skew, cmap="RdBu_r", vmin=-lim, vmax=lim)
axes[1].set(
    title=f"skew part (K − Kᵀ)/2, asymmetry {pn.asymmetry(K):.2f}", xlabel="key j", ylabel="query i"
)
fig.colorbar(im1, ax=axes[1], label="(K_ij − K_ji)/2")
plt.show()

# %% [markdown]
# **What to see:** the skew part (right) is of the same order as $K$ itself (left), so
# no symmetric (Mercer) kernel describes softmax attention; a symmetric $K$ would make
# the right panel uniformly white.
#
# ## The values are dual variables
#
# $o_i = \sum_j \kappa(x_i, x_j)\, v_j$ has the shape of a kernel machine's dual
# representation $f(x) = \sum_j \alpha_j \kappa(x, x_j)$: the values $v_j$ play the role of
# the dual coefficients $\alpha_j$, one per training point (token). In the KSVD view
# (docs/theory.md §2.6, notebook 2) the dual projection scores are
#
# $$ e(x_i) = \sum_j \kappa(x_i, x_j)\, h_{r_j}, \qquad r(x_j) = \sum_i \kappa(x_i, x_j)\, h_{e_i},
# \qquad E = K H_r,\quad R = K^\top H_e, $$
#
# so canonical attention is the $e$-score with the values in the place of $H_r$.
# `pn.dual_scores` computes both scores; with $H_r = V$ its $E$ is exactly the attention
# output, and its $R$ is the part of the asymmetric kernel that canonical attention never
# uses.

# %%
v_ = rng.standard_normal((N, 3))
out, _ = pn.dual_attention(q_, k_, v_)
(E, R), _ = pn.dual_scores(K, v_, v_)  # H_e = H_r = V
print("max |E − attention output| =", np.abs(E - out).max())
print("max |R − E| (what canonical attention leaves out) =", np.abs(R - E).max().round(3))

# %% [markdown]
# Evaluating the dual form costs $O(N^2 d_v)$ time and $O(N^2)$ memory: every output sums
# over all N tokens. A **primal** form replaces the kernel by explicit finite features,
# $\kappa(x, z) \approx \langle\varphi_q(x), \varphi_k(z)\rangle$ with $\varphi \in \mathbb R^m$,
# so that $O \approx \Phi_q(\Phi_k^\top V)$ costs $O(N m d_v)$ and never forms an N×N matrix.
#
# ## A primal approximation of softmax attention: positive random features
#
# For $w_l \sim \mathcal N(0, I)$, the positive random features
#
# $$ g(z) = \frac{e^{-\lVert z\rVert^2/2}}{\sqrt m}\big[e^{w_1^\top z}, \dots, e^{w_m^\top z}\big]
# \quad\text{satisfy}\quad \mathbb E_w\,\langle g(x), g(z)\rangle = e^{x^\top z}. $$
#
# With $\tilde q = q\,d^{-1/4}$, $\tilde k = k\,d^{-1/4}$ (so $\tilde q^\top\tilde k = q^\top k/\sqrt d$),
# dividing by the row sums gives
# $\hat K_{ij} = \langle g(\tilde q_i), g(\tilde k_j)\rangle / \sum_{j'}\langle g(\tilde q_i), g(\tilde k_{j'})\rangle \to K_{ij}$
# as $m \to \infty$. `pn.random_feature_softmax_kernel` returns $\hat K$ (as an N×N matrix,
# for comparison); the primal evaluation of the same output uses only the N×m feature
# matrices, associating the product the other way:
#
# $$ \hat O = \operatorname{diag}\!\big(G_q (G_k^\top \mathbf 1)\big)^{-1}\, G_q\, (G_k^\top V). $$

# %%
m = 256
w = pn.draw_random_features(d, m, seed=1)  # (m, d), w_l ~ N(0, I)
K_hat = pn.random_feature_softmax_kernel(q_, k_, w)
G_q, _ = pn.positive_random_features(q_ * scale**0.5, w)  # (N, m), all entries > 0
G_k, _ = pn.positive_random_features(k_ * scale**0.5, w)
O_primal = (G_q @ (G_k.T @ v_)) / (G_q @ G_k.sum(axis=0))[:, None]  # no N×N array
print("max |Ô (primal, N×m) − K̂ V (dual, N×N)| =", np.abs(O_primal - K_hat @ v_).max())
print(f"m = {m}: ‖K̂ − K‖_F / ‖K‖_F = {np.linalg.norm(K_hat - K) / np.linalg.norm(K):.3f}")

# %% [markdown]
# ### Error against the number of features
#
# The kernel estimate is a Monte Carlo average over m features, so its error should fall
# like $m^{-1/2}$ — but with a constant that grows quickly with the size of the inputs:
# the variance of one feature product is of order
# $e^{2\tilde q^\top\tilde k}\,(e^{\lVert\tilde q + \tilde k\rVert^2} - 1)$.
# Below: a fixed sequence of N = 64 tokens, d = 16, at three input scales (queries and
# keys multiplied by c, which sets the mean $\lVert\tilde q\rVert^2$), and 20 independent
# draws of $w$ (seeds 0–19) for every m; relative Frobenius errors of the kernel and of
# the attention output.

# %%
N, d, n_draws = 64, 16, 20
x = rng.standard_normal((N, d))
W_q, W_k = rng.standard_normal((d, d)) / np.sqrt(d), rng.standard_normal((d, d)) / np.sqrt(d)
v_ = rng.standard_normal((N, 8))
ms = 2 ** np.arange(1, 13)  # 2 … 4096 features
scales = (0.25, 0.5, 1.0)

err_K = np.empty((len(scales), len(ms), n_draws))
err_O = np.empty_like(err_K)
q_norm2 = []
for c_i, c in enumerate(scales):
    q_, k_ = c * x @ W_q.T, c * x @ W_k.T
    q_norm2.append(np.mean(np.sum(q_**2, axis=1)) / np.sqrt(d))  # mean ‖q̃‖²
    K = pn.softmax_kernel(q_, k_)
    O, _ = pn.dual_attention(q_, k_, v_)
    for a, m in enumerate(ms):
        for seed in range(n_draws):
            w = pn.draw_random_features(d, int(m), seed=seed)
            K_hat = pn.random_feature_softmax_kernel(q_, k_, w)
            err_K[c_i, a, seed] = np.linalg.norm(K_hat - K) / np.linalg.norm(K)
            err_O[c_i, a, seed] = np.linalg.norm(K_hat @ v_ - O) / np.linalg.norm(O)

print("mean ‖q̃‖²   slope (m ≥ 32)   kernel error at m = 4096   output error at m = 4096")
for c_i in range(len(scales)):
    slope = np.polyfit(np.log(ms[4:]), np.log(err_K[c_i, 4:].mean(axis=1)), 1)[0]
    print(
        f"{q_norm2[c_i]:10.2f}   {slope:14.2f}   {err_K[c_i, -1].mean():24.3f}"
        f"   {err_O[c_i, -1].mean():24.3f}"
    )

# %%
fig, ax = plt.subplots(figsize=(6.5, 4.2), constrained_layout=True)
for c_i in range(len(scales)):
    mean, std = err_K[c_i].mean(axis=1), err_K[c_i].std(axis=1)
    label = f"mean ‖q̃‖² = {q_norm2[c_i]:.2f}"
    ax.errorbar(ms, mean, yerr=std, marker="o", ms=4, capsize=3, label=label)
ref = err_K[0].mean(axis=1)[4] * np.sqrt(ms[4] / ms)
ax.plot(ms, ref, "k--", lw=1, label="reference ∝ m^(−1/2)")
ax.set(
    xscale="log",
    yscale="log",
    xlabel="number of random features m",
    ylabel="relative error ‖K̂ − K‖_F / ‖K‖_F (dimensionless)",
    title=f"Positive random features → softmax kernel (N={N}, d={d}, {n_draws} draws)",
)
ax.legend()
ax.grid(True, which="both", alpha=0.3)
plt.show()

# %% [markdown]
# **What to see:** for small inputs (bottom curve) the error follows the dashed
# $m^{-1/2}$ line (fitted slope printed above, close to −0.5) and the error bars (one
# standard deviation over the 20 draws) shrink with it. Each fourfold increase of
# $\lVert\tilde q\rVert^2$ raises the whole curve, and at the largest scale — still modest
# logits — even 4096 features leave a large error: the constant grows exponentially
# with the logits, so a random primal approximation of *peaked* softmax attention needs
# very many features. Primal-Attention takes another route: instead of approximating the
# softmax kernel, it learns the projections of an asymmetric kernel SVD directly in the
# primal (notebooks 2 and 3).
