"""KEP-SVGP attention: the whole layer with its KL term and KSVD loss by finite differences,
its structure against the equations written out with loops, noise handling, parameters,
state dicts and bad input."""

import itertools

import numpy as np
import pytest
from helpers import readonly

from primal_np.gradcheck import gradcheck
from primal_np.init import torch_linear_init
from primal_np.kep_svgp import (
    KEPSVGPConfig,
    authors_squeeze_problem,
    draw_noise,
    init_kep_svgp_params,
    kep_from_state_dict,
    kep_param_shapes,
    kep_sample_indices,
    kep_svgp_attention,
    kep_svgp_attention_backward,
    kep_svgp_losses,
    kep_svgp_losses_backward,
    kep_svgp_objective,
    kep_to_state_dict,
    noise_shape,
)
from primal_np.sampling import torch_linspace_indices

D, HEADS, S = 6, 2, 2
CONFIGS = {
    "vision": dict(embed_len=5),
    "vision-concate": dict(embed_len=5, concate=True),
    "vision-all-tokens-qk-bias-proj": dict(
        embed_len=5, rank_multi=3, qk_bias=True, apply_proj=True
    ),
    "per-output": dict(embed_len=5, factor_layout="per_output"),
    "cola-mask-N<n": dict(variant="cola", rank_multi=3),
}


def _setup(rng, name, B=2, N=5):
    kw = {"rank_multi": 2, **CONFIGS[name]}
    cfg = KEPSVGPConfig(dim=D, num_heads=HEADS, low_rank=S, **kw)
    params = init_kep_svgp_params(cfg, seed=3)
    x = rng.standard_normal((B, N, D))
    mask = None
    if cfg.variant == "cola":
        mask = np.ones((B, N), bool)
        mask[1, N - 2 :] = False
    return cfg, params, x, draw_noise(rng, cfg, B, N), mask


@pytest.mark.parametrize("name", list(CONFIGS))
def test_whole_layer_and_losses_finite_differences(rng, name):
    cfg, params, x, noise, mask = _setup(rng, name)
    cot = rng.standard_normal(x.shape)

    def value(x, **p):  # the objective from the forward pairs alone
        y, cache = kep_svgp_attention(x, p, cfg, noise=noise, mask=mask)
        losses, _ = kep_svgp_losses(cache)
        return np.sum(cot * y) + 0.3 * losses.kl + 0.4 * losses.ksvd_loss

    r = kep_svgp_objective(
        x, params, cfg, noise=noise, cotangent=cot, eta=0.4, eta_kl=0.3, mask=mask
    )
    gradcheck(value, {"x": x, **params}, {"x": r.dx, **r.grads}).assert_ok()
    if not cfg.apply_proj and cfg.variant == "vision":
        assert not np.any(r.grads["proj.weight"]) and not np.any(r.grads["proj.bias"])


def _cosine(v):
    return v / max(np.linalg.norm(v), 1e-12)


