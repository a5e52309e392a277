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
# # 6. Reproducing the paper's claims in miniature
#
# [Open in Colab](https://colab.research.google.com/github/primal-np/primal_np/blob/main/notebooks/06_reproducing_the_paper.ipynb)
# (the setup cell below installs primal_np there; see the [notebooks' README](README.md)).
#
# `python -m primal_np reproduce CLAIM` puts five claims of the Primal-Attention paper to
# the test on CPU, in minutes, with several seeds: accuracy parity (Table 2), efficiency
# as the sequence grows (Table 3), the r-scores ablation, the KSVD loss and the
# data-dependent weights, and the sharper singular-value decay (Figure 1). Each claim
# writes one JSON record (every run's configuration and result, 95 % intervals over
# seeds, a verdict and its reason) and one figure.
#
# This notebook does **not** train anything: it reads the committed records in
# `docs/reproduction/` and draws them, so it runs in seconds. (On a hosted service,
# where the repository's files are not there, it makes its own records with `--quick`:
# tiny settings that show the mechanics, not evidence.) To produce the records yourself,
# 1–8 minutes per claim on 2 cores (the committed records took 51–489 s each):
#
# ```bash
# python -m primal_np reproduce all --out docs/reproduction      # or 1, 2, ..., 5
# python -m primal_np reproduce all --quick --out /tmp/r         # under a minute per claim
# python -m primal_np reproduce accuracy --rerun accuracy/listops/transformer/seed0 \
#        --out docs/reproduction                                 # one row, bit for bit
# ```
#
# [docs/reproduction.md](../docs/reproduction.md) discusses every result; here are the
# numbers and figures straight from the records, and at the end exercises on reading
# them. Notation: [docs/theory.md §0](../docs/theory.md#0-notation) (N tokens, P the
# canonical attention matrix, s the rank, η the KSVD-loss weight).

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
import re
import tempfile
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before NumPy loads BLAS (README)
import matplotlib.pyplot as plt
import numpy as np

from primal_np.cli import main
from primal_np.model.spectrum import normalized_cumulative_singular_values
from primal_np.reproduce import t_interval
from primal_np.reproduce.plots import draw
from primal_np.reproduce.probe import curve_summary
from primal_np.reproduce.report import fmt_interval
from primal_np.reproduce.verdicts import direction

# %matplotlib inline
plt.rcParams["figure.dpi"] = 80  # the inline backend shows each returned Figure

NAMES = ("selection", "accuracy", "efficiency", "rscores", "ksvd", "spectrum")
RESULTS, SUFFIX = Path("..") / "docs" / "reproduction", ""
if not (RESULTS / "spectrum.json").exists():  # no clone here: make quick records instead
    RESULTS, SUFFIX = Path(tempfile.mkdtemp()), ".quick"
    print("No committed records: running every claim with --quick (not evidence).")
    for what in ("selection", "all"):
        main(["reproduce", what, "--quick", "--jobs", "1", "--out", str(RESULTS)])
records = {n: json.loads((RESULTS / f"{n}{SUFFIX}.json").read_text()) for n in NAMES}
for name, rec in records.items():
    print(f"{name:<11} {len(rec['rows']):>3} rows, seeds {rec['seeds']}, "
          f"{rec['seconds']:5.0f} s wall, {rec['cpu_seconds']:5.0f} s CPU, "
          f"load {rec['loadavg']['start'][0]:.1f}")  # fmt: skip


def show(rec: dict) -> None:
    """The paper's statement, our verdict and its reason."""
    print(f"paper ({rec['paper']['source']}):\n  {rec['paper']['quote']}\n")
    print(f"verdict: {rec['verdict'].upper()}")
    for part in re.split(r"; (?![^(]*\))", rec["reason"]):  # not at a "; " inside (...)
        print(f"  - {part}")


# %% [markdown]
# ## How the set-ups were chosen
#
# Before any claim was run, the learning rate of each (task, model) was chosen from
# {1, 2, 4, 8}·10⁻³ by the mean **validation** accuracy on two selection seeds (1000,
# 1001) that no evaluation run uses; those runs had a one-example test split, so no test
# number existed to be read. (8·10⁻³ was added when the first grid's best rates sat at
# its upper edge; PrimalFormer's best is still there.) The verdict rules
# (`primal_np/reproduce/verdicts.py`) were also fixed before the runs.

# %%
sel = records["selection"]["summary"]
for task, models in sel["validation_accuracy"].items():
    for model, per_lr in models.items():
        cells = "  ".join(f"lr {lr}: {iv['mean'] * 100:5.1f}" for lr, iv in per_lr.items())
        print(f"{task:<10}{model:<14}{cells}   → {sel['chosen'][task][model]:g}")
draw(records["selection"])

# %% [markdown]
# ## Claim 1: accuracy parity (Table 2)
#
# Three 2-layer models (D = 64, 2 heads, the authors' LRA ListOps shape) trained for the
# same 800 steps on generated ListOps and on associative recall ("retrieval"); test
# accuracy, mean [95 % interval] over the seeds.

