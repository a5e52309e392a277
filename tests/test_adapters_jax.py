"""JAX cross-check (docs/validation.md, "JAX"): jax.nn.dot_product_attention behind its glue
passes the float32 check; in float64 it is caught computing its softmax in float32; a
jax.numpy attention passes float64 with x64 enabled. Skips locally without jax, fails under
CI=true (tests/conftest.py)."""

import numpy as np
import pytest

from primal_np.adapters import DUAL_ATTENTION_GRID, check_dual_attention

# each (shape, dtype) compiles once (about a second): a few points covering the glue —
# one leading axis, dv ≠ d (padding), a dead row; two leading axes, causal, large logits
GRID = (DUAL_ATTENTION_GRID[10], DUAL_ATTENTION_GRID[12])

pytestmark = pytest.mark.jax


def _fn(candidate):
    return lambda q, k, v, mask, causal, scale, precision: candidate(
        q, k, v, mask, causal, scale, precision=precision
    )


def test_dot_product_attention_passes_float32_and_is_float32_inside(jax):
    import candidates_jax as J

    assert jax.config.jax_enable_x64
    f = J.dot_product_attention
    rep = check_dual_attention(_fn(f), backward=f, grid=GRID, dtypes=("float32",))
    assert rep.ok, str(rep)
    # float64 inputs, float64 outputs, but the softmax runs in float32 (jax.nn's
    # _dot_product_attention_core): errors of float32 size, 1e3 times the float64 bound
    rep = check_dual_attention(_fn(f), backward=f, grid=GRID[:1], dtypes=("float64",))
    assert not rep.ok
    rows = rep.results[0].report.rows
    assert all(a.problem is None and 1e-9 < a.max_rel_err < 1e-6 for a in rows)


def test_jax_numpy_attention_passes_float64_with_x64(jax):
    import candidates_jax as J

    f = J.einsum_attention
    rep = check_dual_attention(_fn(f), backward=f, grid=GRID[:1], dtypes=("float64",))
    assert rep.ok, str(rep)
    assert all(a.max_rel_err < 1e-13 for a in rep.results[0].report.rows)


def test_a_jax_error_reaches_the_report(jax):
    """Without the dv = d padding JAX raises; the report keeps its message (JAX ends the
    formatted exception with a note about removed frames) and the caller's frame."""
    import jax.numpy as jnp

    def no_padding(q, k, v, mask, causal, scale):
        f = jax.jit(lambda q, k, v: jax.nn.dot_product_attention(q, k, v))
        return np.asarray(f(*(jnp.asarray(a[None]) for a in (q, k, v))))[0]

    rep = check_dual_attention(no_padding, grid=[GRID[0]], dtypes=("float32",))
    problem = rep.results[0].report.rows[0].problem
    assert problem.startswith("candidate raised ValueError: value shape should be")
    assert "removed its internal frames" not in problem
    assert "test_adapters_jax.py:" in problem
