"""Blocked dual attention at long sequence length: peak memory and time of forward + backward.

    PYTHONPATH=. python benchmarks/long_attention.py [--n 65536] [--d 64] [--block 512]
        [--causal] [--json FILE]

``dual_attention(q, k, v, block_size=b)`` and ``dual_attention_backward`` (the online
softmax of primal_np/dual_blocked.py) on one sequence and head, N = M, float64. The
unblocked form would hold P and dP, N×M each: 32 GiB apiece at N = 65,536.

The measurement runs in a fresh subprocess (its own peak RSS, no allocations left over
from this one):

- ``peak_rss_bytes``: the process's peak resident set (``ru_maxrss``) at the end, Python,
  NumPy, OpenBLAS buffers and the inputs included — the figure that has to fit the machine;
- ``rss_increment_bytes``: that peak minus the resident set after the inputs were made and
  a small run had loaded everything (what forward + backward add);
- ``tracemalloc_peak_bytes``: the peak of NumPy's array allocations during forward +
  backward, traced (NumPy reports its data buffers to tracemalloc);
- ``forward_s``, ``backward_s``: wall-clock seconds of one call each (no repeats: minutes);
- ``check_rel_error``: the forward's rows i = 0, N/3, N−1 recomputed directly
  (softmax(q_i Kᵀ·scale) V, one row at a time) — the blocked result is right at this size;
- ``loadavg``: ``os.getloadavg()`` before and after (the machine is shared: times are only
  as clean as it was quiet), and the BLAS thread count.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc

import numpy as np


def _rss_now() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(n: int, d: int, block: int, causal: bool) -> dict:
    import primal_np as pn
    from primal_np.compare import rel_error

    rng = np.random.default_rng(0)
    q, k, v, dout = (rng.standard_normal((n, d)) for _ in range(4))
    small = [a[:256] for a in (q, k, v, dout)]  # load BLAS, NumPy's ufuncs, primal_np
    out, cache = pn.dual_attention(*small[:3], causal=causal, block_size=64)
    pn.dual_attention_backward(small[3], cache)
    del out, cache
    base = _rss_now()
    load0 = os.getloadavg()
    tracemalloc.start()
    t0 = time.perf_counter()
    out, cache = pn.dual_attention(q, k, v, causal=causal, block_size=block)
    t1 = time.perf_counter()
    grads = pn.dual_attention_backward(dout, cache)
    t2 = time.perf_counter()
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    load1 = os.getloadavg()
    rows = [0, n // 3, n - 1]
    errs = []
    for i in rows:
        s = (q[i] / np.sqrt(d)) @ k[: i + 1 if causal else n].T
        p = np.exp(s - s.max())
        errs.append(rel_error(out[i], (p / p.sum()) @ v[: len(p)]))
    assert all(np.isfinite(g).all() for g in grads)
    return {
        "N": n, "M": n, "d": d, "dv": d, "block_size": block, "causal": causal,
        "dtype": "float64", "forward_s": round(t1 - t0, 2), "backward_s": round(t2 - t1, 2),
        "peak_rss_bytes": peak, "rss_increment_bytes": peak - base,
        "tracemalloc_peak_bytes": traced, "check_rel_error": max(errs),
        "loadavg": [load0[0], load1[0]], "blas_threads": _blas_threads(),
        "numpy": np.__version__,
        "unblocked_P_bytes": n * n * 8,
    }  # fmt: skip


def _blas_threads() -> str:
    """OPENBLAS_NUM_THREADS if set, else the CPU count OpenBLAS uses by default."""
    return os.environ.get("OPENBLAS_NUM_THREADS", f"default ({os.cpu_count()} CPUs)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=65536)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--block", type=int, default=512)
    ap.add_argument("--causal", action="store_true")
    ap.add_argument("--json", default=None, help="append the result as one JSON line to FILE")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.n, args.d, args.block, args.causal)))
        return 0
    cmd = [sys.executable, __file__, "--child", "--n", str(args.n), "--d", str(args.d),
           "--block", str(args.block)] + (["--causal"] if args.causal else [])  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        print(proc.stderr, file=sys.stderr)
        return proc.returncode
    line = proc.stdout.strip().splitlines()[-1]
    res = json.loads(line)
    gib = 2.0**30
    print(
        f"N = M = {res['N']}, d = {res['d']}, block {res['block_size']}, float64"
        f"{', causal' if res['causal'] else ''}: forward {res['forward_s']} s, backward "
        f"{res['backward_s']} s; peak RSS {res['peak_rss_bytes'] / gib:.2f} GiB "
        f"(+{res['rss_increment_bytes'] / gib:.2f} GiB over the inputs; traced NumPy peak "
        f"{res['tracemalloc_peak_bytes'] / gib:.2f} GiB); P unblocked would be "
        f"{res['unblocked_P_bytes'] / gib:.0f} GiB; rows re-checked to {res['check_rel_error']:.1e}; "
        f"load {res['loadavg'][0]:.1f} → {res['loadavg'][1]:.1f}"
    )
    if args.json:
        with open(args.json, "a") as fh:
            fh.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
