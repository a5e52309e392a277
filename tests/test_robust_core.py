"""Hostile input to the core ops: silent wrong answers, silent NaN, mixed precision, and
property-based checks of the backward passes."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import primal_np as pn
from primal_np.compare import rel_error
from primal_np.fast import fast_primal_attention, fast_primal_attention_backward
from primal_np.gradcheck import check_vjp


# --------------------------------------------------------------------------- wrong answers
def test_stationary_point_refuses_s_beyond_the_rank_of_K():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 3))
    W = rng.standard_normal((2, 3))  # p = 2: K = Φ_q Φ_kᵀ has rank ≤ 2
    sp = pn.stationary_point(x, W, W, 2)
    assert np.all(np.isfinite(sp.lam)) and sp.lam.max() < 1e3
    with pytest.raises(ValueError, match=r"s = 3 exceeds min\(N, p_φ\) = min\(8, 2\)"):
        pn.stationary_point(x, W, W, 3)
    W1 = np.vstack([W[0], 2 * W[0]])  # rank-1 projection: φ(q) = ±the same direction
    with pytest.raises(ValueError, match=r"s = 2 exceeds the numerical rank 1 of K"):
        pn.stationary_point(x, W1, W1, 2, feature_map="identity")


@pytest.mark.parametrize("dtype", [np.int64, np.int32, bool, "U3"])
def test_initialisers_refuse_non_floating_dtypes(dtype):
    cfg = pn.PrimalAttentionConfig(dim=4, num_heads=2, low_rank=1)
    with pytest.raises(TypeError, match="dtype must be a floating dtype"):
        pn.init_primal_attention_params(cfg, dtype=dtype)
    with pytest.raises(TypeError, match="dtype must be a floating dtype"):
        pn.init_mha_params(4, dtype=dtype)


def test_cosine_of_huge_but_finite_rows_is_exact():
    x = np.array([[3e200, 4e200], [3e-200, 4e-200], [3.0, 4.0]])
    y, _ = pn.cosine_normalize(x)
    np.testing.assert_allclose(y[0], [0.6, 0.8], rtol=1e-15)  # no longer 0 after an overflow
    np.testing.assert_allclose(y[2], [0.6, 0.8], rtol=1e-15)
    with pytest.raises(ValueError, match="norm exceeds the largest float64"):
        pn.cosine_normalize(np.array([[1.5e308, 1.5e308]]))


def test_layer_with_huge_inputs_matches_the_rescaled_problem():
    """φ is scale-invariant, so scaling x by 1e150 (with zero biases) only scales F: the
    scores computed from huge inputs equal the exactly rescaled ones."""
    cfg = pn.PrimalAttentionConfig(dim=4, num_heads=2, low_rank=1, rank_multi=2)
    P = pn.init_primal_attention_params(cfg, seed=0)
    P = {k: (np.zeros_like(v) if k in ("bq", "bk") else v) for k, v in P.items()}
    x = np.random.default_rng(1).standard_normal((1, 5, 4))
    _, c1 = pn.primal_attention(x, P, cfg)
    _, c2 = pn.primal_attention(x * 1e150, P, cfg)
    assert rel_error(c2.escore / 1e150, c1.escore) < 1e-14


# --------------------------------------------------------------------------- silent NaN
def _layer(seed=0):
    cfg = pn.PrimalAttentionConfig(dim=4, num_heads=2, low_rank=1, rank_multi=2)
    return cfg, pn.init_primal_attention_params(cfg, seed=seed)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_parameters_and_upstream_gradients_are_named(bad):
    cfg, P = _layer()
    x = np.random.default_rng(0).standard_normal((1, 5, 4))
    P_bad = dict(P, wc=P["wc"].copy())
    P_bad["wc"][0, 1] = bad
    with pytest.raises(
        ValueError, match=r"parameter 'wc' must be finite, got .* at index \(0, 1\)"
    ):
        pn.primal_attention(x, P_bad, cfg)
    y, cache = pn.primal_attention(x, P, cfg)
    dy = np.ones_like(y) * 0.5
    dy[0, 2, 3] = bad
    with pytest.raises(ValueError, match=r"dy must be finite, got .* at index \(0, 2, 3\)"):
        pn.primal_attention_backward(dy, cache)
    sd = pn.to_state_dict(P, cfg)
    sd["attn.Lambda"] = sd["attn.Lambda"].copy()
    sd["attn.Lambda"][0, 0] = bad
    with pytest.raises(ValueError, match=r"state dict entry 'attn.Lambda' must be finite"):
        pn.from_state_dict(sd, cfg)


def test_integer_parameters_and_wrong_shaped_upstream_gradients_are_refused():
    cfg, P = _layer()
    x = np.random.default_rng(0).standard_normal((1, 5, 4))
    with pytest.raises(
        TypeError, match=r"parameter 'bo' must be a floating-point array .* got dtype int64"
    ):
        pn.primal_attention(x, dict(P, bo=np.zeros(4, dtype=np.int64)), cfg)
    y, cache = pn.primal_attention(x, P, cfg)
    with pytest.raises(ValueError, match=r"dy has shape \(1, 4\), expected the output shape"):
        pn.primal_attention_backward(np.zeros((1, 4)), cache)  # would broadcast
    (E, R), sc = pn.primal_scores(*(np.ones((3, 2)),) * 2, np.ones((2, 1)), np.ones((2, 1)))
    with pytest.raises(ValueError, match=r"dscores\[0\] \(dE\) has shape \(1, 1\)"):
        pn.primal_scores_backward((np.ones((1, 1)), np.ones_like(R)), sc)


def test_kkt_weights_and_ksvd_loss_refuse_nan():
    rng = np.random.default_rng(0)
    phi, H = rng.standard_normal((5, 3)), rng.standard_normal((5, 2))
    with pytest.raises(ValueError, match="sigma must be finite"):
        pn.kkt_weights(phi, phi, H, H, np.array([1.0, np.nan]))
    cfg, P = _layer()
    _, cache = pn.primal_attention(rng.standard_normal((2, 5, 4)), P, cfg)
    terms = pn.ksvd_terms_from_cache(cache)
    bad = terms._replace(lam=np.full_like(terms.lam, np.nan))
    with pytest.raises(ValueError, match=r"layers\[0\]\.lam must be finite"):
        pn.ksvd_loss([bad])
    _, lc = pn.ksvd_loss([terms])
    for dloss in (np.nan, np.inf, "1.0", True):
        with pytest.raises((ValueError, TypeError), match="dloss must be"):
            pn.ksvd_loss_backward(dloss, lc)
    with pytest.raises(ValueError, match=r"layers\[0\]: we_x, wr_x must both be \(B, H, p, s\)"):
        pn.ksvd_loss([terms._replace(we_x=terms.we_x[:, :, :1])])
    with pytest.raises(TypeError, match="trace_no_x must be True, False or None, got 'yes'"):
        pn.ksvd_loss([terms], trace_no_x="yes")


# --------------------------------------------------------------------------- mixed precision
def test_gradients_come_back_in_the_forwards_dtype():
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 5, 4)).astype(np.float32) for _ in range(3))
    out, c = pn.dual_attention(q, k, v)
    g = pn.dual_attention_backward(rng.standard_normal(out.shape), c)  # float64 upstream
    assert all(a.dtype == np.float32 for a in g)
    cfg, P = _layer()
    P32 = {n: a.astype(np.float32) for n, a in P.items()}
    x32 = rng.standard_normal((2, 5, 4)).astype(np.float32)
    for fwd, bwd in (
        (pn.primal_attention, pn.primal_attention_backward),
        (fast_primal_attention, fast_primal_attention_backward),
    ):
        y, cache = fwd(x32, P32, cfg)
        terms = pn.ksvd_terms_from_cache(cache)
        _, lc = pn.ksvd_loss([terms])
        (kg,) = pn.ksvd_loss_backward(0.5, lc).layers
        assert all(a is None or a.dtype == np.float32 for a in kg)
        g = bwd(rng.standard_normal(y.shape), cache, ksvd_grads=kg)  # float64 upstream
        assert g.x.dtype == np.float32 and all(a.dtype == np.float32 for a in g.params.values())
    y, mc = pn.mha_attention(x32, pn.init_mha_params(4, dtype=np.float32), num_heads=2)
    g = pn.mha_attention_backward(rng.standard_normal(y.shape), mc)
    assert g.x.dtype == np.float32 and all(a.dtype == np.float32 for a in g.params.values())
    y, lin = pn.linear(x32, P32["wo"], P32["bo"])
    assert all(a.dtype == np.float32 for a in pn.linear_backward(rng.standard_normal(y.shape), lin))


# --------------------------------------------------------------------------- properties
SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)


@SETTINGS
@given(
    n=st.integers(1, 5), m=st.integers(1, 5), d=st.integers(1, 4), causal=st.booleans(),
    masked=st.booleans(), seed=st.integers(0, 2**16),
)  # fmt: skip
def test_dual_attention_vjp_property(n, m, d, causal, masked, seed):
    rng = np.random.default_rng(seed)
    mask = rng.random((n, m)) < 0.7 if masked else None  # rows may be fully masked
    rep = check_vjp(
        lambda q, k, v: pn.dual_attention(q, k, v, mask=mask, causal=causal),
        pn.dual_attention_backward,
        {
            "q": rng.standard_normal((n, d)),
            "k": rng.standard_normal((m, d)),
            "v": rng.standard_normal((m, 2)),
        },  # fmt: skip
        ["q", "k", "v"],
        seed=seed,
    )
    assert rep.ok, str(rep)


@SETTINGS
@given(
    name=st.sampled_from(["cosine", "identity", "poly2", "positive_random"]),
    rows=st.integers(1, 4), d=st.integers(1, 4), seed=st.integers(0, 2**16),
)  # fmt: skip
def test_feature_map_vjp_property(name, rows, d, seed):
    fm = pn.get_feature_map(name)
    params = fm.make_params(d, seed) if fm.make_params else {}
    x = 0.7 * np.random.default_rng(seed).standard_normal((rows, d))
    rep = check_vjp(lambda x: fm.forward(x, **params), fm.backward, {"x": x}, ["x"], seed=seed)
    assert rep.ok, str(rep)


@SETTINGS
@given(
    variant=st.sampled_from(["lra", "vision", "causal"]), n_tok=st.integers(1, 7),
    heads=st.sampled_from([1, 2]), rank=st.integers(1, 2), seed=st.integers(0, 2**16),
)  # fmt: skip
def test_layer_vjp_property(variant, n_tok, heads, rank, seed):
    cfg = pn.PrimalAttentionConfig(
        dim=2 * heads, num_heads=heads, low_rank=rank, rank_multi=2, variant=variant,
        num_tokens=n_tok if variant == "vision" else None,
        data_dependent=None if variant != "lra" or rank <= 2 else False,
    )  # fmt: skip
    if variant == "causal" and rank > 2:
        return
    P = pn.init_primal_attention_params(cfg, seed=seed, linear_init="torch")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, n_tok, cfg.dim))
    rep = check_vjp(
        lambda x, **p: pn.primal_attention(x, p, cfg),
        lambda dy, c: {"x": (g := pn.primal_attention_backward(dy, c)).x, **g.params},
        {"x": x, **P},
        ["x", *P],
        seed=seed,  # elementwise: a joint directional step is too coarse near small-norm rows
    )
    assert rep.ok, str(rep)
