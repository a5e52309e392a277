"""Variants of the reference layer are configuration: every registered feature map (a user's
too) and every token sampler, through the layer, the KSVD loss and the adapters."""

import numpy as np
import pytest

from primal_np.adapters.layer import LayerPoint, check_primal_attention
from primal_np.fast.validate import fast_candidate, fast_candidate_backward
from primal_np.feature_maps import FEATURE_MAPS, register_feature_map
from primal_np.gradcheck import gradcheck
from primal_np.layer import primal_attention, sample_indices
from primal_np.objective import layer_objective
from primal_np.params import PrimalAttentionConfig, from_state_dict, init_primal_attention_params


def _softsign(x):
    x = np.asarray(x, dtype=np.float64)
    return x / (1.0 + np.abs(x)), x


def _softsign_backward(dphi, x):
    return dphi / (1.0 + np.abs(x)) ** 2  # a bare array: the registry wraps it


@pytest.fixture
def softsign():
    """A user's feature map, registered for the test and removed afterwards."""
    register_feature_map("softsign", _softsign, _softsign_backward, description="x/(1+|x|)")
    yield "softsign"
    FEATURE_MAPS.pop("softsign")


def _layer_gradcheck(rng, cfg, convention, mask=None, n_tok=5):
    P = init_primal_attention_params(cfg, seed=2, linear_init="torch")
    x = rng.standard_normal((2, n_tok, cfg.dim))
    cot = rng.standard_normal(x.shape)

    def value(x, **p):
        return layer_objective(
            x, p, cfg, cotangent=cot, eta=0.4, convention=convention, mask=mask
        ).value

    r = layer_objective(x, P, cfg, cotangent=cot, eta=0.4, convention=convention, mask=mask)
    gradcheck(value, {"x": x, **P}, {"x": r.dx, **r.grads}).assert_ok()


def _width_preserving(name: str) -> bool:
    return PrimalAttentionConfig(dim=4, num_heads=2, low_rank=1, feature_map=name,
                                 data_dependent=False).feature_dim == 2  # fmt: skip


@pytest.mark.parametrize("name", sorted(FEATURE_MAPS))
@pytest.mark.parametrize("variant", ["lra", "causal"])
def test_layer_gradient_check_passes_for_every_registered_map(rng, name, variant):
    dd = variant == "lra" and _width_preserving(name)
    cfg = PrimalAttentionConfig(
        dim=4, num_heads=2, low_rank=2, rank_multi=2, variant=variant, feature_map=name,
        data_dependent=dd,
    )  # fmt: skip
    mask = np.array([[True] * 5, [True] * 3 + [False] * 2]) if variant == "lra" else None
    _layer_gradcheck(rng, cfg, "lra_trace_x" if dd else "per_sample", mask)


def test_a_users_map_works_in_the_layer_loss_and_adapters(rng, softsign):
    cfg = PrimalAttentionConfig(dim=4, num_heads=2, low_rank=2, rank_multi=2, feature_map=softsign)
    assert cfg.feature_dim == 2 and cfg.data_dependent
    _layer_gradcheck(rng, cfg, "lra")
    grid = (LayerPoint("lra", 7, mask=True, feature_map=softsign),
            LayerPoint("causal", 6, feature_map=softsign))  # fmt: skip
    # an independent statement of the layer with the user's map: the reference run as a
    # candidate must pass, and the fast path (cosine only) must fail naming the problem
    rep = check_primal_attention(_reference_candidate, grid=grid, dtypes=("float64",))
    assert rep.ok, str(rep)
    rep = check_primal_attention(
        fast_candidate, backward=fast_candidate_backward, grid=grid, dtypes=("float64",)
    )
    assert not rep.ok and "NotImplementedError" in str(rep) and "softsign" in str(rep)


