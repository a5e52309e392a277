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
# # 2. KSVD: from the Lagrangian to the SVD
#
# Primal-Attention rests on one optimisation problem, the kernel SVD of an asymmetric
# kernel (KSVD). This notebook follows it from the Lagrangian to the SVD of $K$: the KKT
# conditions (derived by SymPy in `derivations/derive_ksvd_kkt.py`, whose output is
# shown, not re-derived), the shifted eigenvalue problem, the equivalence of the primal
# and dual representations, and the zero-value lemma together with its caveat.
#
# Theory: [docs/theory.md](../docs/theory.md) §2 *Asymmetric kernel SVD (KSVD) in the primal*
# and §3 *The zero-value lemma*.
#
# For one head and one sequence, with feature maps $\varphi_q, \varphi_k$ (stacked as rows
# in $\Phi_q, \Phi_k \in \mathbb R^{N\times p}$) and $s \le p$ projection directions:
#
# $$
# \max_{W_e, W_r \in \mathbb R^{p\times s}}\; J = \tfrac12\sum_i e_i^\top\Lambda e_i
# + \tfrac12\sum_j r_j^\top\Lambda r_j - \operatorname{Tr}(W_e^\top W_r)
# \quad\text{s.t.}\quad e_i = W_e^\top\varphi_q(x_i),\; r_j = W_r^\top\varphi_k(x_j),
# $$
#
# with $\Lambda = \operatorname{diag}(\lambda_1, \dots, \lambda_s) \succ 0$. $J$ is an
# indefinite quadratic form, so "maximise" means: find a stationary point.

# %%
import importlib
import os
import sys
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before NumPy loads BLAS (README)
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display

import primal_np as pn

np.set_printoptions(precision=3, suppress=False, linewidth=100)
rng = np.random.default_rng(0)

# %% [markdown]
# ## The KKT conditions, derived by SymPy
#
# The derivation script states $J$ and the Lagrangian
# $\mathcal L = J - \sum_i h_{e_i}^\top(e_i - W_e^\top\varphi_q(x_i)) - \sum_j h_{r_j}^\top(r_j - W_r^\top\varphi_k(x_j))$
# on explicit matrices of scalar symbols, differentiates it entry by entry, proves each
# gradient block equal to the matrix form of a KKT condition, and eliminates
# $W_e, W_r, E, R$ with `sympy.linsolve`. Running it here prints its own report
# (the same text as `derivations/README.md`); it raises if any proof fails.

# %%
ROOT = next(p for p in (Path.cwd(), *Path.cwd().parents) if (p / "derivations").is_dir())
sys.path.insert(0, str(ROOT / "derivations"))
kkt = importlib.import_module("derive_ksvd_kkt")
report = kkt.D.render().replace("](derive_", "](../derivations/derive_")
display(Markdown(report))

# %% [markdown]
# In words: stationarity gives
#
# $$
# W_r = \Phi_q^\top H_e,\quad W_e = \Phi_k^\top H_r,\quad \Lambda e_i = h_{e_i},\quad \Lambda r_j = h_{r_j},
# $$
#
# and substituting into the constraints leaves the **shifted eigenvalue problem**
#
# $$
# K H_r = H_e\Sigma,\qquad K^\top H_e = H_r\Sigma,\qquad \Sigma = \Lambda^{-1},\qquad K = \Phi_q\Phi_k^\top,
# \qquad\text{i.e.}\quad
# \begin{bmatrix}0 & K\\ K^\top & 0\end{bmatrix}\begin{bmatrix}H_e\\ H_r\end{bmatrix}
# = \begin{bmatrix}H_e\\ H_r\end{bmatrix}\Sigma .
# $$
#
# Its solutions are singular triplets of $K$: $\Sigma$ holds s singular values, $H_e$ and
# $H_r$ the matching left and right singular vectors. The symmetric block matrix has
# eigenvalues $\pm\sigma_l$ (and zeros), which is how an SVD of an asymmetric matrix
# becomes an eigenproblem.
#
# ## The shifted eigenvalue problem, numerically
#
# `pn.stationary_point` does the whole chain for one sequence: projections
# $Q = XW_q^\top$, $K_\text{keys} = XW_k^\top$, cosine features, $K = \Phi_q\Phi_k^\top$, its
# top-s singular triplets (`pn.ksvd`) and the KKT primal weights (`pn.kkt_weights`).

