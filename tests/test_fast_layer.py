"""The fast path against the reference layer: the adapters (the call a user makes), bit-level
agreement in float64, and loud refusal of what it does not support."""

import numpy as np
import pytest
from helpers import readonly

import primal_np.fast.layer as fast_layer
from primal_np.adapters.layer import PRIMAL_ATTENTION_GRID, LayerPoint
from primal_np.compare import rel_error
from primal_np.fast import (
    fast_primal_attention,
    fast_primal_attention_backward,
    primal_attention_impl,
    unsupported_reason,
)
from primal_np.fast.output import use_fused
from primal_np.fast.validate import check_fast_path
from primal_np.ksvd_loss import ksvd_loss, ksvd_loss_backward, ksvd_terms_from_cache
from primal_np.layer import primal_attention, primal_attention_backward
from primal_np.params import PrimalAttentionConfig, init_primal_attention_params

# the adapter's grid plus what it lacks for the fast path: data-independent lra weights
# (with a mask) and a larger vision layer that samples tokens
EXTRA_POINTS = (
    LayerPoint("lra", 7, mask=True, data_dependent=False),
    LayerPoint("lra", 9, batch=3, dim=12, heads=3, rank=2, data_dependent=False),
    LayerPoint("vision", 17, dim=12, heads=3, rank=2, rank_multi=3, qk_bias=True),
)


def test_fast_path_passes_the_adapters_in_float64_and_float32():
    rep = check_fast_path(grid=PRIMAL_ATTENTION_GRID + EXTRA_POINTS)
    assert rep.ok, str(rep)
    assert len(rep.results) == 2 * (len(PRIMAL_ATTENTION_GRID) + len(EXTRA_POINTS))


VARIANTS = {
    "lra": (dict(variant="lra"), "lra", True, 11),
    "lra N<n": (dict(variant="lra", rank_multi=4), "lra_trace_x", True, 5),
    "lra data-independent": (dict(variant="lra", data_dependent=False), "paper", True, 9),
    "vision all tokens": (dict(variant="vision", num_tokens=6), "vision", False, 6),
    "vision sampled, qk bias": (
        dict(variant="vision", num_tokens=13, qk_bias=True, rank_multi=2),
        "lra_trace_x",
        False,
        13,
    ),
    "causal": (dict(variant="causal"), "per_sample", False, 8),
    # 2Hs > D + 2s: the output stage's unfused form (primal_np.fast.output)
    "lra unfused output": (dict(variant="lra", num_heads=3), "lra", True, 11),
    "causal unfused output": (dict(variant="causal", num_heads=3), "per_sample", False, 7),
}


def _variant_config(kw):
    return PrimalAttentionConfig(**{"dim": 6, "num_heads": 2, "low_rank": 2, "rank_multi": 3, **kw})


def test_the_variants_cover_both_forms_of_the_output_stage():
    forms = {
        use_fused(c.dim, c.num_heads, c.low_rank)
        for c in map(_variant_config, (v[0] for v in VARIANTS.values()))
    }
    assert forms == {True, False}


@pytest.mark.parametrize("rows", [None, 4], ids=["whole sequences", "blocks of 4 tokens"])
@pytest.mark.parametrize("name", list(VARIANTS))
def test_reference_and_fast_path_agree_to_1e13_in_float64(rng, monkeypatch, name, rows):
    """Every variant, the KSVD loss joined; the backward below the output stage works a
    block of tokens at a time (``primal_np.fast.layer.ROWS``): several blocks per sequence
    too (the causal variant always takes whole sequences)."""
    if rows is not None:
        monkeypatch.setattr(fast_layer, "ROWS", rows)
    kw, convention, masked, n_tok = VARIANTS[name]
    cfg = _variant_config(kw)
    P = init_primal_attention_params(cfg, seed=7, linear_init="torch")
    x = rng.standard_normal((2, n_tok, 6))
    mask = None
    if masked:
        mask = np.ones((2, n_tok), dtype=bool)
        mask[1, n_tok - 2 :] = False
    dy = rng.standard_normal(x.shape)
    results = []
    for fwd, bwd in (
        (primal_attention, primal_attention_backward),
        (fast_primal_attention, fast_primal_attention_backward),
    ):
        y, cache = fwd(x, P, cfg, mask=mask)
        loss, lc = ksvd_loss([ksvd_terms_from_cache(cache)], convention)
        (kg,) = ksvd_loss_backward(0.7, lc).layers
        g = bwd(dy, cache, ksvd_grads=kg)
        results.append({"y": y, "E": cache.escore, "R": cache.rscore, "loss": loss, "dx": g.x}
                       | {f"d{k}": v for k, v in g.params.items()})  # fmt: skip
    ref, fast = results
    assert ref.keys() == fast.keys()
    for key in ref:
        assert rel_error(fast[key], ref[key]) <= 1e-13, key


