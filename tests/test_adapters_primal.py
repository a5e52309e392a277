"""primal_np.adapters for the primal ops: scores, KSVD loss and the authors' Primal-Attention
layer. Correct candidates (an independent NumPy statement, the PyTorch statement of the
authors' code, primal_np's own low-precision path) pass; planted bugs fail, named."""

import functools
import json

import candidates as C
import numpy as np
import pytest

import primal_np as pn
from primal_np.adapters import (
    KSVD_LOSS_GRID,
    OPS,
    PRIMAL_ATTENTION_GRID,
    PRIMAL_SCORES_GRID,
    KSVDLossPoint,
    LayerPoint,
    check_callable,
    check_ksvd_loss,
    check_primal_attention,
    check_primal_scores,
)
from primal_np.adapters.layer import _CONVENTION
from primal_np.adapters.loss import KSVD_LOSS_LAYER_FIELDS, _draw_loss, well_conditioned_lambda
from primal_np.ksvd_loss import KSVDTerms
from primal_np.sampling import torch_linspace_indices

P = functools.partial
LINSPACE_POINTS = {
    str(p)
    for p in PRIMAL_ATTENTION_GRID
    if p.variant == "lra"
    and not np.array_equal(
        np.linspace(0, p.tokens - 1, p.rank * p.rank_multi).astype(int),
        torch_linspace_indices(p.tokens, p.rank * p.rank_multi),
    )
}
SAMPLED_POINTS = {str(p) for p in PRIMAL_ATTENTION_GRID if p.variant != "causal"}
LRA_POINTS = {str(p) for p in PRIMAL_ATTENTION_GRID if p.variant == "lra"}


def _failing(report):
    """{(point, precision): sorted failing array names}."""
    return {
        (r.point, r.precision): sorted(a.name for a in r.report.failures) for r in report.failures
    }


def _rows(report):
    return {(r.point, r.precision): {a.name for a in r.report.rows} for r in report.results}


