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
# [Open in Colab](https://colab.research.google.com/github/primal-np/primal_np/blob/main/notebooks/02_ksvd_lagrangian_to_svd.ipynb)
# (the setup cell below installs primal_np there; see the [notebooks' README](README.md)).
#
# Primal-Attention rests on one optimisation problem, the kernel SVD of an asymmetric
# kernel (KSVD). This notebook derives its solution on the page — Lagrangian, stationarity
# conditions, elimination, shifted eigenvalue problem, SVD — and then checks every step:
# a hand-built SVD against `primal_np`, the zero-value lemma with its proof, SymPy as an
# independent confirmation, and what happens when $\Lambda$ is *not* $\Sigma^{-1}$.
#
# Theory: [docs/theory.md](../docs/theory.md) §2 *Asymmetric kernel SVD (KSVD) in the
# primal* and §3 *The zero-value lemma*. Notation: [§0](../docs/theory.md#0-notation).

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
import sympy as sym
from IPython.display import Markdown, display

import primal_np as pn
from primal_np.compare import rel_error

np.set_printoptions(precision=3, suppress=False, linewidth=100)
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. The problem
#
# One head, one sequence of N tokens. Feature maps $\phi_q, \phi_k$ give the feature
# matrices $\Phi_q, \Phi_k \in \mathbb R^{N\times p_\phi}$ (row $i$ is $\phi_q(x_i)$, row $j$
# is $\phi_k(x_j)$), and the kernel matrix is $K = \Phi_q\Phi_k^\top$, asymmetric in general
# (notebook 1). KSVD looks for $s \le p_\phi$ pairs of projection directions
# $W_e, W_r \in \mathbb R^{p_\phi\times s}$:
#
# $$
# J(W_e, W_r) = \tfrac12\sum_{i=1}^N e_i^\top\Lambda e_i + \tfrac12\sum_{j=1}^N r_j^\top\Lambda r_j
# - \operatorname{Tr}(W_e^\top W_r)
# \quad\text{s.t.}\quad e_i = W_e^\top\phi_q(x_i),\; r_j = W_r^\top\phi_k(x_j),
# $$
#
# with $\Lambda = \operatorname{diag}(\lambda_1, \dots, \lambda_s) \succ 0$. In matrix form
# $E = \Phi_q W_e$, $R = \Phi_k W_r$ and
# $J = \tfrac12\operatorname{Tr}(E\Lambda E^\top) + \tfrac12\operatorname{Tr}(R\Lambda R^\top) - \operatorname{Tr}(W_e^\top W_r)$.
# $J$ is an indefinite quadratic form (it is unbounded above and below), so "solving"
# KSVD means finding a **stationary point** of its Lagrangian, as for LS-SVMs.
#
# ## 2. The derivation
#
# **Lagrangian.** Treat the scores as variables and give each constraint a multiplier
# $h_{e_i}, h_{r_j} \in \mathbb R^s$, stacked as rows of the dual variables
# $H_e, H_r \in \mathbb R^{N\times s}$:
#
# $$
# \mathcal L = \tfrac12\operatorname{Tr}(E\Lambda E^\top) + \tfrac12\operatorname{Tr}(R\Lambda R^\top)
# - \operatorname{Tr}(W_e^\top W_r)
# - \operatorname{Tr}\big(H_e^\top(E - \Phi_q W_e)\big) - \operatorname{Tr}\big(H_r^\top(R - \Phi_k W_r)\big).
# $$
#
# **Stationarity.** With $\partial_A\operatorname{Tr}(A^\top B) = B$,
# $\partial_A\operatorname{Tr}(C^\top D A) = D^\top C$ and
# $\partial_E\tfrac12\operatorname{Tr}(E\Lambda E^\top) = E\Lambda$ ($\Lambda$ diagonal), the six
# partial derivatives set to zero are
#
# $$
# \begin{aligned}
# \text{(1)}\ \ \partial_{W_e}\mathcal L &= \Phi_q^\top H_e - W_r = 0, &
# \text{(2)}\ \ \partial_{W_r}\mathcal L &= \Phi_k^\top H_r - W_e = 0,\\
# \text{(3)}\ \ \partial_{E}\mathcal L &= E\Lambda - H_e = 0, &
# \text{(4)}\ \ \partial_{R}\mathcal L &= R\Lambda - H_r = 0,\\
# \text{(5)}\ \ \partial_{H_e}\mathcal L &= 0 \iff E = \Phi_q W_e, &
# \text{(6)}\ \ \partial_{H_r}\mathcal L &= 0 \iff R = \Phi_k W_r .
# \end{aligned}
# $$
#
# The pattern is crossed: the multipliers of the $e$-constraints (which carry $\phi_q$)
# build $W_r$, because of the coupling term $\operatorname{Tr}(W_e^\top W_r)$. Row by row,
# (1) reads $W_r = \sum_i \phi_q(x_i)\,h_{e_i}^\top$: a representer theorem.
#
# **Elimination.** Substitute (5), then (2), into (3); and (6), then (1), into (4):
#
# $$
# H_e = E\Lambda = \Phi_q W_e\Lambda = \Phi_q\Phi_k^\top H_r\Lambda = K H_r\Lambda,
# \qquad
# H_r = R\Lambda = \Phi_k W_r\Lambda = \Phi_k\Phi_q^\top H_e\Lambda = K^\top H_e\Lambda .
# $$
#
# Multiply on the right by $\Sigma = \Lambda^{-1}$: the weights, scores and features are gone,
# only the kernel matrix is left,
#
# $$ K H_r = H_e\Sigma, \qquad K^\top H_e = H_r\Sigma . $$
#
# **Shifted eigenvalue problem.** Stacked, this is an eigenvalue problem of a symmetric
# $2N\times 2N$ matrix whose blocks trade places ("shifted"):
#
# $$
# \begin{bmatrix}0 & K\\ K^\top & 0\end{bmatrix}\begin{bmatrix}H_e\\ H_r\end{bmatrix}
# = \begin{bmatrix}H_e\\ H_r\end{bmatrix}\Sigma .
# $$
#
# **SVD.** Column by column, $K h_{r,l} = \sigma_l h_{e,l}$ and $K^\top h_{e,l} = \sigma_l h_{r,l}$:
# the defining equations of a singular triplet. So if $K = U\operatorname{diag}(\varsigma)V^\top$,
# then $h_{e,l} = u_l$, $h_{r,l} = v_l$, $\sigma_l = \varsigma_l$, $\lambda_l = 1/\varsigma_l$ is a
# solution: **the columns of $H_e$ are left singular vectors of $K$, those of $H_r$ right
# singular vectors**, and the primal weights follow from (1), (2):
# $W_e = \Phi_k^\top H_r$, $W_r = \Phi_q^\top H_e$. (Conversely $KK^\top h_{e,l} = \sigma_l^2h_{e,l}$,
# so every solution with $\sigma_l > 0$ is of this form, up to a common scale per column.)
# The block matrix has eigenvalues $\pm\varsigma_l$ and zeros; KSVD keeps $s$ of the positive
# ones, primal_np the top $s$.
#
# ## 3. The derivation, checked by hand
#
# Follow the recipe with NumPy alone — features, kernel, `np.linalg.svd`, the KKT
# weights — and hold each piece against primal_np (`pn.ksvd`, `pn.kkt_weights` and
# `pn.stationary_point`, which does the whole chain). An SVD is unique only up to the sign
# of each singular pair (and rotations within repeated singular values, absent here), so
# we align the signs before comparing. All comparisons use `rel_error`
# ($\max|a - r| / \max|r|$, the project's one relative error).

