"""Canonical (dual-form) attention: gradients, conventions, edge cases and bad input."""

import math

import numpy as np
import pytest
from helpers import readonly
from hypothesis import given, settings
from hypothesis import strategies as st

from primal_np import (
    attention_weights,
    check_vjp,
    dual_attention,
    dual_attention_backward,
    taylor_test,
)
from primal_np.compare import rel_error


def naive_attention(q, k, v, mask=None, causal=False, scale=None):
    """Loop-level statement of one head, written independently of the package."""
    n, d = q.shape
    m = k.shape[0]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    out = np.zeros((n, v.shape[1]))
    for i in range(n):
        vis = [j for j in range(m) if (mask is None or mask[i, j]) and (not causal or j <= i)]
        if not vis:
            continue
        logits = [scale * float(q[i] @ k[j]) for j in vis]
        top = max(logits)
        w = [math.exp(s - top) for s in logits]
        tot = sum(w)
        for wj, j in zip(w, vis, strict=True):
            out[i] += wj / tot * v[j]
    return out


SHAPES = [  # (N, M, d, dv): N = 1, d = 1, N ≠ M
    (1, 1, 1, 1),
    (1, 4, 3, 2),
    (4, 1, 2, 3),
    (3, 5, 1, 2),
    (6, 4, 3, 1),
]


@pytest.mark.parametrize("n,m,d,dv", SHAPES)
@pytest.mark.parametrize("variant", ["plain", "mask", "causal", "mask+causal"])
def test_dual_attention_vjp(rng, n, m, d, dv, variant):
    q, k, v = (
        rng.standard_normal((2, n, d)),
        rng.standard_normal((2, m, d)),
        rng.standard_normal((2, m, dv)),
    )
    kw = {}
    if "mask" in variant:
        kw["mask"] = rng.random((2, n, m)) > 0.4
    if "causal" in variant:
        kw["causal"] = True
    rep = check_vjp(
        lambda q, k, v: dual_attention(q, k, v, **kw),
        dual_attention_backward,
        {"q": q, "k": k, "v": v},
        ["q", "k", "v"],
    )
    rep.assert_ok()


def test_dual_attention_matches_naive_loops(rng):
    q, k, v = rng.standard_normal((5, 3)), rng.standard_normal((7, 3)), rng.standard_normal((7, 2))
    mask = rng.random((5, 7)) > 0.5
    mask[3] = False
    for causal in (False, True):
        out, _ = dual_attention(q, k, v, mask=mask, causal=causal, scale=0.8)
        np.testing.assert_allclose(
            out, naive_attention(q, k, v, mask, causal, 0.8), rtol=1e-13, atol=1e-15
        )


def test_leading_axes_broadcast_and_grads_sum_back(rng):
    # q has a head axis only; k, v have batch and head axes; mask broadcasts over heads.
    q = rng.standard_normal((3, 4, 2))
    k = rng.standard_normal((2, 3, 5, 2))
    v = rng.standard_normal((2, 1, 5, 3))
    mask = rng.random((2, 1, 4, 5)) > 0.3
    out, _ = dual_attention(q, k, v, mask=mask)
    assert out.shape == (2, 3, 4, 3)
    for b in range(2):
        for h in range(3):
            np.testing.assert_allclose(
                out[b, h], naive_attention(q[h], k[b, h], v[b, 0], mask[b, 0]), rtol=1e-13
            )
    check_vjp(
        lambda q, k, v: dual_attention(q, k, v, mask=mask),
        dual_attention_backward,
        {"q": q, "k": k, "v": v},
        ["q", "k", "v"],
    ).assert_ok()


def test_taylor_slope_two_for_correct_and_one_for_wrong_gradient(rng):
    q, k, v = (
        rng.standard_normal((2, 4, 3)),
        rng.standard_normal((2, 5, 3)),
        rng.standard_normal((2, 5, 2)),
    )
    out, cache = dual_attention(q, k, v)
    cot = rng.standard_normal(out.shape)
    dq, dk, dv = dual_attention_backward(cot, cache)

    def loss(q, k, v):
        return np.sum(cot * dual_attention(q, k, v)[0])

    good = taylor_test(loss, {"q": q, "k": k, "v": v}, {"q": dq, "k": dk, "v": dv})
    assert good.passed and abs(good.slope - 2.0) < 0.2, good
    bad = taylor_test(loss, {"q": q, "k": k, "v": v}, {"q": dq, "k": 1.05 * dk, "v": dv})
    assert not bad.passed and abs(bad.slope - 1.0) < 0.3, bad


