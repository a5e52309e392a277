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
# # 7. KEP-SVGP attention: the attention output as a Gaussian-process posterior
#
# [Open in Colab](https://colab.research.google.com/github/primal-np/primal_np/blob/main/notebooks/07_kep_svgp_attention.ipynb)
# (the setup cell below installs primal_np there; see the [notebooks' README](README.md)).
#
# The same authors followed Primal-Attention with *Self-Attention through Kernel-Eigen
# Pair Sparse Variational Gaussian Processes* (Chen, Tao, Tonin, Suykens, ICML 2024).
# It keeps the KSVD scores $e(x)$, $r(x)$ of Primal-Attention and reads them as the
# features of a sparse variational Gaussian process (SVGP) whose inducing variables sit
# on the kernel's eigen-pairs. The attention output is then a random variable with a
# mean *and* a covariance; training samples it and adds a KL term to the loss, and
# prediction averages samples, which should make the classifier's probabilities better
# calibrated.
#
# This notebook:
#
# 1. states the GP view in the code's symbols;
# 2. checks on a small input that the samples `primal_np.kep_svgp` draws have the
#    posterior mean and covariance the formulas give;
# 3. trains a KEP-SVGP model, a PrimalFormer and a Transformer on generated ListOps and
#    compares their calibration (reliability diagrams; NLL, ECE, Brier score);
# 4. ends with exercises, from "change a parameter and predict" to "derive and check".
#
# Where the authors' code departs from their paper, and the option for each side:
# [docs/conformance.md](../docs/conformance.md#kep-svgp-attention-chen-tao-tonin-suykens-icml-2024).
# Notation: [docs/theory.md §0](../docs/theory.md#0-notation); the symbols KEP-SVGP adds
# are defined in section 1.

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

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before NumPy loads BLAS (README)
import matplotlib.pyplot as plt
import numpy as np

from primal_np.compare import rel_error
from primal_np.kep_svgp import (
    KEPSVGPConfig,
    cholesky_factor,
    init_kep_svgp_params,
    kep_svgp_attention,
    kep_svgp_kl,
    kep_svgp_losses,
    noise_shape,
)
from primal_np.model import ModelConfig, model_forward
from primal_np.model.train import TrainConfig, train
from primal_np.nn.metrics import (
    calibration_metrics,
    expected_calibration_error,
    log_softmax,
    mc_log_probs,
    reliability_bins,
)
from primal_np.tasks import make_task

np.set_printoptions(precision=3, suppress=True, linewidth=100)

# %% [markdown]
# ## 1. The GP view of attention
#
# Per head, Primal-Attention computes for every token $i$ two score vectors in
# $\mathbb R^s$, the rows $e_i$ of $E$ and $r_i$ of $R$:
#
# $$ e_i = W_{e|X}^\top \phi_q(x_i), \qquad r_i = W_{r|X}^\top \phi_k(x_i), \qquad
#    W_{e|X} = F^\top W_e,\; W_{r|X} = F^\top W_r , $$
#
# with $F$ the $n$ sampled rows (notebook 3). At a KSVD solution they are the singular
# vectors of the kernel matrix scaled by the singular values, $E = H_e\Sigma$ and
# $R = H_r\Sigma$ (notebook 2). KEP-SVGP puts a Gaussian process on the attention output
# and takes as inducing variables $u_l$, $l = 1, \dots, s$, the projections of the process
# on the kernel's singular pairs. The cross-covariance between the process at token $i$
# and the inducing variables is then carried by the scores, and the code's *inducing
# features* are
#
# $$ v_i = \Lambda\,(e_i + r_i) \in \mathbb R^s, \qquad
#    \Lambda = \operatorname{diag}(e^{2\ell}) = \Sigma^{-1}, $$
#
# stacked as the rows of $V_1 = (E + R)\Lambda$. Here $\ell \in \mathbb R^s$ is the
# parameter `log_lambda_sqrt_inv_diag` of each head, so $\Lambda > 0$ by construction
# (Primal-Attention's $\lambda$ can take either sign; docs/conformance.md writes
# out how the KEP-SVGP paper's $\Lambda$ relates to this one). With a Gaussian
# variational distribution $q(u_c) = \mathcal N(m_c, S_c)$ for each of the $s$ output
# channels $c$ and the prior $p(u_c) = \mathcal N(0, \Lambda^{-2})$, the SVGP posterior at
# token $i$ has
#
# $$ \mathbb E[y_{ic}] = v_i^\top m_c, \qquad
#    \operatorname{Var}[y_{ic}] = v_i^\top S_c\, v_i $$
#
# (the code drops the term $K_{ff} - K_{fu}K_{uu}^{-1}K_{uf}$, so the $N\times N$ kernel
# is never formed; docs/conformance.md row 6). The code holds $m_c$ as the columns of
# `m_u`, so the posterior mean is $M = V_1 M_u$ (row $M_i$ for token $i$), and it draws
# per token with the reparameterisation trick
#
# $$ y_i = M_i + A_i\,\varepsilon_i, \qquad A_i = \sum_{l=1}^s v_{il}\,L_l^\top, \qquad
#    \varepsilon_i \sim \mathcal N(0, I_s), $$
#
# with one lower-triangular $s\times s$ matrix per inducing index,
# $L_l = \operatorname{diag}(e^{\texttt{log\_ssqrt}_l}) +
# \operatorname{tril}(\texttt{s\_sqrt\_low\_triangle}_l, -1)$ (rows: the noise
# component, columns: the output channel). The sample of token $i$ is a Gaussian with covariance $C_i = A_i A_i^\top$ —
# one noise vector shared by the $s$ channels, so they are correlated, and independent
# draws across tokens (conformance rows 3–5). Channel $c$ sees the matrix with entries
# $L_l[t, c]$ ($l$: rows, $t$: the noise component) as its factor, whose columns $t < c$
# are zero: it is not the triangular factor of $S_c$ the model names (conformance row 3;
# exercise 4). The head maps $s \to p$: $o_i = W_f y_i + b_f$, with mean $W_f M_i + b_f$
# and covariance $W_f C_i W_f^\top$. (primal_np's docstrings and docs/conformance.md
# index the same quantities as $L[h, a, r, c]$: $a$ for $l$, $r$ for the noise
# component.)