# %%
N, d, s = 12, 6, 3  # tokens, input width (= p_φ for the cosine map), rank
x = rng.standard_normal((N, d))
W_q, W_k = rng.standard_normal((d, d)), rng.standard_normal((d, d))

# by hand: projections, cosine features, kernel, SVD, KKT weights
Q_, K_keys = x @ W_q.T, x @ W_k.T
phi_q = Q_ / np.linalg.norm(Q_, axis=1, keepdims=True)
phi_k = K_keys / np.linalg.norm(K_keys, axis=1, keepdims=True)
K = phi_q @ phi_k.T
U, varsigma, Vt = np.linalg.svd(K)
H_e, H_r, sigma = U[:, :s], Vt[:s].T, varsigma[:s]
W_e, W_r, lam = phi_k.T @ H_r, phi_q.T @ H_e, 1 / sigma

# primal_np
he_pn, hr_pn, sigma_pn = pn.ksvd(K, s)
sign = np.sign(np.sum(H_e * he_pn, axis=0))  # align each pair's sign with primal_np's
we_pn, wr_pn, lam_pn = pn.kkt_weights(phi_q, phi_k, he_pn, hr_pn, sigma_pn)
sp = pn.stationary_point(x, W_q, W_k, s=s, feature_map="cosine")

print("σ (top s):", sigma)
print(f"K    vs stationary_point.K        {rel_error(K, sp.K):.1e}")
print(f"σ    vs pn.ksvd                   {rel_error(sigma, sigma_pn):.1e}")
print(f"H_e  vs pn.ksvd (signs aligned)   {rel_error(H_e * sign, he_pn):.1e}")
print(f"H_r  vs pn.ksvd (signs aligned)   {rel_error(H_r * sign, hr_pn):.1e}")
print(f"W_e  vs pn.kkt_weights            {rel_error(W_e * sign, we_pn):.1e}")
print(f"W_r  vs pn.kkt_weights            {rel_error(W_r * sign, wr_pn):.1e}")
print(f"λ    vs stationary_point.lam      {rel_error(lam, sp.lam):.1e}")
print(f"W_e  vs stationary_point.W_e      {rel_error(W_e * sign, sp.W_e):.1e}")

# %% [markdown]
# The six KKT conditions at the hand-built point, as relative residuals
# $\lVert\text{lhs} - \text{rhs}\rVert_F / (\lVert\text{lhs}\rVert_F + \lVert\text{rhs}\rVert_F)$
# (`pn.kkt_residuals`), and the spectrum of the block matrix against the singular values:

# %%
res = pn.kkt_residuals(phi_q, phi_k, W_e, W_r, lam, H_e, H_r)
print("KKT residuals (1)–(6):", " ".join(f"{v:.0e}" for v in res), f"  max {res.max:.0e}")
print(f"shifted-eigen residual: {pn.shifted_eigen_residual(K, H_e, H_r, sigma):.0e}")

block = np.block([[np.zeros((N, N)), K], [K.T, np.zeros((N, N))]])
eig = np.sort(np.linalg.eigvalsh(block))[::-1]
print("largest eigenvalues of the block matrix:", eig[:s])
print(f"asymmetry of K: {pn.asymmetry(K):.3f}")

