"""Helpers shared by the test modules (imported as ``from helpers import ...``)."""

from __future__ import annotations

import numpy as np


def readonly(*arrays):
    """Copies of the arrays with writeable=False: ops must never write to their inputs."""
    out = []
    for a in arrays:
        a = np.array(a, copy=True)
        a.flags.writeable = False
        out.append(a)
    return out if len(out) > 1 else out[0]


def rel_err(a, b) -> float:
    """max |a − b| / max |b| (b the reference); 0 when both are zero."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    scale = np.abs(b).max(initial=0.0)
    diff = np.abs(a - b).max(initial=0.0)
    return float(diff / scale) if scale > 0 else float(diff)
