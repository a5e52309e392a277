"""Spectrum analysis of attention matrices (docs/theory.md §6).

For each attention layer of a model, the normalised cumulative singular values
cumsum(σ)/sum(σ) of its N×N attention matrices, averaged over inputs and heads — the
paper's measure of how sharply the spectrum decays (a curve that reaches 1 sooner
means a lower effective rank).

Which matrix (labelled in every result):

* canonical layers: the softmax attention matrix P = softmax(QKᵀ/√p) (the dual-form
  kernel);
* primal layers, ``primal_kernel="implied"`` (default): the kernel the layer implies
  between tokens, E = Φ_q W_{e|X} = Φ_q Fᵀ W_e, i.e. Φ_q Fᵀ F Φ_kᵀ — the paper does not
  say which matrix it used, so the label says ours; ``"cosine"``: the plain cosine
  kernel Φ_q Φ_kᵀ;
* KEP-SVGP layers are left out (their output is a posterior sample, not the product of
  an attention matrix with values).

Each sequence contributes its real tokens only (padded rows and columns removed);
curves are truncated to the shortest sequence in the batch before averaging.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .config import ModelConfig
from .encoder import model_forward

__all__ = ["SpectrumResult", "normalized_cumulative_singular_values", "attention_spectrum"]

LABELS = {
    "canonical": "canonical softmax attention P = softmax(QKᵀ/√p)",
    "implied": "primal implied kernel Φ_q Fᵀ F Φ_kᵀ",
    "cosine": "primal cosine kernel Φ_q Φ_kᵀ",
}


class SpectrumResult(NamedTuple):
    layer: int
    kind: str  # "canonical" or "primal"
    label: str  # which matrix
    curve: np.ndarray  # (K,) mean normalised cumulative singular values, K = min real length
    std: np.ndarray  # (K,) standard deviation over the matrices
    n_matrices: int


def normalized_cumulative_singular_values(matrices: np.ndarray) -> np.ndarray:
    """cumsum(σ)/sum(σ) per matrix: (..., N, M) → (..., min(N, M)); a zero matrix gives 0."""
    sv = np.linalg.svd(np.asarray(matrices), compute_uv=False)
    total = sv.sum(axis=-1, keepdims=True)
    return np.divide(np.cumsum(sv, axis=-1), total, out=np.zeros_like(sv), where=total > 0)


def attention_spectrum(
    params: dict[str, np.ndarray],
    cfg: ModelConfig,
    ids: np.ndarray,
    mask: np.ndarray,
    *,
    primal_kernel: str = "implied",
) -> list[SpectrumResult]:
    """One ``SpectrumResult`` per canonical or primal layer for the batch (ids, mask)."""
    if primal_kernel not in ("implied", "cosine"):
        raise ValueError(f"primal_kernel must be 'implied' or 'cosine', got {primal_kernel!r}")
    _, cache = model_forward(params, ids, mask, cfg)
    lengths = np.asarray(mask).sum(axis=1)
    k_min = int(lengths.min())
    results = []
    for i, lc in enumerate(cache.layers):
        if lc.kind == "kep":
            continue
        if lc.kind == "canonical":
            mats = lc.attn.attn.attn  # (B, H, N, N)
            label = LABELS["canonical"]
        else:
            phi_q, phi_k = lc.attn.phi_q, lc.attn.phi_k  # (B, H, N, p)
            if primal_kernel == "implied" and lc.attn.F is not None:
                G = np.swapaxes(lc.attn.F, -1, -2) @ lc.attn.F  # Fᵀ F: (B, H, p, p)
                mats = phi_q @ G @ np.swapaxes(phi_k, -1, -2)
                label = LABELS["implied"]
            else:
                mats = phi_q @ np.swapaxes(phi_k, -1, -2)
                label = LABELS["cosine"]
        curves = [
            normalized_cumulative_singular_values(mats[b, :, : lengths[b], : lengths[b]])[:, :k_min]
            for b in range(mats.shape[0])
        ]
        stacked = np.concatenate(curves, axis=0)  # (B·H, k_min)
        results.append(
            SpectrumResult(i, lc.kind, label, stacked.mean(0), stacked.std(0), stacked.shape[0])
        )
    return results
