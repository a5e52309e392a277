"""Shared fixtures.

PyTorch cross-checks use the ``torch`` fixture (and carry the ``torch`` marker), JAX
cross-checks the ``jax`` fixture (and the ``jax`` marker). Locally they skip when the
framework is missing; with CI=true a skipped cross-check is a failure, so a CI run
cannot go green without the cross-checks having run. PRIMAL_NP_NO_JAX=1 is the explicit
exception for JAX (for CI runs in environments without it): the JAX cross-checks skip,
and their skips stay skips under CI=true.
"""

from __future__ import annotations

import os

import numpy as np
import pytest


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"true", "1", "yes"}


IN_CI = _env_flag("CI")
NO_JAX = _env_flag("PRIMAL_NP_NO_JAX")


@pytest.fixture(scope="session")
def torch():
    try:
        import torch as _torch
    except ImportError:
        if IN_CI:
            pytest.fail("torch is not installed but CI=true: PyTorch cross-checks must run in CI")
        pytest.skip("torch is not installed (cross-check)")
    return _torch


@pytest.fixture(scope="session")
def jax():
    """JAX with float64 enabled (``jax_enable_x64``: without it float64 arrays become float32)."""
    if NO_JAX:
        pytest.skip("JAX cross-checks disabled by PRIMAL_NP_NO_JAX=1")
    try:
        import jax as _jax
    except ImportError:
        if IN_CI:
            pytest.fail("jax is not installed but CI=true: JAX cross-checks must run in CI")
        pytest.skip("jax is not installed (cross-check; pip install -e '.[jax]')")
    _jax.config.update("jax_enable_x64", True)
    return _jax


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    for framework in ("torch",) + (() if NO_JAX else ("jax",)):
        if IN_CI and rep.skipped and item.get_closest_marker(framework) is not None:
            rep.outcome = "failed"
            rep.longrepr = f"{framework} cross-check skipped under CI=true: {rep.longrepr}"


@pytest.fixture
def rng():
    return np.random.default_rng(20231122)
