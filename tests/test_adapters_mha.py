"""check_multi_head_attention: canonical multi-head self-attention in PyTorch's layout.
Independent NumPy and torch.nn.MultiheadAttention candidates pass (the key-bias gradient,
zero in exact arithmetic, included); planted bugs fail, named."""

import functools

import candidates as C
import numpy as np
import pytest

from primal_np.adapters import MHA_GRID, MHAPoint, check_multi_head_attention
from primal_np.compare import compare

P = functools.partial
IN_PROJ = [f"grad.in_proj_{w}.{c}" for w in ("weight", "bias") for c in "qkv"]
ARRAYS = {"output.out", "grad.x", "grad.out_proj.weight", "grad.out_proj.bias", *IN_PROJ}


def _failing(report):
    return {
        (r.point, r.precision): sorted(a.name for a in r.report.failures) for r in report.failures
    }


def test_grid_covers_masks_causal_one_token_and_large_activations():
    assert any(p.padding for p in MHA_GRID) and any(p.attn_mask for p in MHA_GRID)
    assert any(p.causal for p in MHA_GRID) and any(p.tokens == 1 for p in MHA_GRID)
    assert any(p.x_scale > 1 for p in MHA_GRID) and any(p.heads == 3 for p in MHA_GRID)


def test_independent_numpy_candidate_passes_and_reports_every_array():
    rep = check_multi_head_attention(C.mha, backward=C.mha_backward)
    assert rep.ok, str(rep)
    assert len(rep.results) == 2 * len(MHA_GRID)
    for r in rep.results:
        assert {a.name for a in r.report.rows} == ARRAYS
        (bk,) = [a for a in r.report.rows if a.name == "grad.in_proj_bias.k"]
        # zero in exact arithmetic: judged against its operands, not against max|r| ≈ 1e-16
        assert bk.ref_scale < 1e-12 * bk.operand_scale


@pytest.mark.parametrize(
    "bug, where, arrays",
    [
        ("padding_polarity", {str(p) for p in MHA_GRID if p.padding}, None),
        ("scale_by_dim", {str(p) for p in MHA_GRID if p.tokens > 1}, None),
        ("bias_v", {str(p) for p in MHA_GRID}, ["grad.in_proj_bias.v"]),
    ],
)
def test_planted_bugs_fail_where_they_show(bug, where, arrays):
    rep = check_multi_head_attention(P(C.mha, bug=bug), backward=P(C.mha_backward, bug=bug))
    failing = _failing(rep)
    assert {point for point, _ in failing} == where
    assert {prec for _, prec in failing} == {"float64", "float32"}
    if arrays is not None:
        assert set(map(tuple, failing.values())) == {tuple(arrays)}
    else:
        assert all("output.out" in names for names in failing.values())


def test_misshapen_in_projection_gradient_is_a_named_row():
    def bwd(*args):
        g = C.mha_backward(*args)
        return g | {"in_proj_bias": g["in_proj_bias"][:-1]}

    rep = check_multi_head_attention(C.mha, backward=bwd, grid=MHA_GRID[:1], dtypes=("float64",))
    problems = {a.name: a.problem for a in rep.results[0].report.rows}
    assert problems["grad.in_proj_bias.k"] == "shape (23,), expected (8,)"


@pytest.mark.torch
def test_torch_multihead_attention_passes_including_the_key_bias_in_float32(torch):
    import candidates_torch as T

    fn = lambda *a: T.multi_head_attention(*a)  # noqa: E731
    rep = check_multi_head_attention(fn, backward=T.multi_head_attention)
    assert rep.ok, str(rep)
    for r in rep.results:
        if r.precision == "float64":
            assert all(a.max_abs_err <= 1e-12 * max(a.ref_scale, 1.0) for a in r.report.rows)

    # The false alarm the operand magnitude removes: a correct float32 key-bias gradient is
    # rounding noise of the size of the dK rows it sums, far above its float64 value (1e-16)
    # and above a bound of 2·(primal_np's own noise) + 2·eps·max|r|.
    from primal_np.adapters import OPS

    spec, pt = OPS["multi_head_attention"], MHAPoint()
    seen = 0
    for seed in range(10):
        rng = np.random.default_rng([seed, 0])
        tensors, options = spec.draw(pt, rng)
        outs, vjp = spec.reference(tensors, options)
        cot = {"out": rng.standard_normal(outs["out"].shape)}
        ref = {"grad." + n: g for n, g in vjp(cot).items()}
        t32 = {n: a.astype(np.float32) for n, a in tensors.items()}
        cand = spec.call_backward(
            T.multi_head_attention, t32, options, {"out": cot["out"].astype(np.float32)}
        )
        own_t = {n: a.astype(np.float32) for n, a in tensors.items()}
        own = {"grad." + n: g for n, g in spec.reference(own_t, options)[1](
            {"out": cot["out"].astype(np.float32)}).items()}  # fmt: skip
        cand = {"grad." + n: g for n, g in cand.items()}
        name = ["grad.in_proj_bias.k"]
        scales = spec.magnitudes(tensors, options, cot)
        assert compare(cand, ref, precision="float32", own=own, names=name, scales=scales).ok
        seen += not compare(cand, ref, precision="float32", own=own, names=name).ok
    assert seen >= 1  # without the operand magnitude, false alarms on a correct layer (6 in 20)
