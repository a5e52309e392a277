"""Spectra of a trained model's attention matrices on a held-out batch (claim 5).

For every layer and every matrix below, the normalised cumulative singular values
c(k) = Σ_{l≤k} σ_l / Σ_l σ_l of each (sequence, head) matrix, restricted to the sequence's
real tokens and truncated to the shortest sequence of the batch (K tokens):

* ``"canonical"`` — canonical layers: the softmax attention matrix P = softmax(QKᵀ/√p);
* ``"implied"`` — primal layers: the kernel the layer implies between tokens,
  Φ_q Fᵀ F Φ_kᵀ (E = Φ_q W_{e|X} = Φ_q Fᵀ W_e);
* ``"cosine"`` — primal layers: the cosine kernel Φ_q Φ_kᵀ;
* ``"scores"`` — primal layers: E Rᵀ, the product of the e- and r-scores (rank ≤ s).

Summaries of a curve: ``c1`` = c(1), ``c4`` = c(4), ``auc`` = mean of c(k) over k = 1..K
(1 for a rank-one matrix, (K + 1)/(2K) for a flat spectrum; larger = sharper decay) and
``k90`` = the smallest k with c(k) ≥ 0.9.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..model.config import ModelConfig
from ..model.encoder import model_forward
from ..model.spectrum import normalized_cumulative_singular_values
from ..tasks import make_task

__all__ = ["MATRIX_LABELS", "probe_batch", "layer_curves", "curve_summary", "pool"]

MATRIX_LABELS = {
    "canonical": "softmax attention P",
    "implied": "primal implied kernel Φ_q Fᵀ F Φ_kᵀ",
    "cosine": "primal cosine kernel Φ_q Φ_kᵀ",
    "scores": "primal scores E Rᵀ (rank ≤ s)",
}


def probe_batch(task: str, task_params: dict, *, n: int, seed: int, min_len: int):
    """The first ``n`` sequences with at least ``min_len`` real tokens among 50·n drawn
    from ``seed`` (a seed no training, validation or test split uses); read-only arrays."""
    return _probe_batch(task, tuple(sorted(task_params.items())), n, seed, min_len)


@lru_cache(maxsize=8)
def _probe_batch(task: str, params: tuple, n: int, seed: int, min_len: int):
    data = make_task(task, n=50 * n, seed=seed, **dict(params))
    keep = np.flatnonzero(data.mask.sum(axis=1) >= min_len)[:n]
    if keep.size < n:
        raise ValueError(f"only {keep.size} of {50 * n} sequences have >= {min_len} tokens")
    ids, mask = data.ids[keep], data.mask[keep]
    ids.flags.writeable = mask.flags.writeable = False  # shared between calls
    return ids, mask


def _matrices(layer_cache, kind: str) -> dict[str, np.ndarray]:
    """The (B, H, N, N) matrices of one layer's forward cache."""
    a = layer_cache.attn
    if kind == "canonical":
        return {"canonical": a.attn.attn}
    T = lambda t: np.swapaxes(t, -1, -2)  # noqa: E731
    out = {"cosine": a.phi_q @ T(a.phi_k), "scores": a.escore @ T(a.rscore)}
    if a.F is not None:  # data-dependent weights
        out["implied"] = a.phi_q @ (T(a.F) @ a.F) @ T(a.phi_k)
    return out


def layer_curves(params: dict, cfg: ModelConfig, ids: np.ndarray, mask: np.ndarray) -> list:
    """Per layer: {matrix name: (B·H, K) curves}."""
    _, cache = model_forward(params, ids, mask, cfg)
    lengths = mask.sum(axis=1)
    K = int(lengths.min())
    out = []
    for lc in cache.layers:
        per = {}
        for name, mats in _matrices(lc, lc.kind).items():
            curves = [
                normalized_cumulative_singular_values(mats[b, :, :L, :L])[:, :K]
                for b, L in enumerate(lengths)
            ]
            per[name] = np.concatenate(curves, axis=0)
        out.append(per)
    return out


def curve_summary(curve: np.ndarray) -> dict:
    """c1, c4, auc and k90 of one mean curve (module docstring)."""
    c = np.asarray(curve)
    return {
        "c1": float(c[0]),
        "c4": float(c[min(3, c.size - 1)]),
        "auc": float(c.mean()),
        "k90": int(np.searchsorted(c, 0.9) + 1),
    }


def summarise(curves: np.ndarray) -> dict:
    """Mean and standard deviation (ddof 0) of (M, K) curves, their count, the mean curve's
    summary and the per-matrix AUC's mean."""
    mean = curves.mean(axis=0)
    return {
        "mean": mean.tolist(),
        "std": curves.std(axis=0).tolist(),
        "n": int(curves.shape[0]),
        **curve_summary(mean),
    }


def pool(parts: list[dict]) -> dict:
    """Mean ± std over the union of the matrices of several ``summarise`` results (seeds)."""
    n = np.array([p["n"] for p in parts], dtype=np.float64)
    K = min(len(p["mean"]) for p in parts)
    m = np.array([p["mean"][:K] for p in parts])
    s = np.array([p["std"][:K] for p in parts])
    mean = (n[:, None] * m).sum(0) / n.sum()
    var = (n[:, None] * (s**2 + m**2)).sum(0) / n.sum() - mean**2
    return {"mean": mean, "std": np.sqrt(np.maximum(var, 0.0)), "n": int(n.sum())}