# %% [markdown]
# ## 2. Posterior mean and covariance on a small input
#
# One KEP-SVGP layer (the CoLA variant that `train` uses): $D = 8$, $H = 2$ heads
# ($p = 4$), rank $s = 3$, `rank_multi` $m = 2$ so $n = 6$ sampled rows, a sequence of
# $N = 5$ tokens (fewer than $n$: the CoLA variant then repeats positions).

# %%
cfg = KEPSVGPConfig(dim=8, num_heads=2, low_rank=3, rank_multi=2, variant="cola")
P = init_kep_svgp_params(cfg, seed=0)
rng = np.random.default_rng(1)
x = rng.standard_normal((1, 5, 8))

y_mean, cache = kep_svgp_attention(x, P, cfg, noise=np.zeros(noise_shape(cfg, 1, 5)))
print("E (head 0):\n", cache.escore[0, 0])
print("V₁ = (E + R)Λ (head 0):\n", cache.v1[0, 0])
losses, _ = kep_svgp_losses(cache)
print(f"KL term {losses.kl:.2f}, KSVD loss {losses.ksvd_loss:.4f}")

# %% [markdown]
# The analytic moments of the output $Y \in \mathbb R^{N\times D}$: zero noise gives the
# mean; the covariance of token $i$'s head-$h$ block is $W_f A_i A_i^\top W_f^\top$.

# %%
L = cholesky_factor(P["log_ssqrt"], P["s_sqrt_low_triangle"])[0][0]  # (H, s, s, s): L_l[t, c]
Wf = P["final_weight.weight"]  # (p, s)
A = np.einsum("hil,hltc->hict", cache.v1[0], L)  # A_i[c, t] = Σ_l v_il L_l[t, c]: (H, N, s, s)
cov = np.einsum("pc,hict,hidt,qd->ihpq", Wf, A, A, Wf)  # (N, H, p, p)
var = np.concatenate([np.diagonal(cov[:, h], axis1=1, axis2=2) for h in range(2)], axis=1)
print("analytic variance of each output entry (N × D):\n", var)

# %% [markdown]
# Now $T = 40\,000$ draws: the same sequence repeated along the batch axis, each copy
# with its own noise, in one forward pass (the time it takes is printed by the cell
# after, tagged `timing`).

# %%
T = 40_000
t0 = time.perf_counter()
ys, _ = kep_svgp_attention(np.repeat(x, T, axis=0), P, cfg, rng=np.random.default_rng(2))
seconds_sampling = time.perf_counter() - t0

# %% tags=["timing"]
print(f"{T} draws in {seconds_sampling:.2f} s")

# %%
emp_mean, emp_var = ys.mean(0), ys.var(0, ddof=1)
zscore = (emp_mean - y_mean[0]) / np.sqrt(var / T)  # ~ N(0, 1) entrywise if the mean is right
ratio = emp_var / var  # ~ 1 ± √(2/T) = 1 ± 0.007 if the variance is right
print(
    f"mean: |z| max {np.abs(zscore).max():.2f}, z std {zscore.std():.2f} over {zscore.size} entries"
)
print(f"variance ratio empirical/analytic: min {ratio.min():.4f}, max {ratio.max():.4f}")