# %%
N, d, s = 12, 6, 3
x = rng.standard_normal((N, d))
W_q, W_k = rng.standard_normal((d, d)), rng.standard_normal((d, d))
sp = pn.stationary_point(x, W_q, W_k, s=s, feature_map="cosine")

block = np.block([[np.zeros((N, N)), sp.K], [sp.K.T, np.zeros((N, N))]])
eig = np.sort(np.linalg.eigvalsh(block))[::-1]
sv = np.linalg.svd(sp.K, compute_uv=False)
print("σ from pn.ksvd (top s):        ", sp.sigma)
print("largest eigenvalues of block:  ", eig[:s])
print("all singular values of K:      ", sv)
print("shifted-eigen residual         ", pn.shifted_eigen_residual(sp.K, sp.H_e, sp.H_r, sp.sigma))
print("asymmetry of K                 ", round(pn.asymmetry(sp.K), 3))

# %%
fig, ax = plt.subplots(figsize=(6.5, 3.8), constrained_layout=True)
ax.stem(np.arange(2 * N), eig, basefmt="k-", label="eigenvalues of [[0, K], [Kᵀ, 0]]")
ax.plot(np.arange(N), sv, "o", mfc="none", ms=10, color="C1", label="singular values σ of K")
ax.plot(2 * N - 1 - np.arange(N), -sv, "o", mfc="none", ms=10, color="C2", label="−σ")
ax.axvspan(-0.5, s - 0.5, color="C3", alpha=0.12, label=f"the s = {s} triplets KSVD keeps")
ax.set(
    xlabel="index (eigenvalues sorted in decreasing order)",
    ylabel="value (dimensionless: cosine kernel)",
    title=f"Shifted eigenvalue problem: spectrum = ±σ(K)  (N={N}, p={d})",
)
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# **What to see:** every eigenvalue of the $2N\times 2N$ block matrix is $+\sigma_l$ or
# $-\sigma_l$ for a singular value of $K$ (the circles sit on the stems); the cosine
# kernel has rank at most $p = 6$, so the middle eigenvalues are 0. KSVD keeps the $s$
# largest (shaded), and $\Lambda = \Sigma^{-1}$ fixes the regularisation constants.
#
# The KKT conditions at this point, as relative residuals
# $\lVert\text{lhs} - \text{rhs}\rVert_F / (\lVert\text{lhs}\rVert_F + \lVert\text{rhs}\rVert_F)$:

# %%
res = pn.kkt_residuals(sp.phi_q, sp.phi_k, sp.W_e, sp.W_r, sp.lam, sp.H_e, sp.H_r)
for name, val in res._asdict().items():
    print(f"  {name:<13} {val:.1e}")

# %% [markdown]
# ## Primal and dual representations are the same function
#
# The same scores can be computed in two ways (docs/theory.md §2.6):
#
# $$
# \text{primal: } e(x) = W_e^\top\varphi_q(x),\; r(x) = W_r^\top\varphi_k(x);
# \qquad
# \text{dual: } e(x) = \sum_j \kappa(x, x_j)\,h_{r_j},\; r(x) = \sum_i \kappa(x_i, x)\,h_{e_i}.
# $$
#
# The primal form costs $O(Nps)$ and never forms $K$; the dual form costs $O(N^2 s)$.
# With $W_e = \Phi_k^\top H_r$ and $W_r = \Phi_q^\top H_e$ both are the same function of
# $(X, W_q, W_k)$ for fixed $H_e, H_r$, so their **gradients** agree too.
# `pn.scores_from_x(..., form="primal" | "dual")` computes each, with its own backward pass.

# %%
(E_p, R_p), c_p = pn.scores_from_x(x, W_q, W_k, sp.H_e, sp.H_r, form="primal")
(E_d, R_d), c_d = pn.scores_from_x(x, W_q, W_k, sp.H_e, sp.H_r, form="dual")
dE, dR = rng.standard_normal(E_p.shape), rng.standard_normal(R_p.shape)  # random cotangents
g_p = pn.scores_from_x_backward((dE, dR), c_p)
g_d = pn.scores_from_x_backward((dE, dR), c_d)


def rel(a, b):
    """max |a − b| / max |b|: a display helper."""
    return np.abs(a - b).max() / np.abs(b).max()


print(f"scores     E: {rel(E_p, E_d):.1e}   R: {rel(R_p, R_d):.1e}")
for name, a, b in zip(("dX", "dW_q", "dW_k"), g_p, g_d, strict=True):
    print(f"gradient {name:<5} primal vs dual: {rel(a, b):.1e}")