# %%
rec = records["accuracy"]
for task, models in rec["summary"]["accuracy"].items():
    chance = rec["summary"]["chance"][task] * 100
    print(f"{task} (majority class {chance:.1f} %):")
    for model, iv in models.items():
        print(f"  {model:<14}{fmt_interval(iv)}")
show(rec)
draw(rec)

# %% [markdown]
# ## Claim 2: efficiency as N grows (Table 3)
#
# Seconds per training step (forward, backward, AdamW) and peak memory of one step, B = 1,
# float64, one BLAS thread, the three models measured in interleaved rounds.

# %%
rec = records["efficiency"]
s = rec["summary"]
for model in ("primalformer", "primal+trans"):
    print(model)
    for n, iv in s["speed_ratio"][model].items():
        print(f"  N={n:>5}: {iv['mean']:5.2f}× faster by wall clock "
              f"({s['speed_ratio_cpu'][model][n]['mean']:5.2f}× by CPU time), "
              f"{s['memory_ratio'][model][n]:5.1f}× less memory")  # fmt: skip
show(rec)
draw(rec)

# %% [markdown]
# ## Claim 3: the r-scores matter

# %%
rec = records["rscores"]
for variant, tasks in rec["summary"]["accuracy"].items():
    print(f"{variant:<18}" + "  ".join(f"{t} {fmt_interval(iv)}" for t, iv in tasks.items()))
show(rec)
draw(rec)

# %% [markdown]
# ## Claim 4: the KSVD loss and data-dependent weights

# %%
rec = records["ksvd"]
for variant, tasks in rec["summary"]["accuracy"].items():
    print(f"{variant:<18}" + "  ".join(f"{t} {fmt_interval(iv)}" for t, iv in tasks.items()))
show(rec)
draw(rec)

# %% [markdown]
# ## Claim 5: sharper singular-value decay (Figure 1), and why the KSVD loss does not matter
#
# Normalised cumulative singular values c(k) of each layer's attention matrix on 64
# held-out ListOps sequences (K = 20 tokens), for the Transformer's softmax matrix P and
# three matrices of the primal layer (the paper does not say which one it analysed). The
# right panel is the investigation: the sharpness (AUC of c) of the last layer as η, the
# training length and the depth change.

# %%
rec = records["spectrum"]
s = rec["summary"]
print(f"{'variant':<22}{'layer':>6}{'matrix':>11}{'AUC (trained)':>22}{'AUC at init':>13}")
for row in s["investigation"]:
    print(f"{row['variant']:<22}{row['layer']:>6}{row['matrix']:>11}"
          f"{fmt_interval(row['auc'], 1.0, 3):>22}{row['auc_init']:>13.3f}")  # fmt: skip
print()
for c in s["comparisons"].values():
    print(f"{c['what']}: {c['reason']} → {c['verdict']}")
show(rec)
draw(rec)

# %% [markdown]
# Why η does not matter here: the KSVD loss is the *square* of one scalar per layer,
# $(\operatorname{mean}_{b,h} j_{bh})^2$, whose gradient $2\eta J \nabla J$ vanishes once
# $J \approx 0$ — which training reaches within a few dozen steps by small changes of
# λ, $W_e$, $W_r$. The ratio of the KSVD gradient to the task gradient, per parameter
# group, at initialisation and at the end of training:

# %%
for v in ("pf-eta0.1", "pf-eta10"):
    for seed, run in s["runs"][v].items():
        share = run["ksvd_gradient_share"]
        init = ", ".join(f"{g} {x:.3f}" for g, x in share["init"].items())
        end = ", ".join(f"{g} {x:.4f}" for g, x in share["trained"].items())
        print(f"{v} seed {seed}:\n  at init  {init}\n  trained  {end}")

# %% [markdown]
# ## Exercises
#
# Each exercise has a worked solution below it, folded away: try first, then open it.
# The solution cells run with the rest of the notebook (and in CI); none trains a model.
#
# **Exercise 1 (change a parameter and predict).** Claim 1 on ListOps: PrimalFormer −
# Transformer is −1.9 points with the interval [−3.9, +0.1] over 5 seeds, so parity
# within 3 points is *inconclusive*. How wide would the interval be with 20 seeds, if
# the mean and the seeds' standard deviation stayed as they are? Would the verdict change?
#
# <details>
# <summary>Solution</summary>
#
# The half-width is $t_{0.975,\,n-1}\,\mathrm{sd}/\sqrt n$: with $n = 5$,
# $t = 2.776$; with $n = 20$, $t = 2.093$. The ratio of the widths is
# $(2.093/\sqrt{20}) / (2.776/\sqrt 5) = 0.377$: about 0.8 points on each side instead
# of 2.0, so the interval would be about [−2.6, −1.1], entirely above −3: *reproduced*
# by the parity rule — and also entirely below 0, which the 5-seed interval is not.
# Parity within 3 points would be shown, and so would a real gap of about 2 points. More
# seeds buy resolution, not a different mean.
#
# </details>

