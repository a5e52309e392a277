"""Claim 2: time per training step and peak memory as N grows (Table 3).

One training step = forward + backward (task loss + η·KSVD) + gradient clipping + an AdamW
update, exactly what ``primal_np.model.train`` does per step, on one batch of random
tokens (all real) with random labels. Models: the authors' LRA architecture (D = 64,
2 layers, 2 heads, MLP width 128, s = 20, rank_multi = 10 so n = 200 sampled rows), float64,
batch B = 1, NumPy's BLAS on one thread.

Time: per sequence length N, one warm-up step per model, then ``rounds`` rounds; each
round times one step of every model, one after the other (interleaved, so that load
changes on a shared machine hit all models alike; ``os.getloadavg()`` is recorded with
every step). Ratios Transformer ÷ model are taken within a round, then averaged over
rounds (mean and 95 % t-interval).

Peak memory: ``tracemalloc`` (which NumPy reports its array allocations to) around one
more step: the most memory the step held at once beyond what existed before it (the
parameters, optimiser state and batch): activations, caches, gradients, temporaries and
the new parameters. Deterministic for a given code and N.
"""

from __future__ import annotations

import statistics
import time
import tracemalloc
from typing import Any

import numpy as np

from .common import loadavg, t_interval
from .verdicts import combine, direction

NAME, NUMBER = "efficiency", 2
TITLE = "Efficiency as N grows"
PAPER: dict[str, Any] = {
    "source": "Table 3 (LRA: training time s/1K steps and peak memory, each task at its length)",
    "quote": "on average over the LRA tasks, Primal. is 4.5× faster and uses 7.2× less memory "
    "than the Transformer; Primal.+Trans. 2.0× faster and 1.1× less memory",
    "values": {
        "primalformer": {"speed": 4.5, "memory": 7.2},
        "primal+trans": {"speed": 2.0, "memory": 1.1},
    },
    "lra_lengths": {
        "Text": 4096,
        "ListOps": 2048,
        "Retrieval": 4096,
        "Pathfinder": 1024,
        "Image": 1024,
    },
}
MODELS = ("primalformer", "primal+trans", "transformer")
ARCH: dict[str, Any] = dict(
    dim=64, depth=2, num_heads=2, mlp_hidden=128, low_rank=20, rank_multi=10, eta=0.1
)
VOCAB, CLASSES, BATCH = 32, 10, 1
SIZES = (256, 512, 1024, 2048, 4096)
PRIMAL_SIZES = (8192, 16384, 32768, 65536)  # PrimalFormer only
QUICK_SIZES, QUICK_PRIMAL_SIZES = (256, 512), (1024,)


class _Bench:
    """One model at one N: its parameters, optimiser state and batch, and its step."""

    def __init__(self, model: str, N: int, seed: int) -> None:
        from ..model import ModelConfig, init_model_params
        from ..optim import adam_init

        self.cfg = ModelConfig(
            vocab_size=VOCAB, num_classes=CLASSES, max_len=N, model=model, **ARCH
        )
        rng = np.random.default_rng([seed, N])
        self.ids = rng.integers(2, VOCAB, size=(BATCH, N))
        self.mask = np.ones((BATCH, N), dtype=bool)
        self.labels = rng.integers(0, CLASSES, size=BATCH)
        self.params = init_model_params(self.cfg, seed=seed)
        self.opt = adam_init(self.params)

    def step(self) -> None:
        from ..model import loss_and_grads
        from ..optim import adam_step, clip_grad_norm

        res = loss_and_grads(self.params, self.ids, self.mask, self.labels, self.cfg)
        grads, _ = clip_grad_norm(res.grads, 1.0)
        self.params, self.opt = adam_step(
            self.params, grads, self.opt, lr=1e-4, weight_decay=0.01, decoupled=True
        )

    def timed(self) -> tuple[float, float, list | None]:
        """(wall seconds, CPU seconds of this process, load average) of one step."""
        t0, c0 = time.perf_counter(), time.process_time()
        self.step()
        return time.perf_counter() - t0, time.process_time() - c0, loadavg()

    def peak_bytes(self) -> int:
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            self.step()
            return tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()


def _config(model: str, N: int, rounds: int, seed: int) -> dict:
    return {"model": model, "N": N, "B": BATCH, "vocab_size": VOCAB, "num_classes": CLASSES,
            **ARCH, "rounds": rounds, "seed": seed, "dtype": "float64"}  # fmt: skip


def _row(model: str, N: int, rounds: int, seed: int, timed: list, peak: int) -> dict:
    return {
        "id": f"{NAME}/{model}/N{N}",
        "kind": "timing",
        "config": _config(model, N, rounds, seed),
        "result": {
            "peak_bytes": peak,
            "step_seconds": [t for t, _, _ in timed],
            "step_cpu_seconds": [c for _, c, _ in timed],
            "step_loadavg": [ld for _, _, ld in timed],
            "median_seconds": statistics.median(t for t, _, _ in timed),
        },
    }


def timing_row(row_id: str, config: dict) -> dict:
    """Re-run one (model, N) measurement alone (not interleaved): warm-up, ``rounds``
    timed steps, one step under tracemalloc."""
    b = _Bench(config["model"], config["N"], config["seed"])
    b.step()
    timed = [b.timed() for _ in range(config["rounds"])]
    return _row(
        config["model"], config["N"], config["rounds"], config["seed"], timed, b.peak_bytes()
    )