# %%
fig, ax = plt.subplots(figsize=(6.5, 3.8), constrained_layout=True)
ax.stem(np.arange(2 * N), eig, basefmt="k-", label="eigenvalues of [[0, K], [Kᵀ, 0]]")
ax.plot(np.arange(N), varsigma, "o", mfc="none", ms=10, color="C1", label="singular values σ of K")
ax.plot(2 * N - 1 - np.arange(N), -varsigma, "o", mfc="none", ms=10, color="C2", label="−σ")
ax.axvspan(-0.5, s - 0.5, color="C3", alpha=0.12, label=f"the s = {s} triplets KSVD keeps")
ax.set(
    xlabel="index (eigenvalues sorted in decreasing order)",
    ylabel="value (dimensionless: cosine kernel)",
    title=f"Shifted eigenvalue problem: spectrum = ±σ(K)  (N={N}, p_φ={d})",
)
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# **What to see:** every eigenvalue of the block matrix is $+\sigma_l$ or $-\sigma_l$ for a
# singular value of $K$ (the circles sit on the stems); the cosine kernel has rank at most
# $p_\phi = 6$, so the middle eigenvalues are 0. KSVD keeps the $s$ largest (shaded).
#
# ## 4. Primal and dual representations are the same function
#
# By (1), (2) the primal score $e(x) = W_e^\top\phi_q(x) = H_r^\top\Phi_k\phi_q(x)$ is a kernel
# expansion (docs/theory.md §2.6):
#
# $$
# \text{primal: } e(x) = W_e^\top\phi_q(x),\; r(x) = W_r^\top\phi_k(x);
# \qquad
# \text{dual: } e(x) = \sum_j \kappa(x, x_j)\,h_{r_j},\; r(x) = \sum_i \kappa(x_i, x)\,h_{e_i}.
# $$
#
# The primal form costs $O(Np_\phi s)$ and never forms $K$; the dual form costs
# $O(N^2 s)$. For fixed $H_e, H_r$ both are the same function of $(X, W_q, W_k)$, so
# their **gradients** agree too. `pn.scores_from_x(..., form="primal" | "dual")` computes
# each, with its own backward pass. On the tokens, $E = KH_r = H_e\Sigma$.

# %%
(E_p, R_p), c_p = pn.scores_from_x(x, W_q, W_k, sp.H_e, sp.H_r, form="primal")
(E_d, R_d), c_d = pn.scores_from_x(x, W_q, W_k, sp.H_e, sp.H_r, form="dual")
dE, dR = rng.standard_normal(E_p.shape), rng.standard_normal(R_p.shape)  # random cotangents
g_p = pn.scores_from_x_backward((dE, dR), c_p)
g_d = pn.scores_from_x_backward((dE, dR), c_d)
print(f"scores     E: {rel_error(E_p, E_d):.1e}   R: {rel_error(R_p, R_d):.1e}")
for name, a, b in zip(("dX", "dW_q", "dW_k"), g_p, g_d, strict=True):
    print(f"gradient {name:<5} primal vs dual: {rel_error(a, b):.1e}")
print(f"E = H_e Σ on the tokens: {rel_error(E_p, sp.H_e * sp.sigma):.1e}")

# %% [markdown]
# The equivalence also holds **out of sample**: for new tokens $x^\ast$ the primal form
# needs only $\phi_q(x^\ast)$ and the $p_\phi\times s$ weights; the dual form needs the
# kernel between $x^\ast$ and all N training tokens.

# %%
x_new = rng.standard_normal((5, d))
phi_q_new, _ = pn.cosine_normalize(pn.linear(x_new, W_q)[0])
phi_k_new, _ = pn.cosine_normalize(pn.linear(x_new, W_k)[0])
(E_new_primal, R_new_primal), _ = pn.primal_scores(phi_q_new, phi_k_new, sp.W_e, sp.W_r)
K_new_train, _ = pn.kernel_matrix(phi_q_new, sp.phi_k)  # κ(x*, x_j): (5, N)
K_train_new, _ = pn.kernel_matrix(sp.phi_q, phi_k_new)  # κ(x_i, x*): (N, 5)
print(f"out of sample  e(x*): {rel_error(E_new_primal, K_new_train @ sp.H_r):.1e}")
print(f"out of sample  r(x*): {rel_error(R_new_primal, K_train_new.T @ sp.H_e):.1e}")

