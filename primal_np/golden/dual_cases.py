"""Golden cases for canonical (dual) attention: dual_attention, _masked, _causal,
_large_logits, and the long-sequence case dual_attention_long (``golden export --long``)."""

from __future__ import annotations

import numpy as np

from ..dual import dual_attention, dual_attention_backward
from ..magnitudes import attention_magnitudes
from . import GoldenCase, register_case

_OBJECTIVE = (
    "sum(cotangent.out * output.out); grads are its gradients w.r.t. input.q, input.k, input.v"
)
_LONG_BLOCK = 512  # key block of the long case's reference (O(N·512) memory)


def _run(
    arrays: dict[str, np.ndarray],
    dtype: np.dtype,
    causal: bool,
    scale: float | None = None,
    block_size: int | None = None,
) -> dict[str, np.ndarray]:
    """output.out and grad.q/k/v from the case's inputs and cotangent, computed in ``dtype``."""
    q, k, v, cot = (
        arrays[n].astype(dtype) for n in ("input.q", "input.k", "input.v", "cotangent.out")
    )
    out, cache = dual_attention(
        q, k, v, mask=arrays.get("input.mask"), causal=causal, scale=scale, block_size=block_size
    )
    dq, dk, dv = dual_attention_backward(cot, cache)
    return {"output.out": out, "grad.q": dq, "grad.k": dk, "grad.v": dv}


def _magnitudes(arrays: dict[str, np.ndarray], causal: bool, scale: float | None) -> dict:
    """The operand scales of output.out and grad.* (primal_np.magnitudes), from float64 inputs."""
    a = {n: arrays[n] for n in ("input.q", "input.k", "input.v", "cotangent.out")}
    return attention_magnitudes(
        a["input.q"], a["input.k"], a["input.v"], a["cotangent.out"],
        mask=arrays.get("input.mask"), causal=causal, scale=scale,
    )  # fmt: skip


def _dual_case(
    name: str,
    seed: int,
    *,
    n: int,
    m: int,
    masked: bool,
    causal: bool,
    scale: float | None = None,
    shape: tuple[int, int, int, int] = (2, 3, 4, 3),
    block_size: int | None = None,
) -> GoldenCase:
    rng = np.random.default_rng(seed)
    b, h, d, dv = shape
    q = rng.standard_normal((b, h, n, d))
    k = rng.standard_normal((b, h, m, d))
    v = rng.standard_normal((b, h, m, dv))
    arrays: dict[str, np.ndarray] = {"input.q": q, "input.k": k, "input.v": v}
    mask = None
    if masked:
        mask = rng.random((b, h, n, m)) > 0.35
        mask[..., 0] |= ~mask.any(-1)  # only the row below is fully masked
        mask[1, 2, 1, :] = False  # one query (batch 1, head 2, row 1) sees no key
        arrays["input.mask"] = mask
    out_shape = (b, h, n, dv)
    arrays["cotangent.out"] = rng.standard_normal(out_shape)
    arrays.update(_run(arrays, np.dtype(np.float64), causal, scale, block_size))
    config = {
        "scale": float(1.0 / np.sqrt(d)) if scale is None else float(scale),
        "scale_rule": "1/sqrt(d), d = q.shape[-1]" if scale is None else "the config's scale",
        "causal": causal,
        "causal_rule": "key j visible to query i iff j <= i (top-left aligned)" if causal else None,
        "mask": "input.mask, True = may attend" if masked else None,
        "fully_masked_row": "output 0, contributes 0 to every gradient",
        "layout": "(batch, heads, tokens, features)",
    }
    if block_size is not None:
        config["reference"] = (
            f"dual_attention(..., block_size={block_size}): online softmax over key blocks, "
            "equal to the unblocked form to <= 1e-13 relative"
        )
    return GoldenCase(
        name,
        "dual_attention",
        config,
        _OBJECTIVE,
        arrays,
        recompute=lambda a, dt: _run(a, dt, causal, scale, block_size),
        seed=seed,
        magnitudes=lambda a: _magnitudes(a, causal, scale),
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


@register_case("dual_attention_large_logits")
def dual_attention_large_logits_case() -> GoldenCase:
    """Scale 40: logits up to a few hundred (exp overflows float32 above 88.7 without the
    max-shift), masked, with the fully masked row of dual_attention_masked."""
    return _dual_case(
        "dual_attention_large_logits", 3, n=5, m=6, masked=True, causal=False, scale=40.0
    )


@register_case("dual_attention_long", long=True)
def dual_attention_long_case() -> GoldenCase:
    """N = M = 4096, one sequence and head, d = dv = 16, causal: sums of up to 4096 terms
    and 8 key blocks of 512 in the reference; 8 arrays of 4096 × 16 float64 (≈ 4 MB)."""
    return _dual_case(
        "dual_attention_long", 4, n=4096, m=4096, masked=False, causal=True,
        shape=(1, 1, 16, 16), block_size=_LONG_BLOCK,
    )  # fmt: skip