# full covariance of token 2, head 0 (p × p), and the correlation between tokens
blk = ys[:, 2, :4]
emp_cov = np.cov(blk, rowvar=False)
print("token 2, head 0: analytic covariance\n", cov[2, 0], "\nempirical\n", emp_cov)
tok_corr = np.corrcoef(ys[:, :, 0], rowvar=False)
print("correlation of output entry 0 between the 5 tokens:\n", tok_corr)

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
axes[0].loglog(var.ravel(), emp_var.ravel(), "o", ms=4)
lim = [var.min() / 2, var.max() * 2]
axes[0].plot(lim, lim, "k:", lw=1)
axes[0].set(xlabel="analytic variance  diag(W_f A_i A_iᵀ W_fᵀ)", ylabel="empirical variance",
            title=f"the {var.size} output entries, {T} draws")  # fmt: skip
axes[1].hist(zscore.ravel(), bins=12, density=True, alpha=0.7)
g = np.linspace(-3.5, 3.5, 200)
axes[1].plot(g, np.exp(-g * g / 2) / np.sqrt(2 * np.pi), "k")
axes[1].set(xlabel="(empirical mean − analytic mean) / (σ/√T)", ylabel="density",
            title="mean error in units of its standard error")  # fmt: skip
plt.show()

# %% [markdown]
# **What to see:** the 40 variances agree with $\operatorname{diag}(W_f A_i A_i^\top
# W_f^\top)$ to within the sampling error (ratio $1 \pm$ a few $\sqrt{2/T}$), the mean
# errors are standard-normal in units of their standard error, the $p\times p$ blocks
# match entry by entry, and different tokens are uncorrelated: the code draws the
# marginals of each token, not a joint sample of the sequence (pass a noise with a token
# axis of 1 for that). The variances span orders of magnitude across tokens — the
# scale of the inducing features $v_i$ sets how uncertain each token's output is.

# %% [markdown]
# ## 3. Calibration: KEP-SVGP beside a PrimalFormer and a Transformer
#
# Three 2-layer encoders on ListOps (nesting depth ≤ 2, at most 32 tokens, 10 classes),
# trained with the same data, batches, optimiser and schedule:
#
# * **KEP-SVGP** (`--model kep-svgp`): canonical attention in layer 0, KEP-SVGP attention
#   in the last layer, as in the authors' models; loss
#   $\mathcal L_\text{task} + \eta\,\text{KSVD} + \eta_\text{kl}\,\text{KL}$ with their
#   defaults η = 0.1, η_kl = 1; fresh noise at every step; predictions average the
#   softmax probabilities of 10 passes (their $K = 10$);
# * **PrimalFormer**: primal attention in both layers, η = 0.1;
# * **Transformer**: softmax attention in both layers.
#
# $D = 32$, $H = 2$ heads ($p = 16$), MLP width 64, $s = 8$, `rank_multi` $m = 4$
# ($n = 32$ sampled rows); 400 AdamW steps of batch 32, learning rate 2·10⁻³, seed 0 for
# data and initialisation. (The run times are printed by the next cell, tagged
# `timing`.)

# %%
TASK = dict(max_len=32, max_depth=2)
COMMON = dict(
    task="listops", task_params=TASK, steps=400, batch_size=32, lr=2e-3, warmup=40,
    eval_every=400, n_train=4000, n_val=128, n_test=128, seed=0,
    dim=32, depth=2, num_heads=2, mlp_hidden=64, low_rank=8, rank_multi=4,
)  # fmt: skip
RUNS = {
    "KEP-SVGP": dict(model="kep-svgp"),
    "PrimalFormer": dict(model="primalformer"),
    "Transformer": dict(model="transformer"),
}
results, seconds = {}, {}
for name, kw in RUNS.items():
    t0 = time.perf_counter()
    results[name] = train(TrainConfig(**COMMON, **kw), progress=False)
    seconds[name] = time.perf_counter() - t0
    print(f"{name:<13} validation accuracy {results[name].val_accuracy:.3f} (128 sequences)")
kep = results["KEP-SVGP"]
print("KEP-SVGP KL term at init and at the end:", [round(h["kl"]["layer 1"]) for h in kep.history])

# %% tags=["timing"]
for name, sec in seconds.items():
    print(f"{name:<13} {sec:5.1f} s")

