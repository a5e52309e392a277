"""Token positions sampled for the data-dependent projection weights (CONFORMANCE.md).

The authors call ``torch.linspace(0, N − 1, n, dtype=int)``. PyTorch evaluates it in
double with a two-sided formula and truncates toward zero:

    step = (N − 1) / (n − 1)
    idx_i = trunc(i · step)                       for i < n // 2
    idx_i = trunc((N − 1) − step · (n − 1 − i))   otherwise

``np.linspace(0, N − 1, n).astype(int)`` uses i·step throughout and can differ by one
where i·step rounds just below an integer; this module matches PyTorch.
"""

from __future__ import annotations

import numpy as np

from ._checks import positive_int

__all__ = ["torch_linspace_indices", "lra_indices", "vision_indices"]


def torch_linspace_indices(num_tokens: int, n: int) -> np.ndarray:
    """PyTorch's ``linspace(0, num_tokens − 1, n, dtype=int64)``, exactly. Shape (n,), sorted.

    Indices repeat when n > num_tokens.
    """
    num_tokens = positive_int(num_tokens, "num_tokens")
    n = positive_int(n, "n")
    if n == 1:
        return np.zeros(1, dtype=np.int64)
    end = float(num_tokens - 1)
    step = end / (n - 1)
    i = np.arange(n, dtype=np.float64)
    vals = np.where(i < n // 2, i * step, end - step * (n - 1 - i))
    return np.trunc(vals).astype(np.int64)


def lra_indices(num_tokens: int, low_rank: int, rank_multi: int) -> np.ndarray:
    """LRA layer: always n = s·m positions (repeating when N < n)."""
    return torch_linspace_indices(num_tokens, low_rank * rank_multi)


def vision_indices(num_tokens: int, low_rank: int, rank_multi: int) -> np.ndarray:
    """Vision layer: n = min(N, s·m); all N tokens in order when N ≤ s·m, else evenly spaced."""
    n = low_rank * rank_multi
    if num_tokens <= n:
        return np.arange(num_tokens, dtype=np.int64)
    return torch_linspace_indices(num_tokens, n)
