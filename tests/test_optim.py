"""Functional Adam/AdamW, schedules and gradient clipping: torch cross-checks, closed forms."""

import math

import numpy as np
import pytest
from helpers import readonly

from primal_np.compare import rel_error
from primal_np.optim import adam_init, adam_step, clip_grad_norm, warmup_cosine, warmup_linear

TOL = 1e-12


def _params(rng):
    return {
        "w": rng.standard_normal((3, 4)),
        "b": rng.standard_normal(4),
        "s": rng.standard_normal(()),
    }


# --------------------------------------------------------------------------- Adam / AdamW
ADAM_CASES = {
    "adam": dict(lr=1e-2),
    "adam-l2": dict(lr=3e-2, weight_decay=0.1, betas=(0.8, 0.99), eps=1e-6),
    "adamw": dict(lr=1e-2, weight_decay=0.05, decoupled=True),
    "adamw-betas": dict(lr=0.2, weight_decay=0.3, decoupled=True, betas=(0.5, 0.9), eps=1e-3),
}


@pytest.mark.torch
@pytest.mark.parametrize("case", list(ADAM_CASES))
def test_adam_matches_torch(torch, rng, case):
    kw = ADAM_CASES[case]
    params = _params(rng)
    tp = {n: torch.tensor(p, requires_grad=True) for n, p in params.items()}
    opt_kw = {k: v for k, v in kw.items() if k != "decoupled"}
    opt_cls = torch.optim.AdamW if kw.get("decoupled") else torch.optim.Adam
    opt_kw.setdefault("weight_decay", 0.0)  # AdamW's own default is 1e-2
    opt = opt_cls(list(tp.values()), **opt_kw)
    state = adam_init(params)
    for _ in range(6):
        grads = {n: rng.standard_normal(p.shape) for n, p in params.items()}
        params, state = adam_step(params, grads, state, **kw)
        for n, t in tp.items():
            t.grad = torch.tensor(grads[n])
        opt.step()
        for n, t in tp.items():
            assert rel_error(params[n], t.detach().numpy()) < TOL, n
            tstate = opt.state[t]
            assert rel_error(state[f"m/{n}"], tstate["exp_avg"].numpy()) < TOL
            assert rel_error(state[f"v/{n}"], tstate["exp_avg_sq"].numpy()) < TOL
    assert state["step"] == 6


def test_adam_first_step_closed_form(rng):
    # t = 1: m̂ = g and v̂ = g², so p ← p − η g / (|g| + ε)
    p, g = rng.standard_normal(5), rng.standard_normal(5)
    new, state = adam_step({"p": p}, {"p": g}, adam_init({"p": p}), lr=0.1, eps=1e-8)
    np.testing.assert_allclose(new["p"], p - 0.1 * g / (np.abs(g) + 1e-8), rtol=1e-14)
    np.testing.assert_allclose(state["m/p"], 0.1 * g, rtol=1e-15)
    np.testing.assert_allclose(state["v/p"], 0.001 * g * g, rtol=1e-12)


def test_adamw_decay_alone_shrinks_the_parameter(rng):
    # zero gradient: Adam's term vanishes and AdamW leaves p (1 − η λ)
    p = rng.standard_normal(4)
    new, _ = adam_step(
        {"p": p}, {"p": np.zeros(4)}, adam_init({"p": p}), lr=0.1, weight_decay=0.2, decoupled=True
    )
    np.testing.assert_allclose(new["p"], p * (1 - 0.1 * 0.2), rtol=1e-15)


