"""Tuned implementations, validated against the reference (``primal_np.layer`` and friends).

``fast_primal_attention`` / ``fast_primal_attention_backward``: the Primal-Attention layer
with fused GEMMs, token-major layouts and in-place work. Same signature and results as
``primal_np.primal_attention`` on what it supports (``unsupported_reason``); it refuses
the rest with ``NotImplementedError``. ``primal_attention_impl(config)`` picks the fast
path where it applies and the reference otherwise (what ``train`` and ``bench`` use).
``check_fast_path()`` validates it through ``primal_np.adapters.check_primal_attention``.
"""

from __future__ import annotations

from collections.abc import Callable

from ..layer import primal_attention, primal_attention_backward
from ..params import PrimalAttentionConfig
from .layer import (
    FastPrimalCache,
    fast_primal_attention,
    fast_primal_attention_backward,
    unsupported_reason,
)
from .validate import check_fast_path

__all__ = [
    "FastPrimalCache",
    "fast_primal_attention",
    "fast_primal_attention_backward",
    "unsupported_reason",
    "primal_attention_impl",
    "check_fast_path",
]


def primal_attention_impl(config: PrimalAttentionConfig) -> tuple[Callable, Callable, str]:
    """(forward, backward, "fast" | "reference"): the fast path if it supports ``config``."""
    if unsupported_reason(config) is None:
        return fast_primal_attention, fast_primal_attention_backward, "fast"
    return primal_attention, primal_attention_backward, "reference"