# %% [markdown]
# ### Predictions on 1 000 held-out sequences
#
# The KEP-SVGP model is stochastic: each forward pass draws new noise. Below, its
# 10 passes are written out (what `primal_np.model.predict.predict_log_probs` does)
# and combined in the two ways `mc_log_probs` offers: the mean of the 10 softmax
# distributions (`train`'s default, the Monte-Carlo predictive distribution) and the
# softmax of the mean logits (the authors' `valid.py`). A third prediction uses the
# posterior mean (noise 0, `--mc-samples 0`). The other two models are deterministic.
#
# For the predicted distributions $p_b$ ($p_{bc}$ the probability of class $c$) of $B$
# test sequences $b$ with labels $c_b$, `primal_np.nn.metrics` computes (and `train`
# reports for every model)
#
# $$ \text{NLL} = -\frac1B\sum_b \log p_{b,c_b}, \qquad
#    \text{Brier} = \frac1B\sum_b\sum_c \big(p_{bc} - [c = c_b]\big)^2, \qquad
#    \text{ECE} = \sum_{k=1}^{15} \frac{|\mathcal B_k|}{B}\,\big|\text{acc}(\mathcal B_k)
#    - \text{conf}(\mathcal B_k)\big| , $$
#
# where bin $\mathcal B_k$ holds the sequences whose confidence $\max_c p_{bc}$ lies in
# $\big(\frac{k-1}{15}, \frac{k}{15}\big]$, and $\text{acc}(\mathcal B_k)$,
# $\text{conf}(\mathcal B_k)$ are their accuracy (the fraction whose most probable
# class is the label) and mean confidence (the authors' metrics code). Lower is better
# for all three.

# %%
test = make_task("listops", n=1000, seed=1000, **TASK)  # not a seed train used (0, 1, 2)
cfgs = {name: ModelConfig.from_dict(r.model_config) for name, r in results.items()}
gen = np.random.default_rng(0)
shape = noise_shape(cfgs["KEP-SVGP"].kep_config(), *test.ids.shape)  # (B, H, N, s, 1)
samples = []
for _ in range(10):  # 10 passes, each with its own draw for the KEP-SVGP layer (layer 1)
    noise = {1: gen.standard_normal(shape)}
    samples.append(model_forward(kep.params, test.ids, test.mask, cfgs["KEP-SVGP"], noise=noise)[0])
logit_samples = np.stack(samples)  # (10, B, classes)
log_probs = {
    "KEP-SVGP, 10 passes, mean probabilities": mc_log_probs(logit_samples, "probs"),
    "KEP-SVGP, 10 passes, mean logits": mc_log_probs(logit_samples, "logits"),
    "KEP-SVGP, posterior mean (noise 0)": log_softmax(
        model_forward(kep.params, test.ids, test.mask, cfgs["KEP-SVGP"])[0]
    ),
}
for name in ("PrimalFormer", "Transformer"):
    r = results[name]
    log_probs[name] = log_softmax(model_forward(r.params, test.ids, test.mask, cfgs[name])[0])
metrics = {name: calibration_metrics(lp, test.labels) for name, lp in log_probs.items()}
print(f"majority class: {np.bincount(test.labels).max() / len(test.labels):.3f} of the test set")
print(f"{'prediction':<38}{'accuracy':>9}{'mean conf.':>11}{'NLL':>8}{'ECE':>8}{'Brier':>8}")
for name, m in metrics.items():
    conf = np.exp(log_probs[name]).max(1).mean()
    print(f"{name:<38}{m.accuracy:9.3f}{conf:11.3f}{m.nll:8.3f}{m.ece:8.3f}{m.brier:8.3f}")
spread = np.exp(logit_samples - logit_samples.max(-1, keepdims=True))
spread /= spread.sum(-1, keepdims=True)
print(f"KEP-SVGP: largest std of a class probability over the 10 passes, mean over the test "
      f"sequences: {spread.std(0).max(-1).mean():.3f}")  # fmt: skip

# %% [markdown]
# ## Reliability diagrams
#
# Each bar is one of the 15 confidence bins: its height is the accuracy of the test
# predictions in the bin (the number at its foot counts them), the dotted diagonal is
# perfect calibration, and the red dots are the bins' mean confidence. Bars below the
# diagonal mean over-confidence.

# %%
shown = ["KEP-SVGP, 10 passes, mean probabilities", "PrimalFormer", "Transformer"]
fig, axes = plt.subplots(1, 3, figsize=(13, 4), sharey=True, constrained_layout=True)
for ax, name in zip(axes, shown, strict=True):
    rel = reliability_bins(np.exp(log_probs[name]), test.labels)
    seen = rel.counts > 0
    width = 1 / len(rel.counts)
    ax.bar(rel.edges[:-1][seen], rel.accuracy[seen], width=width, align="edge", alpha=0.7,
           edgecolor="k", label="accuracy in bin")  # fmt: skip
    ax.plot(rel.confidence[seen], rel.confidence[seen], "r.", label="mean confidence")
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    for e, c in zip(rel.edges[:-1][seen], rel.counts[seen], strict=True):
        ax.text(e + width / 2, 0.02, str(c), ha="center", fontsize=6, rotation=90)
    m = metrics[name]
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence max_c p_c",
           title=f"{name.split(',')[0]}: ECE {m.ece:.3f}, NLL {m.nll:.3f}")  # fmt: skip
