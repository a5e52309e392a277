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
