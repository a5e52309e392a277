"""primal_np.compare: the comparison policy, its report, and the low-precision emulation."""

import json

import numpy as np
import pytest

from primal_np.compare import (
    ATOL,
    RTOL_FLOAT64,
    compare,
    emulate_precision,
    round_to_precision,
)

EPS32 = 2.0**-23


# --------------------------------------------------------------------------- bfloat16 rounding
@pytest.mark.parametrize(
    "x, expected",
    [
        (1.0, 1.0),
        (1 + 2**-7, 1 + 2**-7),  # representable: bfloat16 keeps 7 fraction bits
        (1 + 2**-8, 1.0),  # tie between 1 and 1 + 2^-7: to even (1)
        (1 + 3 * 2**-8, 1 + 2**-6),  # tie between 1 + 2^-7 and 1 + 2^-6: to even (2^-6)
        (1 + 2**-8 + 2**-20, 1 + 2**-7),  # just above the tie: up
        (-(1 + 3 * 2**-8), -(1 + 2**-6)),
        (3.0e38, 2**127 * (1 + 98 / 128)),  # 3.0e38 = 2^127 · (1 + 97.69/128): up to 98
        (3.4e38, np.inf),  # beyond (2 − 2^-8) · 2^127, the rounding boundary of the max
        (np.inf, np.inf),
        (-np.inf, -np.inf),
    ],
)
def test_bfloat16_rounding_hand_values(x, expected):
    got = round_to_precision(np.array([x], np.float32), "bfloat16")
    assert got.dtype == np.float32
    assert got[0] == np.float32(expected)


def test_bfloat16_rounding_keeps_nan_and_is_idempotent(rng):
    x = rng.standard_normal(1000) * 10.0 ** rng.integers(-30, 30, 1000)
    y = round_to_precision(x, "bfloat16")
    assert np.all(y.view(np.uint32) & 0xFFFF == 0)  # only the upper 16 bits are used
    assert np.array_equal(round_to_precision(y, "bfloat16"), y)
    assert np.all(np.abs(y - x) <= 2.0**-8 * np.abs(x))  # half an ulp, relative 2^-8
    nan = round_to_precision(np.array([np.nan, 1.0]), "bfloat16")
    assert np.isnan(nan[0]) and nan[1] == 1.0


def test_round_to_float16_and_float32_are_casts():
    x = np.array([1 / 3, 70000.0])
    assert round_to_precision(x, "float16").dtype == np.float16
    assert round_to_precision(x, "float16")[1] == np.inf  # float16 max is 65504
    assert round_to_precision(x, "float32")[0] == np.float32(1 / 3)
    with pytest.raises(ValueError, match="precision must be one of"):
        round_to_precision(x, "float8")
    with pytest.raises(TypeError, match="floating"):
        round_to_precision(np.arange(3), "float32")


def test_emulate_precision_rounds_inputs_and_outputs_and_computes_in_float32():
    seen = {}

    def run(arrays, dtype):
        seen.update(dtype=dtype, x=arrays["input.x"].dtype, mask=arrays["input.mask"].dtype)
        return {"output.y": arrays["input.x"] * np.float32(1 + 2**-10)}

    x = np.array([1 + 2**-12, 3.0])
    mask = np.array([True, False])
    out = emulate_precision(run, {"input.x": x, "input.mask": mask}, "bfloat16")
    assert seen == {"dtype": np.float32, "x": np.float32, "mask": np.bool_}
    # input 1 + 2^-12 rounds to 1; 1 · (1 + 2^-10) rounds to 1 in bfloat16; 3 · (1 + 2^-10) too
    assert out["output.y"].dtype == np.float64 and list(out["output.y"]) == [1.0, 3.0]
    out64 = emulate_precision(run, {"input.x": x, "input.mask": mask}, "float64")
    assert seen["dtype"] == np.float64 and out64["output.y"][0] == (1 + 2**-12) * (1 + 2**-10)


# --------------------------------------------------------------------------- float64 rule
def _ref():
    return {
        "output.out": np.array([[0.5, -2.0, 1.0], [0.25, 0.0, -0.75]]),
        "grad.q": np.array([4.0, -1.0, 0.5]),
    }


def test_float64_bound_is_relative_to_the_array_scale():
    ref = _ref()
    cand = {n: a.copy() for n, a in ref.items()}
    cand["grad.q"][2] += 3e-11  # max|grad.q| = 4: bound 4e-10 + 1e-12
    cand["output.out"][1, 0] -= 1e-13
    rep = compare(cand, ref)
    assert rep.ok, str(rep)
    row = {r.name: r for r in rep.rows}["grad.q"]
    assert row.bound == pytest.approx(RTOL_FLOAT64 * 4.0 + ATOL, rel=1e-15)
    assert row.max_abs_err == pytest.approx(3e-11, rel=1e-4)
    assert row.max_rel_err == pytest.approx(3e-11 / 4.0, rel=1e-4)
    assert row.mean_abs_err == pytest.approx(1e-11, rel=1e-4)
    assert row.worst_index == (2,) and row.reference_value == 0.5
    assert row.candidate_value == pytest.approx(0.5 + 3e-11, abs=1e-15)