def test_adam_never_writes_inputs_and_keeps_float32(rng):
    params = {n: readonly(p.astype(np.float32)) for n, p in _params(rng).items()}
    grads = {
        n: readonly(rng.standard_normal(p.shape).astype(np.float32)) for n, p in params.items()
    }
    state = {
        k: readonly(v) if isinstance(v, np.ndarray) else v for k, v in adam_init(params).items()
    }
    before = {n: p.copy() for n, p in params.items()}
    new, new_state = adam_step(params, grads, state, lr=1e-2, weight_decay=0.1)
    new, new_state = adam_step(new, grads, new_state, lr=1e-2, weight_decay=0.1, decoupled=True)
    for n in params:
        np.testing.assert_array_equal(params[n], before[n])
        assert new[n].dtype == np.float32 and new[n] is not params[n]
        assert new_state[f"m/{n}"].dtype == np.float32 and new_state[f"v/{n}"].dtype == np.float32
    assert state["step"] == 0 and new_state["step"] == 2


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("kw", list(ADAM_CASES.values()), ids=list(ADAM_CASES))
def test_adam_keeps_every_dtype_and_shape_including_0d(rng, dtype, kw):
    """Parameters and moments keep their dtype, shape and type (ndarray), 0-d included.

    Under NumPy 1.x promotion a 0-d float32 array times a Python float was float64, so
    adam_step returned a float64 scalar for a float32 0-d parameter. The update is the
    float64 one rounded to the parameter's precision.
    """
    params = {n: p.astype(dtype) for n, p in _params(rng).items()}
    # |g| ≥ 1/2: v stays clear of float16's underflow (eps = 1e-8 is 0 in float16)
    grads = {
        n: (rng.uniform(0.5, 2.0, p.shape) * rng.choice([-1.0, 1.0], p.shape)).astype(dtype)
        for n, p in params.items()
    }
    ref = {n: p.astype(np.float64) for n, p in params.items()}
    new, state, ref_state = params, adam_init(params), adam_init(ref)
    for _ in range(3):
        new, state = adam_step(new, grads, state, **kw)
        ref, ref_state = adam_step(ref, grads, ref_state, **kw)
    tol = {np.float16: 2e-2, np.float32: 1e-5, np.float64: 1e-14}[dtype]
    for n, p in params.items():
        for a in (new[n], state[f"m/{n}"], state[f"v/{n}"]):
            assert a.dtype == dtype and a.shape == p.shape, n
            assert isinstance(a, np.ndarray), (n, type(a))  # not a NumPy scalar for 0-d
        assert rel_error(new[n].astype(np.float64), ref[n]) < tol, n


def test_adam_casts_moments_of_another_dtype_to_the_parameters(rng):
    """A float64 state (saved for float64 parameters) driving float32 parameters: the
    moments are cast to float32, as torch's load_state_dict does; they used to turn the
    parameters into float64."""
    params64 = _params(rng)
    grads = {n: rng.standard_normal(p.shape) for n, p in params64.items()}
    _, state64 = adam_step(params64, grads, adam_init(params64), lr=1e-2)
    params32 = {n: p.astype(np.float32) for n, p in params64.items()}
    grads32 = {n: g.astype(np.float32) for n, g in grads.items()}
    new, state = adam_step(params32, grads32, state64, lr=1e-2)
    cast = {k: v.astype(np.float32) if k != "step" else v for k, v in state64.items()}
    expect, expect_state = adam_step(params32, grads32, cast, lr=1e-2)
    for n in params32:
        assert new[n].dtype == np.float32 and state[f"m/{n}"].dtype == np.float32
        np.testing.assert_array_equal(new[n], expect[n])
        np.testing.assert_array_equal(state[f"v/{n}"], expect_state[f"v/{n}"])


def test_adam_state_survives_npz(rng, tmp_path):
    params = _params(rng)
    grads = [{n: rng.standard_normal(p.shape) for n, p in params.items()} for _ in range(4)]
    ref_p, ref_s = params, adam_init(params)
    for g in grads:
        ref_p, ref_s = adam_step(ref_p, g, ref_s, lr=0.05)
    p, s = params, adam_init(params)
    for g in grads[:2]:
        p, s = adam_step(p, g, s, lr=0.05)
    np.savez(tmp_path / "state.npz", **s)
    s = dict(np.load(tmp_path / "state.npz"))
    for g in grads[2:]:
        p, s = adam_step(p, g, s, lr=0.05)
    for n in params:
        np.testing.assert_array_equal(p[n], ref_p[n])
    assert s["step"] == 4