print(f"E = H_e Σ at the stationary point: {rel(E_p, sp.H_e * sp.sigma):.1e}")

# %% [markdown]
# The equivalence also holds **out of sample**: for new tokens $x^\ast$ the primal form
# needs only $\varphi_q(x^\ast)$ and the $p\times s$ weights; the dual form needs the kernel
# between $x^\ast$ and all N training tokens.

# %%
x_new = rng.standard_normal((5, d))
phi_q_new, _ = pn.cosine_normalize(pn.linear(x_new, W_q)[0])
phi_k_new, _ = pn.cosine_normalize(pn.linear(x_new, W_k)[0])
(E_new_primal, R_new_primal), _ = pn.primal_scores(phi_q_new, phi_k_new, sp.W_e, sp.W_r)
K_new_train, _ = pn.kernel_matrix(phi_q_new, sp.phi_k)  # κ(x*, x_j): (5, N)
K_train_new, _ = pn.kernel_matrix(sp.phi_q, phi_k_new)  # κ(x_i, x*): (N, 5)
print(f"out of sample  e(x*): {rel(E_new_primal, K_new_train @ sp.H_r):.1e}")
print(f"out of sample  r(x*): {rel(R_new_primal, K_train_new.T @ sp.H_e):.1e}")

# %% [markdown]
# ## The zero-value lemma: $J = 0$ at the stationary point
#
# At any solution of the shifted eigenvalue problem $J = 0$ (docs/theory.md §3): the two
# quadratic terms each equal $\tfrac12\sum_l\sigma_l\lVert h_{e,l}\rVert^2$ and the trace
# equals $\sum_l\sigma_l\lVert h_{e,l}\rVert^2$. The paper trains with this: instead of
# computing an SVD, it adds $\eta\sum_\text{layers} J^2$ to the task loss.
#
# **The caveat, which a reference must show:** $J = 0$ is *necessary, not sufficient*.
# $J$ is homogeneous of degree 2 in $(W_e, W_r)$, so $W_e = W_r = 0$ gives $J = 0$ as well —
# and there the KKT conditions against the dual solution fail completely. The SymPy
# script `derive_ksvd_lemma.py` proves this on an exact instance; its step on $W = 0$:

# %%
lemma = importlib.import_module("derive_ksvd_lemma")
display(Markdown(lemma.zero_weights().markdown()))

# %% [markdown]
# The same three points numerically: the KSVD solution, $W = 0$, and random weights of
# the same size as the solution's. $J$ is reported relative to the size of its terms,
# $|J| / (|e\text{-term}| + |r\text{-term}| + |\text{trace}|)$ (at $W = 0$ all terms vanish, so we print
# $J$ itself).

# %%
W_rand = [rng.standard_normal(sp.W_e.shape) * np.linalg.norm(sp.W_e) / np.sqrt(sp.W_e.size)
          for _ in range(2)]  # fmt: skip
points = {
    "KSVD solution": (sp.W_e, sp.W_r),
    "W = 0": (np.zeros_like(sp.W_e), np.zeros_like(sp.W_r)),
    "random W": tuple(W_rand),
}
J_rel, kkt_max, kkt_all = {}, {}, {}
for name, (We, Wr) in points.items():
    t = pn.ksvd_objective_terms(sp.phi_q, sp.phi_k, We, Wr, sp.lam)
    J_rel[name] = abs(t.J) / t.scale if t.scale > 0 else abs(t.J)
    r = pn.kkt_residuals(sp.phi_q, sp.phi_k, We, Wr, sp.lam, sp.H_e, sp.H_r)
    kkt_max[name], kkt_all[name] = r.max, tuple(r)
    print(f"{name:<14} J = {t.J:+.2e}   |J|/scale = {J_rel[name]:.1e}   KKT residuals "
          + " ".join(f"{v:.0e}" for v in r))  # fmt: skip

# %% [markdown]
# A second view: $J$ on the plane of weights $W(a, b) = a\,W^\ast + b\,\Delta$ through the
# KSVD solution $W^\ast$ (at $a = 1, b = 0$), the origin, and a random direction $\Delta$.
# $J$ is a quadratic form and $W^\ast$ a stationary point with $J(W^\ast) = 0$, so both the
# $a^2$ term and the cross term vanish:
#
# $$ J(aW^\ast + b\Delta) = a^2 J(W^\ast) + ab\,\langle\nabla J(W^\ast), \Delta\rangle + b^2 J(\Delta) = b^2 J(\Delta). $$
#
# $J$ does not depend on $a$ at all.