def test_float64_candidate_off_by_1e4_relative_in_one_gradient_fails_naming_it():
    ref = _ref()
    cand = {n: a.copy() for n, a in ref.items()}
    cand["grad.q"] = cand["grad.q"] * (1 + 1e-4)
    rep = compare(cand, ref)
    assert not rep.ok
    assert [r.name for r in rep.failures] == ["grad.q"]
    assert rep.failures[0].max_abs_err == pytest.approx(4e-4)
    assert "grad.q: outside bound" in rep.summary()
    assert "FAIL" in str(rep) and "grad.q" in str(rep)


def test_problems_are_rows_not_exceptions():
    ref = _ref() | {"grad.k": np.ones((2, 2)), "grad.v": np.ones(3), "grad.w": np.ones(2)}
    cand = {
        "output.out": np.where(np.eye(2, 3, dtype=bool), np.nan, ref["output.out"]),
        "grad.q": ref["grad.q"][:2],  # wrong shape
        "grad.v": np.ones(3, dtype=np.int64),  # wrong dtype
        "grad.w": np.array([1.0, np.inf]),
        "extra.thing": np.zeros(1),
    }  # grad.k missing
    rep = compare(cand, ref)
    problems = {r.name: r.problem for r in rep.rows}
    assert "2 NaN and 0 inf of 6 values (first at (0, 0)" in problems["output.out"]
    assert problems["grad.q"] == "shape (2,), expected (3,)"
    assert problems["grad.k"] == "missing from the candidate"
    assert problems["grad.v"] == "dtype int64 is not floating"
    assert "0 NaN and 1 inf" in problems["grad.w"]
    assert not rep.ok and len(rep.failures) == 5
    assert rep.ignored == ["extra.thing"]
    text = str(rep)
    for name in ("output.out", "grad.q", "grad.k", "grad.v", "grad.w"):
        assert name in text and name in rep.summary()
    data = json.loads(rep.to_json())  # NaN-free, valid JSON
    assert data["ok"] is False and {a["name"] for a in data["arrays"]} == set(problems)


def test_storage_less_precise_than_claimed_fails():
    ref = {"output.out": np.array([1.0, 2.0])}
    own = {"output.out": ref["output.out"]}
    rep = compare(
        {"output.out": np.array([1.0, 2.0], np.float16)}, ref, precision="float32", own=own
    )
    assert "less precise than the claimed precision float32" in rep.rows[0].problem
    rep = compare({"output.out": np.array([1.0, 2.0], np.float32)}, ref)
    assert not rep.ok and "stored as float32" in rep.rows[0].problem


# --------------------------------------------------------------------------- low-precision rule
def test_low_precision_bound_is_k_times_own_error_plus_floor():
    ref = {"grad.q": np.array([1.0, -2.0])}
    own = {"grad.q": np.array([1.0, -2.0 + 1e-6])}  # primal_np's own float32 error: 1e-6
    floor = 2 * EPS32 * 2.0 + 1e-12  # 2 eps · max|r| + atol = 4.768e-07
    bound = 2 * 1e-6 + floor
    for err, ok in ((2.4e-6, True), (2.5e-6, False)):
        cand = {"grad.q": np.array([1.0 + err, -2.0], np.float32)}
        rep = compare(cand, ref, precision="float32", own=own)
        (row,) = rep.rows
        assert row.own_err == pytest.approx(1e-6, rel=1e-9)
        assert row.bound == pytest.approx(bound, rel=1e-12)
        # the float32 candidate carries its own rounding: |1 + err − fl32(1 + err)| < 6e-8
        assert row.max_abs_err == pytest.approx(err, abs=6e-8)
        assert row.passed is ok
    rep = compare(cand, ref, precision="float32", own=own, k=3)
    assert rep.ok and rep.rows[0].bound == pytest.approx(3e-6 + floor, rel=1e-12)
    assert "2*eps*max|r|" in rep.rule and "primal_np in float32" in str(rep)


def test_low_precision_needs_own_and_valid_arguments():
    ref = {"output.out": np.ones(2)}
    with pytest.raises(ValueError, match="needs own="):
        compare(ref, ref, precision="float32")
    with pytest.raises(ValueError, match="own\\['output.out'\\].*shape \\(2,\\)"):
        compare(ref, ref, precision="float32", own={"output.out": np.ones(3)})
    with pytest.raises(ValueError, match="k must be a finite number"):
        compare(ref, ref, k=-1)
    with pytest.raises(ValueError, match="precision must be one of"):
        compare(ref, ref, precision="fp32")
    with pytest.raises(ValueError, match="reference array 'output.out' must be finite"):
        compare(ref, {"output.out": np.array([np.nan, 1.0])})


def test_project_float32_path_passes_on_a_golden_case():
    from primal_np.golden import build_case

    case = build_case("dual_attention_causal")
    inputs = {n: a for n, a in case.arrays.items() if n.split(".")[0] in ("input", "cotangent")}
    ref = {n: a for n, a in case.arrays.items() if n.split(".")[0] in ("output", "grad")}
    own = emulate_precision(case.recompute, inputs, "float32")
    rep = compare(own, ref, precision="float32", own=own)
    assert rep.ok, str(rep)
    # primal_np's own float32 error is float32-sized: above 0, below 1e-5 relative
    assert all(0 < r.max_rel_err < 1e-5 for r in rep.rows)


def test_bfloat16_rounding_keeps_a_scalar_a_scalar():
    """A case's scalar outputs (a loss) stay 0-d, so golden check --dtype bfloat16 runs."""
    got = round_to_precision(np.array(1 + 2**-9), "bfloat16")
    assert got.shape == () and got == 1.0
