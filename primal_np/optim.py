"""Functional optimisers on dicts of arrays: Adam / AdamW, LR schedules, gradient clipping.

Nothing is updated in place: every function returns new dicts of new arrays and
never writes into the caller's parameters, gradients or state.

Adam and AdamW (``torch.optim.Adam`` / ``torch.optim.AdamW``, amsgrad off), step t ≥ 1:

    g ← g + λ p                       (Adam, L2 penalty: weight_decay = λ > 0, not decoupled)
    p ← p (1 − η λ)                   (AdamW: decoupled=True)
    m ← β₁ m + (1 − β₁) g,            v ← β₂ v + (1 − β₂) g²
    p ← p − (η / (1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + ε)

The state is one flat dict — ``{"step": t, "m/<name>": m, "v/<name>": v}`` (torch's
``exp_avg`` and ``exp_avg_sq``) — of NumPy arrays and an integer, so
``np.savez(path, **state)`` saves it and ``dict(np.load(path))`` restores it.

Schedules follow the HuggingFace ``get_linear_schedule_with_warmup`` /
``get_cosine_schedule_with_warmup`` (half a cosine) convention: ``step`` counts
the updates already taken, so the first update (step 0) of a warm-up has lr 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from ._checks import positive_int

__all__ = [
    "adam_init",
    "adam_step",
    "warmup_linear",
    "warmup_cosine",
    "clip_grad_norm",
]


def _float_param(value: object, name: str, lo: float, hi: float = math.inf) -> float:
    """A Python float in [lo, hi), else a ValueError naming the argument."""
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {value!r}") from None
    if not lo <= x < hi:
        raise ValueError(f"{name} must lie in [{lo}, {hi}), got {value!r}")
    return x


def _same_names(grads: Mapping[str, object], params: Mapping[str, object]) -> None:
    missing = sorted(set(params) - set(grads))
    extra = sorted(set(grads) - set(params))
    if missing or extra:
        raise KeyError(
            f"grads must have exactly the parameter names; missing {missing}, unexpected {extra}"
        )


# --------------------------------------------------------------------------- Adam / AdamW
def adam_init(params: Mapping[str, np.ndarray]) -> dict[str, object]:
    """Zero Adam state for ``params``: ``{"step": 0, "m/<name>": 0, "v/<name>": 0}``.

    The moment arrays take each parameter's shape and dtype.
    """
    state: dict[str, object] = {"step": 0}
    for name, p in params.items():
        p = np.asarray(p)
        if p.dtype.kind != "f":
            raise TypeError(f"parameter {name!r} must be floating-point, got dtype {p.dtype}")
        state[f"m/{name}"] = np.zeros_like(p)
        state[f"v/{name}"] = np.zeros_like(p)
    return state


def adam_step(
    params: Mapping[str, np.ndarray],
    grads: Mapping[str, np.ndarray],
    state: Mapping[str, object],
    *,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    decoupled: bool = False,
) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    """One Adam (``decoupled=False``) or AdamW (``decoupled=True``) update.

    Args:
        params, grads: arrays by name; every parameter needs a gradient of its shape
            (the gradient is computed in the parameter's dtype).
        state: from ``adam_init`` or a previous ``adam_step`` (or reloaded from .npz).
        lr: η ≥ 0. betas: (β₁, β₂), each in [0, 1). eps: ε ≥ 0, added to √v̂.
        weight_decay: λ ≥ 0; an L2 term λp added to g (Adam) or p ← p(1 − ηλ) (AdamW).

    Returns (new_params, new_state); the update is the module docstring's, with
    t = state["step"] + 1. Each parameter keeps its dtype and shape (0-d included), and
    so do its moments: they are computed in the parameter's dtype, and moments of
    another float dtype (a state saved for float64 parameters) are cast to it, as
    ``torch.optim.Optimizer.load_state_dict`` does.
    """
    lr = _float_param(lr, "lr", 0.0)
    if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
        raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    b1 = _float_param(betas[0], "betas[0]", 0.0, 1.0)
    b2 = _float_param(betas[1], "betas[1]", 0.0, 1.0)
    eps = _float_param(eps, "eps", 0.0)
    wd = _float_param(weight_decay, "weight_decay", 0.0)
    _same_names(grads, params)
    step = np.asarray(state.get("step", None))
    if step.dtype.kind not in "iu" or step.shape != () or step < 0:
        raise ValueError(f"state['step'] must be a non-negative integer, got {state.get('step')!r}")
    t = int(step) + 1
    bc1 = 1.0 - b1**t
    bc2_sqrt = math.sqrt(1.0 - b2**t)

    new_params: dict[str, np.ndarray] = {}
    new_state: dict[str, object] = {"step": t}
    for name, p in params.items():
        p = np.asarray(p)
        g = np.asarray(grads[name])
        if g.shape != p.shape:
            raise ValueError(
                f"gradient for {name!r} has shape {g.shape}, expected the parameter's {p.shape}"
            )
        if f"m/{name}" not in state or f"v/{name}" not in state:
            raise KeyError(f"state has no moments for parameter {name!r}; build it with adam_init")
        m, v = np.asarray(state[f"m/{name}"]), np.asarray(state[f"v/{name}"])
        for key, moment in (("m", m), ("v", v)):
            if moment.shape != p.shape:
                raise ValueError(
                    f"state[{key + '/' + name!r}] has shape {moment.shape}, "
                    f"expected the parameter's {p.shape}"
                )
        # Everything in the parameter's dtype: the gradient and the moments are cast to it
        # (as torch's Optimizer.load_state_dict casts the state) and every coefficient is a
        # scalar of that dtype, so a float32 parameter, 0-d included, stays float32 whatever
        # the promotion rules (NumPy 1.x turned float32 0-d arrays times Python floats into
        # float64).
        f = p.dtype.type
        g, m, v = (a.astype(p.dtype, copy=False) for a in (g, m, v))
        if wd and not decoupled:
            g = g + f(wd) * p
        if decoupled:
            p = p * f(1.0 - lr * wd)
        m = m + f(1.0 - b1) * (g - m)  # torch: exp_avg.lerp_(grad, 1 - beta1)
        v = f(b2) * v + f(1.0 - b2) * (g * g)
        denom = np.sqrt(v) / f(bc2_sqrt) + f(eps)
        new_params[name] = np.asarray(p - f(lr / bc1) * (m / denom))
        new_state[f"m/{name}"], new_state[f"v/{name}"] = np.asarray(m), np.asarray(v)
    return new_params, new_state


# --------------------------------------------------------------------------- schedules
def _schedule_args(step: int, total: int, warmup: int, base_lr: float) -> tuple[int, int, int]:
    step = positive_int(step, "step", minimum=0)
    total = positive_int(total, "total")
    warmup = positive_int(warmup, "warmup", minimum=0)
    if warmup > total:
        raise ValueError(f"warmup must be <= total ({total}), got {warmup}")
    _float_param(base_lr, "base_lr", 0.0)
    return step, total, warmup


def warmup_linear(step: int, total: int, warmup: int, base_lr: float) -> float:
    """Linear warm-up from 0 to ``base_lr`` over ``warmup`` steps, then linear decay to 0.

        lr(s) = base_lr · s / warmup                          for s < warmup
        lr(s) = base_lr · max(0, (total − s) / (total − warmup))   otherwise

    (with total − warmup replaced by 1 when they are equal); lr = 0 from s = total on.
    """
    step, total, warmup = _schedule_args(step, total, warmup, base_lr)
    if step < warmup:
        return base_lr * step / warmup
    return base_lr * max(0.0, (total - step) / max(1, total - warmup))


def warmup_cosine(step: int, total: int, warmup: int, base_lr: float, min_lr: float = 0.0) -> float:
    """Linear warm-up to ``base_lr``, then half a cosine from ``base_lr`` down to ``min_lr``.

        lr(s) = base_lr · s / warmup                                    for s < warmup
        lr(s) = min_lr + (base_lr − min_lr) · ½ (1 + cos(π · q))        otherwise,
        q = min(1, (s − warmup) / (total − warmup))

    (with total − warmup replaced by 1 when they are equal); lr = min_lr from s = total on.
    """
    step, total, warmup = _schedule_args(step, total, warmup, base_lr)
    min_lr = _float_param(min_lr, "min_lr", 0.0)
    if min_lr > base_lr:
        raise ValueError(f"min_lr must be <= base_lr ({base_lr}), got {min_lr}")
    if step < warmup:
        return base_lr * step / warmup
    q = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * q))


# --------------------------------------------------------------------------- clipping
def _l2_norm(g: np.ndarray) -> float:
    """‖g‖₂ in float64; rescaled by max|g| when the sum of squares overflows."""
    x = g.reshape(-1).astype(np.float64, copy=False)
    with np.errstate(over="ignore", invalid="ignore"):
        norm = float(np.linalg.norm(x))
    if math.isinf(norm) and np.all(np.isfinite(x)):
        m = float(np.max(np.abs(x)))
        with np.errstate(over="ignore"):
            norm = m * float(np.linalg.norm(x / m))
    return norm


def clip_grad_norm(
    grads: Mapping[str, np.ndarray], max_norm: float
) -> tuple[dict[str, np.ndarray], float]:
    """Scale all gradients jointly so that their global L2 norm is at most ``max_norm``.

        ‖g‖ = sqrt(Σ_arrays ‖g_a‖²),   g_a ← g_a · min(1, max_norm / (‖g‖ + 1e-6))

    as ``torch.nn.utils.clip_grad_norm_`` (norm_type 2). The 1e-6 makes the clipped
    norm slightly below ``max_norm``; as in torch, a norm within 1e-6 below
    ``max_norm`` is also scaled by a factor just under 1. Returns (new grads dict,
    ‖g‖ before clipping). Finite gradients whose squares overflow are still measured
    (the norm is then computed as max|g| · ‖g / max|g|‖); a non-finite gradient or a norm
    beyond the float64 range raises ``ValueError`` naming the array (torch's
    ``error_if_nonfinite=True``).
    """
    max_norm = _float_param(max_norm, "max_norm", 0.0)
    arrays = {n: np.asarray(g) for n, g in grads.items()}
    for n, g in arrays.items():
        if g.dtype.kind != "f":
            raise TypeError(f"gradient {n!r} must be floating-point, got dtype {g.dtype}")
    norms = [_l2_norm(g) for g in arrays.values()]
    total = math.hypot(*norms)  # hypot scales: no overflow below the float64 maximum
    if not math.isfinite(total):
        bad = [n for n, g in arrays.items() if not np.all(np.isfinite(g))]
        what = f"{bad[0]!r} holds NaN or infinity" if bad else "it overflows float64"
        raise ValueError(f"the gradient norm is not finite: {what}")
    coef = min(1.0, max_norm / (total + 1e-6))
    # the factor as a scalar of each gradient's dtype: float32 stays float32, 0-d included
    return {n: np.asarray(g * g.dtype.type(coef)) for n, g in arrays.items()}, total
