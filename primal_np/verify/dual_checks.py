"""verify rows for the primitives, canonical (dual) attention and the MHA layer."""

from __future__ import annotations

import numpy as np

from ..dual import dual_attention, dual_attention_backward
from ..gradcheck import check_vjp, taylor_test
from ..mha import init_mha_params, mha_attention, mha_attention_backward
from ..primitives import linear, linear_backward, softmax, softmax_backward
from . import register_check, result

# Finite differences in float64 are accurate to ~1e-9 relative on these O(1)
# problems (step ε^{1/3}); 1e-6 leaves room without hiding a wrong term.
FD_RTOL = 1e-6


def _qkv(rng, b=2, h=2, n=5, m=7, d=3, dv=4):
    return (
        rng.standard_normal((b, h, n, d)),
        rng.standard_normal((b, h, m, d)),
        rng.standard_normal((b, h, m, dv)),
    )


@register_check("primitives")
def softmax_vjp():
    rng = np.random.default_rng(1)
    s = rng.standard_normal((3, 6))
    mask = rng.random((3, 6)) > 0.3
    mask[1] = False  # a fully masked row
    rep = check_vjp(lambda s: softmax(s, mask), softmax_backward, {"s": s}, ["s"], rtol=FD_RTOL)
    return result("softmax: VJP vs finite differences (masked rows)", rep.max_rel_err, FD_RTOL)


@register_check("primitives")
def linear_vjp():
    rng = np.random.default_rng(2)
    inputs = {
        "x": rng.standard_normal((2, 3, 4)),
        "w": rng.standard_normal((5, 4)),
        "b": rng.standard_normal(5),
    }
    rep = check_vjp(
        lambda x, w, b: linear(x, w, b), linear_backward, inputs, ["x", "w", "b"], rtol=FD_RTOL
    )
    return result("linear: VJP vs finite differences", rep.max_rel_err, FD_RTOL)


@register_check("dual attention")
def dual_vjp():
    rng = np.random.default_rng(3)
    q, k, v = _qkv(rng)
    mask = rng.random((2, 1, 5, 7)) > 0.4
    mask[0, 0, 1] = False  # a query that sees no key
    rows = []
    for label, kw in (
        ("mask", {"mask": mask}),
        ("causal", {"causal": True}),
        ("scale=0.7", {"scale": 0.7}),
    ):
        rep = check_vjp(
            lambda q, k, v, kw=kw: dual_attention(q, k, v, **kw),
            dual_attention_backward,
            {"q": q, "k": k, "v": v},
            ["q", "k", "v"],
            rtol=FD_RTOL,
        )
        rows.append(
            result(
                f"dual_attention: VJP vs finite differences ({label}, N≠M)",
                rep.max_rel_err,
                FD_RTOL,
            )
        )
    return rows


@register_check("dual attention")
def dual_taylor():
    rng = np.random.default_rng(4)
    q, k, v = _qkv(rng)
    out, cache = dual_attention(q, k, v, causal=True)
    cot = rng.standard_normal(out.shape)
    dq, dk, dv = dual_attention_backward(cot, cache)
    rep = taylor_test(
        lambda q, k, v: np.sum(cot * dual_attention(q, k, v, causal=True)[0]),
        {"q": q, "k": k, "v": v},
        {"q": dq, "k": dk, "v": dv},
    )
    # A correct gradient leaves an O(h²) remainder; a wrong one O(h) (slope 1).
    return result("dual_attention: Taylor remainder slope |slope − 2|", abs(rep.slope - 2.0), 0.2)


@register_check("dual attention")
def dual_closed_forms():
    rng = np.random.default_rng(5)
    n, m, dv = 4, 6, 3
    v = rng.standard_normal((m, dv))
    # Constant queries and keys: every visible key has the same logit, so each row is
    # the mean of the values it may see.
    q = np.full((n, 2), 0.3)
    k = np.full((m, 2), -1.1)
    mask = rng.random((n, m)) > 0.5
    mask[:, 0] = True
    out, _ = dual_attention(q, k, v, mask=mask)
    expect = (mask.astype(float) @ v) / mask.sum(1, keepdims=True)
    rows = [
        result(
            "dual_attention: constant q, k → mean of visible values",
            np.abs(out - expect).max(),
            1e-14,
        )
    ]

    # Logits near 1000 (exp overflows past ~709): the result equals the softmax of the
    # logits minus their row maximum, written out by hand here.
    q = np.array([[1.0, 0.0]])
    k = np.array([[1000.0, 0.0], [1001.0, 0.0], [998.0, 0.0]])
    out, cache = dual_attention(q, k, np.eye(3), scale=1.0)
    z = np.exp(np.array([-1.0, 0.0, -3.0]))
    expect = z / z.sum()
    err = max(np.abs(out[0] - expect).max(), abs(cache.lse[0] - (1001.0 + np.log(z.sum()))))
    rows.append(result("dual_attention: logits ≈ 1000 exact (no overflow)", err, 1e-13))
    return rows


@register_check("dual attention")
def dual_empty_rows():
    rng = np.random.default_rng(6)
    q, k, v = _qkv(rng, b=1, h=2, n=4, m=5)
    mask = np.ones((1, 2, 4, 5), bool)
    mask[0, 1, 2] = False
    out, cache = dual_attention(q, k, v, mask=mask)
    cot = rng.standard_normal(out.shape)
    dq, dk, dv = dual_attention_backward(cot, cache)
    # The hidden row must give exactly zero output and zero dq, and its upstream gradient
    # must not reach dk, dv: zeroing that row's cotangent changes nothing.
    cot0 = cot.copy()
    cot0[0, 1, 2] = 0.0
    _, dk0, dv0 = dual_attention_backward(cot0, cache)
    err = max(
        np.abs(out[0, 1, 2]).max(),
        np.abs(dq[0, 1, 2]).max(),
        np.abs(dk - dk0).max(),
        np.abs(dv - dv0).max(),
        0.0 if np.all(np.isfinite(out)) else np.inf,
    )
    return result("dual_attention: fully masked row → zero output, no gradient", err, 1e-15)


@register_check("dual attention")
def dual_float32():
    rng = np.random.default_rng(8)
    q, k, v = _qkv(rng, n=16, m=16, d=8, dv=8)
    ref, _ = dual_attention(q, k, v, causal=True)
    out32, _ = dual_attention(*(a.astype(np.float32) for a in (q, k, v)), causal=True)
    if out32.dtype != np.float32:
        return result("dual_attention: float32 stays float32", np.inf, 0.0, f"got {out32.dtype}")
    err = np.abs(out32 - ref).max() / np.abs(ref).max()
    # Inputs rounded to float32 (relative 6e-8) move O(1) logits and outputs by a few
    # ulps times the condition of softmax; 1e-5 is ~100 float32 ulps.
    return result("dual_attention: float32 path vs float64 (max rel)", err, 1e-5)


@register_check("mha layer")
def mha_vjp():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 5, 6))
    params = init_mha_params(6, seed=1)
    pad = np.ones((2, 5), bool)
    pad[1, 3:] = False

    def fwd(x, **p):
        return mha_attention(x, p, num_heads=3, padding_mask=pad, causal=True)

    def bwd(dy, cache):
        dx, grads = mha_attention_backward(dy, cache)
        return {"x": dx, **grads}

    rep = check_vjp(fwd, bwd, {"x": x, **params}, ["x", *params], rtol=FD_RTOL)
    return result(
        "mha_attention: VJP vs finite differences (input + 8 params)", rep.max_rel_err, FD_RTOL
    )