def test_fully_masked_row_zero_output_and_no_gradient(rng):
    q, k, v = rng.standard_normal((4, 3)), rng.standard_normal((5, 3)), rng.standard_normal((5, 2))
    mask = rng.random((4, 5)) > 0.3
    mask[:, 0] = True
    mask[2] = False
    out, cache = dual_attention(q, k, v, mask=mask)
    assert np.all(out[2] == 0.0) and cache.lse[2] == -np.inf
    assert np.all(cache.attn[2] == 0.0)
    cot = rng.standard_normal(out.shape)
    dq, dk, dv = dual_attention_backward(cot, cache)
    assert np.all(dq[2] == 0.0)
    # the other rows' gradients equal those of the problem with row 2 deleted
    keep = [0, 1, 3]
    _, c2 = dual_attention(q[keep], k, v, mask=mask[keep])
    dq2, dk2, dv2 = dual_attention_backward(cot[keep], c2)
    np.testing.assert_allclose(dq[keep], dq2, rtol=1e-14, atol=1e-16)
    np.testing.assert_allclose(dk, dk2, rtol=1e-14, atol=1e-16)
    np.testing.assert_allclose(dv, dv2, rtol=1e-14, atol=1e-16)


def test_causal_with_n_greater_than_m_has_top_left_alignment(rng):
    q, k, v = rng.standard_normal((5, 2)), rng.standard_normal((3, 2)), rng.standard_normal((3, 2))
    p, lse = attention_weights(q, k, causal=True)
    np.testing.assert_array_equal(p > 0, np.tri(5, 3, dtype=bool))
    # attention_weights agrees with the cache of dual_attention
    _, cache = dual_attention(q, k, v, causal=True)
    np.testing.assert_array_equal(cache.attn, p)
    np.testing.assert_array_equal(cache.lse, lse)


def test_huge_logits_are_exact():
    # logits 5000, 5003, 4990: exp overflows in float64; the shifted softmax does not.
    q = np.array([[1.0]])
    k = np.array([[5000.0], [5003.0], [4990.0]])
    v = np.array([[1.0], [2.0], [4.0]])
    out, cache = dual_attention(q, k, v, scale=1.0)
    w = np.exp(np.array([-3.0, 0.0, -13.0]))
    w /= w.sum()
    np.testing.assert_allclose(out[0, 0], w @ v[:, 0], rtol=1e-15)
    np.testing.assert_allclose(
        cache.lse[0], 5003.0 + np.log(np.exp([-3.0, 0.0, -13.0]).sum()), rtol=1e-15
    )
    dq, dk, dv = dual_attention_backward(np.array([[0.3]]), cache)
    assert all(np.all(np.isfinite(g)) for g in (dq, dk, dv))


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 5),
    m=st.integers(1, 6),
    d=st.integers(1, 4),
    cq=st.floats(-3, 3),
    ck=st.floats(-3, 3),
    seed=st.integers(0, 2**16),
    causal=st.booleans(),
)
def test_constant_q_and_k_give_mean_of_visible_values(n, m, d, cq, ck, seed, causal):
    r = np.random.default_rng(seed)
    v = r.standard_normal((m, 2))
    mask = r.random((n, m)) > 0.4
    out, _ = dual_attention(np.full((n, d), cq), np.full((m, d), ck), v, mask=mask, causal=causal)
    vis = mask & np.tri(n, m, dtype=bool) if causal else mask
    for i in range(n):
        expect = v[vis[i]].mean(0) if vis[i].any() else np.zeros(2)
        np.testing.assert_allclose(out[i], expect, rtol=1e-12, atol=1e-14)


def test_float32_is_computed_in_float32(rng):
    q, k, v = (rng.standard_normal((2, 6, 4)) for _ in range(3))
    q32, k32, v32 = (a.astype(np.float32) for a in (q, k, v))
    out, cache = dual_attention(q32, k32, v32, causal=True)
    assert out.dtype == np.float32 and cache.attn.dtype == np.float32
    grads = dual_attention_backward(rng.standard_normal(out.shape).astype(np.float32), cache)
    assert all(g.dtype == np.float32 for g in grads)
    ref, _ = dual_attention(
        q32.astype(np.float64), k32.astype(np.float64), v32.astype(np.float64), causal=True
    )
    assert rel_error(out, ref) < 1e-6  # float32 rounding only (~10 ulp)