# %% [markdown]
# ## 5. The zero-value lemma, proved
#
# **Lemma.** At every solution $(H_e, H_r, \Sigma)$ of the shifted eigenvalue problem, with
# the primal variables given by (1)–(6) and $\Lambda = \Sigma^{-1}$, $J = 0$.
#
# The proof below is the certificate of `derivations/derive_ksvd_lemma.py` written out: it
# does not assume a solution, it writes $J$ **exactly** in terms of the residuals of the
# two eigen-equations,
#
# $$ A = KH_r - H_e\Sigma, \qquad B = K^\top H_e - H_r\Sigma , $$
#
# for *any* $H_e, H_r$ and $\Sigma \succ 0$, with $W_e = \Phi_k^\top H_r$, $W_r = \Phi_q^\top H_e$
# (KKT (1), (2)), $E = \Phi_q W_e$, $R = \Phi_k W_r$ ((5), (6)) and $\Lambda = \Sigma^{-1}$.
# Write $\langle X, Y\rangle = \operatorname{Tr}(X^\top Y)$.
#
# *The scores.* $E = \Phi_q\Phi_k^\top H_r = KH_r = H_e\Sigma + A$, and likewise $R = K^\top H_e = H_r\Sigma + B$.
#
# *The quadratic terms.* Since $\Sigma\Lambda\Sigma = \Sigma$ and $\Sigma\Lambda = I$,
#
# $$
# \tfrac12\operatorname{Tr}(E\Lambda E^\top)
# = \tfrac12\operatorname{Tr}\big((H_e\Sigma + A)\Lambda(H_e\Sigma + A)^\top\big)
# = \tfrac12\textstyle\sum_l\sigma_l\lVert h_{e,l}\rVert^2 + \langle H_e, A\rangle + \tfrac12\langle A\Lambda, A\rangle ,
# $$
#
# and in the same way
# $\tfrac12\operatorname{Tr}(R\Lambda R^\top) = \tfrac12\sum_l\sigma_l\lVert h_{r,l}\rVert^2 + \langle H_r, B\rangle + \tfrac12\langle B\Lambda, B\rangle$.
#
# *The coupling term*, expanded once with each eigen-equation:
#
# $$
# \operatorname{Tr}(W_e^\top W_r) = \operatorname{Tr}(H_r^\top\Phi_k\Phi_q^\top H_e) = \langle H_e, KH_r\rangle
# = \begin{cases}
# \langle H_e, H_e\Sigma + A\rangle = \sum_l\sigma_l\lVert h_{e,l}\rVert^2 + \langle H_e, A\rangle,\\[2pt]
# \langle K^\top H_e, H_r\rangle = \sum_l\sigma_l\lVert h_{r,l}\rVert^2 + \langle H_r, B\rangle .
# \end{cases}
# $$
#
# *Together.* Take half of each form of the coupling term and subtract: the norms cancel,
#
# $$
# \boxed{\,J = \tfrac12\langle H_e, A\rangle + \tfrac12\langle H_r, B\rangle
# + \tfrac12\langle A\Lambda, A\rangle + \tfrac12\langle B\Lambda, B\rangle\,}
# $$
#
# At a solution $A = B = 0$, hence $J = 0$. $\blacksquare$ The proof needs no normalisation
# of the columns and no distinct singular values; scaling column $l$ of both $H$'s by
# $c_l$ keeps $A = B = 0$ and $J = 0$. The two forms of the coupling term also show
# $\sigma_l\lVert h_{e,l}\rVert^2 = \sigma_l\lVert h_{r,l}\rVert^2$ at a solution (exercise 4).
#
# The identity holds at **every** point, not only at solutions, so it can be checked
# numerically at random $H_e, H_r, \Sigma$, where $A, B \ne 0$ and $J \ne 0$:

# %%
He_rand, Hr_rand = rng.standard_normal((N, s)), rng.standard_normal((N, s))
sig_rand = rng.uniform(0.5, 2.0, s)
We_, Wr_, lam_ = pn.kkt_weights(phi_q, phi_k, He_rand, Hr_rand, sig_rand)
A = K @ Hr_rand - He_rand * sig_rand
B = K.T @ He_rand - Hr_rand * sig_rand
certificate = 0.5 * (
    np.sum(He_rand * A) + np.sum(Hr_rand * B) + np.sum(A * lam_ * A) + np.sum(B * lam_ * B)
)
J_rand = pn.ksvd_objective(phi_q, phi_k, We_, Wr_, lam_)
print(f"random point:  J = {J_rand:+.6f}   certificate = {certificate:+.6f}   "
      f"rel_error {rel_error(certificate, J_rand):.0e}")  # fmt: skip
t = pn.ksvd_objective_terms(phi_q, phi_k, W_e, W_r, lam)
print(f"KSVD solution: J = {t.J:+.1e}   (terms {t.e_term:.3f} + {t.r_term:.3f} − {t.trace:.3f})")

# %% [markdown]
# ## 6. SymPy confirms
#
# A computer-algebra check of the same steps, on explicit matrices of independent real
# symbols (N = 3 tokens, $p_\phi$ = 2 features, s = 2), small enough to run here in a
# second: SymPy differentiates the Lagrangian entry by entry and compares each block
# with the matrix form of its KKT condition, checks the elimination, and expands
# $J$ minus the certificate. "Proved" means `sympy.expand(lhs − rhs)` is exactly 0.
# (The repository's `derivations/derive_ksvd_kkt.py` and `derive_ksvd_lemma.py` do the
# same at larger sizes, with an exact rational solution.)


# %%
def symbols_matrix(name, rows, cols, **assumptions):
    """A rows×cols matrix of independent real symbols name_ij."""
    return sym.Matrix(
        rows, cols, lambda i, j: sym.Symbol(f"{name}_{i + 1}{j + 1}", real=True, **assumptions)
    )


def proved(lhs, rhs):
    """True iff lhs − rhs expands to exactly zero, entry by entry."""
    diff = sym.Matrix(lhs - rhs).applyfunc(sym.expand)
    return diff == sym.zeros(*diff.shape)


Ns, ps, ss = 3, 2, 2
Pq, Pk = symbols_matrix("a", Ns, ps), symbols_matrix("b", Ns, ps)  # Φ_q, Φ_k
We_s, Wr_s = symbols_matrix("w^e", ps, ss), symbols_matrix("w^r", ps, ss)
E_s, R_s = symbols_matrix("e", Ns, ss), symbols_matrix("r", Ns, ss)
He_s, Hr_s = symbols_matrix("h^e", Ns, ss), symbols_matrix("h^r", Ns, ss)
sig_s = [sym.Symbol(f"sigma_{l + 1}", positive=True) for l in range(ss)]
Sig, Lam = sym.diag(*sig_s), sym.diag(*[1 / v for v in sig_s])
K_s = Pq * Pk.T

J_s = (E_s * Lam * E_s.T).trace() / 2 + (R_s * Lam * R_s.T).trace() / 2 - (We_s.T * Wr_s).trace()
L_s = J_s - (He_s.T * (E_s - Pq * We_s)).trace() - (Hr_s.T * (R_s - Pk * Wr_s)).trace()


def grad(f, M):
    return M.applyfunc(lambda v: sym.diff(f, v))


