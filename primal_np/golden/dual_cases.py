"""Golden cases for canonical (dual) attention: dual_attention, _masked, _causal."""

from __future__ import annotations

import numpy as np

from ..dual import dual_attention, dual_attention_backward
from . import GoldenCase, register_case

_OBJECTIVE = (
    "sum(cotangent.out * output.out); grads are its gradients w.r.t. input.q, input.k, input.v"
)


def _run(arrays: dict[str, np.ndarray], dtype: np.dtype, causal: bool) -> dict[str, np.ndarray]:
    """output.out and grad.q/k/v from the case's inputs and cotangent, computed in ``dtype``."""
    q, k, v, cot = (
        arrays[n].astype(dtype) for n in ("input.q", "input.k", "input.v", "cotangent.out")
    )
    out, cache = dual_attention(q, k, v, mask=arrays.get("input.mask"), causal=causal)
    dq, dk, dv = dual_attention_backward(cot, cache)
    return {"output.out": out, "grad.q": dq, "grad.k": dk, "grad.v": dv}


def _dual_case(name: str, seed: int, *, n: int, m: int, masked: bool, causal: bool) -> GoldenCase:
    rng = np.random.default_rng(seed)
    b, h, d, dv = 2, 3, 4, 3
    q = rng.standard_normal((b, h, n, d))
    k = rng.standard_normal((b, h, m, d))
    v = rng.standard_normal((b, h, m, dv))
    arrays = {"input.q": q, "input.k": k, "input.v": v}
    mask = None
    if masked:
        mask = rng.random((b, h, n, m)) > 0.35
        mask[..., 0] |= ~mask.any(-1)  # only the row below is fully masked
        mask[1, 2, 1, :] = False  # one query (batch 1, head 2, row 1) sees no key
        arrays["input.mask"] = mask
    out_shape = (b, h, n, dv)
    arrays["cotangent.out"] = rng.standard_normal(out_shape)
    arrays.update(_run(arrays, np.dtype(np.float64), causal))
    config = {
        "scale": float(1.0 / np.sqrt(d)),
        "scale_rule": "1/sqrt(d), d = q.shape[-1]",
        "causal": causal,
        "causal_rule": "key j visible to query i iff j <= i (top-left aligned)" if causal else None,
        "mask": "input.mask, True = may attend" if masked else None,
        "fully_masked_row": "output 0, contributes 0 to every gradient",
        "layout": "(batch, heads, tokens, features)",
    }
    return GoldenCase(
        name,
        "dual_attention",
        config,
        _OBJECTIVE,
        arrays,
        recompute=lambda a, dt: _run(a, dt, causal),
        seed=seed,
    )


@register_case("dual_attention")
def dual_attention_case() -> GoldenCase:
    return _dual_case("dual_attention", 0, n=5, m=6, masked=False, causal=False)


@register_case("dual_attention_masked")
def dual_attention_masked_case() -> GoldenCase:
    return _dual_case("dual_attention_masked", 1, n=5, m=6, masked=True, causal=False)


@register_case("dual_attention_causal")
def dual_attention_causal_case() -> GoldenCase:
    return _dual_case("dual_attention_causal", 2, n=6, m=6, masked=False, causal=True)
