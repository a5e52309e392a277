"""primal_np.magnitudes and the operand part of the comparison policy: the sizes Z restated
independently, the logit magnitude in closed form, arrays that are zero in exact arithmetic."""

import math

import numpy as np
import pytest

import primal_np as pn
from primal_np.compare import OperandScale, compare, operand_magnitude
from primal_np.magnitudes import attention_magnitudes, attention_sizes, mha_magnitudes
from primal_np.mha import init_mha_params, mha_attention, mha_attention_backward

EPS32, EPS_BF16 = 2.0**-23, 2.0**-7


def _dense_sizes(q, k, v, dout, mask, scale):
    """The module doc's formulas for one head, dense, written with einsum."""
    s = scale * q @ k.T
    s = np.where(mask, s, -np.inf)
    top = np.where(mask.any(1, keepdims=True), s.max(1, keepdims=True), 0.0)
    e = np.where(mask, np.exp(s - top), 0.0)
    z = e.sum(1, keepdims=True)
    p = np.divide(e, z, out=np.zeros_like(e), where=z > 0)
    o = p @ v
    z_o = np.maximum(abs(o), np.sqrt(np.einsum("ij,jc->ic", p**2, v**2)))
    delta = np.einsum("ic,ic->i", dout, o)[:, None]
    z_delta = np.maximum(abs(delta), np.sqrt(np.einsum("ic,ic->i", dout**2, z_o**2))[:, None])
    dp = dout @ v.T
    z_dp = np.maximum(abs(dp), np.sqrt(np.einsum("ic,jc->ij", dout**2, v**2)))
    ds = p * (dp - delta)
    z_ds = np.maximum(abs(ds), p * np.sqrt(z_dp**2 + z_delta**2))
    dq, dk, dv = scale * ds @ k, scale * ds.T @ q, p.T @ dout
    z_dq = np.maximum(abs(dq), abs(scale) * np.sqrt(np.einsum("ij,jl->il", z_ds**2, k**2)))
    z_dk = np.maximum(abs(dk), abs(scale) * np.sqrt(np.einsum("ij,il->jl", z_ds**2, q**2)))
    z_dv = np.maximum(abs(dv), np.sqrt(np.einsum("ij,ic->jc", p**2, dout**2)))
    logit = abs(scale) * np.where(mask, abs(q) @ abs(k).T, 0.0).max()
    # logit sensitivities: P(1 − P) where the logits enter
    wp = p * (1 - p)
    w_o = np.sqrt(np.einsum("ij,jc->ic", wp**2, v**2))
    w_delta = np.sqrt(((wp * z_dp) ** 2).sum(1, keepdims=True))
    w_ds2 = (wp * abs(dp - delta)) ** 2 + (p * w_delta) ** 2
    w_dq = abs(scale) * np.sqrt(np.einsum("ij,jl->il", w_ds2, k**2))
    w_dk = abs(scale) * np.sqrt(np.einsum("ij,il->jl", w_ds2, q**2))
    w_dv = np.sqrt(np.einsum("ij,ic->jc", wp**2, dout**2))
    return z_o, z_dq, z_dk, z_dv, logit, w_o, w_dq, w_dk, w_dv


@pytest.mark.parametrize("block", [2, 512])
def test_attention_sizes_follow_the_formulas(rng, block):
    n, m, d, dv = 6, 9, 3, 2
    q, k, v = rng.standard_normal((n, d)), rng.standard_normal((m, d)), rng.standard_normal((m, dv))
    dout = rng.standard_normal((n, dv))
    mask = rng.random((n, m)) > 0.4
    mask[4] = False  # a query that sees no key
    causal = np.tri(n, m, dtype=bool)
    z = attention_sizes(q, k, v, dout, mask=mask, causal=True, scale=0.8, block_size=block)
    want = _dense_sizes(q, k, v, dout, mask & causal, 0.8)
    for got, ref in zip((z.out, z.q, z.k, z.v), want[:4], strict=True):
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-300)
    assert z.logit == pytest.approx(want[4], rel=1e-14)
    for got, ref in zip((z.w_out, z.w_q, z.w_k, z.w_v), want[5:], strict=True):
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-300)