checks = {
    r"(1) $\partial\mathcal L/\partial W_e = \Phi_q^\top H_e - W_r$": proved(grad(L_s, We_s), Pq.T * He_s - Wr_s),
    r"(2) $\partial\mathcal L/\partial W_r = \Phi_k^\top H_r - W_e$": proved(grad(L_s, Wr_s), Pk.T * Hr_s - We_s),
    r"(3) $\partial\mathcal L/\partial E = E\Lambda - H_e$": proved(grad(L_s, E_s), E_s * Lam - He_s),
    r"(4) $\partial\mathcal L/\partial R = R\Lambda - H_r$": proved(grad(L_s, R_s), R_s * Lam - Hr_s),
    r"(5) $\partial\mathcal L/\partial H_e = \Phi_q W_e - E$": proved(grad(L_s, He_s), Pq * We_s - E_s),
    r"(6) $\partial\mathcal L/\partial H_r = \Phi_k W_r - R$": proved(grad(L_s, Hr_s), Pk * Wr_s - R_s),
    r"elimination: (3) with (5), (2), times $\Sigma$, is $KH_r - H_e\Sigma$":
        proved((Pq * (Pk.T * Hr_s) * Lam - He_s) * Sig, K_s * Hr_s - He_s * Sig),
    r"elimination: (4) with (6), (1), times $\Sigma$, is $K^\top H_e - H_r\Sigma$":
        proved((Pk * (Pq.T * He_s) * Lam - Hr_s) * Sig, K_s.T * He_s - Hr_s * Sig),
}  # fmt: skip

# the certificate: J at the KKT weights, minus ½⟨H_e, A⟩ + ½⟨H_r, B⟩ + ½⟨AΛ, A⟩ + ½⟨BΛ, B⟩
We_kkt, Wr_kkt = Pk.T * Hr_s, Pq.T * He_s
E_kkt, R_kkt = Pq * We_kkt, Pk * Wr_kkt
J_kkt = (
    (E_kkt * Lam * E_kkt.T).trace() / 2
    + (R_kkt * Lam * R_kkt.T).trace() / 2
    - (We_kkt.T * Wr_kkt).trace()
)
A_s, B_s = K_s * Hr_s - He_s * Sig, K_s.T * He_s - Hr_s * Sig


def inner(X, Y):
    return (X.T * Y).trace()


cert_s = (inner(He_s, A_s) + inner(Hr_s, B_s) + inner(A_s * Lam, A_s) + inner(B_s * Lam, B_s)) / 2
n_symbols = len((J_kkt - cert_s).free_symbols)
checks[rf"lemma: $J$ = the certificate, in all {n_symbols} symbols"] = proved(
    sym.Matrix([J_kkt]), sym.Matrix([cert_s])
)
checks[r"control: without $\tfrac12\langle B\Lambda, B\rangle$ it is not"] = not proved(
    sym.Matrix([J_kkt]), sym.Matrix([cert_s - inner(B_s * Lam, B_s) / 2])
)
checks[r"caveat: $J = 0$ at $W_e = W_r = 0$ for all $\Phi, \Lambda$"] = (
    sym.expand(J_s.subs({v: 0 for v in [*We_s, *Wr_s, *E_s, *R_s]})) == 0
)
table = "| statement | SymPy |\n|---|---|\n" + "\n".join(
    f"| {name} | {'proved' if ok else '**FAILED**'} |" for name, ok in checks.items()
)
display(Markdown(table))
assert all(checks.values()), "a SymPy check failed"

# %% [markdown]
# One entry of a gradient, as SymPy sees it (row 1, column 1 of $\partial\mathcal L/\partial W_e$):

# %%
display(Markdown(f"$$\\frac{{\\partial\\mathcal L}}{{\\partial w^e_{{11}}}} = {sym.latex(sym.diff(L_s, We_s[0, 0]))}$$"))  # fmt: skip

# %% [markdown]
# ## 7. $J = 0$ is necessary, not sufficient
#
# **The caveat, which a reference must show:** $J$ is homogeneous of degree 2 in
# $(W_e, W_r)$, so $W_e = W_r = 0$ gives $J = 0$ as well (last row of the SymPy table) —
# and there the KKT conditions against the dual solution fail completely. The same three
# points numerically: the KSVD solution, $W = 0$, and random weights of the same size as
# the solution's. $J$ is reported relative to the size of its terms,
# $|J| / (|e\text{-term}| + |r\text{-term}| + |\text{trace}|)$ (at $W = 0$ all terms vanish,
# so we print $J$ itself).

# %%
W_rand = [rng.standard_normal(sp.W_e.shape) * np.linalg.norm(sp.W_e) / np.sqrt(sp.W_e.size)
          for _ in range(2)]  # fmt: skip
