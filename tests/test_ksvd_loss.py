"""The KSVD loss in every convention: closed forms, gradients, and Λ_paper = λ²/N."""

import itertools

import numpy as np
import pytest

from primal_np.gradcheck import gradcheck
from primal_np.ksvd import ksvd_objective
from primal_np.ksvd_loss import (
    CONVENTIONS,
    KSVDConvention,
    KSVDTerms,
    get_convention,
    ksvd_loss,
    ksvd_loss_backward,
    ksvd_terms_from_cache,
)
from primal_np.layer import primal_attention
from primal_np.params import PrimalAttentionConfig, init_primal_attention_params

B, H, N, S, n, P = 2, 3, 5, 2, 4, 3


def _terms(rng, data=True):
    return KSVDTerms(
        escore=rng.standard_normal((B, H, N, S)),
        rscore=rng.standard_normal((B, H, N, S)),
        lam=rng.uniform(-1, 1, (H, S)),  # the code does not constrain λ's sign
        we=rng.standard_normal((H, n, S)),
        wr=rng.standard_normal((H, n, S)),
        we_x=rng.standard_normal((B, H, P, S)) if data else None,
        wr_x=rng.standard_normal((B, H, P, S)) if data else None,
    )


def _as_inputs(layers):
    return {
        f"{f}{i}": getattr(t, f)
        for i, t in enumerate(layers)
        for f in KSVDTerms._fields
        if getattr(t, f) is not None
    }


def _from_inputs(kw, n_layers):
    return [KSVDTerms(**{f: kw.get(f"{f}{i}") for f in KSVDTerms._fields}) for i in range(n_layers)]


ALL_CONVENTIONS = list(CONVENTIONS.values()) + [
    KSVDConvention(q, t, tr, sq, o, ly)
    for q, t, tr, sq, o, ly in itertools.product(
        ("lambda_sq", "Lambda"),
        ("mean", "sum"),
        ("params", "data"),
        ("batch", "sample", "problem"),
        ("mean", "sum"),
        ("mean", "sum"),
    )
    if (q, t, o) in {("lambda_sq", "sum", "sum"), ("Lambda", "mean", "mean")}
]


@pytest.mark.parametrize("conv", ALL_CONVENTIONS, ids=str)
def test_loss_gradients_every_convention(rng, conv):
    layers = [_terms(rng), _terms(rng)]
    dloss = 0.77
    loss, cache = ksvd_loss(layers, conv)
    grads = ksvd_loss_backward(dloss, cache).layers
    analytic = {}
    for i, g in enumerate(grads):
        for f in KSVDTerms._fields:
            val = getattr(g, f)
            analytic[f"{f}{i}"] = val if val is not None else np.zeros_like(getattr(layers[i], f))
    inputs = _as_inputs(layers)
    # The central difference's rounding error is ~ε^{2/3}·|L| ≈ 4e-11·|L|; summed conventions
    # reach |L| ~ 1e3 here, so the absolute floor scales with |L| (25× margin).
    atol = 1e-9 * max(1.0, abs(dloss * loss))
    gradcheck(
        lambda **kw: dloss * ksvd_loss(_from_inputs(kw, 2), conv)[0], inputs, analytic, atol=atol
    ).assert_ok()


def test_lra_preset_equals_the_formula_written_out(rng):
    """(1/L) Σ_l (mean_{b,h,n} ½‖λ_h⊙e‖² + mean_{b,h,n} ½‖λ_h⊙r‖² − (1/H)Σ_h Tr(We_hᵀWr_h))²."""
    layers = [_terms(rng), _terms(rng)]
    expect = 0.0
    for t in layers:
        a = np.mean(
            [
                0.5 * np.sum((t.lam[h] * t.escore[b, h, i]) ** 2)
                for b in range(B)
                for h in range(H)
                for i in range(N)
            ]
        )
        c = np.mean(
            [
                0.5 * np.sum((t.lam[h] * t.rscore[b, h, i]) ** 2)
                for b in range(B)
                for h in range(H)
                for i in range(N)
            ]
        )
        T = np.mean([np.trace(t.we[h].T @ t.wr[h]) for h in range(H)])
        expect += (a + c - T) ** 2 / 2
    assert ksvd_loss(layers, "lra")[0] == pytest.approx(expect, rel=1e-13)
    # trace on the data-dependent weights: T_X = mean_{b,h} Tr(W_{e|X}ᵀ W_{r|X})
    t = layers[0]
    a = np.mean(0.5 * np.sum((t.lam[None, :, None] * t.escore) ** 2, -1))
    c = np.mean(0.5 * np.sum((t.lam[None, :, None] * t.rscore) ** 2, -1))
    TX = np.mean([np.trace(t.we_x[b, h].T @ t.wr_x[b, h]) for b in range(B) for h in range(H)])
    assert ksvd_loss([t], "lra_trace_x")[0] == pytest.approx((a + c - TX) ** 2, rel=1e-13)
    assert ksvd_loss([t], "lra", trace_no_x=False)[0] == ksvd_loss([t], "lra_trace_x")[0]