@pytest.mark.parametrize(
    "kw, option",
    [
        (dict(feature_map="poly2", data_dependent=False), "feature_map='poly2'"),
        (dict(feature_map="identity"), "feature_map='identity'"),
        (dict(sampler="all", num_tokens=5), "sampler='all'"),
        (dict(sampler=lambda n: np.arange(0, n, 2), num_tokens=5), "sampler=<function"),
    ],
)
def test_fast_path_refuses_what_it_does_not_support(rng, kw, option):
    cfg = PrimalAttentionConfig(dim=4, num_heads=2, low_rank=1, rank_multi=2, **kw)
    assert option in unsupported_reason(cfg)
    P = init_primal_attention_params(cfg, seed=0)
    with pytest.raises(NotImplementedError, match=f"does not support {option}"):
        fast_primal_attention(rng.standard_normal((1, 5, 4)), P, cfg)
    fwd, _, which = primal_attention_impl(cfg)
    assert which == "reference" and fwd is primal_attention


def test_impl_picks_the_fast_path_where_it_applies():
    cfg = PrimalAttentionConfig(dim=4, num_heads=2, low_rank=1, rank_multi=2)
    assert unsupported_reason(cfg) is None
    assert primal_attention_impl(cfg)[2] == "fast"


def test_fast_path_float32_stays_float32_and_inputs_are_untouched(rng):
    cfg = PrimalAttentionConfig(dim=4, num_heads=2, low_rank=1, rank_multi=2)
    P = {k: readonly(v.astype(np.float32)) for k, v in init_primal_attention_params(cfg).items()}
    x = readonly(rng.standard_normal((2, 5, 4)).astype(np.float32))
    y, cache = fast_primal_attention(x, P, cfg)
    assert y.dtype == np.float32
    g = fast_primal_attention_backward(rng.standard_normal(y.shape), cache)  # float64 upstream
    assert g.x.dtype == np.float32 and all(v.dtype == np.float32 for v in g.params.values())


@pytest.mark.parametrize("name", ["lra", "lra unfused output", "causal"])
def test_backward_leaves_the_cache_intact_and_returns_fresh_arrays(rng, name):
    """Two backward passes from one cache agree exactly, and no gradient shares memory
    with the cache, the parameters or the input (the backward works in place on its own
    buffers only)."""
    kw, _, masked, n_tok = VARIANTS[name]
    cfg = _variant_config(kw)
    P = init_primal_attention_params(cfg, seed=3, linear_init="torch")
    x = rng.standard_normal((2, n_tok, 6))
    mask = np.ones((2, n_tok), dtype=bool) if masked else None
    if masked:
        mask[0, -3:] = False
    y, cache = fast_primal_attention(x, P, cfg, mask=mask)
    dy = rng.standard_normal(y.shape)
    g1 = fast_primal_attention_backward(dy, cache)
    g2 = fast_primal_attention_backward(dy, cache)
    held = [v for v in cache if isinstance(v, np.ndarray)] + list(cache.params.values())
    held += [v for v in cache.out if isinstance(v, np.ndarray)] + [x, y]
    for a, b in zip([g1.x, *g1.params.values()], [g2.x, *g2.params.values()], strict=True):
        np.testing.assert_array_equal(a, b)
        assert not any(np.shares_memory(a, h) for h in held)