points = {
    "KSVD solution": (sp.W_e, sp.W_r),
    "W = 0": (np.zeros_like(sp.W_e), np.zeros_like(sp.W_r)),
    "random W": tuple(W_rand),
}
J_rel, kkt_max = {}, {}
for name, (We, Wr) in points.items():
    t = pn.ksvd_objective_terms(sp.phi_q, sp.phi_k, We, Wr, sp.lam)
    J_rel[name] = abs(t.J) / t.scale if t.scale > 0 else abs(t.J)
    r = pn.kkt_residuals(sp.phi_q, sp.phi_k, We, Wr, sp.lam, sp.H_e, sp.H_r)
    kkt_max[name] = r.max
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
axes[0].bar(
    xs - 0.2, [max(J_rel[nm], floor) for nm in names], 0.4, label="|J| / scale of its terms"
)
axes[0].bar(xs + 0.2, [max(kkt_max[nm], floor) for nm in names], 0.4, label="max KKT residual")
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
# exactly 0 as well, while the KKT residuals are 1; random weights fail both. Right: the
# colour changes only with $b$; the black line $b = 0$, where $J = 0$, holds the solution
# (star), the origin (circle) and every multiple $aW^\ast$. Driving $J$ to 0 — what the
# KSVD loss $\eta J^2$ does — cannot tell these apart. (Each $aW^\ast$ with $a \ne 0$ is in
# fact a KKT point once the multipliers are rescaled to $aH$: the SVD fixes each singular
# pair only up to a common scale. At $a = 0$ the multipliers vanish: the trivial point.)
# In training, only the task loss keeps the weights away from that collapse; the KKT
# residuals, not $J$, measure stationarity.
#
# ## 8. The $\Lambda$ landscape: only $\Lambda = \Sigma^{-1}$ is stationary
#
# So far $\Lambda$ was *chosen* as $\Sigma^{-1}$. In a layer it is a parameter ($\lambda$ in
# the code), so ask the converse: for a **given** $\Lambda$, which stationary points exist?
# Take one direction ($s = 1$, $\Lambda = \lambda$) and scan $\lambda$ — the
# regularisation constant, called $\gamma$ in the LS-SVM literature, hence "γ-landscape".
# After elimination, (3) and (4) are the homogeneous linear system
#
# $$
# M(\lambda)\begin{bmatrix}h_e\\ h_r\end{bmatrix} = 0, \qquad
# M(\lambda) = \begin{bmatrix}-I & \lambda K\\ \lambda K^\top & -I\end{bmatrix},
# $$
#
# whose eigenvalues are $-1 \pm \lambda\varsigma_l$ (and $-1$). It has a nonzero solution —
# a stationary point other than $W = 0$ — only where $M(\lambda)$ is singular, i.e. where
# $\lambda = 1/\varsigma_l$ for a singular value of $K$. Three views of the scan:
#
# * the smallest singular value of $M(\lambda)$: it touches 0 exactly at $\lambda = 1/\varsigma_l$;
# * the best candidate at each $\lambda$: take the $l$-th singular pair as multipliers, the
#   KKT weights (1), (2) from it, and $\Lambda = \lambda$; its max KKT residual
#   (`pn.kkt_residuals`) is $|\lambda\varsigma_l - 1|/(\lambda\varsigma_l + 1)$, zero only at
#   $\lambda = 1/\varsigma_l$;
# * $J$ of the same candidate (`pn.ksvd_objective`): $J_l(\lambda) = \varsigma_l(\lambda\varsigma_l - 1)$,
#   a straight line through 0 at $\lambda = 1/\varsigma_l$ — so $J = 0$ picks out the
#   stationary $\lambda$ *along this family*, while off it (section 7) it does not.

# %%
rank = int(np.sum(varsigma > 1e-10 * varsigma[0]))  # the nonzero singular values (≤ p_φ)
lams = np.geomspace(0.3 / varsigma[0], 3 / varsigma[rank - 1], 400)
lams = np.sort(np.concatenate([lams, 1 / varsigma[:rank]]))  # the stationary values too
M_min, kkt_l, J_l = [], [], []
for lam_ in lams:
    M = np.block([[-np.eye(N), lam_ * K], [lam_ * K.T, -np.eye(N)]])
    M_min.append(np.linalg.svd(M, compute_uv=False)[-1])
    row_k, row_j = [], []
    for l in range(rank):
        u, v = U[:, l : l + 1], Vt[l : l + 1].T  # the l-th singular pair as H_e, H_r
        We_l, Wr_l = phi_k.T @ v, phi_q.T @ u  # KKT (1), (2)
        row_k.append(pn.kkt_residuals(phi_q, phi_k, We_l, Wr_l, np.array([lam_]), u, v).max)
        row_j.append(pn.ksvd_objective(phi_q, phi_k, We_l, Wr_l, np.array([lam_])))
    kkt_l.append(row_k)
    J_l.append(row_j)
M_min, kkt_l, J_l = np.array(M_min), np.array(kkt_l), np.array(J_l)

closed_M = np.min(np.abs(1 - np.outer(lams, varsigma)), axis=1).clip(max=1.0)
closed_kkt = np.abs(np.outer(lams, varsigma[:rank]) - 1) / (np.outer(lams, varsigma[:rank]) + 1)
closed_J = varsigma[:rank] * (np.outer(lams, varsigma[:rank]) - 1)
print(f"σ_min(M(λ)) against min_l |1 − λσ_l|:     rel_error {rel_error(M_min, closed_M):.0e}")
print(f"KKT residual against |λσ_l − 1|/(λσ_l + 1): rel_error {rel_error(kkt_l, closed_kkt):.0e}")
print(f"J against σ_l(λσ_l − 1):                  rel_error {rel_error(J_l, closed_J):.0e}")
print("stationary λ = 1/σ_l:", 1 / varsigma[:rank])

# %%
fig, axes = plt.subplots(1, 3, figsize=(13, 3.9), constrained_layout=True, sharex=True)
axes[0].plot(lams, M_min, "k")
axes[0].set(ylabel="σ_min(M(λ))", title="a nonzero stationary point exists iff this is 0")
for l in range(rank):
    axes[1].plot(lams, kkt_l[:, l], color=f"C{l}", label=f"pair l = {l + 1}")
    axes[2].plot(lams, J_l[:, l], color=f"C{l}")
axes[1].set(yscale="log", ylim=(1e-17, 3), ylabel="max KKT residual (dimensionless)",
            title="candidate from singular pair l")  # fmt: skip