def _reference_candidate(x, sd, mask, config):
    cfg = PrimalAttentionConfig(
        dim=config["dim"], num_heads=config["num_heads"], low_rank=config["low_rank"],
        rank_multi=config["rank_multi"], variant=config["variant"],
        data_dependent=config["data_dependent"], feature_map=config["feature_map"],
    )  # fmt: skip
    y, cache = primal_attention(x, from_state_dict(sd, cfg), cfg, mask=mask)
    return {"out": y, "escore": cache.escore, "rscore": cache.rscore}


def test_width_changing_maps_need_data_independent_weights():
    with pytest.raises(ValueError, match=r"maps the head dim p = 2 to 6 features.*data_dependent"):
        PrimalAttentionConfig(dim=4, num_heads=2, low_rank=1, feature_map="poly2")
    cfg = PrimalAttentionConfig(dim=4, num_heads=2, low_rank=3, feature_map="poly2",
                                data_dependent=False)  # fmt: skip
    assert cfg.feature_dim == 6 and init_primal_attention_params(cfg)["we"].shape == (2, 6, 3)
    with pytest.raises(
        ValueError, match="feature_map must be one of the registered feature maps .*, got 'nope'"
    ):
        PrimalAttentionConfig(dim=4, num_heads=2, low_rank=1, feature_map="nope")


@pytest.mark.parametrize(
    "sampler, n_tok, expect",
    [
        ("all", 5, [0, 1, 2, 3, 4]),
        (lambda n: np.array([n - 1, 0, n // 2]), 5, [4, 0, 2]),  # any order, any function of N
    ],
)
def test_samplers(rng, sampler, n_tok, expect):
    cfg = PrimalAttentionConfig(dim=4, num_heads=2, low_rank=1, rank_multi=2, sampler=sampler,
                                num_tokens=n_tok)  # fmt: skip
    assert list(sample_indices(cfg, n_tok)) == expect
    assert cfg.num_samples == len(expect)
    _layer_gradcheck(rng, cfg, "lra_trace_x", n_tok=n_tok)


def test_bad_samplers_are_named():
    with pytest.raises(ValueError, match="needs num_tokens"):
        PrimalAttentionConfig(dim=4, num_heads=2, low_rank=1, sampler="all")
    with pytest.raises(ValueError, match=r"sampler must be one of \('linspace', 'all'\)"):
        PrimalAttentionConfig(dim=4, num_heads=2, low_rank=1, sampler="random")
    with pytest.raises(ValueError, match=r"sampler\(num_tokens\) must lie in \[0, 5\).*got 5"):
        PrimalAttentionConfig(dim=4, num_heads=2, low_rank=1, num_tokens=5,
                              sampler=lambda n: np.array([0, n]))  # fmt: skip
    cfg = PrimalAttentionConfig(dim=4, num_heads=2, low_rank=1, num_tokens=5, sampler="all")
    P = init_primal_attention_params(cfg)
    with pytest.raises(ValueError, match=r"6 tokens give n = 6 sampled rows but we has shape"):
        primal_attention(np.zeros((1, 6, 4)) + 0.1, P, cfg)


def test_layer_without_rscores(rng):
    """The ablation "without r-scores": O_h = E W_cᵀ + b_c; R reaches only the KSVD loss."""
    cfg = PrimalAttentionConfig(dim=4, num_heads=2, low_rank=2, rank_multi=2, rscores=False)
    P = init_primal_attention_params(cfg, seed=1)
    assert P["wc"].shape == (2, 2)  # p × s, not p × 2s
    _layer_gradcheck(rng, cfg, "lra")
    x = rng.standard_normal((2, 5, 4))
    y, cache = primal_attention(x, P, cfg)
    P2 = dict(P, wr=P["wr"] + 1.0)  # W_r changes R only: the output must not move
    y2, cache2 = primal_attention(x, P2, cfg)
    np.testing.assert_array_equal(y, y2)
    assert np.abs(cache2.rscore - cache.rscore).max() > 1e-3
    r = layer_objective(x, P, cfg, cotangent=rng.standard_normal(y.shape), eta=0.0)
    assert np.all(r.grads["wr"] == 0.0)  # with η = 0 nothing reads R