def test_per_sample_and_paper_presets_written_out(rng):
    t = _terms(rng, data=False)
    per_b = []
    for b in range(B):
        a = np.mean(
            [0.5 * np.sum((t.lam[h] * t.escore[b, h, i]) ** 2) for h in range(H) for i in range(N)]
        )
        c = np.mean(
            [0.5 * np.sum((t.lam[h] * t.rscore[b, h, i]) ** 2) for h in range(H) for i in range(N)]
        )
        T = np.mean([np.trace(t.we[h].T @ t.wr[h]) for h in range(H)])
        per_b.append((a + c - T) ** 2)
    assert ksvd_loss([t], "per_sample")[0] == pytest.approx(np.mean(per_b), rel=1e-13)
    paper = 0.0
    for b, h in itertools.product(range(B), range(H)):
        Lam = np.diag(t.lam[h])
        J = sum(0.5 * e @ Lam @ e for e in t.escore[b, h]) + sum(
            0.5 * r @ Lam @ r for r in t.rscore[b, h]
        )
        J -= np.trace(t.we[h].T @ t.wr[h])
        paper += J**2
    assert ksvd_loss([t], "paper")[0] == pytest.approx(paper, rel=1e-13)


def test_reparametrisation_lambda_paper_equals_lambda_sq_over_n(rng):
    """The code's per-(b, h) term with λ equals the paper's J with Λ = λ²/N — shown against
    ``ksvd_objective`` (the J of docs/theory.md §2.1) on the layer's own features and W_{e|X}."""
    cfg = PrimalAttentionConfig(dim=6, num_heads=2, low_rank=2, rank_multi=3)
    params = init_primal_attention_params(cfg, seed=2)
    x = rng.standard_normal((2, 7, 6))
    _, cache = primal_attention(x, params, cfg)
    lam = params["lam"]
    n_tok = x.shape[1]
    code_per_problem = KSVDConvention(trace="data", square="problem", outer="sum", layers="sum")
    paper_with_data_trace = KSVDConvention(
        quadratic="Lambda", tokens="sum", trace="data", square="problem", outer="sum", layers="sum"
    )
    terms = ksvd_terms_from_cache(cache)
    code_loss, code_cache = ksvd_loss([terms], code_per_problem)
    paper_loss, paper_cache = ksvd_loss([terms._replace(lam=lam**2 / n_tok)], paper_with_data_trace)
    assert paper_loss == pytest.approx(code_loss, rel=1e-13)
    j_code = code_cache.layers[0].j
    for b, h in itertools.product(range(2), range(2)):
        J = ksvd_objective(
            cache.phi_q[b, h],
            cache.phi_k[b, h],
            cache.we_x[b, h],
            cache.wr_x[b, h],
            lam[h] ** 2 / n_tok,
        )
        assert J == pytest.approx(j_code[b, h], rel=1e-12)


def test_bad_input(rng):
    with pytest.raises(ValueError, match="unknown KSVD convention 'lrа'; presets: lra, vision"):
        get_convention("lrа")
    with pytest.raises(
        ValueError, match=r"KSVDConvention.square must be one of \('batch', 'sample', 'problem'\)"
    ):
        KSVDConvention(square="layer")
    t = _terms(rng)
    with pytest.raises(
        ValueError, match=r"layers\[0\]\.lam must be \(H, s\) = \(3, 2\), got \(2, 2\)"
    ):
        ksvd_loss([t._replace(lam=np.ones((2, 2)))])
    with pytest.raises(ValueError, match="at least one layer"):
        ksvd_loss([])
