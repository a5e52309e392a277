"""primal_np.adapters: checking Python implementations over a grid, with planted bugs."""

import functools
import json

import numpy as np
import pytest
from candidates import attention, attention_backward

import primal_np as pn
from primal_np.adapters import (
    DUAL_ATTENTION_GRID,
    LARGE_LOGIT_POINTS,
    LONG_SUM_POINTS,
    OPS,
    AttentionPoint,
    OpSpec,
    check_callable,
    check_dual_attention,
    current_precision,
    describe_exception,
)

EMPTY_ROW_POINTS = {str(p) for p in DUAL_ATTENTION_GRID if p.mask in ("empty-row", "broadcast")}


def _failing(report):
    """{(point, precision): sorted failing array names}."""
    return {
        (r.point, r.precision): sorted(a.name for a in r.report.failures) for r in report.failures
    }


def test_default_grid_covers_the_edge_cases():
    g = DUAL_ATTENTION_GRID
    assert any(p.n != p.m for p in g) and any(p.n == 1 for p in g) and any(p.d == 1 for p in g)
    assert any(p.causal for p in g) and any(len(p.batch) == 2 for p in g)
    assert any(p.batch == () for p in g) and EMPTY_ROW_POINTS
    assert list(OPS)[0] == "dual_attention"


def test_correct_independent_implementation_passes():
    rep = check_dual_attention(attention, backward=attention_backward)
    assert rep.ok, str(rep)
    assert len(rep.results) == 2 * len(DUAL_ATTENTION_GRID)
    assert {r.precision for r in rep.results} == {"float64", "float32"}
    for r in rep.results:
        assert {a.name for a in r.report.rows} == {"output.out", "grad.q", "grad.k", "grad.v"}
    text = str(rep)
    assert f"{len(rep.results)} of {len(rep.results)}" in text and "FAIL" not in text
    json.loads(rep.to_json())


def test_project_float32_path_passes_the_policy():
    def fn(q, k, v, mask, causal, scale):
        return pn.dual_attention(q, k, v, mask=mask, causal=causal, scale=scale)[0]

    def backward(q, k, v, mask, causal, scale, dout):
        _, cache = pn.dual_attention(q, k, v, mask=mask, causal=causal, scale=scale)
        return pn.dual_attention_backward(dout, cache)

    rep = check_dual_attention(fn, backward=backward, dtypes=("float32", "float16", "bfloat16"))
    assert rep.ok, str(rep)


def test_forward_only_checks_outputs():
    rep = check_dual_attention(attention, grid=DUAL_ATTENTION_GRID[:2], dtypes=("float64",))
    assert rep.ok and all([a.name for a in r.report.rows] == ["output.out"] for r in rep.results)


def test_softmax_backward_missing_the_rowsum_term_is_caught():
    wrong = functools.partial(attention_backward, rowsum_term=False)
    rep = check_dual_attention(attention, backward=wrong)
    assert not rep.ok
    failing = _failing(rep)
    assert len(failing) == len(rep.results)  # every point, both precisions
    # dV = Pᵀ dO does not go through the softmax backward: only dq and dk are wrong
    assert set(map(tuple, failing.values())) == {("grad.k", "grad.q")}
    assert "grad.q: outside bound" in str(rep)


def test_naive_softmax_nan_on_fully_masked_row_is_caught_there_only():
    fwd = functools.partial(attention, empty_row_guard=False)
    bwd = functools.partial(attention_backward, empty_row_guard=False)
    rep = check_dual_attention(fwd, backward=bwd)
    failing = _failing(rep)
    assert {point for point, _ in failing} == EMPTY_ROW_POINTS
    for r in rep.failures:
        for a in r.report.failures:
            assert "NaN" in a.problem
        assert {a.name for a in r.report.failures} >= {"output.out", "grad.q"}


def test_float64_gradient_off_by_1e4_relative_fails_naming_it():
    def bwd(*args):
        dq, dk, dv = attention_backward(*args)
        return dq, dk, dv * (1 + 1e-4)

    rep = check_dual_attention(attention, backward=bwd, dtypes=("float64",))
    assert set(map(tuple, _failing(rep).values())) == {("grad.v",)}