def test_a_saturated_softmax_is_insensitive_to_its_logits():
    """One key far above the others: P ≈ one-hot, P(1 − P) ≈ 0, so W ≪ Z while L is large."""
    q = np.array([[1.0, 0.0]])
    k = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])
    v = np.array([[1.0], [2.0], [3.0]])
    z = attention_sizes(q, k, v, np.array([[1.0]]), scale=40.0)
    assert z.logit == pytest.approx(40.0) and z.out[0, 0] == pytest.approx(1.0)
    assert z.w_out[0, 0] < 1e-15 and z.w_q.max() < 1e-14


def test_sizes_of_sums_that_do_not_cancel_are_the_values(rng):
    """Positive values: O = P V sums positive terms, and √(Σ t²) ≤ Σ t: Z_O = |O| exactly."""
    q, k = rng.standard_normal((2, 5, 3)), rng.standard_normal((2, 7, 3))
    v = rng.random((2, 7, 4)) + 0.5
    z = attention_sizes(q, k, v)
    out, _ = pn.dual_attention(q, k, v)
    np.testing.assert_allclose(z.out, np.abs(out), rtol=1e-14)  # (blocked vs unblocked O)
    assert z.q is None


def test_broadcast_inputs_combine_their_copies_by_root_sum_square(rng):
    q, k, v = (
        rng.standard_normal((3, 4, 2)),
        rng.standard_normal((1, 5, 2)),
        rng.standard_normal((3, 5, 2)),
    )
    dout = rng.standard_normal((3, 4, 2))
    z = attention_sizes(q, k, v, dout)
    per_copy = [attention_sizes(q[b], k[0], v[b], dout[b]).k for b in range(3)]
    np.testing.assert_allclose(z.k[0], np.sqrt(sum(c**2 for c in per_copy)), rtol=1e-13)


def test_attention_magnitudes_name_the_arrays_and_the_sum_length(rng):
    q, k, v = rng.standard_normal((5, 4)), rng.standard_normal((7, 4)), rng.standard_normal((7, 3))
    mags = attention_magnitudes(q, k, v, rng.standard_normal((5, 3)), scale=40.0)
    assert set(mags) == {"output.out", "grad.q", "grad.k", "grad.v"}
    assert mags["output.out"].length == 7 and mags["grad.q"].length == 7
    assert mags["grad.k"].logit == pytest.approx(40.0 * (abs(q) @ abs(k).T).max(), rel=1e-14)
    assert mags["grad.k"].logit > 88.7  # float32 exp overflows there without the max-shift


def test_operand_magnitude_formula():
    s = OperandScale(size=2.0, logit=3.0, length=400)
    assert operand_magnitude(s, "float32") == pytest.approx(2.0 * (4.0 + 20.0), rel=1e-15)
    w = OperandScale(size=2.0, logit=3.0, length=400, sensitivity=0.5)  # size·(1 + √n) + L·W
    assert operand_magnitude(w, "float32") == pytest.approx(2.0 * 21.0 + 1.5, rel=1e-15)
    assert operand_magnitude(s, "float64") == 2.0  # the size only: 1e-10 is 10⁶ ulps
    # 16-bit storage, float32 accumulation: the sum length counts in float32 ulps
    assert operand_magnitude(s, "bfloat16") == pytest.approx(
        2.0 * (4.0 + EPS32 / EPS_BF16 * 20.0), rel=1e-15
    )
    assert operand_magnitude(s, "float16") == pytest.approx(
        2.0 * (4.0 + EPS32 / 2.0**-10 * 20.0), rel=1e-15
    )
    assert operand_magnitude(5.5, "float32") == 5.5