axes[0].set_ylabel("accuracy")
axes[0].legend(loc="upper left", fontsize=8)
plt.show()

# %% [markdown]
# **What to see** (this run; the numbers are in the table above):
#
# * All three models learn (42–49% on 10 classes; the majority class is 13%); the
#   Transformer is ahead in accuracy, NLL and Brier score at this budget.
# * By ECE the ranking is Transformer (0.076) < KEP-SVGP (0.097) < PrimalFormer (0.118).
#   KEP-SVGP is better calibrated, and has the better NLL, than its kernel-SVD sibling
#   the PrimalFormer, but not better than the Transformer.
# * The diagrams say why: both KSVD models are **under-confident** — their bars stand
#   above the diagonal, and their mean confidence (0.34, 0.33) is well below their
#   accuracy (0.42, 0.44) — while the Transformer's mean confidence (0.46) is close to
#   its accuracy (0.49), over-confident in its low bins and under-confident in its high
#   ones.
# * Sampling at test time changes little here: per sequence, the largest standard
#   deviation of a class probability over the 10 passes is 0.03 on average, and
#   averaging probabilities or logits gives the same metrics to about 0.001. The
#   posterior mean (noise 0) is slightly *more* confident and, for an under-confident
#   model, slightly better calibrated (ECE 0.096). Averaging
#   samples lowers confidence, which corrects over-confidence — the situation of the
#   paper's large models trained to convergence — but not the under-confidence of these
#   small, briefly trained ones.
# * The KL term, with the authors' weight η_kl = 1, dominates the loss (about 5 950 at
#   initialisation, 490 after training, against a cross-entropy near 1.6).
#
# Caveats: one seed, 400 steps, 2-layer models of width 32 on ListOps — far from the
# paper's CIFAR and CoLA experiments. Run separately with seeds 1 and 2 (same settings),
# the ECE ranking Transformer < KEP-SVGP < PrimalFormer held in both (ECE 0.067 / 0.087
# / 0.121 and 0.105 / 0.130 / 0.135), the KSVD models were again under-confident, and
# the posterior mean again had a lower ECE than the 10-sample average (0.073 and 0.117).
# This comparison does not reproduce the calibration gain over the softmax Transformer
# that the paper reports on its benchmarks.
#
# ## Exercises
#
# Each exercise has a worked solution below it, folded away: try first, then open it.
# The solution cells run with the rest of the notebook (and in CI); none of them trains
# a model.
#
# **Exercise 1 (change a parameter and predict).** In the layer of section 2, lower every
# entry of `log_ssqrt` by 1, so that the diagonal of every $L_l$ shrinks by $e^{-1}$ while
# its strictly lower part stays. Predict what happens to (a) the posterior mean; (b) the
# variance of each of the $s$ channels $y_{ic}$ before the map $W_f$ — is there a channel
# whose variance is multiplied by exactly $e^{-2}$, and what bounds the factor of the
# others? (c) the variance of the output entries $o_i = W_f y_i + b_f$; (d) the KL term.
#
# <details>
# <summary>Solution</summary>
#
# (a) Unchanged: $M = V_1M_u$ does not involve the $L_l$.
#
# (b) $\operatorname{Var} y_{ic} = \sum_t A_i[c, t]^2$ with $A_i[c, t] = \sum_l v_{il}L_l[t, c]$,
# which is zero for $t < c$ ($L_l$ is lower triangular). The entry $t = c$ collects the
# diagonals, $\sum_l v_{il}e^{\texttt{log\_ssqrt}_{l,c}}$, and is multiplied by $e^{-1}$; the
# entries $t > c$ collect the strictly lower parts and do not change. The two sets are
# different noise components, so no cross term: $\operatorname{Var} y_{ic} = e^{-2}d_{ic} + o_{ic}$
# with $d, o \ge 0$, a factor between $e^{-2} \approx 0.135$ and 1. The last channel $c = s$
# has no entry $t > c$: its variance is multiplied by exactly $e^{-2}$ at every token.
#
# (c) $o_i = W_f y_i + b_f$ mixes the channels: noise component $t$ now carries the
# diagonal part of channel $t$ *and* the strictly lower parts of the channels $c < t$,
# weighted by $W_f$, and their cross terms can have either sign. So there is no bound
# below 1: the variance of some output entries can *rise* when the diagonal is lowered.
# Here 6 of the 40 entries rise, one by a factor 1.49.
#
# (d) The term $-\sum\texttt{log\_ssqrt}$ rises by $Hs^2 = 18$; the trace term
# $\tfrac12\sum\Lambda_l^2 L_l[t, c]^2$ loses $1 - e^{-2}$ of its diagonal part. With this
# initialisation the trace term is large (the KL is about 1 000), so the KL falls. It does
# not fall for ever: once the diagonal part of the trace term is spent, each further unit
# adds 18, and lowered by 10 the KL is back up from its minimum. The KL penalises a
# posterior variance that is too small as well as one that is too large.
#
# </details>