# --------------------------------------------------------------------------- grids
def test_registered_ops_and_grids_cover_the_cases():
    assert list(OPS)[0] == "dual_attention"
    assert {"primal_scores", "ksvd_loss", "primal_attention"} <= set(OPS)
    g = PRIMAL_SCORES_GRID
    assert any(len(p.batch) == 2 for p in g) and any(p.batch == () for p in g)
    assert any(p.n > p.m for p in g) and any(p.n < p.m for p in g)
    assert any(p.s == 1 for p in g) and any(p.s == p.p for p in g)
    assert any(p.w_batch is not None and p.w_batch != p.batch for p in g)
    assert {(p.convention, p.num_layers) for p in KSVD_LOSS_GRID} == {
        (c, n) for c in ("lra", "lra_trace_x", "per_sample", "paper") for n in (1, 2)
    }
    lra = [p for p in PRIMAL_ATTENTION_GRID if p.variant == "lra"]
    assert {p.trace_no_x for p in lra} == {True, False} and any(p.mask for p in lra)
    assert any(p.tokens < p.rank * p.rank_multi for p in lra)  # repeated indices
    assert len(LINSPACE_POINTS) == 1  # np.linspace differs from torch's formula there
    vision = [p for p in PRIMAL_ATTENTION_GRID if p.variant == "vision"]
    assert any(p.tokens <= p.rank * p.rank_multi for p in vision)  # all tokens, no sampling
    causal = [p for p in PRIMAL_ATTENTION_GRID if p.variant == "causal"]
    assert any(p.rank == p.dim // p.heads for p in causal)  # s = p


def test_draws_keep_every_ksvd_problem_well_conditioned():
    """κ = (q_e + q_r + |T|) / |j| ≤ 2 for each j the convention squares (adapters.loss)."""
    for i, pt in enumerate(KSVD_LOSS_GRID):
        t, _ = _draw_loss(pt, np.random.default_rng([0, i]))
        for layer in range(pt.num_layers):
            terms = KSVDTerms(*(t.get(f"layer{layer}.{f}") for f in KSVD_LOSS_LAYER_FIELDS))
            assert np.allclose(well_conditioned_lambda(terms, pt.convention), terms.lam, rtol=1e-12)
            conv = pn.CONVENTIONS[pt.convention]
            coef = terms.lam**2 if conv.quadratic == "lambda_sq" else terms.lam
            q = 0.5 * np.einsum("bhns,hs->bh", terms.escore**2 + terms.rscore**2, coef)
            q = q / terms.escore.shape[2] if conv.tokens == "mean" else q
            T = (
                np.einsum("bhps,bhps->bh", terms.we_x, terms.wr_x)
                if conv.trace == "data"
                else np.einsum("hns,hns->h", terms.we, terms.wr)[None]
            )
            assert np.all(q >= 3 * np.abs(T) * (1 - 1e-12))  # per problem, so any average too


# --------------------------------------------------------------------------- correct candidates
def test_independent_numpy_candidates_pass():
    rep = check_primal_scores(C.scores, backward=C.scores_backward)
    assert rep.ok, str(rep)
    assert all(
        rows == {"output.E", "output.R", "grad.phi_q", "grad.phi_k", "grad.W_e", "grad.W_r"}
        for rows in _rows(rep).values()
    )
    rep = check_ksvd_loss(C.ksvd_loss, backward=C.ksvd_loss_backward)
    assert rep.ok, str(rep)
    assert len(rep.results) == 2 * len(KSVD_LOSS_GRID)
    rep = check_primal_attention(C.primal_layer, backward=C.primal_layer_backward)
    assert rep.ok, str(rep)
    text = str(rep)
    assert f"{len(rep.results)} of {len(rep.results)}" in text and "FAIL" not in text
    for r in rep.results:
        if r.precision == "float64":  # two float64 evaluations agree at rounding level
            assert all(a.max_rel_err < 1e-13 for a in r.report.rows), r.point
    lra = _rows(rep)[(str(PRIMAL_ATTENTION_GRID[0]), "float64")]
    assert lra == {"output.out", "output.escore", "output.rscore", "output.ksvd_loss"} | {
        f"grad.{n}"
        for n in ["x", "W_q.weight", "W_q.bias", "W_k.weight", "W_k.bias", "We", "Wr",
                  "attn.Lambda", "attn.concate_weight.weight", "attn.concate_weight.bias",
                  "ff.weight", "ff.bias"]
    }  # fmt: skip
    json.loads(rep.to_json())


def test_candidate_outputs_stay_in_the_input_precision():
    pt = PRIMAL_ATTENTION_GRID[0]
    t, o = OPS["primal_attention"].draw(pt, np.random.default_rng(0))
    t = {n: a.astype(np.float32) for n, a in t.items()}
    sd = {n: a for n, a in t.items() if n != "x"}
    outs = C.primal_layer(t["x"], sd, o["mask"], o["config"])
    grads = C.primal_layer_backward(t["x"], sd, o["mask"], o["config"], t["x"], 0.5)
    assert {a.dtype for a in [*outs.values(), *grads.values()]} == {np.dtype(np.float32)}


def _own_layer(x, sd, mask, config):
    cfg = _cfg(config, x.shape[1])
    y, cache = pn.primal_attention(x, pn.from_state_dict(sd, cfg), cfg, mask=mask)
    return {"out": y, "escore": cache.escore, "rscore": cache.rscore}


def _own_layer_backward(x, sd, mask, config, dout, eta):
    cfg = _cfg(config, x.shape[1])
    conv = _CONVENTION[cfg.variant]
    r = pn.layer_objective(
        x, pn.from_state_dict(sd, cfg), cfg, cotangent=dout, eta=eta, convention=conv,
        trace_no_x=config["trace_no_x"], mask=mask,
    )  # fmt: skip
    return {"x": r.dx} | pn.to_state_dict(r.grads, cfg)


def _cfg(config, num_tokens):
    keys = ("dim", "num_heads", "low_rank", "rank_multi", "variant", "qk_bias")
    vision = config["variant"] == "vision"
    return pn.PrimalAttentionConfig(
        **{k: config[k] for k in keys}, num_tokens=num_tokens if vision else None
    )


def test_project_low_precision_paths_pass_the_policy():
    def scores_bwd(a, b, c, d, dE, dR):
        return pn.primal_scores_backward((dE, dR), pn.primal_scores(a, b, c, d)[1])

    low = ("float32", "float16", "bfloat16")
    rep = check_primal_scores(lambda *a: pn.primal_scores(*a)[0], backward=scores_bwd, dtypes=low)
    assert rep.ok, str(rep)
    rep = check_ksvd_loss(
        lambda layers, conv: pn.ksvd_loss(layers, conv)[0],
        backward=lambda layers, conv, d: (
            pn.ksvd_loss_backward(d, pn.ksvd_loss(layers, conv)[1]).layers
        ),
        dtypes=("float32",),
    )
    assert rep.ok, str(rep)
    rep = check_primal_attention(_own_layer, backward=_own_layer_backward, dtypes=("float32",))
    assert rep.ok, str(rep)
    # the layer's ksvd_loss is optional: a candidate without it is judged on the rest
    assert all("output.ksvd_loss" not in rows for rows in _rows(rep).values())


def test_forward_only_checks_outputs():
    rep = check_primal_attention(C.primal_layer, grid=PRIMAL_ATTENTION_GRID[:2])
    assert rep.ok and all(
        rows == {"output.out", "output.escore", "output.rscore", "output.ksvd_loss"}
        for rows in _rows(rep).values()
    )


def test_ksvd_loss_conventions_filter_and_validation():
    rep = check_ksvd_loss(C.ksvd_loss, conventions=("paper",), dtypes=("float64",))
    assert rep.ok and {r.point.split()[0] for r in rep.results} == {"paper"}
    with pytest.raises(ValueError, match="conventions must be among"):
        check_ksvd_loss(C.ksvd_loss, conventions=("vision_x",))
    with pytest.raises(ValueError, match="needs data_dependent=True"):
        check_ksvd_loss(C.ksvd_loss, grid=[KSVDLossPoint("lra_trace_x", data_dependent=False)])
    assert check_callable("ksvd_loss", C.ksvd_loss, grid=KSVD_LOSS_GRID[:1]).ok


# --------------------------------------------------------------------------- planted bugs
def test_layer_dropping_the_r_scores_is_caught_at_every_point():
    bug = {"drop_rscores": True}  # head output from [E, 0]: W_c[:, :s] only
    rep = check_primal_attention(
        P(C.primal_layer, **bug), backward=P(C.primal_layer_backward, **bug)
    )
    failing = _failing(rep)
    assert len(failing) == len(rep.results)
    for names in failing.values():  # the scores themselves are right; what uses R is not
        assert {"output.out", "grad.x"} <= set(names)
        assert not {"output.escore", "output.rscore", "output.ksvd_loss"} & set(names)
        assert any("concate_weight.weight" in n for n in names)
    assert "output.out: outside bound" in str(rep)
    assert "grad.attn.concate_weight.weight: outside bound" in str(rep)


def test_ksvd_loss_with_lambda_instead_of_lambda_squared_is_caught():
    bug = {"quadratic": "lambda"}  # ½ eᵀ diag(λ) e in the code conventions
    rep = check_ksvd_loss(P(C.ksvd_loss, **bug), backward=P(C.ksvd_loss_backward, **bug))
    failing = _failing(rep)
    # the paper's Λ is linear, so only the code conventions fail, at every such point
    assert {p.split()[0] for p, _ in failing} == {"lra", "lra_trace_x", "per_sample"}
    assert len(failing) == len(rep.results) - 2 * sum(
        p.convention == "paper" for p in KSVD_LOSS_GRID
    )
    points = {str(p): p for p in KSVD_LOSS_GRID}
    for (point, _), names in failing.items():
        pt = points[point]
        trace = ("we_x", "wr_x") if pt.convention == "lra_trace_x" else ("we", "wr")
        expected = ["output.ksvd_loss"] + [
            f"grad.layer{i}.{f}"
            for i in range(pt.num_layers)
            for f in ("escore", "rscore", "lam", *trace)
        ]
        assert names == sorted(expected), point  # unused inputs' zero gradients still pass
    assert "output.ksvd_loss: outside bound" in str(rep)
    assert "grad.layer0.lam: outside bound" in str(rep)


def test_layer_with_lambda_instead_of_lambda_squared_names_loss_and_affected_grads():
    bug = {"quadratic": "lambda"}
    rep = check_primal_attention(
        P(C.primal_layer, **bug), backward=P(C.primal_layer_backward, **bug)
    )
    failing = _failing(rep)
    assert len(failing) == len(rep.results)
    lra = {"output.ksvd_loss", "grad.x", "grad.W_q.weight", "grad.W_q.bias", "grad.W_k.weight",
           "grad.W_k.bias", "grad.We", "grad.Wr", "grad.attn.Lambda"}  # fmt: skip
    for (point, _), names in failing.items():
        if point in LRA_POINTS:  # the output path (concate_weight, ff) is untouched
            assert set(names) == lra, point
        assert "output.ksvd_loss" in names and not {"output.out", "output.escore"} & set(names)


def test_np_linspace_indices_are_caught_where_they_differ_from_torch():
    bug = {"index": "np_linspace"}
    rep = check_primal_attention(
        P(C.primal_layer, **bug), backward=P(C.primal_layer_backward, **bug)
    )
    failing = _failing(rep)
    assert {p for p, _ in failing} == LINSPACE_POINTS
    assert {dt for _, dt in failing} == {"float64", "float32"}
    for names in failing.values():
        assert {"output.out", "output.escore", "output.rscore", "grad.x", "grad.We"} <= set(names)
    assert "output.escore: outside bound" in str(rep)


def test_one_index_shifted_by_one_is_caught_wherever_tokens_are_sampled():
    bug = {"index": "shift"}
    rep = check_primal_attention(
        P(C.primal_layer, **bug), backward=P(C.primal_layer_backward, **bug)
    )
    assert {p for p, _ in _failing(rep)} == SAMPLED_POINTS  # causal has no sampled rows
    assert all("output.escore" in names for names in _failing(rep).values())


def test_gradient_off_by_1e4_relative_fails_naming_it():
    def bwd(*args):
        grads = C.primal_layer_backward(*args)
        if "We" in grads:
            grads["We"] = grads["We"] * (1 + 1e-4)
        return grads

    rep = check_primal_attention(C.primal_layer, backward=bwd)  # float64 and float32
    failing = _failing(rep)  # "We" is the LRA and causal name; vision's is "we"
    assert all(names == ["grad.We"] for names in failing.values())
    assert set(failing) == {
        (str(p), dt)
        for p in PRIMAL_ATTENTION_GRID
        if p.variant != "vision"
        for dt in ("float64", "float32")
    }
    assert "grad.We: outside bound" in str(rep)

    def scores_bwd(*args):
        dq, dk, dWe, dWr = C.scores_backward(*args)
        return dq, dk, dWe, dWr * (1 + 1e-4)

    rep = check_primal_scores(C.scores, backward=scores_bwd, dtypes=("float64",))
    assert len(rep.failures) == len(rep.results)
    assert all(names == ["grad.W_r"] for names in _failing(rep).values())


def test_scores_backward_not_summing_broadcast_axes_is_caught_there():
    rep = check_primal_scores(C.scores, backward=P(C.scores_backward, sum_broadcast=False))
    broadcast = {str(p) for p in PRIMAL_SCORES_GRID if p.w_batch not in (None, p.batch)}
    assert {p for p, _ in _failing(rep)} == broadcast
    for r in rep.failures:
        assert [a.name for a in r.report.failures] == ["grad.W_e", "grad.W_r"]
        assert all("shape" in a.problem for a in r.report.failures)


def test_wrong_return_types_are_failing_points_not_crashes():
    grid = [LayerPoint("causal", 5)]
    rep = check_primal_attention(
        lambda *a: tuple(C.primal_layer(*a).values()), grid=grid, dtypes=("float64",)
    )
    (res,) = rep.results
    assert not rep.ok and "candidate raised TypeError: fn must return a dict" in str(rep)
    assert {a.name for a in res.report.rows} >= {"output.out", "output.ksvd_loss"}
    rep = check_primal_attention(  # a missing gradient is a failing row naming it
        C.primal_layer,
        backward=lambda *a: {k: v for k, v in C.primal_layer_backward(*a).items() if k != "x"},
        grid=grid,
        dtypes=("float64",),
    )
    assert _failing(rep) == {(str(grid[0]), "float64"): ["grad.x"]}
    assert "grad.x: missing from the candidate" in str(rep)


# --------------------------------------------------------------------------- PyTorch
@pytest.fixture
def tc(torch):
    import candidates_torch

    return candidates_torch


@pytest.mark.torch
def test_torch_statement_passes_float64_and_float32(tc):
    rep = check_primal_scores(tc.scores, backward=tc.scores)
    assert rep.ok, str(rep)
    rep = check_ksvd_loss(
        tc.ksvd_loss,
        backward=tc.ksvd_loss_backward,
        conventions=("lra", "lra_trace_x", "per_sample"),  # the authors' code has no "paper"
    )
    assert rep.ok, str(rep)
    rep = check_primal_attention(tc.layer, backward=tc.layer_backward)
    assert rep.ok, str(rep)
    for r in rep.results:
        if r.precision == "float64":
            assert all(a.max_rel_err < 1e-13 for a in r.report.rows), r.point


@pytest.mark.torch
def test_torch_paper_convention_fails_loudly(tc):
    rep = check_ksvd_loss(tc.ksvd_loss, conventions=("paper",), dtypes=("float64",))
    assert not rep.ok and "NotImplementedError: the authors' code has no 'paper' loss" in str(rep)
