"""Adapter spec of the primal projection scores E = Φ_q W_e, R = Φ_k W_r: ``check_primal_scores``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..compare import ATOL, DEFAULT_K
from ..scores import primal_scores, primal_scores_backward
from .core import OPS, AdapterReport, Arrays, OpSpec, check_callable, register_op

__all__ = ["ScoresPoint", "PRIMAL_SCORES_GRID", "check_primal_scores"]


@dataclass(frozen=True)
class ScoresPoint:
    """One grid point: phi_q ``(*batch, n, p)``, phi_k ``(*batch, m, p)``, W_e, W_r ``(*w_batch, p, s)``.

    ``w_batch`` None means ``batch`` (one W per leading index); a shorter tuple
    broadcasts (per-head weights (H, p, s) against features (B, H, N, p)), so the
    weights' gradients are summed over the broadcast axes. Features are rows of unit
    norm, as the cosine feature map gives.
    """

    batch: tuple[int, ...] = (2, 3)
    n: int = 5
    m: int = 7
    p: int = 4
    s: int = 2
    w_batch: tuple[int, ...] | None = None

    def __str__(self) -> str:
        s = f"batch={self.batch} N={self.n} M={self.m} p={self.p} s={self.s}"
        return s + (f" W batch={self.w_batch}" if self.w_batch is not None else "")


PRIMAL_SCORES_GRID = (
    ScoresPoint(),
    ScoresPoint(n=7, m=3),  # N > M
    ScoresPoint(s=1),
    ScoresPoint(s=4),  # s = p
    ScoresPoint(w_batch=(3,)),  # per-head weights shared by the batch
    ScoresPoint(w_batch=()),  # one W for every leading index
    ScoresPoint(batch=(), n=6, m=6, p=3, s=3),
    ScoresPoint(batch=(3,), n=1, m=9, p=5, s=2),
)


def _unit_rows(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def _draw_scores(pt: ScoresPoint, rng: np.random.Generator) -> tuple[Arrays, dict]:
    wb = pt.batch if pt.w_batch is None else pt.w_batch
    return {
        "phi_q": _unit_rows(rng.standard_normal((*pt.batch, pt.n, pt.p))),
        "phi_k": _unit_rows(rng.standard_normal((*pt.batch, pt.m, pt.p))),
        "W_e": rng.standard_normal((*wb, pt.p, pt.s)),
        "W_r": rng.standard_normal((*wb, pt.p, pt.s)),
    }, {}


def _scores_reference(t: Arrays, o: dict) -> tuple[Arrays, Callable[[Arrays], Arrays]]:
    (E, R), cache = primal_scores(t["phi_q"], t["phi_k"], t["W_e"], t["W_r"])

    def vjp(cot: Arrays) -> Arrays:
        grads = primal_scores_backward((cot["E"], cot["R"]), cache)
        return dict(zip(("phi_q", "phi_k", "W_e", "W_r"), grads, strict=True))

    return {"E": E, "R": R}, vjp


def _call_scores(fn: Callable, t: Arrays, o: dict) -> Arrays:
    E, R = fn(t["phi_q"], t["phi_k"], t["W_e"], t["W_r"])
    return {"E": E, "R": R}


def _call_scores_backward(bwd: Callable, t: Arrays, o: dict, cot: Arrays) -> Arrays:
    grads = bwd(t["phi_q"], t["phi_k"], t["W_e"], t["W_r"], cot["E"], cot["R"])
    return dict(zip(("phi_q", "phi_k", "W_e", "W_r"), grads, strict=True))


register_op(
    OpSpec(
        "primal_scores",
        PRIMAL_SCORES_GRID,
        _draw_scores,
        _call_scores,
        _call_scores_backward,
        _scores_reference,
    )
)


def check_primal_scores(
    fn: Callable,
    *,
    backward: Callable | None = None,
    grid: Sequence[ScoresPoint] | None = None,
    dtypes: Sequence[str] = ("float64", "float32"),
    k: float = DEFAULT_K,
    seed: int = 0,
    atol: float = ATOL,
) -> AdapterReport:
    """Check the primal projection scores against ``primal_scores`` (docs/theory.md §2.6).

    ``fn(phi_q, phi_k, W_e, W_r) -> (E, R)``: phi_q (..., N, p), phi_k (..., M, p),
    W_e, W_r (..., p, s), leading axes broadcast (NumPy rules) → E = phi_q @ W_e
    (..., N, s), R = phi_k @ W_r (..., M, s).
    ``backward(phi_q, phi_k, W_e, W_r, dE, dR) -> (dphi_q, dphi_k, dW_e, dW_r)``,
    optional: gradients of Σ⟨dE, E⟩ + Σ⟨dR, R⟩, each of its input's shape (summed over
    broadcast axes). Reported as ``output.E``, ``output.R``, ``grad.phi_q``, ...
    Default grid: ``PRIMAL_SCORES_GRID`` (batch and head axes, none, N ≠ M both ways,
    N = 1, s = 1, s = p, weights broadcast over the batch). See ``check_callable`` for
    the other arguments.
    """
    return check_callable(
        OPS["primal_scores"], fn, backward=backward, grid=grid, dtypes=dtypes, k=k, seed=seed,
        atol=atol,
    )  # fmt: skip