def test_float32_claim_with_float16_internals_fails():
    def fn(q, k, v, mask, causal, scale):  # rounds the inputs to float16 behind the caller's back
        half = [a.astype(np.float16).astype(q.dtype) for a in (q, k, v)]
        return attention(*half, mask, causal, scale)

    rep = check_dual_attention(fn, dtypes=("float32",))
    assert all(not r.report.ok for r in rep.results)


def test_candidate_errors_are_failing_points_not_crashes():
    def raises(q, k, v, mask, causal, scale):
        raise RuntimeError("kernel not compiled")

    rep = check_dual_attention(raises, grid=DUAL_ATTENTION_GRID[:1], dtypes=("float64",))
    (res,) = rep.results
    problem = res.report.rows[0].problem
    assert not rep.ok
    assert problem.startswith("candidate raised RuntimeError: kernel not compiled (at ")
    assert "test_adapters.py:" in problem and "in raises: raise RuntimeError" in problem
    assert "kernel not compiled" in str(rep)

    rep = check_dual_attention(
        lambda q, k, v, *_: attention(q, k, v)[..., :-1, :], grid=DUAL_ATTENTION_GRID[:1]
    )
    assert all("shape" in r.report.rows[0].problem for r in rep.results)
    with pytest.raises(AssertionError, match="implementation check failed"):
        rep.assert_ok()


def test_argument_validation():
    with pytest.raises(ValueError, match="dtypes must be among"):
        check_dual_attention(attention, dtypes=("fp8",))
    with pytest.raises(ValueError, match="not a registered op"):
        check_callable("flash_attention", attention)
    with pytest.raises(TypeError, match="must be callable"):
        check_dual_attention(attention, backward=np.zeros(3))
    with pytest.raises(ValueError, match="AttentionPoint.mask"):
        check_dual_attention(attention, grid=[AttentionPoint(mask="diagonal")])


def test_seed_changes_the_inputs_but_the_run_is_deterministic():
    def key(rep):
        return [a.max_abs_err for r in rep.results for a in r.report.rows]

    grid = DUAL_ATTENTION_GRID[:1]
    a = check_dual_attention(attention, grid=grid, dtypes=("float32",), seed=1)
    b = check_dual_attention(attention, grid=grid, dtypes=("float32",), seed=1)
    c = check_dual_attention(attention, grid=grid, dtypes=("float32",), seed=2)
    assert key(a) == key(b) and key(a) != key(c)


# --------------------------------------------------------------------------- another op
def _softmax_spec():
    """A second OpSpec, as the primal-scores / layer / KSVD ops will be added."""

    def draw(shape, rng):
        return {"s": 3 * rng.standard_normal(shape)}, {}

    def reference(t, o):
        p, cache = pn.softmax(t["s"])
        return {"p": p}, lambda cot: {"s": pn.softmax_backward(cot["p"], cache).s}

    return OpSpec(
        "softmax",
        ((4, 7), (2, 3, 1), (5,)),
        draw,
        lambda fn, t, o: {"p": fn(t["s"])},
        lambda bwd, t, o, cot: {"s": bwd(t["s"], cot["p"])},
        reference,
    )