# %%
D_e, D_r = W_rand
a_grid = np.linspace(-0.5, 1.5, 81)
b_grid = np.linspace(-1.0, 1.0, 81)
J_plane = np.array(
    [
        [
            pn.ksvd_objective(
                sp.phi_q, sp.phi_k, a * sp.W_e + b * D_e, a * sp.W_r + b * D_r, sp.lam
            )
            for a in a_grid
        ]
        for b in b_grid
    ]
)

fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
names = list(points)
floor = 1e-17  # log axis: exact zeros drawn at this floor
xs = np.arange(len(names))
axes[0].bar(xs - 0.2, [max(J_rel[n], floor) for n in names], 0.4, label="|J| / scale of its terms")
axes[0].bar(xs + 0.2, [max(kkt_max[n], floor) for n in names], 0.4, label="max KKT residual")
axes[0].set(
    xticks=xs,
    xticklabels=names,
    yscale="log",
    ylim=(floor / 3, 3),
    ylabel="relative value (dimensionless, log)",
    title="J = 0 at W = 0 too — but the KKT conditions fail there",
)
axes[0].axhline(1e-12, color="k", lw=0.8, ls=":")
axes[0].text(2.45, 2e-12, "1e-12", fontsize=8, ha="right")
axes[0].legend(fontsize=8, loc="center left")

lim = np.abs(J_plane).max()
cs = axes[1].contourf(a_grid, b_grid, J_plane, levels=21, cmap="RdBu_r", vmin=-lim, vmax=lim)
axes[1].axhline(0.0, color="k", lw=1.5, label="J = 0: the whole line b = 0")
axes[1].plot([1], [0], "*", ms=14, color="gold", mec="k", label="KSVD solution W*")
axes[1].plot([0], [0], "o", ms=8, color="w", mec="k", label="W = 0")
axes[1].set(
    xlabel="a (coefficient of W*)",
    ylabel="b (coefficient of random Δ)",
    title="J on the plane a·W* + b·Δ: blind to a",
)
fig.colorbar(cs, ax=axes[1], label="J (dimensionless)")
axes[1].legend(fontsize=8, loc="lower right")
plt.show()

# %% [markdown]
# **What to see.** Left: at the KSVD solution both bars are at rounding level (values
# below $10^{-17}$, exact zeros included, are drawn at that floor); at $W = 0$, $J$ is
# exactly 0 as well,
# while the KKT residuals are 1; random weights fail both. Right: the colour changes only
# with $b$; the black line $b = 0$, where $J = 0$, holds the solution (star), the origin
# (circle) and every multiple $aW^\ast$. Driving $J$ to 0 — what the KSVD loss
# $\eta J^2$ does — cannot tell these apart. (Each $aW^\ast$ with $a \ne 0$ is in fact a
# KKT point once the multipliers are rescaled to $aH$: the SVD fixes each singular pair
# only up to a common scale. At $a = 0$ the multipliers vanish: the trivial point.) In
# training, only the task loss keeps the weights away from that collapse; the KKT
# residuals, not $J$, measure stationarity.
#
# ## Shared weights, many sequences
#
# The second caveat: in a layer, $W_e, W_r, \Lambda$ are shared by all sequences, but $K$
# depends on the input. The stationary point of one sequence is not stationary for
# another:

# %%
x2 = rng.standard_normal((N, d))
sp2 = pn.stationary_point(x2, W_q, W_k, s=s)
t = pn.ksvd_objective_terms(sp2.phi_q, sp2.phi_k, sp.W_e, sp.W_r, sp.lam)
r = pn.kkt_residuals(sp2.phi_q, sp2.phi_k, sp.W_e, sp.W_r, sp.lam, sp2.H_e, sp2.H_r)
print(f"sequence 1's weights on sequence 2: |J|/scale = {abs(t.J) / t.scale:.2f}, "
      f"max KKT residual = {r.max:.2f}")  # fmt: skip
print("σ of sequence 1:", sp.sigma, "  σ of sequence 2:", sp2.sigma)

# %% [markdown]
# So a trained Primal-Attention layer is not at the exact KSVD solution of any one
# sequence; the KSVD loss pushes the batch-averaged $J$ toward 0 (notebook 4 plots it
# during training), and notebook 3 shows how the layer makes its weights depend on the
# input to soften this.