def _reference_head_outputs(x, P, cfg, noise, mask=None):
    """Every equation with loops, straight from the definitions (docs/conformance.md)."""
    B, N, _ = x.shape
    p, s, H = cfg.head_dim, cfg.low_rank, cfg.num_heads
    n_rows = 2 * N if cfg.concate else N
    wqk, bqk = P["qk.weight"], P.get("qk.bias", np.zeros(2 * D))
    idx = kep_sample_indices(cfg, N)
    out = np.zeros((B, N, D))
    for b, h in itertools.product(range(B), range(H)):
        cols = slice(h * p, (h + 1) * p)
        keep = np.ones(N) if mask is None else mask[b].astype(float)
        Q = (x[b] @ wqk[:D].T + bqk[:D])[:, cols] * keep[:, None]
        K = (x[b] @ wqk[D:].T + bqk[D:])[:, cols] * keep[:, None]
        Fh = x[b][idx][:, cols]
        E = np.array([_cosine(q) for q in Q]) @ (Fh.T @ P["we"][h])
        R = np.array([_cosine(k) for k in K]) @ (Fh.T @ P["wr"][h])
        base = np.vstack([E, R]) if cfg.concate else E + R
        V1 = base * np.exp(2 * P["log_lambda_sqrt_inv_diag"][h])
        Y = np.zeros((n_rows, s))
        for i, c in itertools.product(range(n_rows), range(s)):
            Y[i, c] = V1[i] @ P["m_u"][0, h, :, c]
            for a, r in itertools.product(range(s), range(s)):
                if r == c:
                    Lv = np.exp(P["log_ssqrt"][0, h, a, r])
                else:
                    Lv = P["s_sqrt_low_triangle"][0, h, a, r, c] if r > c else 0.0
                Y[i, c] += V1[i, a] * Lv * noise[b, h, i, r, 0]
        O = Y @ P["final_weight.weight"].T + P["final_weight.bias"]
        if cfg.concate:
            O = P["embed_len_weight.weight"] @ O + P["embed_len_weight.bias"][:, None]
        out[b][:, cols] = O
    if cfg.apply_proj:
        out = out @ P["proj.weight"].T + P["proj.bias"]
    return out


@pytest.mark.parametrize(
    "name", ["vision", "vision-concate", "vision-all-tokens-qk-bias-proj", "cola-mask-N<n"]
)
def test_structure_matches_the_equations(rng, name):
    cfg, P, x, noise, mask = _setup(rng, name)
    y, _ = kep_svgp_attention(x, P, cfg, noise=noise, mask=mask)
    np.testing.assert_allclose(
        y, _reference_head_outputs(x, P, cfg, noise, mask), rtol=1e-12, atol=1e-12
    )


def test_sampled_positions():
    def cfg(**kw):
        return KEPSVGPConfig(dim=4, num_heads=2, low_rank=2, rank_multi=3, **kw)

    np.testing.assert_array_equal(kep_sample_indices(cfg(embed_len=9), 9), [0, 1, 3, 4, 6, 8])
    np.testing.assert_array_equal(
        kep_sample_indices(cfg(embed_len=9), 20), torch_linspace_indices(20, 6)
    )
    np.testing.assert_array_equal(kep_sample_indices(cfg(embed_len=6), 6), np.arange(6))
    np.testing.assert_array_equal(kep_sample_indices(cfg(variant="cola"), 4), [0, 0, 1, 1, 2, 3])
    assert cfg(embed_len=4).num_samples == 4 and cfg(variant="cola").num_samples == 6


def test_noise_from_rng_and_zero_noise(rng):
    cfg, P, x, _, _ = _setup(rng, "vision")
    y1, c1 = kep_svgp_attention(x, P, cfg, rng=7)
    y2, _ = kep_svgp_attention(x, P, cfg, noise=draw_noise(7, cfg, *x.shape[:2]))
    np.testing.assert_array_equal(y1, y2)
    assert c1.noise.shape == (2, HEADS, 5, S)
    y0, c0 = kep_svgp_attention(x, P, cfg, noise=np.zeros(noise_shape(cfg, 2, 5)))
    np.testing.assert_array_equal(c0.samples, c0.mean)
    assert not np.allclose(y0, y1)


def test_loss_grads_complete_the_gradient(rng):
    """Without loss_grads the backward is the gradient of Σ⟨dy, y⟩ alone; with them, of the
    whole objective: their difference is exactly the losses' own gradient."""
    cfg, P, x, noise, _ = _setup(rng, "vision")
    y, cache = kep_svgp_attention(x, P, cfg, noise=noise)
    dy = rng.standard_normal(y.shape)
    losses, lcache = kep_svgp_losses(cache)
    lg = kep_svgp_losses_backward((0.3, 0.4), lcache)
    full = kep_svgp_attention_backward(dy, cache, loss_grads=lg)
    plain = kep_svgp_attention_backward(dy, cache)
    m_u_diff = full.params["m_u"] - plain.params["m_u"]
    np.testing.assert_allclose(
        m_u_diff,
        0.3 * np.exp(4 * P["log_lambda_sqrt_inv_diag"])[None, :, :, None] * P["m_u"],
        rtol=1e-12,
    )
    np.testing.assert_allclose(full.params["qk.weight"] - plain.params["qk.weight"],
                               kep_svgp_attention_backward(np.zeros_like(dy), cache, loss_grads=lg).params["qk.weight"],
                               rtol=1e-10, atol=1e-12)  # fmt: skip
    assert losses.kl == pytest.approx(kep_svgp_losses(cache)[0].kl, rel=0)


