"""One KEP-SVGP layer with its KL term and KSVD loss as a single objective, with its gradient.

    objective = Σ ⟨cotangent, y⟩ + η_kl · kl + η · ksvd_loss

the quantity the golden cases ``kep_svgp_attention*`` store gradients of; it also shows the
wiring training needs (forward → losses → losses backward → layer backward).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .._checks import real_number, upstream
from .layer import kep_svgp_attention, kep_svgp_attention_backward
from .loss import kep_svgp_losses, kep_svgp_losses_backward
from .params import KEPSVGPConfig

__all__ = ["KEPSVGPObjective", "kep_svgp_objective"]


class KEPSVGPObjective(NamedTuple):
    out: np.ndarray  # (B, N, D)
    escore: np.ndarray  # (B, H, N, s)
    rscore: np.ndarray
    kl: float
    ksvd_loss: float
    value: float  # Σ⟨cotangent, out⟩ + η_kl·kl + η·ksvd_loss
    dx: np.ndarray
    grads: dict  # by the authors' state-dict names


def kep_svgp_objective(
    x: np.ndarray,
    params: dict[str, np.ndarray],
    config: KEPSVGPConfig,
    *,
    noise: np.ndarray,
    cotangent: np.ndarray,
    eta: float,
    eta_kl: float,
    mask: np.ndarray | None = None,
) -> KEPSVGPObjective:
    """Forward and complete backward of Σ⟨cotangent, y⟩ + η_kl·kl + η·ksvd for one layer."""
    eta = real_number(eta, "eta", minimum=0.0)
    eta_kl = real_number(eta_kl, "eta_kl", minimum=0.0)
    y, cache = kep_svgp_attention(x, params, config, noise=noise, mask=mask)
    losses, lcache = kep_svgp_losses(cache)
    cot = upstream(cotangent, "cotangent", y.shape, y.dtype)
    lg = kep_svgp_losses_backward((eta_kl, eta), lcache)
    g = kep_svgp_attention_backward(cot, cache, loss_grads=lg)
    value = float(np.sum(np.asarray(cotangent) * y)) + eta_kl * losses.kl + eta * losses.ksvd_loss
    return KEPSVGPObjective(
        y, cache.escore.copy(), cache.rscore.copy(), losses.kl, losses.ksvd_loss, value, g.x,
        g.params,
    )  # fmt: skip
