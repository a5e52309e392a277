"""The Primal-Attention layer: finite differences, structure, memory, init, state dicts, bad input."""

import tracemalloc

import numpy as np
import pytest
from helpers import readonly

from primal_np.gradcheck import gradcheck
from primal_np.layer import primal_attention, primal_attention_backward, sample_indices
from primal_np.objective import layer_objective
from primal_np.params import (
    PrimalAttentionConfig,
    from_state_dict,
    init_primal_attention_params,
    load_state_dict,
    param_shapes,
    save_state_dict,
    to_state_dict,
)

CONFIGS = {
    "lra": (dict(variant="lra"), "lra"),
    "lra-trace-x": (dict(variant="lra"), "lra_trace_x"),
    "lra-N<n": (dict(variant="lra", rank_multi=4), "lra_trace_x"),
    "lra-data-independent-paper": (dict(variant="lra", data_dependent=False), "paper"),
    "vision": (dict(variant="vision", num_tokens=5), "vision"),
    "vision-qk-bias": (dict(variant="vision", num_tokens=5, qk_bias=True), "lra_trace_x"),
    "causal": (dict(variant="causal"), "per_sample"),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_whole_layer_and_loss_finite_differences(rng, name):
    kw, convention = CONFIGS[name]
    cfg = PrimalAttentionConfig(dim=6, num_heads=2, low_rank=2, **{"rank_multi": 3, **kw})
    params = init_primal_attention_params(cfg, seed=4, linear_init="torch")
    x = rng.standard_normal((2, 5, 6))
    mask = None
    if cfg.variant == "lra":
        mask = np.array([[True] * 5, [True, True, True, False, False]])
    cot = rng.standard_normal(x.shape)
    eta = 0.6

    def value(x, **p):
        return layer_objective(
            x, p, cfg, cotangent=cot, eta=eta, convention=convention, mask=mask
        ).value

    r = layer_objective(x, params, cfg, cotangent=cot, eta=eta, convention=convention, mask=mask)
    gradcheck(value, {"x": x, **params}, {"x": r.dx, **r.grads}).assert_ok()


def test_structure_matches_the_equations(rng):
    """Recompute one head's output from the formulas of docs/theory.md §4.1 with plain NumPy."""
    cfg = PrimalAttentionConfig(dim=6, num_heads=2, low_rank=2, rank_multi=2)
    P = init_primal_attention_params(cfg, seed=1)
    x = rng.standard_normal((1, 7, 6))
    y, cache = primal_attention(x, P, cfg)
    h, p = 1, 3
    q = (x[0] @ P["wq"].T + P["bq"])[:, h * p : (h + 1) * p]
    k = (x[0] @ P["wk"].T + P["bk"])[:, h * p : (h + 1) * p]
    phi_q = q / np.linalg.norm(q, axis=1, keepdims=True)
    phi_k = k / np.linalg.norm(k, axis=1, keepdims=True)
    idx = [0, 2, 4, 6]  # torch.linspace(0, 6, 4) = 0, 2, 4, 6
    np.testing.assert_array_equal(sample_indices(cfg, 7), idx)
    F = x[0][idx, h * p : (h + 1) * p]
    E = phi_q @ (F.T @ P["we"][h])
    R = phi_k @ (F.T @ P["wr"][h])
    np.testing.assert_allclose(cache.escore[0, h], E, rtol=1e-13)
    np.testing.assert_allclose(cache.rscore[0, h], R, rtol=1e-13)
    head = np.concatenate([E, R], axis=1) @ P["wc"].T + P["bc"]
    np.testing.assert_allclose(cache.out_proj.x[0][:, h * p : (h + 1) * p], head, rtol=1e-13)
    np.testing.assert_allclose(y[0], cache.out_proj.x[0] @ P["wo"].T + P["bo"], rtol=1e-13)


def test_mask_zeroes_padded_rows_but_padded_tokens_still_enter_F(rng):
    cfg = PrimalAttentionConfig(dim=4, num_heads=2, low_rank=1, rank_multi=3)
    P = init_primal_attention_params(cfg, seed=2)
    x = rng.standard_normal((1, 6, 4))
    mask = np.array([[True, True, True, True, False, False]])
    y, cache = primal_attention(x, P, cfg, mask=mask)
    np.testing.assert_allclose(
        y[0, 4:], np.broadcast_to(P["bo"], (2, 4)), rtol=1e-15
    )  # only the bias
    x2 = x.copy()
    x2[0, 5] += 1.0  # token 5 is padded but sampled (idx = 0, 2, 5)
    y2, _ = primal_attention(x2, P, cfg, mask=mask)
    assert np.abs(y2[0, :4] - y[0, :4]).max() > 1e-3


def test_repeated_indices_accumulate_in_the_backward(rng):
    cfg = PrimalAttentionConfig(dim=4, num_heads=1, low_rank=2, rank_multi=3)  # n = 6
    assert list(sample_indices(cfg, 3)) == [0, 0, 0, 1, 1, 2]
    P = init_primal_attention_params(cfg, seed=3)
    x = rng.standard_normal((2, 3, 4))
    cot = rng.standard_normal(x.shape)

    def value(x):
        return layer_objective(x, P, cfg, cotangent=cot, eta=0.3, convention="lra_trace_x").value

    r = layer_objective(x, P, cfg, cotangent=cot, eta=0.3, convention="lra_trace_x")
    gradcheck(value, {"x": x}, {"x": r.dx}).assert_ok()


def test_lambda_gets_gradient_only_from_the_loss(rng):
    cfg = PrimalAttentionConfig(dim=4, num_heads=2, low_rank=1, rank_multi=2)
    P = init_primal_attention_params(cfg, seed=0)
    y, cache = primal_attention(rng.standard_normal((1, 3, 4)), P, cfg)
    _, grads = primal_attention_backward(rng.standard_normal(y.shape), cache)
    assert np.all(grads["lam"] == 0.0)


def test_causal_output_does_not_see_the_future(rng):
    cfg = PrimalAttentionConfig(dim=6, num_heads=3, low_rank=2, variant="causal")
    P = init_primal_attention_params(cfg, seed=5)
    x = rng.standard_normal((1, 8, 6))
    y, _ = primal_attention(x, P, cfg)
    x2 = x.copy()
    x2[0, 5:] = rng.standard_normal((3, 6))
    y2, _ = primal_attention(x2, P, cfg)
    np.testing.assert_array_equal(y[0, :5], y2[0, :5])
    assert np.abs(y[0, 5:] - y2[0, 5:]).max() > 1e-6


def test_no_n_by_n_array_is_formed():
    """Peak memory of forward + backward at N = 4096 stays far below one N×N float64 array."""
    cfg = PrimalAttentionConfig(dim=16, num_heads=2, low_rank=4, rank_multi=2)
    P = init_primal_attention_params(cfg, seed=0)
    n = 4096
    x = np.random.default_rng(0).standard_normal((1, n, 16))
    dy = np.random.default_rng(1).standard_normal((1, n, 16))
    tracemalloc.start()
    y, cache = primal_attention(x, P, cfg)
    primal_attention_backward(dy, cache)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 0.1 * n * n * 8, peak  # an N×N float64 array alone is 134 MB


def test_float32_stays_float32_and_inputs_are_read_only(rng):
    cfg = PrimalAttentionConfig(dim=6, num_heads=2, low_rank=2, rank_multi=2)
    P = {
        k: readonly(v.astype(np.float32))
        for k, v in init_primal_attention_params(cfg, seed=1).items()
    }
    x = readonly(rng.standard_normal((2, 5, 6)).astype(np.float32))
    mask = readonly(np.ones((2, 5), bool))
    cot = readonly(rng.standard_normal((2, 5, 6)).astype(np.float32))
    r = layer_objective(x, P, cfg, cotangent=cot, eta=0.1, convention="lra_trace_x", mask=mask)
    assert r.out.dtype == np.float32 and r.dx.dtype == np.float32
    assert all(g.dtype == np.float32 for g in r.grads.values()), {
        k: g.dtype for k, g in r.grads.items()
    }
    r64 = layer_objective(
        x.astype(np.float64),
        {k: v.astype(np.float64) for k, v in P.items()},
        cfg,
        cotangent=cot.astype(np.float64),
        eta=0.1,
        convention="lra_trace_x",
        mask=mask,
    )
    assert np.abs(r.out - r64.out).max() < 1e-5 * np.abs(r64.out).max()


def test_init_distributions(rng):
    cfg = PrimalAttentionConfig(dim=16, num_heads=4, low_rank=3, rank_multi=5)
    a = init_primal_attention_params(cfg, seed=9)
    b = init_primal_attention_params(cfg, seed=9)
    assert all(np.array_equal(a[k], b[k]) for k in a)  # deterministic given the seed
    flat = a["we"].reshape(4, -1)
    np.testing.assert_allclose(flat @ flat.T, np.eye(4), atol=1e-14)  # orthonormal rows of (H, n·s)
    np.testing.assert_allclose(np.linalg.norm(a["we"], axis=(1, 2)), 1.0, rtol=1e-14)
    assert a["lam"].min() >= 0 and a["lam"].max() < 1
    assert np.abs(a["wq"]).max() <= 1 / np.sqrt(16) and np.abs(a["bq"]).max() <= 1 / np.sqrt(16)
    assert np.abs(a["wc"]).max() <= 1 / np.sqrt(6)  # fan_in 2s = 6
    v = init_primal_attention_params(
        PrimalAttentionConfig(64, 4, 3, variant="vision", num_tokens=50), seed=0
    )
    assert abs(v["wqk"].std() - 0.02) < 0.002 and np.all(v["bo"] == 0)


def test_state_dict_round_trip_and_names(tmp_path):
    cfg = PrimalAttentionConfig(dim=8, num_heads=2, low_rank=2, rank_multi=3)
    P = init_primal_attention_params(cfg, seed=0)
    sd = to_state_dict(P, cfg, prefix="encoder.layers.0.")
    assert sd["encoder.layers.0.attn.Lambda"].shape == (2, 2)
    assert sd["encoder.layers.0.W_q.weight"].shape == (8, 8)
    assert sd["encoder.layers.0.We"].shape == (2, 6, 2)
    back = from_state_dict(sd, cfg, prefix="encoder.layers.0.")
    assert all(np.array_equal(back[k], P[k]) for k in P)
    path = tmp_path / "sd.npz"
    save_state_dict(path, P, cfg)
    loaded = load_state_dict(path, cfg)
    assert all(np.array_equal(loaded[k], P[k]) for k in P)
    vis = PrimalAttentionConfig(dim=8, num_heads=2, low_rank=2, variant="vision", num_tokens=4)
    assert set(to_state_dict(init_primal_attention_params(vis), vis)) == {
        "qk.weight", "we", "wr", "Lambda", "concate_weight.weight", "concate_weight.bias", "proj.weight", "proj.bias",
    }  # fmt: skip


def test_state_dict_errors_name_the_key():
    cfg = PrimalAttentionConfig(dim=8, num_heads=2, low_rank=2, rank_multi=3)
    sd = to_state_dict(init_primal_attention_params(cfg), cfg)
    with pytest.raises(KeyError, match=r"missing \['attn.Lambda'\]"):
        from_state_dict({k: v for k, v in sd.items() if k != "attn.Lambda"}, cfg)
    with pytest.raises(KeyError, match=r"unexpected entries \['attn.extra'\]"):
        from_state_dict({**sd, "attn.extra": np.zeros(1)}, cfg)
    with pytest.raises(ValueError, match=r"entry 'We' has shape \(2, 5, 2\), expected \(2, 6, 2\)"):
        from_state_dict({**sd, "We": np.zeros((2, 5, 2))}, cfg)


@pytest.mark.parametrize(
    "kwargs,exc,pattern",
    [
        (
            dict(dim=10, num_heads=3, low_rank=2),
            ValueError,
            "dim 10 is not divisible by num_heads 3",
        ),
        (dict(dim=8, num_heads=2, low_rank=0), ValueError, "low_rank must be >= 1, got 0"),
        (
            dict(dim=8, num_heads=2, low_rank=2, rank_multi=-1),
            ValueError,
            "rank_multi must be >= 1, got -1",
        ),
        (dict(dim=8, num_heads=2, low_rank=2.5), TypeError, "low_rank must be an integer"),
        (
            dict(dim=8, num_heads=2, low_rank=2, variant="text"),
            ValueError,
            "variant must be one of",
        ),
        (
            dict(dim=8, num_heads=2, low_rank=5, data_dependent=False),
            ValueError,
            "low_rank 5 exceeds the feature width p_φ = 4",
        ),
        (
            dict(dim=8, num_heads=2, low_rank=2, variant="causal", data_dependent=True),
            ValueError,
            "future tokens",
        ),
        (dict(dim=8, num_heads=2, low_rank=2, variant="vision"), ValueError, "needs num_tokens"),
    ],
)
def test_bad_config(kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        PrimalAttentionConfig(**kwargs)


def test_bad_inputs(rng):
    cfg = PrimalAttentionConfig(dim=8, num_heads=2, low_rank=2, rank_multi=3)
    P = init_primal_attention_params(cfg)
    x = rng.standard_normal((2, 5, 8))
    with pytest.raises(
        ValueError, match=r"x has shape \(2, 5, 6\); expected \(B, N, D\) with D = dim = 8"
    ):
        primal_attention(rng.standard_normal((2, 5, 6)), P, cfg)
    with pytest.raises(ValueError, match=r"mask has shape \(2, 4\), expected \(B, N\) = \(2, 5\)"):
        primal_attention(x, P, cfg, mask=np.ones((2, 4), bool))
    with pytest.raises(TypeError, match="mask must be a boolean array"):
        primal_attention(x, P, cfg, mask=np.ones((2, 5)))
    with pytest.raises(ValueError, match=r"parameter 'wc' has shape \(4, 3\), expected \(4, 4\)"):
        primal_attention(x, {**P, "wc": np.zeros((4, 3))}, cfg)
    with pytest.raises(KeyError, match=r"missing \['bo'\]"):
        primal_attention(x, {k: v for k, v in P.items() if k != "bo"}, cfg)
    vis = PrimalAttentionConfig(
        dim=8, num_heads=2, low_rank=2, rank_multi=3, variant="vision", num_tokens=5
    )
    with pytest.raises(ValueError, match="padding mask applies to the lra variant only"):
        primal_attention(x, init_primal_attention_params(vis), vis, mask=np.ones((2, 5), bool))
    with pytest.raises(
        ValueError, match=r"4 tokens give n = 4 sampled rows but we has shape \(2, 5, 2\)"
    ):
        primal_attention(x[:, :4], init_primal_attention_params(vis), vis)
    assert param_shapes(vis)["we"] == (2, 5, 2)