def test_adam_bad_input(rng):
    params = _params(rng)
    grads = {n: np.zeros_like(p) for n, p in params.items()}
    state = adam_init(params)
    with pytest.raises(KeyError, match=r"missing \['s'\], unexpected \['x'\]"):
        adam_step(params, {"w": grads["w"], "b": grads["b"], "x": grads["s"]}, state, lr=0.1)
    with pytest.raises(
        ValueError, match=r"gradient for 'b' has shape \(3,\), expected the parameter's \(4,\)"
    ):
        adam_step(params, {**grads, "b": np.zeros(3)}, state, lr=0.1)
    with pytest.raises(ValueError, match=r"lr must lie in \[0.0, inf\), got -0.1"):
        adam_step(params, grads, state, lr=-0.1)
    with pytest.raises(ValueError, match=r"betas\[1\] must lie in \[0.0, 1.0\), got 1.0"):
        adam_step(params, grads, state, lr=0.1, betas=(0.9, 1.0))
    with pytest.raises(
        ValueError, match=r"state\['step'\] must be a non-negative integer, got 1.5"
    ):
        adam_step(params, grads, {**state, "step": 1.5}, lr=0.1)
    with pytest.raises(KeyError, match="state has no moments for parameter 'w'"):
        adam_step(params, grads, {k: v for k, v in state.items() if k != "v/w"}, lr=0.1)
    with pytest.raises(ValueError, match=r"state\['m/b'\] has shape \(3,\), expected .* \(4,\)"):
        adam_step(params, grads, {**state, "m/b": np.zeros(3)}, lr=0.1)
    with pytest.raises(TypeError, match="parameter 'i' must be floating-point, got dtype int64"):
        adam_init({"i": np.arange(3)})


# --------------------------------------------------------------------------- schedules
def test_warmup_linear_closed_form():
    # total 100, warmup 10, base 2: 0 → 2 over 10 steps, then 2 → 0 over 90
    expect = {0: 0.0, 5: 1.0, 9: 1.8, 10: 2.0, 55: 1.0, 91: 0.2, 100: 0.0, 150: 0.0}
    for step, lr in expect.items():
        assert warmup_linear(step, 100, 10, 2.0) == pytest.approx(lr, rel=1e-15, abs=1e-15), step
    assert warmup_linear(0, 10, 0, 3.0) == 3.0  # no warm-up
    assert warmup_linear(5, 10, 10, 3.0) == 1.5 and warmup_linear(10, 10, 10, 3.0) == 0.0


def test_warmup_cosine_closed_form():
    base, low = 1.0, 0.1
    expect = {0: 0.0, 4: 0.4, 10: 1.0, 55: 0.55, 100: 0.1, 500: 0.1}  # 55: cos(π/2) = 0
    for step, lr in expect.items():
        assert warmup_cosine(step, 100, 10, base, low) == pytest.approx(lr, rel=1e-15, abs=1e-15), (
            step
        )
    # step 32 is q = 22/90 of the way through the decay: base (1 + cos(π q)) / 2
    assert warmup_cosine(32, 100, 10, 1.0) == pytest.approx(
        0.5 * (1 + math.cos(math.pi * 22 / 90)), rel=1e-15
    )
    assert warmup_cosine(0, 50, 0, 2.0) == 2.0


def test_schedule_bad_input():
    with pytest.raises(ValueError, match=r"warmup must be <= total \(10\), got 11"):
        warmup_linear(0, 10, 11, 1.0)
    with pytest.raises(ValueError, match="step must be >= 0, got -1"):
        warmup_cosine(-1, 10, 1, 1.0)
    with pytest.raises(TypeError, match="step must be an integer, got float 1.5"):
        warmup_linear(1.5, 10, 1, 1.0)
    with pytest.raises(ValueError, match=r"min_lr must be <= base_lr \(1.0\), got 2.0"):
        warmup_cosine(0, 10, 1, 1.0, min_lr=2.0)