def _softmax(s):
    e = np.exp(s - s.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_check_callable_takes_other_ops():
    spec = _softmax_spec()

    def good_bwd(s, dp):
        p = _softmax(s)
        return p * (dp - (dp * p).sum(-1, keepdims=True))

    assert check_callable(spec, _softmax, backward=good_bwd).ok

    def bad_bwd(s, dp):  # the row-sum term forgotten
        return _softmax(s) * dp

    rep = check_callable(spec, _softmax, backward=bad_bwd)
    # also the single-entry rows of (2, 3, 1): p = 1, so ds = 0 exactly, but p·dp = dp ≠ 0
    assert {r.point for r in rep.failures} == {"(4, 7)", "(2, 3, 1)", "(5,)"}
    assert all([a.name for a in r.report.failures] == ["grad.s"] for r in rep.failures)


# --------------------------------------------------------------------------- PyTorch worked example
def _torch_sdpa(torch, precision="native"):
    """fn and backward wrapping torch SDPA; NumPy in, NumPy out (docs/validation.md)."""

    def run(q, k, v, mask, causal, scale, dout=None):
        dt = torch.bfloat16 if precision == "bfloat16" else getattr(torch, str(q.dtype))
        t = [torch.from_numpy(a).to(dt).requires_grad_(dout is not None) for a in (q, k, v)]
        kw = {"scale": scale}
        if mask is not None:  # torch takes a mask or is_causal, not both: fold the triangle in
            kw["attn_mask"] = torch.from_numpy(
                mask & np.tri(q.shape[-2], k.shape[-2], dtype=bool) if causal else mask
            )
        else:
            kw["is_causal"] = causal
        out = torch.nn.functional.scaled_dot_product_attention(*t, **kw)
        if dout is None:
            return out.detach().float().numpy() if dt == torch.bfloat16 else out.detach().numpy()
        out.backward(torch.from_numpy(dout).to(dt))
        return tuple(x.grad.float().numpy() if dt == torch.bfloat16 else x.grad.numpy() for x in t)

    return (lambda q, k, v, mask, causal, scale: run(q, k, v, mask, causal, scale)), run


@pytest.mark.torch
def test_torch_sdpa_float64_and_float32_pass_with_gradients(torch):
    fn, backward = _torch_sdpa(torch)
    rep = check_dual_attention(fn, backward=backward, dtypes=("float64", "float32", "float16"))
    assert rep.ok, str(rep)
    large = {str(p) for p in LARGE_LOGIT_POINTS}
    for r in rep.results:  # float64 agreement is at rounding level, far inside 1e-10 ...
        if r.precision == "float64":  # ... times max|S| ~ 300 at the large-logit points
            tol = 5e-11 if r.point in large else 1e-13  # measured: 8.2e-12, 3.2e-15
            assert all(a.max_rel_err < tol for a in r.report.rows), str(r.report)


@pytest.mark.torch
def test_torch_sdpa_bfloat16_passes(torch):
    fn, backward = _torch_sdpa(torch, "bfloat16")
    assert check_dual_attention(fn, backward=backward, dtypes=("bfloat16",)).ok


@pytest.mark.torch
def test_bfloat16_rounding_matches_torch(torch, rng):
    from primal_np.compare import round_to_precision

    x = (rng.standard_normal(20000) * 10.0 ** rng.integers(-35, 38, 20000)).astype(np.float32)
    ties = (np.arange(1, 4001, dtype=np.uint32) << 15).view(np.float32)  # exact halfway cases
    x = np.concatenate([x, ties, -ties, [np.inf, -np.inf, 3.4e38, 0.0]]).astype(np.float32)
    ours = round_to_precision(x, "bfloat16")
    theirs = torch.from_numpy(x).to(torch.bfloat16).float().numpy()
    assert np.array_equal(ours, theirs)


# --------------------------------------------------------------------------- large logits, long sums
def _worst(result):
    """err/bound of the worst array of one (point, precision); inf for a problem row (NaN)."""
    return max(
        (a.max_abs_err / a.bound if a.problem is None else np.inf) for a in result.report.rows
    )


def test_large_logit_and_long_sum_points_are_in_the_default_grid():
    for i, p in enumerate(DUAL_ATTENTION_GRID):
        if p in LARGE_LOGIT_POINTS:  # float32 exp overflows above 88.7: some logit is beyond
            draw = OPS["dual_attention"].draw(p, np.random.default_rng([0, i]))[0]
            s = p.scale * np.einsum("...nd,...md->...nm", draw["q"], draw["k"])
            assert s.max() > 2 * 88.7
    assert len(LARGE_LOGIT_POINTS) == 3 and any(p.causal for p in LARGE_LOGIT_POINTS)
    assert all(p.m >= 512 and p.v_mean != 0 for p in LONG_SUM_POINTS)


@pytest.mark.parametrize("seed", [0, 1])
def test_softmax_without_the_max_shift_fails_the_large_logit_points_in_float32(seed):
    fwd = functools.partial(attention, max_shift=False)
    bwd = functools.partial(attention_backward, max_shift=False)
    rep = check_dual_attention(fwd, backward=bwd, dtypes=("float32",), seed=seed)
    assert {point for point, _ in _failing(rep)} == {str(p) for p in LARGE_LOGIT_POINTS}
    for r in rep.failures:  # exp overflows to inf: inf / inf = NaN, named as such
        assert any(a.problem and "NaN" in a.problem for a in r.report.rows)


@pytest.mark.parametrize("seed", [0, 1])
def test_bfloat16_accumulation_fails_the_long_sums_by_3x_float32_accumulation_passes(seed):
    grid = LONG_SUM_POINTS
    bug = check_dual_attention(
        functools.partial(attention, accumulate="bfloat16"),
        backward=functools.partial(attention_backward, accumulate="bfloat16"),
        grid=grid, dtypes=("bfloat16",), seed=seed,
    )  # fmt: skip
    assert len(bug.failures) == len(grid)
    assert min(_worst(r) for r in bug.results) >= 3.0
    # the same arithmetic with float32 sums (the candidate gets bfloat16 values in float32)
    good = check_dual_attention(
        attention, backward=attention_backward, grid=grid, dtypes=("bfloat16",), seed=seed
    )
    assert good.ok, str(good)


def test_correct_candidates_pass_the_new_points_with_room():
    grid = LARGE_LOGIT_POINTS + LONG_SUM_POINTS
    rep = check_dual_attention(attention, backward=attention_backward, grid=grid)
    assert rep.ok, str(rep)
    assert max(_worst(r) for r in rep.results) < 0.5
    own = check_dual_attention(
        lambda q, k, v, mask, causal, scale: pn.dual_attention(
            q, k, v, mask=mask, causal=causal, scale=scale, block_size=64
        )[0],
        grid=grid,
        dtypes=("float64", "float32", "float16", "bfloat16"),
    )  # primal_np's own blocked path, in every precision
    assert own.ok, str(own)


# --------------------------------------------------------------------------- the candidate's view
def test_candidate_learns_the_precision():
    seen = []

    def fn(q, k, v, mask, causal, scale, precision):  # a parameter named precision
        seen.append((precision, current_precision(), q.dtype.name))
        return attention(q, k, v, mask, causal, scale)

    def backward(q, k, v, mask, causal, scale, dout):  # no such parameter: not passed
        seen.append((None, current_precision(), q.dtype.name))
        return attention_backward(q, k, v, mask, causal, scale, dout)

    rep = check_dual_attention(
        fn, backward=backward, grid=DUAL_ATTENTION_GRID[:1], dtypes=("float32", "bfloat16")
    )
    assert rep.ok
    assert seen == [
        ("float32", "float32", "float32"), (None, "float32", "float32"),
        ("bfloat16", "bfloat16", "float32"), (None, "bfloat16", "float32"),
    ]  # fmt: skip
    assert current_precision() is None  # only while a check runs


def _nested_user_helper(q):
    return np.linalg.cholesky(-np.eye(q.shape[-1]))  # raises inside NumPy


def test_report_keeps_type_message_and_the_innermost_user_frame():
    def fn(q, k, v, mask, causal, scale):
        return _nested_user_helper(q)

    rep = check_dual_attention(fn, grid=DUAL_ATTENTION_GRID[:1], dtypes=("float64",))
    problem = rep.results[0].report.rows[0].problem
    assert problem.startswith("candidate raised LinAlgError: Matrix is not positive definite")
    # the innermost frame of the caller's code, not NumPy's own frames
    assert "test_adapters.py:" in problem and "in _nested_user_helper:" in problem
    assert "np.linalg.cholesky" in problem

    class Noted(ValueError):
        pass

    exc = Noted("value shape should be [6, 7, 1, 4]: but got (6, 7, 1, 3)")
    exc.add_note("--------------------\nFor simplicity, JAX has removed its internal frames")
    text = describe_exception(exc)  # the message, not the note that ends the formatted text
    assert text == "Noted: value shape should be [6, 7, 1, 4]: but got (6, 7, 1, 3)"


def test_atol_is_passed_to_the_rule():
    rep = check_dual_attention(
        attention, grid=DUAL_ATTENTION_GRID[:1], dtypes=("float64",), atol=1e-3
    )
    (row,) = rep.results[0].report.rows
    assert "+ 0.001" in rep.results[0].report.rule and row.bound > 1e-3