def test_compare_uses_the_larger_of_max_r_and_the_operand_magnitude():
    ref = {"grad.b": np.array([2e-17, -1e-17]), "grad.w": np.array([1.0, -3.0])}
    own = {"grad.b": np.array([1e-8, 0.0]), "grad.w": ref["grad.w"]}
    scales = {"grad.b": OperandScale(size=4.0, logit=1.0, length=16), "grad.w": 0.5}
    a_b = 4.0 * (2.0 + 4.0)  # (1 + L) + √n
    noise = {
        "grad.b": np.array([1e-7, -2e-7], np.float32),
        "grad.w": ref["grad.w"].astype(np.float32),
    }
    rep = compare(noise, ref, precision="float32", own=own, scales=scales)
    rows = {r.name: r for r in rep.rows}
    assert rep.ok, str(rep)
    assert rows["grad.b"].bound == pytest.approx(2 * 1e-8 + 2 * EPS32 * a_b + 1e-12, rel=1e-12)
    assert rows["grad.b"].operand_scale == pytest.approx(a_b)
    assert rows["grad.w"].bound == pytest.approx(2 * EPS32 * 3.0 + 1e-12, rel=1e-12)  # max|r| wins
    assert "A = max(max|r|, operand magnitude)" in rep.rule
    # without the operand scale the bound collapses to 2·own + 2·eps·2e-17: a false alarm
    plain = compare(noise, ref, precision="float32", own=own)
    assert [r.name for r in plain.failures] == ["grad.b"]
    # ... and with it, an error 1e-3 of the operands still fails
    bad = noise | {"grad.b": np.array([4e-3, 0.0], np.float32)}
    assert [
        r.name for r in compare(bad, ref, precision="float32", own=own, scales=scales).failures
    ] == ["grad.b"]
    # float64: rtol · A
    f64 = compare({"grad.b": np.array([3e-11, 0.0])}, {"grad.b": ref["grad.b"]}, scales=scales)
    assert f64.ok and f64.rows[0].bound == pytest.approx(1e-10 * 4.0 + 1e-12)
    with pytest.raises(ValueError, match="scales\\['grad.b'\\] must give a finite magnitude"):
        compare(noise, ref, precision="float32", own=own, scales={"grad.b": -1.0})


def test_mha_key_bias_gradient_is_zero_but_its_magnitude_is_not(rng):
    """db_k = Σ_rows dK = 0 in exact arithmetic; its size is at least the root-sum-square of
    the rows it sums (the noise a correct implementation leaves)."""
    x = rng.standard_normal((2, 6, 8))
    params = init_mha_params(8, seed=3)
    y, cache = mha_attention(x, params, num_heads=2)
    dy = rng.standard_normal(y.shape)
    g = mha_attention_backward(dy, cache)
    assert np.abs(g.params["b_k"]).max() < 1e-14 * np.abs(g.params["b_q"]).max()
    mags = mha_magnitudes(x, params, dy, num_heads=2)
    assert set(mags) == {"out", "x", "W_q", "b_q", "W_k", "b_k", "W_v", "b_v", "W_o", "b_o"}
    q, k, v = (np.split(x @ params[f"W_{t}"].T + params[f"b_{t}"], 2, axis=-1) for t in "qkv")
    do = np.split(dy @ params["W_o"], 2, axis=-1)
    dk = np.concatenate(
        [
            pn.dual_attention_backward(do[h], pn.dual_attention(q[h], k[h], v[h])[1]).k
            for h in range(2)
        ],
        axis=-1,
    )
    rss_rows = np.sqrt((dk.reshape(-1, 8) ** 2).sum(axis=0)).max()
    assert mags["b_k"].size >= rss_rows > 0.1
    assert mags["b_k"].length == 12 and mags["out"].length == 8
    for name, a in g.params.items():  # every size bounds the value
        assert mags[name].size >= np.abs(a).max() * (1 - 1e-12), name
    assert mags["x"].size >= np.abs(g.x).max() and mags["out"].size >= np.abs(y).max()
    assert math.isfinite(mags["b_k"].logit) and mags["b_k"].logit > 0
