"""Float64 parity of the Primal-Attention layers and KSVD losses with an independent
PyTorch statement of the authors' code (primal_np/torch_reference.py)."""

import numpy as np
import pytest

from primal_np.compare import rel_error
from primal_np.ksvd_loss import ksvd_loss, ksvd_loss_backward, ksvd_terms_from_cache
from primal_np.layer import primal_attention, primal_attention_backward
from primal_np.objective import layer_objective
from primal_np.params import PrimalAttentionConfig, init_primal_attention_params, to_state_dict

pytestmark = pytest.mark.torch

TOL = 1e-10


CASES = [
    # (id, config kwargs, N, masked, trace_no_x, convention)
    ("lra-trace-params", dict(variant="lra"), 11, True, True, "lra"),
    ("lra-trace-x", dict(variant="lra"), 11, True, False, "lra_trace_x"),
    ("lra-N<n-repeats", dict(variant="lra", rank_multi=4), 5, True, True, "lra"),
    ("lra-N<n-repeats-trace-x", dict(variant="lra", rank_multi=4), 5, False, False, "lra_trace_x"),
    ("vision-all-tokens", dict(variant="vision", num_tokens=5), 5, False, True, "vision"),
    (
        "vision-qk-bias-trace-x",
        dict(variant="vision", num_tokens=6, qk_bias=True),
        6,
        False,
        False,
        "lra_trace_x",
    ),
    (
        "vision-sampled",
        dict(variant="vision", num_tokens=13, rank_multi=2),
        13,
        False,
        True,
        "vision",
    ),
    ("causal", dict(variant="causal"), 7, False, True, "per_sample"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_layer_and_loss_match_torch(torch, rng, case):
    from primal_np import torch_reference as ref

    _, kw, n_tokens, masked, trace_no_x, convention = case
    cfg = PrimalAttentionConfig(dim=8, num_heads=2, low_rank=2, **{"rank_multi": 3, **kw})
    # torch-style init for every variant so the scale of all gradients is O(1)
    params = init_primal_attention_params(cfg, seed=3, linear_init="torch")
    B = 3
    x = rng.standard_normal((B, n_tokens, 8))
    mask = None
    if masked:
        mask = np.ones((B, n_tokens), bool)
        mask[1, -2:] = False
        mask[2, 1:] = False
    cot = rng.standard_normal(x.shape)
    eta = 0.37
    ours = layer_objective(
        x,
        params,
        cfg,
        cotangent=cot,
        eta=eta,
        convention=convention,
        trace_no_x=trace_no_x,
        mask=mask,
    )
    theirs = ref.layer_objective(
        cfg, to_state_dict(params, cfg), x, cot, eta, mask=mask, trace_no_x=trace_no_x
    )
    assert rel_error(ours.out, theirs["out"]) < TOL
    assert rel_error(ours.escore, theirs["escore"]) < TOL
    assert rel_error(ours.rscore, theirs["rscore"]) < TOL
    assert abs(ours.ksvd_loss - theirs["loss"]) <= TOL * abs(theirs["loss"])
    assert rel_error(ours.dx, theirs["dx"]) < TOL
    sd_grads = to_state_dict(ours.grads, cfg)
    assert set(sd_grads) == set(theirs["grads"])
    for name, g in theirs["grads"].items():
        assert rel_error(sd_grads[name], g) < TOL, name


def test_two_layer_stack_with_mean_over_layers(torch, rng):
    """The KSVD loss averages over layers; the second layer's input is the first's output."""
    from primal_np import torch_reference as ref

    cfg = PrimalAttentionConfig(dim=8, num_heads=2, low_rank=2, rank_multi=3)
    p1 = init_primal_attention_params(cfg, seed=1)
    p2 = init_primal_attention_params(cfg, seed=2)
    x = rng.standard_normal((2, 9, 8))
    cot = rng.standard_normal(x.shape)
    eta = 0.5
    y1, c1 = primal_attention(x, p1, cfg)
    y2, c2 = primal_attention(y1, p2, cfg)
    loss, lc = ksvd_loss([ksvd_terms_from_cache(c1), ksvd_terms_from_cache(c2)], "lra")
    g1, g2 = ksvd_loss_backward(eta, lc).layers
    dy1, grads2 = primal_attention_backward(cot, c2, ksvd_grads=g2)
    dx, grads1 = primal_attention_backward(dy1, c1, ksvd_grads=g1)

    t1 = {k: torch.tensor(v, requires_grad=True) for k, v in to_state_dict(p1, cfg).items()}
    t2 = {k: torch.tensor(v, requires_grad=True) for k, v in to_state_dict(p2, cfg).items()}
    tx = torch.tensor(x, requires_grad=True)
    o1 = ref.lra_layer(t1, tx, 2, 2, 3)
    o2 = ref.lra_layer(t2, o1[0], 2, 2, 3)
    tloss = ref.ksvd_loss_batch_mean([o1[1:], o2[1:]], trace_no_x=True)
    (torch.sum(o2[0] * torch.tensor(cot)) + eta * tloss).backward()
    tl = float(tloss.detach())
    assert abs(loss - tl) <= TOL * tl
    assert rel_error(dx, tx.grad.numpy()) < TOL
    for ours_p, theirs in ((grads1, t1), (grads2, t2)):  # complete: the KSVD parts included
        for name, g in to_state_dict(ours_p, cfg).items():
            assert rel_error(g, theirs[name].grad.numpy()) < TOL, name


def test_linspace_indices_match_torch(torch):
    from primal_np.sampling import torch_linspace_indices

    for n_tokens in range(1, 130):
        for n in (1, 2, 3, 7, 10, 20, 30, 64, 320):
            expect = torch.linspace(0, n_tokens - 1, n, dtype=torch.int64).numpy()
            np.testing.assert_array_equal(torch_linspace_indices(n_tokens, n), expect)


def test_orthogonal_init_matches_torch_structure(torch):
    """Same distribution as torch.nn.init.orthogonal_: orthonormal rows of the (H, n·s) flattening."""
    from primal_np.init import orthogonal

    w = orthogonal(np.random.default_rng(0), (4, 30, 3))
    flat = w.reshape(4, -1)
    np.testing.assert_allclose(flat @ flat.T, np.eye(4), atol=1e-14)
    tw = torch.empty(4, 30, 3, dtype=torch.float64)
    torch.nn.init.orthogonal_(tw)
    tf = tw.reshape(4, -1)
    np.testing.assert_allclose((tf @ tf.T).numpy(), np.eye(4), atol=1e-14)


@pytest.mark.parametrize(
    "case",
    [
        "primal_attention_lra",
        "primal_attention_lra_trace_x",
        "primal_attention_vision",
        "primal_attention_causal",
    ],
)
def test_golden_layer_cases_match_torch(torch, case):
    """What ``golden export`` writes is what the independent torch statement computes."""
    from primal_np import torch_reference as ref
    from primal_np.golden import build_case

    gc = build_case(case)
    a, c = gc.arrays, gc.config
    cfg = PrimalAttentionConfig(
        dim=c["dim"], num_heads=c["num_heads"], low_rank=c["low_rank"], rank_multi=c["rank_multi"],
        variant=c["variant"], num_tokens=a["input.x"].shape[1] if c["variant"] == "vision" else None,
    )  # fmt: skip
    sd = {k[6:]: v for k, v in a.items() if k.startswith("param.")}
    theirs = ref.layer_objective(
        cfg,
        sd,
        a["input.x"],
        a["cotangent.out"],
        c["eta"],
        mask=a.get("input.mask"),
        trace_no_x=c["trace_no_x"],
    )
    assert rel_error(a["output.out"], theirs["out"]) < TOL
    assert rel_error(a["output.escore"], theirs["escore"]) < TOL
    assert abs(float(a["output.ksvd_loss"]) - theirs["loss"]) <= TOL * theirs["loss"]
    assert rel_error(a["grad.x"], theirs["dx"]) < TOL
    for name, g in theirs["grads"].items():
        assert rel_error(a[f"grad.{name}"], g) < TOL, name