# --------------------------------------------------------------------------- clipping
@pytest.mark.torch
@pytest.mark.parametrize("max_norm", [0.5, 1e3, "window"])
def test_clip_grad_norm_matches_torch(torch, rng, max_norm):
    shapes = {"a": (3, 4), "b": (5,), "c": ()}
    grads = {n: readonly(rng.standard_normal(s)) for n, s in shapes.items()}
    norm = math.sqrt(sum(float(np.sum(g * g)) for g in grads.values()))
    if max_norm == "window":  # within 1e-6 above the norm: torch still scales by a hair
        max_norm = norm + 5e-7
    clipped, total = clip_grad_norm(grads, max_norm)
    ts = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads.values()]
    for t, g in zip(ts, grads.values(), strict=True):
        t.grad = torch.tensor(g)
    t_total = torch.nn.utils.clip_grad_norm_(ts, max_norm)
    assert total == pytest.approx(norm, rel=1e-14)
    assert rel_error(total, t_total.item()) < TOL
    for t, n in zip(ts, grads, strict=True):
        assert rel_error(clipped[n], t.grad.numpy()) < TOL


def test_clip_grad_norm_semantics(rng):
    grads = {"a": readonly(np.array([3.0, 0.0])), "b": readonly(np.array([[4.0]]))}  # norm 5
    clipped, total = clip_grad_norm(grads, 1.0)
    assert total == 5.0
    np.testing.assert_allclose(clipped["a"], [3.0 / (5 + 1e-6), 0.0], rtol=1e-15)
    np.testing.assert_allclose(clipped["b"], [[4.0 / (5 + 1e-6)]], rtol=1e-15)
    same, _ = clip_grad_norm(grads, 10.0)  # below the threshold: unchanged, new arrays
    np.testing.assert_array_equal(same["b"], grads["b"])
    assert same["b"] is not grads["b"]
    g32, _ = clip_grad_norm({"x": np.ones(4, np.float32), "s": np.float32(2.0)}, 1.0)
    assert g32["x"].dtype == np.float32  # 0-d too: no float64 from NumPy 1.x promotion
    assert isinstance(g32["s"], np.ndarray) and g32["s"].dtype == np.float32
    assert clip_grad_norm({}, 1.0) == ({}, 0.0)


def test_clip_grad_norm_of_gradients_whose_squares_overflow():
    """‖g‖ = 5e200 is finite although ‖g‖² is not: measured and clipped (3-4-5 triangle),
    also when the caller raises on overflow (the training loop does)."""
    grads = {"a": np.array([3e200, 0.0]), "b": np.array([[4e200]])}
    with np.errstate(over="raise", invalid="raise"):
        clipped, total = clip_grad_norm(grads, 1.0)
    assert total == pytest.approx(5e200, rel=1e-15)
    np.testing.assert_allclose(clipped["a"], [0.6, 0.0], rtol=1e-12)
    np.testing.assert_allclose(clipped["b"], [[0.8]], rtol=1e-12)
    with pytest.raises(ValueError, match="gradient norm is not finite: it overflows float64"):
        clip_grad_norm({"a": np.array([1.5e308, 1.5e308])}, 1.0)  # ‖g‖ ≈ 2.1e308


def test_clip_grad_norm_bad_input():
    with pytest.raises(ValueError, match="gradient norm is not finite: 'b' holds NaN or infinity"):
        clip_grad_norm({"a": np.ones(2), "b": np.array([np.inf])}, 1.0)
    with pytest.raises(ValueError, match=r"max_norm must lie in \[0.0, inf\), got -1"):
        clip_grad_norm({"a": np.ones(2)}, -1)
    with pytest.raises(TypeError, match="gradient 'a' must be floating-point, got dtype int64"):
        clip_grad_norm({"a": np.ones(2, dtype=np.int64)}, 1.0)
