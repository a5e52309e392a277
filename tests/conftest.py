"""Shared fixtures.

PyTorch cross-checks use the ``torch`` fixture (and carry the ``torch`` marker), JAX
cross-checks the ``jax`` fixture (and the ``jax`` marker). Locally they skip when the
framework is missing; with CI=true a skipped cross-check is a failure, so a CI run cannot
go green without the cross-checks having run.

PRIMAL_NP_NO_TORCH=1 and PRIMAL_NP_NO_JAX=1 are the explicit exceptions: those
cross-checks skip (the framework installed or not) and their skips stay skips under
CI=true. Only the extra CI runs at the dependency floors and on the newest Python set
them (.ci/floors); torch exists for one Python here and neither framework is a
dependency, and the main CI run still needs every cross-check.
"""

from __future__ import annotations

import os

import numpy as np
import pytest


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"true", "1", "yes"}


IN_CI = _env_flag("CI")
NO_TORCH = _env_flag("PRIMAL_NP_NO_TORCH")
NO_JAX = _env_flag("PRIMAL_NP_NO_JAX")


@pytest.fixture(scope="session")
def torch():
    if NO_TORCH:
        pytest.skip("PyTorch cross-checks disabled by PRIMAL_NP_NO_TORCH=1")
    try:
        import torch as _torch
    except ImportError:
        if IN_CI:
            pytest.fail("torch is not installed but CI=true: PyTorch cross-checks must run in CI")
        pytest.skip("torch is not installed (cross-check)")
    return _torch


def pytest_collection_modifyitems(config, items):
    if NO_TORCH:
        skip = pytest.mark.skip(reason="PyTorch cross-checks disabled by PRIMAL_NP_NO_TORCH=1")
        for item in items:
            if item.get_closest_marker("torch") is not None:
                item.add_marker(skip)


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
    for framework, disabled in (("torch", NO_TORCH), ("jax", NO_JAX)):
        if IN_CI and not disabled and rep.skipped and item.get_closest_marker(framework):
            rep.outcome = "failed"
            rep.longrepr = f"{framework} cross-check skipped under CI=true: {rep.longrepr}"


@pytest.fixture
def rng():
    return np.random.default_rng(20231122)