axes[2].axhline(0, color="k", lw=0.8)
axes[2].set(ylabel="J (dimensionless)", title="J of the same candidates")
for ax in axes:
    for l in range(rank):
        ax.axvline(1 / varsigma[l], color=f"C{l}", ls=":", lw=1)
    ax.set(xscale="log", xlabel="λ (log scale); dotted: 1/σ_l")
    ax.grid(alpha=0.3)
axes[1].legend(fontsize=7, ncol=2)
plt.show()

# %% [markdown]
# **What to see:** all three panels single out the same values of $\lambda$, the dotted
# lines $1/\varsigma_l$ (the grid contains them, so the residual dips reach rounding
# level there). Between them the only stationary point is $W = 0$: a generic $\Lambda$
# admits no nontrivial KSVD solution.
# In a trained layer $\lambda$ is learned together with everything else, and the kernel
# changes with every sequence, so it cannot sit on a dotted line for all sequences at
# once — notebook 4 compares a trained layer's $\lambda^2/N$ with $1/\sigma$ of its kernels.
#
# ## 9. Shared weights, many sequences
#
# The same point from the data side: in a layer, $W_e, W_r, \Lambda$ are shared by all
# sequences, but $K$ depends on the input. The stationary point of one sequence is not
# stationary for another:

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
# sequence; the KSVD loss pushes the batch-averaged $J$ toward 0 (notebook 4 measures it
# during and after training), and notebook 3 shows how the layer's data-dependent weights
# change the kernel of the problem.
#
# ## Exercises
#
# Each exercise has a worked solution below it, folded away: try first, then open it.
# The solution cells run with the rest of the notebook (and in CI).
#
# **Exercise 1 (change a parameter and predict).** The cosine kernel above has rank at
# most $p_\phi = 6$. Predict what `pn.stationary_point` does with $s = 6$ and with $s = 7$
# for the same input, then run it.
#
# <details>
# <summary>Solution</summary>
#
# $K = \Phi_q\Phi_k^\top$ with $\Phi \in \mathbb R^{12\times 6}$ has at most 6 nonzero singular
# values. $s = 6$ works: $\Lambda = \Sigma^{-1}$ is finite and the lemma holds. $s = 7$ would
# need $\lambda_7 = 1/\sigma_7 = 1/0$, so `stationary_point` refuses it with a
# `ValueError` that names the bound.
#
# </details>

# %% tags=["hide-cell"] jupyter={"outputs_hidden": true, "source_hidden": true}
for s_try in (6, 7):
    try:
        sp_try = pn.stationary_point(x, W_q, W_k, s=s_try)
        t_try = pn.ksvd_objective_terms(sp_try.phi_q, sp_try.phi_k, sp_try.W_e, sp_try.W_r,
                                        sp_try.lam)  # fmt: skip
        print(
            f"s = {s_try}: σ_min = {sp_try.sigma[-1]:.3f}, |J|/scale = {abs(t_try.J) / t_try.scale:.0e}"
        )
    except ValueError as exc:
        print(f"s = {s_try}: ValueError: {exc}")

# %% [markdown]
# **Exercise 2 (predict, then check).** Scale the solution's weights by $a = 2$:
# $W_e \to 2W_e$, $W_r \to 2W_r$, keeping $\Lambda$. Predict $J$ and the max KKT residual
# (a) against the multipliers $H_e, H_r$ of `pn.ksvd` and (b) against $2H_e, 2H_r$.
#
# <details>
# <summary>Solution</summary>
#
# $J$ is homogeneous of degree 2, so $J(2W^\ast) = 4J(W^\ast) = 0$. (a) Conditions (1), (2)
# compare $2W$ with $W$: relative residual $\lVert 2W - W\rVert / (\lVert 2W\rVert + \lVert W\rVert) = 1/3$;
# (3), (4) compare $E\Lambda = 2H$ with $H$: also $1/3$. (b) Every condition is linear and
# homogeneous in $(W, E, R, H)$, so scaling all of them by 2 keeps every residual at
# rounding level: $2W^\ast$ is a KKT point with multipliers $2H$ — the common-scale freedom.
#
# </details>

# %% tags=["hide-cell"] jupyter={"outputs_hidden": true, "source_hidden": true}
t2 = pn.ksvd_objective_terms(sp.phi_q, sp.phi_k, 2 * sp.W_e, 2 * sp.W_r, sp.lam)
r_a = pn.kkt_residuals(sp.phi_q, sp.phi_k, 2 * sp.W_e, 2 * sp.W_r, sp.lam, sp.H_e, sp.H_r)
r_b = pn.kkt_residuals(sp.phi_q, sp.phi_k, 2 * sp.W_e, 2 * sp.W_r, sp.lam, 2 * sp.H_e, 2 * sp.H_r)
print(f"|J|/scale = {abs(t2.J) / t2.scale:.0e}")
print("(a) against H :", " ".join(f"{v:.3f}" for v in r_a))
print("(b) against 2H:", " ".join(f"{v:.0e}" for v in r_b))

# %% [markdown]
# **Exercise 3 (compute).** Nothing in sections 2–5 used the cosine map. Repeat the
# check with the explicit degree-2 feature map `"poly2"` ($p_\phi = 1 + d + d(d+1)/2 = 28$
# for $d = 6$, so $K$ can now have full rank $N = 12$) and $s = 5$: is $J = 0$, do the KKT
# residuals vanish, and do the primal and dual scores agree?
#
# <details>
# <summary>Solution</summary>
#
# Yes to all three: the derivation holds for any finite feature map. The only change is
# the size of the problem, $W_e, W_r \in \mathbb R^{28\times 5}$, and the rank bound
# $\min(N, p_\phi) = 12$.
#
# </details>