# %% tags=["hide-cell"] jupyter={"outputs_hidden": true, "source_hidden": true}
from scipy.stats import t as student_t  # noqa: E402

acc = records["accuracy"]["summary"]["accuracy"]["listops"]
d = [acc["primalformer"]["values"][k] - acc["transformer"]["values"][k]
     for k in acc["transformer"]["values"]]  # fmt: skip
iv = t_interval(d)
for n in (len(d), 20):
    half = student_t.ppf(0.975, n - 1) * iv.sd / math.sqrt(n)
    print(f"{n:>2} seeds: {iv.mean * 100:+.1f} ± {half * 100:.1f} points "
          f"→ [{(iv.mean - half) * 100:+.1f}, {(iv.mean + half) * 100:+.1f}]")  # fmt: skip

# %% [markdown]
# **Exercise 2 (compute).** Derive claim 3's verdict for PrimalFormer yourself from the
# record's rows: the per-seed drop (with − without r-scores) averaged over the two tasks,
# its 95 % interval, and the direction rule with the paper's drop of 11.9 points.
#
# <details>
# <summary>Solution</summary>
#
# Rows are named `rscores/<task>/<variant>/seed<k>`; pair them by seed, average the two
# tasks' differences per seed, and take the t-interval of the 5 means: +3.3 points
# [−1.2, +7.7]. The interval contains 0, so no drop is shown, and its upper end is below
# 11.9, so the paper's effect is excluded: *not reproduced*, as the record says. Most of
# the +3.3 comes from the recall task (+6.2 against +0.4 on ListOps), where the seeds
# spread widely.
#
# </details>

# %% tags=["hide-cell"] jupyter={"outputs_hidden": true, "source_hidden": true}
acc = {}
for row in records["rscores"]["rows"]:
    _, task, variant, seed = row["id"].split("/")
    acc[(task, variant, seed)] = row["result"]["accuracy"]
seeds = sorted({k[2] for k in acc})
drop = [np.mean([acc[(t, "primalformer", k)] - acc[(t, "primalformer-no-r", k)]
                 for t in ("listops", "retrieval")]) for k in seeds]  # fmt: skip
iv = t_interval(drop)
print(direction(iv, 0.119))
print(
    "the record:",
    records["rscores"]["summary"]["drop"]["primalformer"]["mean_over_tasks"]["verdict"],
)

# %% [markdown]
# **Exercise 3 (derive and check).** The score product $ER^\top$ of a primal layer has
# rank at most $s = 8$. Show that every matrix of rank at most $r$ has an AUC of its
# normalised cumulative singular values, over $K$ singular values, of at least
# $\big((r+1)/2 + K - r\big)/K$, with equality for $r$ equal nonzero singular values.
# What is the bound for $r = 8$, $K = 20$, and how does it compare with the AUC of the
# Transformer's softmax matrix $P$ in the records?
#
# <details>
# <summary>Solution</summary>
#
# With $\sigma_1 \ge \dots \ge \sigma_r > 0$, the $k$ largest values hold at least
# the fraction $k/r$ of the sum, so $c(k) \ge k/r$ for $k \le r$, and $c(k) = 1$ for
# $k \ge r$. Averaging over $k = 1..K$:
# $\mathrm{AUC} \ge \big(\sum_{k=1}^{r} k/r + (K - r)\big)/K = \big((r+1)/2 + K - r\big)/K$,
# with equality when all $\sigma_l$ are equal. For $r = 8$, $K = 20$ the bound is
# $(4.5 + 12)/20 = 0.825$. The trained Transformer's $P$ reaches about 0.90–0.92 in the
# last layer (0.896–0.922 over the seeds), so $ER^\top$ starts close to it by
# construction: at initialisation it is already at about 0.92. A sharper decay of
# $ER^\top$ is therefore mostly the rank bound, which is why the investigation compares
# the implied kernel, whose rank bound ($\min(p, n) = 32 > K$) does not act.
#
# </details>

# %% tags=["hide-cell"] jupyter={"outputs_hidden": true, "source_hidden": true}
K, r = 20, 8
bound = ((r + 1) / 2 + K - r) / K
flat_rank_r = np.diag([1.0] * r + [0.0] * (K - r))
print(
    f"bound {bound:.4f}; equal singular values: "
    f"{curve_summary(normalized_cumulative_singular_values(flat_rank_r))['auc']:.4f}"
)
rng = np.random.default_rng(0)
low_rank = rng.standard_normal((K, r)) @ rng.standard_normal((r, K))
print(
    f"a random rank-{r} matrix: "
    f"{curve_summary(normalized_cumulative_singular_values(low_rank))['auc']:.4f}"
)
auc = records["spectrum"]["summary"]["auc"]
er = auc["pf-eta0.1"]["1"]["scores"]["values"].values()
p_auc = auc["transformer"]["1"]["canonical"]["values"].values()
print(f"records, last layer: E Rᵀ {min(er):.3f}–{max(er):.3f}, P {min(p_auc):.3f}–{max(p_auc):.3f}")