# %% tags=["hide-cell"] jupyter={"outputs_hidden": true, "source_hidden": true}
def moments(params):
    """Posterior mean (N, D), channel variances Var y_ic (H, N, s), output variances
    (N, D) and the KL term of the section-2 layer with `params` on the input x."""
    mean, c = kep_svgp_attention(x, params, cfg, noise=np.zeros(noise_shape(cfg, 1, 5)))
    L_ = cholesky_factor(params["log_ssqrt"], params["s_sqrt_low_triangle"])[0][0]
    A_ = np.einsum("hil,hltc->hict", c.v1[0], L_)
    W_ = params["final_weight.weight"]
    out_var = np.einsum("pc,hict,hipt->ihp", W_, A_, np.einsum("pd,hidt->hipt", W_, A_))
    return (
        mean[0],
        np.einsum("hict,hict->hic", A_, A_),
        out_var.reshape(5, -1),
        kep_svgp_losses(c)[0].kl,
    )


mean0, chan0, out0, kl0 = moments(P)
for delta in (1.0, 10.0):
    mean1, chan1, out1, kl1 = moments({**P, "log_ssqrt": P["log_ssqrt"] - delta})
    f = chan1 / chan0  # (H, N, s)
    print(f"log_ssqrt lowered by {delta:g}: mean changed by {np.abs(mean1 - mean0).max():.1e}; "
          f"e^(-2·{delta:g}) = {np.exp(-2 * delta):.3g}")  # fmt: skip
    for c_ in range(3):
        print(
            f"  channel c = {c_ + 1}: variance factor {f[..., c_].min():.3g} … {f[..., c_].max():.3g}"
        )
    g = out1 / out0
    print(f"  output entries: factor {g.min():.3g} … {g.max():.3g}, {np.sum(g > 1)} of {g.size} rose;"
          f" KL {kl0:.1f} → {kl1:.1f}")  # fmt: skip
print(
    f"check: analytic output variances of section 2 reproduced, rel_error {rel_error(out0, var):.0e}"
)

# %% [markdown]
# **Exercise 2 (predict).** A "classifier" that ignores its input and predicts, for every
# test sequence, the class frequencies of the test set. Predict its accuracy, ECE, NLL and
# Brier score on the 1 000 test sequences of section 3, and compare them with the table.
#
# <details>
# <summary>Solution</summary>
#
# Every prediction is the same distribution $f$: its confidence is $\max_c f_c$, and its
# most probable class is the majority class, which is right for exactly that fraction of
# the sequences. All predictions fall into one bin, whose accuracy equals its confidence:
# **ECE = 0**, better than every trained model. Accuracy $= \max_c f_c$ (the majority
# class, 0.132); NLL $= -\sum_c f_c\log f_c$, the entropy of the class frequencies (close to
# $\log 10 \approx 2.30$ for nearly balanced classes); Brier $= 1 - \sum_c f_c^2$ (close to
# 0.9). The trained models are far better by NLL and Brier, which reward confident *and*
# correct predictions. ECE measures calibration only: a useless predictor can be
# perfectly calibrated, so read it beside accuracy, NLL or Brier, never alone.
#
# </details>

# %% tags=["hide-cell"] jupyter={"outputs_hidden": true, "source_hidden": true}
freq = np.bincount(test.labels, minlength=10) / len(test.labels)
constant = np.log(np.tile(freq, (len(test.labels), 1)))  # the same log-probabilities for all
m0 = calibration_metrics(constant, test.labels)
print(f"class frequencies: {np.round(freq, 3)}")
print(f"accuracy {m0.accuracy:.3f} (max f = {freq.max():.3f}), ECE {m0.ece:.3f}, "
      f"NLL {m0.nll:.3f} (entropy {-np.sum(freq * np.log(freq)):.3f}), "
      f"Brier {m0.brier:.3f} (1 − Σf² = {1 - np.sum(freq**2):.3f})")  # fmt: skip