# %% tags=["hide-cell"] jupyter={"outputs_hidden": true, "source_hidden": true}
sp_poly = pn.stationary_point(x, W_q, W_k, s=5, feature_map="poly2")
t_poly = pn.ksvd_objective_terms(sp_poly.phi_q, sp_poly.phi_k, sp_poly.W_e, sp_poly.W_r,
                                 sp_poly.lam)  # fmt: skip
r_poly = pn.kkt_residuals(sp_poly.phi_q, sp_poly.phi_k, sp_poly.W_e, sp_poly.W_r, sp_poly.lam,
                          sp_poly.H_e, sp_poly.H_r)  # fmt: skip
(E_pp, _), _ = pn.scores_from_x(x, W_q, W_k, sp_poly.H_e, sp_poly.H_r, form="primal",
                                feature_map="poly2")  # fmt: skip
(E_pd, _), _ = pn.scores_from_x(x, W_q, W_k, sp_poly.H_e, sp_poly.H_r, form="dual",
                                feature_map="poly2")  # fmt: skip
print(f"Φ_q {sp_poly.phi_q.shape}, W_e {sp_poly.W_e.shape}, rank of K = "
      f"{np.linalg.matrix_rank(sp_poly.K)}")  # fmt: skip
print(f"|J|/scale = {abs(t_poly.J) / t_poly.scale:.0e}, max KKT residual = {r_poly.max:.0e}, "
      f"primal vs dual E: {rel_error(E_pp, E_pd):.0e}")  # fmt: skip

# %% [markdown]
# **Exercise 4 (derive and check).** Show from the two forms of the coupling term in
# section 5 that, for every column $l$ and *any* $H_e, H_r, \Sigma$,
#
# $$ \sigma_l\big(\lVert h_{r,l}\rVert^2 - \lVert h_{e,l}\rVert^2\big) = h_{e,l}^\top a_l - h_{r,l}^\top b_l , $$
#
# with $a_l, b_l$ the columns of $A, B$; conclude that at a solution with $\sigma_l > 0$ the
# left and right multipliers of a pair have equal norms. Check the identity numerically
# at the random point of section 5.
#
# <details>
# <summary>Solution</summary>
#
# Column $l$ of $A$ is $a_l = Kh_{r,l} - \sigma_l h_{e,l}$, so
# $h_{e,l}^\top K h_{r,l} = \sigma_l\lVert h_{e,l}\rVert^2 + h_{e,l}^\top a_l$. Column $l$ of $B$ gives
# $h_{r,l}^\top K^\top h_{e,l} = \sigma_l\lVert h_{r,l}\rVert^2 + h_{r,l}^\top b_l$. The left-hand
# sides are the same number (a scalar equals its transpose); subtracting the two
# equations gives the identity. At a solution $a_l = b_l = 0$, so
# $\sigma_l\lVert h_{r,l}\rVert^2 = \sigma_l\lVert h_{e,l}\rVert^2$, and $\sigma_l > 0$ gives equal
# norms — which is why a *common* scale $c_l$ is the only freedom of a pair.
#
# </details>

# %% tags=["hide-cell"] jupyter={"outputs_hidden": true, "source_hidden": true}
lhs = sig_rand * (np.sum(Hr_rand**2, axis=0) - np.sum(He_rand**2, axis=0))
rhs = np.sum(He_rand * A, axis=0) - np.sum(Hr_rand * B, axis=0)
print("σ_l(‖h_r,l‖² − ‖h_e,l‖²):", lhs)
print("h_e,lᵀ a_l − h_r,lᵀ b_l:  ", rhs, f"  rel_error {rel_error(lhs, rhs):.0e}")
print("at the solution: ‖h_e,l‖ =", np.linalg.norm(H_e, axis=0), " ‖h_r,l‖ =",
      np.linalg.norm(H_r, axis=0))  # fmt: skip

# %% [markdown]
# **Exercise 5 (derive and check).** Derive $J_l(\lambda) = \varsigma_l(\lambda\varsigma_l - 1)$
# for the candidate of section 8 (multipliers $u_l, v_l$, weights from (1), (2),
# $\Lambda = \lambda$), and find the slope $\partial J_l/\partial\lambda$. Check the slope with
# `pn.ksvd_objective_grad` at $\lambda = 1/\varsigma_1$.
#
# <details>
# <summary>Solution</summary>
#
# $E = \Phi_q W_e = Kv_l = \varsigma_l u_l$ and $R = K^\top u_l = \varsigma_l v_l$ (unit vectors), so
# the quadratic terms are $\tfrac12\lambda\varsigma_l^2$ each; the coupling term is
# $\operatorname{Tr}(W_e^\top W_r) = v_l^\top\Phi_k\Phi_q^\top u_l = u_l^\top K v_l = \varsigma_l$.
# Hence $J_l = \lambda\varsigma_l^2 - \varsigma_l$ and $\partial J_l/\partial\lambda = \varsigma_l^2$:
# the steeper, the larger the singular value — which is also
# $\tfrac12\sum_i E_{il}^2 + \tfrac12\sum_j R_{jl}^2$, the formula of `ksvd_objective_grad`.
#
# </details>

# %% tags=["hide-cell"] jupyter={"outputs_hidden": true, "source_hidden": true}
u1, v1 = U[:, :1], Vt[:1].T
g = pn.ksvd_objective_grad(phi_q, phi_k, phi_k.T @ v1, phi_q.T @ u1, np.array([1 / varsigma[0]]))
print(f"∂J/∂λ from ksvd_objective_grad: {g.lam[0]:.6f}   σ_1² = {varsigma[0] ** 2:.6f}   "
      f"rel_error {rel_error(g.lam[0], varsigma[0] ** 2):.0e}")  # fmt: skip