def test_float32_stays_float32_and_inputs_are_not_written(rng):
    cfg, P, x, noise, _ = _setup(rng, "vision-concate")
    P32 = {k: readonly(v.astype(np.float32)) for k, v in P.items()}
    x32, n32 = readonly(x.astype(np.float32), noise)
    y, cache = kep_svgp_attention(x32, P32, cfg, noise=n32)
    losses, lcache = kep_svgp_losses(cache)
    g = kep_svgp_attention_backward(
        readonly(rng.standard_normal(y.shape)),
        cache,
        loss_grads=kep_svgp_losses_backward((1.0, 0.1), lcache),
    )
    assert y.dtype == np.float32 and g.x.dtype == np.float32
    assert all(v.dtype == np.float32 for v in g.params.values())
    y64, _ = kep_svgp_attention(x, P, cfg, noise=noise)
    assert np.max(np.abs(y - y64)) / np.max(np.abs(y64)) < 1e-5


def test_init_distributions_and_shapes():
    cfg = KEPSVGPConfig(dim=8, num_heads=2, low_rank=4, rank_multi=5, embed_len=30, concate=True)
    P = init_kep_svgp_params(cfg, seed=0)
    assert {k: v.shape for k, v in P.items()} == kep_param_shapes(cfg)
    assert kep_param_shapes(cfg)["we"] == (2, 20, 4) and "qk.bias" not in P
    flat = P["we"].reshape(2, -1)
    np.testing.assert_allclose(flat @ flat.T, np.eye(2), atol=1e-12)  # orthogonal_ rows
    assert 0 <= P["log_lambda_sqrt_inv_diag"].min() and P["log_lambda_sqrt_inv_diag"].max() < 1
    assert (
        np.abs(P["qk.weight"]).max() <= 1 / np.sqrt(8)
        and np.abs(P["final_weight.weight"]).max() <= 1 / 2
    )
    assert np.abs(P["embed_len_weight.weight"]).max() <= 1 / np.sqrt(60)
    big = init_kep_svgp_params(KEPSVGPConfig(dim=8, num_heads=8, low_rank=12, embed_len=4), seed=1)
    z = big["s_sqrt_low_triangle"].ravel()  # 8·12³ standard normals
    assert abs(z.mean()) < 0.05 and abs(z.std() - 1) < 0.05
    w, _ = torch_linear_init(np.random.default_rng(0), 8, 16)
    assert w.shape == (16, 8)


def test_state_dict_round_trip_and_errors(rng):
    cfg, P, _, _, _ = _setup(rng, "vision-all-tokens-qk-bias-proj")
    sd = kep_to_state_dict(P, cfg, prefix="enc.6.msa.")
    assert "enc.6.msa.log_lambda_sqrt_inv_diag" in sd and "enc.6.msa.qk.bias" in sd
    back = kep_from_state_dict({**sd, "enc.6.la1.weight": np.ones(6)}, cfg, prefix="enc.6.msa.")
    assert all(np.array_equal(back[k], P[k]) for k in P)
    with pytest.raises(KeyError, match="missing"):
        kep_from_state_dict(
            {k: v for k, v in sd.items() if "m_u" not in k}, cfg, prefix="enc.6.msa."
        )
    with pytest.raises(KeyError, match="unexpected"):
        kep_from_state_dict(
            {**sd, "enc.6.msa.embed_len_weight.weight": np.ones((5, 10))}, cfg, prefix="enc.6.msa."
        )
    with pytest.raises(ValueError, match="m_u"):
        kep_from_state_dict(
            {**sd, "enc.6.msa.m_u": np.ones((HEADS, S, S))}, cfg, prefix="enc.6.msa."
        )
    cola = KEPSVGPConfig(dim=D, num_heads=HEADS, low_rank=S, variant="cola")
    assert "proj.weight" not in kep_param_shapes(cola)


