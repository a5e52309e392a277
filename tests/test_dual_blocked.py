"""dual_attention(..., block_size=b): the online softmax over key blocks equals the unblocked
form, its backward (recomputing P) equals the unblocked backward and finite differences,
and it never holds the N×M matrix."""

import tracemalloc

import numpy as np
import pytest
from test_dual import naive_attention

from primal_np import check_vjp, dual_attention, dual_attention_backward
from primal_np.compare import rel_error

CASES = [  # (q batch, k batch, v batch, N, M, d, dv)
    ((2, 3), (2, 3), (2, 3), 5, 7, 4, 3),
    ((2, 1), (1, 3), (2, 3), 9, 13, 4, 2),  # leading axes broadcast
    ((), (), (), 17, 11, 3, 5),  # N > M
    ((3,), (3,), (3,), 4, 19, 2, 2),  # N < M
]


def _draw(rng, bq, bk, bv, n, m, d, dv):
    q = rng.standard_normal((*bq, n, d))
    k = rng.standard_normal((*bk, m, d))
    v = rng.standard_normal((*bv, m, dv))
    batch = np.broadcast_shapes(bq, bk, bv)
    mask = rng.random((*batch, n, m)) > 0.4
    mask[(0,) * len(batch) + (1,)] = False  # a dead row: query 1 of the first sequence
    return q, k, v, mask


def _variants(mask):
    return {
        "plain": {},
        "mask": {"mask": mask},  # a full (..., N, M) mask, sliced per block
        "causal": {"causal": True},
        "mask+causal": {"mask": mask, "causal": True},
        "mask(N, 1)": {"mask": mask[..., :1]},  # broadcast along the keys: not sliced
        "mask(M,)": {"mask": mask[(0,) * (mask.ndim - 1)]},  # one row for every query
        "scale 40": {"scale": 40.0, "mask": mask},
    }


# At logits of a few hundred (scale 40) P_B = exp(S_B − lse) inherits the rounding of lse
# (|lse| ~ 300: an ulp is 5.7e-14), and dS = P ∘ (dP − δ) cancels: 1e-12 there.
_TOL = {"scale 40": 1e-12}


def _finite_lse(lse):
    return np.where(np.isinf(lse), 0.0, lse)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("block", [1, 3, 5, 64])
def test_blocked_equals_unblocked_forward_and_backward(rng, case, block):
    q, k, v, mask = _draw(rng, *case)
    for name, kw in _variants(mask).items():
        out, cache = dual_attention(q, k, v, **kw)
        dout = rng.standard_normal(out.shape)
        grads = dual_attention_backward(dout, cache)
        out_b, cache_b = dual_attention(q, k, v, block_size=block, **kw)
        assert cache_b.attn is None and cache_b.block_size == block
        grads_b = dual_attention_backward(dout, cache_b)
        errs = [rel_error(out_b, out)] + [
            rel_error(b, u) for b, u in zip(grads_b, grads, strict=True)
        ]
        errs.append(rel_error(_finite_lse(cache_b.lse), _finite_lse(cache.lse)))
        assert max(errs) <= _TOL.get(name, 1e-13), (name, errs)
        assert np.array_equal(np.isinf(cache_b.lse), np.isinf(cache.lse))
        for g, x in zip(grads_b, (q, k, v), strict=True):
            assert g.shape == x.shape


def test_dead_rows_give_zero_output_and_no_gradient(rng):
    q, k, v, mask = _draw(rng, (2,), (2,), (2,), 4, 9, 3, 2)
    mask[1] = False  # the whole second sequence sees nothing
    out, cache = dual_attention(q, k, v, mask=mask, block_size=2)
    assert np.all(out[0, 1] == 0.0) and np.all(out[1] == 0.0)
    assert np.all(cache.lse[1] == -np.inf)
    dq, dk, dv = dual_attention_backward(rng.standard_normal(out.shape), cache)
    assert np.all(dq[1] == 0.0) and np.all(dk[1] == 0.0) and np.all(dv[1] == 0.0)
    assert np.all(np.isfinite(dq)) and np.all(np.isfinite(dk))


def test_blocked_matches_naive_loops_and_finite_differences(rng):
    q, k, v = (
        rng.standard_normal((6, 3)),
        rng.standard_normal((10, 3)),
        rng.standard_normal((10, 2)),
    )
    mask = rng.random((6, 10)) > 0.5
    mask[2] = False
    out, _ = dual_attention(q, k, v, mask=mask, causal=True, scale=0.7, block_size=3)
    np.testing.assert_allclose(
        out, naive_attention(q, k, v, mask, True, 0.7), rtol=1e-13, atol=1e-15
    )
    rep = check_vjp(
        lambda q, k, v: dual_attention(q, k, v, mask=mask, causal=True, block_size=4),
        dual_attention_backward,
        {"q": q, "k": k, "v": v},
        ["q", "k", "v"],
    )
    rep.assert_ok()


def test_float32_stays_float32_and_agrees_with_unblocked(rng):
    q, k, v, mask = _draw(rng, (2,), (2,), (2,), 33, 40, 8, 4)
    q, k, v = (a.astype(np.float32) for a in (q, k, v))
    out, cache = dual_attention(q, k, v, mask=mask, causal=True)
    dout = rng.standard_normal(out.shape)
    grads = dual_attention_backward(dout, cache)
    out_b, cache_b = dual_attention(q, k, v, mask=mask, causal=True, block_size=8)
    grads_b = dual_attention_backward(dout, cache_b)
    assert out_b.dtype == np.float32 and cache_b.lse.dtype == np.float32
    assert all(g.dtype == np.float32 for g in grads_b)
    assert rel_error(out_b, out) < 1e-6
    assert max(rel_error(b, u) for b, u in zip(grads_b, grads, strict=True)) < 1e-5


def test_memory_is_n_times_block_not_n_times_m(rng):
    """N = M = 1024: P would be 8 MiB; blocks of 32 keys hold 256 KiB each."""
    n, d = 1024, 8
    q, k, v = (rng.standard_normal((n, d)) for _ in range(3))
    dout = rng.standard_normal((n, d))
    tracemalloc.start()
    try:
        out, cache = dual_attention(q, k, v, causal=True, block_size=32)
        dual_attention_backward(dout, cache)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    full = n * n * 8
    assert peak < full / 4, f"peak {peak / 2**20:.2f} MiB vs P {full / 2**20:.0f} MiB"


@pytest.mark.parametrize(
    "block, exc, pattern",
    [(0, ValueError, "block_size must be >= 1"), (2.5, TypeError, "block_size must be an integer"),
     (True, TypeError, "block_size must be an integer")],
)  # fmt: skip
def test_bad_block_size(rng, block, exc, pattern):
    q = rng.standard_normal((3, 2))
    with pytest.raises(exc, match=pattern):
        dual_attention(q, q, q, block_size=block)


def test_unblocked_private_backward_refuses_a_blocked_cache(rng):
    from primal_np.dual import _dual_attention_backward

    q = rng.standard_normal((3, 2))
    out, cache = dual_attention(q, q, q, block_size=2)
    with pytest.raises(ValueError, match="blocked cache"):
        _dual_attention_backward(out, cache)
