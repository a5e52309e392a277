"""The fast path's matrix products alone, against the fast layer and np.matmul.

Runs the GEMMs of ``primal_np.fast`` (fused output form) at the target shape of issue 12
(B=4, N=4096, D=256, H=4, s=32, rank_multi=10, float32) with the same shapes, strided
layouts and order, interleaved round by round with the fast layer's forward + backward
and a 2048² np.matmul, and prints the medians and the fraction of np.matmul's GFLOP/s
that the layer's analytic FLOP count reaches in each. That fraction for the GEMMs alone
is the ceiling of any implementation that calls BLAS for these products
(docs/performance.md, "Where the fast path's time goes").

    PYTHONPATH=. python benchmarks/gemm_floor.py [--rounds R]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from primal_np.bench.layers import make_layer

B, N, D, H, P, S, N_SAMPLED = 4, 4096, 256, 4, 64, 32, 320
ROWS = 4096  # the fast backward's block of tokens


def make_gemms():
    f = np.float32
    r = np.random.default_rng(0)
    x = r.standard_normal((B * N, D)).astype(f)
    w_qk = r.standard_normal((2 * D, D)).astype(f)
    a = r.standard_normal((H * 2 * S, D)).astype(f)  # the composed W_c ∘ W_o map
    qk = (x @ w_qk.T).reshape(B, N, 2, H, P)
    q, k = qk[:, :, 0].transpose(0, 2, 1, 3), qk[:, :, 1].transpose(0, 2, 1, 3)
    we, wr = (r.standard_normal((B, H, P, S)).astype(f) for _ in range(2))
    er = np.empty((B, N, H, 2 * S), f)
    e, rr = er[..., :S].transpose(0, 2, 1, 3), er[..., S:].transpose(0, 2, 1, 3)
    dy = r.standard_normal((B * N, D)).astype(f)
    der = r.standard_normal((ROWS, H, 2, S)).astype(f)
    t = np.empty((H, ROWS, P), f)
    dqk = r.standard_normal((ROWS, 2 * D)).astype(f)
    dx = np.empty((B * N, D), f)

    def gemms() -> None:
        x @ w_qk.T  # [Q | K]
        np.matmul(q, we, out=e)  # E = Q W_{e|X}, R = K W_{r|X} (per b, h)
        np.matmul(k, wr, out=rr)
        er2 = er.reshape(B * N, H * 2 * S)
        er2 @ a  # Y (fused output stage)
        dy.T @ er2  # S = dYᵀ [E | R]
        dy @ a.T  # d[E | R]
        dw = np.zeros((2 * D, D), f)
        g = der.transpose(1, 0, 2, 3)
        for b in range(B):  # one block of ROWS tokens per sequence
            for j, w in enumerate((we, wr)):
                np.matmul(g[:, :, j], np.swapaxes(w[b], -1, -2), out=t)  # G W_{e|X}ᵀ
                qk[b, :, j].transpose(1, 2, 0) @ g[:, :, j]  # dW_{e|X} += Qᵀ G
            np.matmul(dqk, w_qk, out=dx[b * N : (b + 1) * N])  # dX
            dw += dqk.T @ x[b * N : (b + 1) * N]  # d[W_q; W_k]

    return gemms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=25)
    args = ap.parse_args()
    gemms = make_gemms()
    fwd, bwd = make_layer("primal", "fast", B, N, D, H, S, 10, "float32")
    m = np.random.default_rng(1).standard_normal((2048, 2048)).astype(np.float32)
    t_g, t_l, t_m = [], [], []
    for _ in range(args.rounds):
        for fn, acc in ((gemms, t_g), (lambda: bwd(fwd()), t_l), (lambda: m @ m, t_m)):
            t0 = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t0)
    g, lay, mm = (float(np.median(v)) for v in (t_g, t_l, t_m))
    peak = 2 * 2048**3 / mm / 1e9
    flop = 18 * B * N * D * D + 24 * B * N * D * S + 12 * B * D * N_SAMPLED * S
    ratio = float(np.median(np.array(t_l) / np.array(t_g)))
    print(f"np.matmul {peak:.0f} GFLOP/s; GEMMs alone {g:.4f} s "
          f"({flop / g / 1e9 / peak:.2f} of np.matmul); fast layer {lay:.4f} s "
          f"({flop / lay / 1e9 / peak:.2f}); layer / GEMMs {ratio:.2f}; "
          f"loadavg {os.getloadavg()[0]:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
