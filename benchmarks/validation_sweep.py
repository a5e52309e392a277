"""The validation sweep of docs/validation.md: every correct implementation passes the default
grids on every seed, every planted bug fails where it shows, with a margin.

    PYTHONPATH=. python benchmarks/validation_sweep.py [--seeds 20] [--only TEXT] [--json FILE]

For each seed s = 0..S−1 (the ``seed=`` of the ``check_*`` functions: other inputs and
cotangents at every grid point) it runs:

- correct implementations (tests/candidates*.py: independent NumPy statements, PyTorch
  SDPA, ``torch.nn.MultiheadAttention``, ``jax.nn.dot_product_attention``, the PyTorch
  statement of the authors' layers and loss, primal_np's own blocked path) on the default
  grids in the precisions they are built for, and records the largest err/bound of any
  array (must stay < 1);
- planted bugs, and records at each (grid point, precision) where the bug must show the
  largest err/bound of that point's arrays (∞ for a NaN/inf or shape row); the bug's
  margin is the smallest of these over points and seeds (must be ≥ 3, or ≥ 1 where a row
  says why not), and it must pass nowhere it is supposed to fail.

Torch and JAX implementations are skipped when the framework is missing. Takes a few
minutes per seed on a 2-core machine (most of it the bfloat16-accumulating candidate's
Python loop and JAX's compilations of the first seed).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import candidates as C  # noqa: E402
import numpy as np  # noqa: E402

import primal_np as pn  # noqa: E402
from primal_np.adapters import (  # noqa: E402
    DUAL_ATTENTION_GRID,
    LARGE_LOGIT_POINTS,
    LONG_SUM_POINTS,
    MHA_GRID,
    PRIMAL_ATTENTION_GRID,
    PRIMAL_SCORES_GRID,
    check_dual_attention,
    check_ksvd_loss,
    check_multi_head_attention,
    check_primal_attention,
    check_primal_scores,
)

P = functools.partial
ALL = lambda point, precision: True  # noqa: E731


@dataclass
class Run:
    """One implementation on one check: ``check(fn, backward=..., dtypes=..., seed=...)``."""

    name: str
    check: Callable
    fn: Callable
    backward: Callable | None
    dtypes: tuple[str, ...]
    kwargs: dict = field(default_factory=dict)
    # for a bug: (point label, precision) -> True where it must fail
    target: Callable[[str, str], bool] | None = None
    required: float = 3.0  # the margin (err/bound) a bug must reach at its target points
    exclusive: bool = True  # a bug must also pass everywhere else (it shows only there)


def _points(points) -> Callable[[str, str], bool]:
    labels = {str(p) for p in points}
    return lambda point, precision: point in labels


def _worst(result) -> float:
    return max(
        (a.max_abs_err / a.bound if a.problem is None else math.inf) for a in result.report.rows
    )


def _sdpa(torch, bf16: bool):
    def run(q, k, v, mask, causal, scale, dout=None):
        dt = torch.bfloat16 if bf16 else getattr(torch, q.dtype.name)
        t = [torch.from_numpy(a).to(dt).requires_grad_(dout is not None) for a in (q, k, v)]
        kw = {"scale": scale}
        if mask is not None:
            kw["attn_mask"] = torch.from_numpy(
                mask & np.tri(q.shape[-2], k.shape[-2], dtype=bool) if causal else mask
            )
        else:
            kw["is_causal"] = causal
        out = torch.nn.functional.scaled_dot_product_attention(*t, **kw)
        host = (lambda a: a.detach().float().numpy()) if bf16 else (lambda a: a.detach().numpy())
        if dout is None:
            return host(out)
        out.backward(torch.from_numpy(dout).to(dt))
        return tuple(host(x.grad) for x in t)

    return (lambda q, k, v, mask, causal, scale: run(q, k, v, mask, causal, scale)), run


def _fwd(f):
    """A forward-only view of a candidate whose backward is the same function with dout."""
    return lambda *a, **kw: f(*a, **kw)


def correct_runs() -> list[Run]:
    runs = [
        Run("numpy attention", check_dual_attention, C.attention, C.attention_backward,
            ("float64", "float32", "bfloat16")),
        Run("primal_np blocked (b=4)", check_dual_attention,
            lambda q, k, v, mask, causal, scale: pn.dual_attention(
                q, k, v, mask=mask, causal=causal, scale=scale, block_size=4)[0],
            None, ("float32", "float16", "bfloat16")),
        Run("numpy MHA", check_multi_head_attention, C.mha, C.mha_backward, ("float64", "float32")),
        Run("numpy scores", check_primal_scores, C.scores, C.scores_backward,
            ("float64", "float32")),
        Run("numpy KSVD loss", check_ksvd_loss,
            lambda layers, conv: C.ksvd_loss(layers, conv),
            lambda layers, conv, dloss: C.ksvd_loss_backward(layers, conv, dloss),
            ("float64", "float32")),
        Run("numpy Primal-Attention layer", check_primal_attention, C.primal_layer,
            C.primal_layer_backward, ("float64", "float32")),
    ]  # fmt: skip
    try:
        import candidates_torch as T
        import torch

        fn, bwd = _sdpa(torch, False)
        fn16, bwd16 = _sdpa(torch, True)
        runs += [
            Run("torch SDPA", check_dual_attention, fn, bwd, ("float64", "float32", "float16")),
            Run("torch SDPA bfloat16", check_dual_attention, fn16, bwd16, ("bfloat16",)),
            Run("torch nn.MultiheadAttention", check_multi_head_attention,
                _fwd(T.multi_head_attention), T.multi_head_attention,
                ("float64", "float32", "bfloat16")),
            Run("torch scores", check_primal_scores, _fwd(T.scores), T.scores,
                ("float64", "float32")),
            Run("torch KSVD loss (authors' code)", check_ksvd_loss, T.ksvd_loss,
                T.ksvd_loss_backward, ("float64", "float32"),
                {"conventions": ("lra", "lra_trace_x", "per_sample")}),
            Run("torch Primal-Attention layer (authors' code)", check_primal_attention,
                T.layer, T.layer_backward, ("float64", "float32")),
        ]  # fmt: skip
    except ImportError:
        print("torch not installed: its implementations are skipped", file=sys.stderr)
    try:
        import jax

        jax.config.update("jax_enable_x64", True)
        import candidates_jax as J

        def jfn(f):
            return lambda q, k, v, mask, causal, scale, precision: f(
                q, k, v, mask, causal, scale, precision=precision
            )

        runs += [
            Run("jax.nn.dot_product_attention", check_dual_attention,
                jfn(J.dot_product_attention), J.dot_product_attention, ("float32", "bfloat16")),
            Run("jax.numpy attention", check_dual_attention, jfn(J.einsum_attention),
                J.einsum_attention, ("float64",)),
        ]  # fmt: skip
    except ImportError:
        print("jax not installed: its implementations are skipped", file=sys.stderr)
    return runs


def bug_runs() -> list[Run]:
    empty = [p for p in DUAL_ATTENTION_GRID if p.mask in ("empty-row", "broadcast")]

    def off(bwd, index, rel=1e-4):
        def run(*a):
            g = list(bwd(*a))
            g[index] = g[index] * (1 + rel)
            return tuple(g)

        return run

    def half_inputs(q, k, v, mask, causal, scale):
        return C.attention(*(a.astype(np.float16).astype(q.dtype) for a in (q, k, v)),
                           mask, causal, scale)  # fmt: skip

    def layer_we_off(*a):
        g = C.primal_layer_backward(*a)
        return g | {"We": g["We"] * (1 + 1e-4)} if "We" in g else g

    lra_causal = [p for p in PRIMAL_ATTENTION_GRID if p.variant in ("lra", "causal")]
    sampled = [p for p in PRIMAL_ATTENTION_GRID if p.variant != "causal"]
    linspace = [p for p in PRIMAL_ATTENTION_GRID if p.variant == "lra" and p.tokens == 31]
    broadcast = [p for p in PRIMAL_SCORES_GRID if p.w_batch is not None and p.w_batch != p.batch]
    f32 = lambda point, precision: precision == "float32"  # noqa: E731
    big, long = _points(LARGE_LOGIT_POINTS), _points(LONG_SUM_POINTS)
    return [
        Run("dual: softmax backward without − rowsum(dP∘P)", check_dual_attention, C.attention,
            P(C.attention_backward, rowsum_term=False), ("float64", "float32"), target=ALL),
        Run("dual: NaN on a fully masked row", check_dual_attention,
            P(C.attention, empty_row_guard=False), P(C.attention_backward, empty_row_guard=False),
            ("float64", "float32"), target=_points(empty)),
        Run("dual: dV off by 1e-4 (float64)", check_dual_attention, C.attention,
            off(C.attention_backward, 2), ("float64",), target=ALL),
        Run("dual: float32 claim, float16 inputs inside", check_dual_attention, half_inputs,
            None, ("float32",), target=lambda point, precision: not long(point, precision), exclusive=False),
        # at the long-sum points the mean of 1024 float16-rounded values averages most of
        # the rounding away, and the bound allows float32's √n accumulation: it must fail,
        # but a 3× margin is not reached there (docs/validation.md)
        Run("dual: float32 claim, float16 inputs inside (long sums)", check_dual_attention,
            half_inputs, None, ("float32",), {"grid": LONG_SUM_POINTS}, target=ALL,
            required=1.0),
        Run("dual: no max-shift (float32)", check_dual_attention, P(C.attention, max_shift=False),
            P(C.attention_backward, max_shift=False), ("float32",),
            target=lambda point, precision: big(point, precision) and f32(point, precision)),
        Run("dual: bfloat16 accumulation", check_dual_attention,
            P(C.attention, accumulate="bfloat16"), P(C.attention_backward, accumulate="bfloat16"),
            ("bfloat16",), {"grid": LONG_SUM_POINTS}, target=ALL),
        Run("MHA: key padding polarity not inverted", check_multi_head_attention,
            P(C.mha, bug="padding_polarity"), P(C.mha_backward, bug="padding_polarity"),
            ("float64", "float32"), target=_points([p for p in MHA_GRID if p.padding])),
        Run("MHA: logits scaled by 1/√D, not 1/√p", check_multi_head_attention,
            P(C.mha, bug="scale_by_dim"), P(C.mha_backward, bug="scale_by_dim"),
            ("float64", "float32"), target=_points([p for p in MHA_GRID if p.tokens > 1])),
        Run("MHA: db_v off by 1e-4", check_multi_head_attention, C.mha,
            P(C.mha_backward, bug="bias_v"), ("float64", "float32"), target=ALL),
        Run("scores: dW not summed over broadcast axes", check_primal_scores, C.scores,
            P(C.scores_backward, sum_broadcast=False), ("float64", "float32"),
            target=_points(broadcast)),
        Run("KSVD loss: λ instead of λ²", check_ksvd_loss, P(C.ksvd_loss, quadratic="lambda"),
            P(C.ksvd_loss_backward, quadratic="lambda"), ("float64", "float32"),
            target=lambda point, precision: not point.startswith("paper")),
        Run("layer: r-scores dropped", check_primal_attention, P(C.primal_layer, drop_rscores=True),
            P(C.primal_layer_backward, drop_rscores=True), ("float64", "float32"), target=ALL),
        Run("layer: KSVD loss with λ", check_primal_attention, P(C.primal_layer, quadratic="lambda"),
            P(C.primal_layer_backward, quadratic="lambda"), ("float64", "float32"), target=ALL),
        Run("layer: np.linspace indices", check_primal_attention,
            P(C.primal_layer, index="np_linspace"), P(C.primal_layer_backward, index="np_linspace"),
            ("float64", "float32"), target=_points(linspace)),
        Run("layer: middle sampled index shifted", check_primal_attention,
            P(C.primal_layer, index="shift"), P(C.primal_layer_backward, index="shift"),
            ("float64", "float32"), target=_points(sampled)),
        Run("layer: dWe off by 1e-4", check_primal_attention, C.primal_layer, layer_we_off,
            ("float64", "float32"), target=_points(lra_causal)),
    ]  # fmt: skip


def sweep(runs: list[Run], seeds: int) -> list[dict]:
    rows = []
    for run in runs:
        t0 = time.time()
        worst, margin, where, leaks, fails = 0.0, math.inf, None, [], 0
        for seed in range(seeds):
            rep = run.check(run.fn, backward=run.backward, dtypes=run.dtypes, seed=seed,
                            **run.kwargs)  # fmt: skip
            for r in rep.results:
                w = _worst(r)
                if run.target is None:
                    if w > worst:
                        worst, where = w, f"{r.point}, {r.precision}, seed {seed}"
                    fails += not r.report.ok
                elif run.target(r.point, r.precision):
                    if w < margin or where is None:
                        margin, where = w, f"{r.point}, {r.precision}, seed {seed}"
                elif not r.report.ok and run.exclusive:
                    leaks.append(f"{r.point}, {r.precision}, seed {seed}")
        row = {"name": run.name, "seeds": seeds, "dtypes": list(run.dtypes),
               "seconds": round(time.time() - t0, 1)}  # fmt: skip
        if run.target is None:
            row |= {"kind": "correct", "max_err_over_bound": worst, "at": where, "failures": fails}
            verdict = "pass" if fails == 0 else f"FAIL ({fails})"
            print(f"{verdict:<6} {run.name:<48} max err/bound {worst:8.3g}  ({where})", flush=True)
        else:
            row |= {"kind": "bug", "min_margin": margin, "required": run.required, "at": where,
                    "unexpected_failures": leaks}  # fmt: skip
            ok = margin >= run.required and not leaks
            text = "inf (NaN)" if margin == math.inf else f"{margin:.3g}"
            print(f"{'caught' if ok else 'WEAK':<6} {run.name:<48} min err/bound {text:>9}  ({where})"
                  + (f"; also fails at {leaks[:3]}" if leaks else ""), flush=True)  # fmt: skip
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--only", default=None, help="run only implementations whose name has TEXT")
    ap.add_argument("--json", default=None, help="write the rows as JSON to FILE")
    args = ap.parse_args(argv)
    runs = correct_runs() + bug_runs()
    if args.only:
        runs = [r for r in runs if args.only.lower() in r.name.lower()]
    start = time.time()
    rows = sweep(runs, args.seeds)
    meta = {"seeds": args.seeds, "seconds": round(time.time() - start), "loadavg": os.getloadavg(),
            "numpy": np.__version__}  # fmt: skip
    ok = all(r.get("failures", 0) == 0 for r in rows) and all(
        r["min_margin"] >= r["required"] and not r["unexpected_failures"]
        for r in rows
        if r["kind"] == "bug"
    )
    print(
        f"{'ALL OK' if ok else 'NOT OK'}: {len(rows)} runs, {args.seeds} seeds, {meta['seconds']} s"
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