# %% [markdown]
# **Exercise 3 (compute by hand).** Five predictions over three classes:
#
# | sequence | $p_b$ | label $c_b$ |
# |---|---|---|
# | 1 | (0.70, 0.20, 0.10) | 1 |
# | 2 | (0.70, 0.10, 0.20) | 3 |
# | 3 | (0.45, 0.35, 0.20) | 1 |
# | 4 | (0.30, 0.45, 0.25) | 2 |
# | 5 | (0.95, 0.03, 0.02) | 1 |
#
# Compute by hand the accuracy, the mean confidence and the ECE with 15 bins, then check
# with `primal_np.nn.metrics`. Why is the ECE not $|\text{accuracy} - \text{mean confidence}|$?
#
# <details>
# <summary>Solution</summary>
#
# Confidences 0.70, 0.70, 0.45, 0.45, 0.95; predicted classes 1, 1, 1, 2, 1; correct:
# yes, no, yes, yes, yes. Accuracy 4/5 = 0.8, mean confidence 3.25/5 = 0.65. The bins of
# width 1/15: 0.70 lies in $(10/15, 11/15] = (0.667, 0.733]$, 0.45 in $(6/15, 7/15] =
# (0.4, 0.467]$, 0.95 in $(14/15, 1]$. Per bin:
#
# * $(0.667, 0.733]$: sequences 1, 2; accuracy 0.5, confidence 0.70 — over-confident by 0.2;
# * $(0.4, 0.467]$: sequences 3, 4; accuracy 1, confidence 0.45 — under-confident by 0.55;
# * $(0.933, 1]$: sequence 5; accuracy 1, confidence 0.95 — under-confident by 0.05.
#
# ECE $= \tfrac25\cdot 0.2 + \tfrac25\cdot 0.55 + \tfrac15\cdot 0.05 = 0.08 + 0.22 + 0.01 = 0.31$.
# The overall gap $|0.8 - 0.65| = 0.15$ is smaller because over- and under-confidence in
# different bins cancel in it; the ECE takes the absolute gap bin by bin, so they add.
#
# </details>

# %% tags=["hide-cell"] jupyter={"outputs_hidden": true, "source_hidden": true}
p3 = np.array([[0.70, 0.20, 0.10], [0.70, 0.10, 0.20], [0.45, 0.35, 0.20],
               [0.30, 0.45, 0.25], [0.95, 0.03, 0.02]])  # fmt: skip
labels3 = np.array([0, 2, 0, 1, 0])  # classes 1, 3, 1, 2, 1 counted from 0
rel3 = reliability_bins(p3, labels3)
for k in np.flatnonzero(rel3.counts):
    print(f"bin ({rel3.edges[k]:.3f}, {rel3.edges[k + 1]:.3f}]: {rel3.counts[k]} sequence(s), "
          f"accuracy {rel3.accuracy[k]:.2f}, confidence {rel3.confidence[k]:.2f}")  # fmt: skip
m3 = calibration_metrics(np.log(p3), labels3)
print(f"accuracy {m3.accuracy:.2f}, mean confidence {p3.max(1).mean():.2f}, "
      f"ECE {expected_calibration_error(p3, labels3):.4f} (by hand 0.31; "
      f"calibration_metrics: {m3.ece:.4f})")  # fmt: skip