def measure(seeds: list[int], quick: bool, log) -> list[dict]:
    """Every (model, N) row, timed in interleaved rounds (module docstring)."""
    sizes, primal_sizes = (QUICK_SIZES, QUICK_PRIMAL_SIZES) if quick else (SIZES, PRIMAL_SIZES)
    rounds, seed = len(seeds), seeds[0]
    rows = []
    for N in sizes + primal_sizes:
        models = MODELS if N in sizes else ("primalformer",)
        benches = {m: _Bench(m, N, seed) for m in models}
        for b in benches.values():
            b.step()  # warm-up
        timed: dict[str, list] = {m: [] for m in models}
        for _ in range(rounds):
            for m, b in benches.items():
                timed[m].append(b.timed())
        for m, b in benches.items():
            rows.append(_row(m, N, rounds, seed, timed[m], b.peak_bytes()))
        log("  N=" + str(N) + ": " + ", ".join(
            f"{m} {statistics.median(t for t, _, _ in timed[m]):.3f} s" for m in models))  # fmt: skip
        del benches
    return rows


def setup() -> dict:
    return {
        "models": list(MODELS),
        "architecture": {**ARCH, "batch": BATCH, "dtype": "float64", "vocab": VOCAB},
        "sizes": list(SIZES),
        "primal_only_sizes": list(PRIMAL_SIZES),
        "step": "loss_and_grads (task + η·KSVD) + clip_grad_norm(1) + adam_step (AdamW)",
        "comparison": "Transformer ÷ model, time per step (within each interleaved round) and "
        "peak memory; 'LRA mix' = the mean over the LRA tasks' lengths "
        "(4096, 2048, 4096, 1024, 1024) as in the paper's average",
        "criterion": "verdicts.direction on log(ratio) > 0 for time and memory (the model "
        "faster and leaner); PrimalFormer and Primal.+Trans. both, combined",
    }


def _by(rows: list[dict]) -> dict[tuple[str, int], dict]:
    return {(r["config"]["model"], r["config"]["N"]): r["result"] for r in rows}


def _mix(per_n: dict[int, list[float]], lengths: list[int]) -> list[float]:
    """Per round: the mean of the ratios at the LRA tasks' lengths (the paper's average)."""
    rounds = len(per_n[lengths[0]])
    return [float(np.mean([per_n[n][i] for n in lengths])) for i in range(rounds)]


def analyse(rows: list[dict]) -> dict:
    res = _by(rows)
    lra = list(PAPER["lra_lengths"].values())
    sizes = sorted({n for (m, n) in res if m == "transformer"})
    summary: dict = {"time": {}, "cpu_time": {}, "memory_bytes": {}, "speed_ratio": {},
                     "speed_ratio_cpu": {}, "memory_ratio": {}, "lra_mix": {}}  # fmt: skip
    for (m, n), r in sorted(res.items()):
        summary["time"].setdefault(m, {})[n] = t_interval(r["step_seconds"]).as_dict()
        summary["cpu_time"].setdefault(m, {})[n] = t_interval(r["step_cpu_seconds"]).as_dict()
        summary["memory_bytes"].setdefault(m, {})[n] = r["peak_bytes"]
    verdicts, reasons = [], []
    for m in MODELS[:2]:
        wall, cpu, mem = {}, {}, {}
        for n in sizes:
            tr, mr = res[("transformer", n)], res[(m, n)]
            wall[n] = [a / b for a, b in zip(tr["step_seconds"], mr["step_seconds"], strict=True)]
            cpu[n] = [
                a / b for a, b in zip(tr["step_cpu_seconds"], mr["step_cpu_seconds"], strict=True)
            ]
            mem[n] = tr["peak_bytes"] / mr["peak_bytes"]
        summary["speed_ratio"][m] = {n: t_interval(v).as_dict() for n, v in wall.items()}
        summary["speed_ratio_cpu"][m] = {n: t_interval(v).as_dict() for n, v in cpu.items()}
        summary["memory_ratio"][m] = mem
        if not all(n in wall for n in lra):
            continue
        mix, mix_cpu = _mix(wall, lra), _mix(cpu, lra)
        v_t, _ = direction(t_interval(np.log(mix)), scale=1.0, unit="")
        mem_mix = float(np.mean([mem[n] for n in lra]))
        v_m = "reproduced" if mem_mix > 1 else "not reproduced"
        iv, iv_cpu = t_interval(mix), t_interval(mix_cpu)
        summary["lra_mix"][m] = {"speed": {**iv.as_dict(), "verdict": v_t},
                                 "speed_cpu": iv_cpu.as_dict(), "memory": mem_mix,
                                 "memory_verdict": v_m, "paper": PAPER["values"][m]}  # fmt: skip
        verdicts += [v_t, v_m]
        ci = f" [{iv.lo:.2f}, {iv.hi:.2f}]" if iv.lo is not None else ""
        reasons.append(
            f"{m}: {iv.mean:.2f}×{ci} faster by wall clock ({v_t}; CPU time {iv_cpu.mean:.2f}×; "
            f"paper {PAPER['values'][m]['speed']}×), {mem_mix:.1f}× less memory ({v_m}; paper "
            f"{PAPER['values'][m]['memory']}×), averaged over the LRA tasks' lengths"
        )
    if not verdicts:  # quick mode: no N = 4096
        return {"summary": summary, "verdict": "inconclusive",
                "reason": "quick mode measures N <= 512 only; the LRA lengths were not run"}  # fmt: skip
    return {"summary": summary, "verdict": combine(verdicts), "reason": "; ".join(reasons)}