def test_authors_squeeze_option(rng):
    cfg = KEPSVGPConfig(
        dim=D, num_heads=HEADS, low_rank=S, rank_multi=2, embed_len=5, authors_squeeze=True
    )
    P = init_kep_svgp_params(cfg, seed=0)
    y1, _ = kep_svgp_attention(rng.standard_normal((1, 5, D)), P, cfg, rng=0)  # B = 1 runs
    assert y1.shape == (1, 5, D)
    with pytest.raises(ValueError, match="squeeze"):
        kep_svgp_attention(rng.standard_normal((2, 1, D)), P, cfg, rng=0)  # N = 1
    plain = KEPSVGPConfig(dim=D, num_heads=HEADS, low_rank=S, rank_multi=2, embed_len=5)
    y, _ = kep_svgp_attention(rng.standard_normal((2, 1, D)), P, plain, rng=0)
    assert y.shape == (2, 1, D)
    assert authors_squeeze_problem(1, 1, 3, 2) is None
    assert "H = 1" in authors_squeeze_problem(2, 1, 3, 2)
    assert "s = 1" in authors_squeeze_problem(2, 2, 3, 1)


def test_bad_input_is_named(rng):
    cfg, P, x, noise, _ = _setup(rng, "vision")
    with pytest.raises(ValueError, match="exactly one"):
        kep_svgp_attention(x, P, cfg)
    with pytest.raises(ValueError, match="exactly one"):
        kep_svgp_attention(x, P, cfg, noise=noise, rng=0)
    with pytest.raises(ValueError, match="noise has shape"):
        kep_svgp_attention(x, P, cfg, noise=noise[:, :, :, :1])
    with pytest.raises(ValueError, match="cola"):
        kep_svgp_attention(x, P, cfg, noise=noise, mask=np.ones(x.shape[:2], bool))
    with pytest.raises(ValueError, match="D = 6"):
        kep_svgp_attention(x[..., :4], P, cfg, noise=noise)
    with pytest.raises(KeyError, match="missing"):
        kep_svgp_attention(x, {k: v for k, v in P.items() if k != "m_u"}, cfg, noise=noise)
    cat = KEPSVGPConfig(dim=D, num_heads=HEADS, low_rank=S, rank_multi=2, embed_len=5, concate=True)
    with pytest.raises(ValueError, match="embed_len"):
        kep_svgp_attention(rng.standard_normal((2, 4, D)), init_kep_svgp_params(cat), cat, rng=0)
    with pytest.raises(ValueError, match="embed_len"):
        KEPSVGPConfig(dim=D, num_heads=HEADS)
    with pytest.raises(ValueError, match="CoLA"):
        KEPSVGPConfig(dim=D, num_heads=HEADS, variant="cola", concate=True)
    with pytest.raises(ValueError, match="factor_layout"):
        KEPSVGPConfig(dim=D, num_heads=HEADS, embed_len=4, factor_layout="cholesky")
    with pytest.raises(TypeError, match="concate"):
        KEPSVGPConfig(dim=D, num_heads=HEADS, embed_len=4, concate=1)
    y, cache = kep_svgp_attention(x, P, cfg, noise=noise)
    with pytest.raises(TypeError, match="loss_grads"):
        kep_svgp_attention_backward(np.zeros_like(y), cache, loss_grads=(1, 2))
    _, lcache = kep_svgp_losses(cache)
    with pytest.raises(TypeError, match="pair"):
        kep_svgp_losses_backward(1.0, lcache)
    with pytest.raises(ValueError, match="dy has shape"):
        kep_svgp_attention_backward(np.zeros((2, 5, 4)), cache)