# %% [markdown]
# **Exercise 4 (derive and check).** The KL term `kep_svgp_kl` claims to be
# $\sum_{h,c}\mathrm{KL}\big(q(u_c)\,\|\,p(u_c)\big)$ with $p(u_c) = \mathcal N(0, \Lambda^{-2})$,
# $\Lambda = \operatorname{diag}(e^{2\ell})$.
#
# 1. For $s = 1$ (one head) derive $\mathrm{KL}\big(\mathcal N(m, \sigma^2)\,\|\,\mathcal N(0, \Lambda^{-2})\big)$
#    with $\sigma = e^{\rho}$, $\rho$ = `log_ssqrt`, and check it against `kep_svgp_kl` in both
#    factor layouts (`"authors"`, `"per_output"`).
# 2. For $s = 2$, write the exact Gaussian KL with $S_c$ the covariance of channel $c$
#    and check `layout="per_output"` against it. In the authors' layout channel $c$'s
#    factor is the matrix $L_l[t, c]$ over $(l, t)$ (section 1): what is the rank of its
#    $S_c$, and what is then the exact KL?
#
# <details>
# <summary>Solution</summary>
#
# For Gaussians in $\mathbb R^s$,
# $\mathrm{KL}(\mathcal N(m, S)\,\|\,\mathcal N(0, \Pi)) = \tfrac12\big[\operatorname{tr}(\Pi^{-1}S) + m^\top\Pi^{-1}m - s + \log\det\Pi - \log\det S\big]$.
# With $\Pi = \Lambda^{-2}$, $\Pi^{-1} = \Lambda^2$ and $\log\det\Pi = -\sum_l 4\ell_l$.
#
# 1. $s = 1$: $\mathrm{KL} = \tfrac12\Lambda^2\sigma^2 + \tfrac12\Lambda^2m^2 - \tfrac12 - 2\ell - \rho$ with
#    $\Lambda = e^{2\ell}$ — term by term the code's
#    $\tfrac12\sum(\Lambda L)^2 + \tfrac12\sum\Lambda^2m_u^2 - \sum\texttt{log\_ssqrt} - 2s\sum\ell - \tfrac12s^2H$
#    at $s = H = 1$. With one channel and one noise component the two layouts are the same
#    matrix, so both agree.
# 2. `"per_output"`: $S_c = L_cL_c^\top$ with $L_c$ lower triangular, $\log\det S_c = 2\sum_l
#    \texttt{log\_ssqrt}_{c,l}$, and the trace and mean terms are those above: the code
#    equals the exact KL. In the authors' layout the columns $t < c$ of channel $c$'s factor
#    are zero, so $S_c$ has rank $s - c + 1$: for $c = 2$ it is singular, $\log\det S_2 =
#    -\infty$ and the exact KL is $+\infty$, while the code's $-\sum\texttt{log\_ssqrt}$ stays
#    finite (docs/conformance.md row 3). The trace and mean terms are still those of the
#    matrices the sample uses.
#
# </details>


# %% tags=["hide-cell"] jupyter={"outputs_hidden": true, "source_hidden": true}
def exact_kl(ell, m_u, S):
    """Σ_{h,c} KL(N(m_c, S[h, c]) ‖ N(0, Λ⁻²)), Λ = diag(exp(2ℓ)); ell (H, s), m_u (1, H, s, s)."""
    total = 0.0
    for h in range(ell.shape[0]):
        prec = np.exp(4 * ell[h])  # Λ², the prior precision
        for c in range(ell.shape[1]):
            m = m_u[0, h, :, c]
            sign, logdet = np.linalg.slogdet(S[h, c])
            if sign <= 0:
                return np.inf  # a singular covariance: the KL is infinite
            total += 0.5 * (np.sum(prec * np.diag(S[h, c])) + np.sum(prec * m * m) - len(m)
                            - np.sum(np.log(prec)) - logdet)  # fmt: skip
    return total


ell1, m1, rho1 = np.array([[0.3]]), np.array([[[[0.7]]]]), np.array([[[[-0.4]]]])
L1, _ = cholesky_factor(rho1, np.zeros((1, 1, 1, 1, 1)))
Lam1, sig1 = np.exp(2 * 0.3), np.exp(-0.4)
by_hand = 0.5 * Lam1**2 * sig1**2 + 0.5 * Lam1**2 * 0.7**2 - 0.5 - 2 * 0.3 - (-0.4)
for layout in ("authors", "per_output"):
    print(f"s = 1, {layout:<10}: kep_svgp_kl {kep_svgp_kl(ell1, m1, L1, rho1, layout=layout)[0]:.12f}, "
          f"by hand {by_hand:.12f}")  # fmt: skip

r4 = np.random.default_rng(4)
ell2, m2 = r4.uniform(0, 1, (1, 2)), r4.standard_normal((1, 1, 2, 2))
rho2, T2 = r4.standard_normal((1, 1, 2, 2)), r4.standard_normal((1, 1, 2, 2, 2))
L2, _ = cholesky_factor(rho2, T2)  # (1, H, s, s, s)
S_per = np.einsum("hcat,hcbt->hcab", L2[0], L2[0])  # per_output: S_c = L_c L_cᵀ
kl_per = kep_svgp_kl(ell2, m2, L2, rho2, layout="per_output")[0]
print(f"s = 2, per_output: kep_svgp_kl {kl_per:.6f}, exact {exact_kl(ell2, m2, S_per):.6f}, "
      f"rel_error {rel_error(np.array(kl_per), np.array(exact_kl(ell2, m2, S_per))):.0e}")  # fmt: skip
S_auth = np.einsum("hatc,hbtc->hcab", L2[0], L2[0])  # authors: channel c's factor L_l[t, c]
print(f"s = 2, authors: rank of S_c for c = 1, 2: {[int(np.linalg.matrix_rank(S_auth[0, c])) for c in range(2)]}; "
      f"exact KL {exact_kl(ell2, m2, S_auth)}, kep_svgp_kl {kep_svgp_kl(ell2, m2, L2, rho2)[0]:.6f}")  # fmt: skip