def test_read_only_inputs_are_never_written(rng):
    q, k, v = readonly(
        rng.standard_normal((3, 4, 2)),
        rng.standard_normal((3, 5, 2)),
        rng.standard_normal((3, 5, 2)),
    )
    mask = readonly(rng.random((3, 4, 5)) > 0.3)
    before = [a.copy() for a in (q, k, v)]
    out, cache = dual_attention(q, k, v, mask=mask, causal=True)
    dout = readonly(rng.standard_normal(out.shape))
    dual_attention_backward(dout, cache)
    for a, b in zip((q, k, v), before, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "args,kw,exc,pattern",
    [
        (
            ((4, 3), (5, 2), (5, 2)),
            {},
            ValueError,
            r"q and k must share the feature dimension d: q has shape \(4, 3\)",
        ),
        (
            ((4, 3), (5, 3), (6, 2)),
            {},
            ValueError,
            r"k and v must have the same number of keys M: k has shape \(5, 3\)",
        ),
        (
            ((3,), (5, 3), (5, 2)),
            {},
            ValueError,
            r"q must have at least 2 dimensions, got shape \(3,\)",
        ),
        (
            ((2, 4, 3), (3, 5, 3), (5, 2)),
            {},
            ValueError,
            r"leading \(batch/head\) axes do not broadcast: q \(2,\), k \(3,\)",
        ),
        (
            ((4, 3), (5, 3), (5, 2)),
            {"mask": np.ones((4, 5))},
            TypeError,
            "mask must be a boolean array",
        ),
        (
            ((4, 3), (5, 3), (5, 2)),
            {"mask": np.ones((4, 4), bool)},
            ValueError,
            r"mask has shape \(4, 4\); it must broadcast to \(..., N, M\) = \(4, 5\)",
        ),
        (
            ((4, 3), (5, 3), (5, 2)),
            {"mask": np.ones((2, 4, 5), bool)},
            ValueError,
            r"mask has shape \(2, 4, 5\)",
        ),
        (((4, 3), (5, 3), (5, 2)), {"scale": "x"}, TypeError, "scale must be a real number"),
        (((4, 3), (5, 3), (5, 2)), {"scale": float("inf")}, ValueError, "scale must be finite"),
    ],
)
def test_bad_input(args, kw, exc, pattern):
    q, k, v = (np.zeros(s) for s in args)
    with pytest.raises(exc, match=pattern):
        dual_attention(q, k, v, **kw)


def test_bad_dtype_and_non_finite():
    with pytest.raises(TypeError, match="q must be a floating-point array .* got dtype int64"):
        dual_attention(np.ones((2, 2), np.int64), np.ones((2, 2)), np.ones((2, 2)))
    k = np.ones((2, 2))
    k[1, 0] = np.inf
    with pytest.raises(ValueError, match=r"k must be finite, got inf at index \(1, 0\)"):
        dual_attention(np.ones((2, 2)), k, np.ones((2, 2)))
    out, cache = dual_attention(np.ones((2, 2)), np.ones((2, 2)), np.ones((2, 2)))
    with pytest.raises(
        ValueError, match=r"dout has shape \(2, 3\), expected the output shape \(2, 2\)"
    ):
        dual_attention_backward(np.ones((2, 3)), cache)


def test_mha_bad_input(rng):
    from primal_np import init_mha_params, mha_attention

    params = init_mha_params(6)
    with pytest.raises(ValueError, match=r"dim 6 .* not divisible by num_heads=4"):
        mha_attention(rng.standard_normal((2, 3, 6)), params, num_heads=4)
    with pytest.raises(
        ValueError, match=r"padding_mask has shape \(2, 4\), expected \(..., N\) = \(2, 3\)"
    ):
        mha_attention(
            rng.standard_normal((2, 3, 6)), params, num_heads=2, padding_mask=np.ones((2, 4), bool)
        )
    bad = dict(params, W_k=np.zeros((6, 5)))
    with pytest.raises(ValueError, match=r"parameter 'W_k' has shape \(6, 5\)"):
        mha_attention(rng.standard_normal((2, 3, 6)), bad, num_heads=2)
    with pytest.raises(KeyError, match="missing"):
        mha_attention(rng.standard_normal((2, 3, 6)), {"W_q": params["W_q"]}, num_heads=2)
