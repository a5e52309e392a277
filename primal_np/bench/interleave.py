"""The interleaved comparison of ``python -m primal_np bench``: ratios from one process.

Every implementation of one layer runs in the *same* process, round by round: in round r
each implementation runs forward + backward once, in an order rotated by r, followed by
np.matmul of two ``matmul_size``² matrices (best of 3). A slow spell of the shared machine
then hits all of them in the same round, so the per-round ratios t_a / t_b are far steadier
than the times themselves; the record gives their median (``ratio_to``). Between two runs
the process sleeps ``SETTLE_S`` so that the idle threads of the previous library (OpenBLAS
spins for ~0.1 s after a call) do not compete with the next one.

Warm-up: two untimed runs of each implementation before the first round (the first
compiles the ``torch_compile`` implementation: compile time never counts). An
implementation that fails to build or to warm up (for example ``torch.compile`` without a
working C++ compiler) gets a record with ``fwd_bwd_s`` null and the reason in ``skipped``;
the others go on. Peak memory is not measured here (the runs share one process): the
subprocess measurements of the "compare" group give it.

How clean each round was: ``loadavg_rounds`` (1-minute load average after the round, which
counts this process too: ~1–2 from the benchmark itself with 2 threads), and, on Linux,
``others_cpu_rounds`` (cores busy with *other* processes during the round, from
/proc/stat minus this process's CPU time) and ``steal_cpu_rounds`` (cores taken by the
hypervisor). A round with others_cpu near 0 ran on a quiet machine.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

SETTLE_S = 0.25
ROUNDS = 15


def _loadavg() -> float | None:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def _cpu_clock() -> tuple[float, float, float, float] | None:
    """(wall s, CPU s busy on the whole machine, CPU s of this process, CPU s stolen by the
    hypervisor) from /proc/stat and ``os.times``; None where /proc/stat does not exist."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    t = os.times()
    busy = (user + nice + system + irq + softirq) / hz
    return time.perf_counter(), busy, t.user + t.system, steal / hz


def _others(before, after) -> tuple[float | None, float | None]:
    """Cores busy with *other* processes, and cores stolen by the hypervisor, in between."""
    if before is None or after is None or after[0] <= before[0]:
        return None, None
    wall = after[0] - before[0]
    others = (after[1] - before[1]) - (after[2] - before[2])
    return max(others, 0.0) / wall, (after[3] - before[3]) / wall


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    m = len(xs) // 2
    return xs[m] if len(xs) % 2 else 0.5 * (xs[m - 1] + xs[m])


def time_fwd_bwd(fwd, bwd) -> tuple[float, float]:
    """(forward seconds, backward seconds) of one ``bwd(fwd())``; nothing is kept."""
    t0 = time.perf_counter()
    out = fwd()
    t1 = time.perf_counter()
    grads = bwd(out)
    t2 = time.perf_counter()
    del out, grads
    return t1 - t0, t2 - t1


def _matmul_best(a, b, tries: int = 3) -> float:
    best = float("inf")
    for _ in range(tries):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return best


def _build(spec: dict, impl: str):
    """(fwd, bwd, warm-up seconds) or the reason it cannot run, as a string."""
    from .layers import make_layer

    shape = {k: spec[k] for k in ("B", "N", "D", "H", "s", "rank_multi", "dtype")}
    try:
        fwd, bwd = make_layer(spec["layer"], impl, **shape)
        t0 = time.perf_counter()
        for _ in range(2):
            bwd(fwd())
        return fwd, bwd, time.perf_counter() - t0
    except Exception as exc:  # noqa: BLE001  (report any failure, e.g. torch.compile's)
        msg = " ".join(str(exc).split())
        return f"{impl} failed in its warm-up: {type(exc).__name__}: {msg[:400]}"


def interleaved_worker(spec: dict) -> list[dict]:
    """Run the interleaved rounds described by ``spec``; one record per implementation."""
    import numpy as np

    from .measure import flops

    impls = list(spec["impls"])
    if any(i.startswith("torch") for i in impls):
        import torch

        torch.set_num_threads(spec["threads"])
    built, failed = {}, {}
    for impl in impls:
        b = _build(spec, impl)
        if isinstance(b, str):
            failed[impl] = b
        else:
            built[impl] = b
    size = spec["matmul_size"]
    a = np.random.default_rng(0).standard_normal((size, size)).astype(spec["dtype"])
    bt = a.T.copy()
    a @ bt
    names = list(built)
    times: dict[str, list[tuple[float, float]]] = {i: [] for i in names}
    mm_gflops, loads, others, steal = [], [], [], []
    for r in range(spec["rounds"]):
        clock = _cpu_clock()
        order = names[r % len(names) :] + names[: r % len(names)] if names else []
        for impl in order:
            fwd, bwd, _ = built[impl]
            time.sleep(SETTLE_S)
            times[impl].append(time_fwd_bwd(fwd, bwd))
        time.sleep(SETTLE_S)
        mm_gflops.append(2 * size**3 / _matmul_best(a, bt) / 1e9)
        loads.append(_loadavg())
        o, st = _others(clock, _cpu_clock())
        others.append(o)
        steal.append(st)
    shape = {k: spec[k] for k in ("B", "N", "D", "H", "s", "rank_multi")}
    gflop = flops(spec["layer"], **shape) / 1e9
    common: dict[str, Any] = {
        "layer": spec["layer"], **shape, "dtype": spec["dtype"], "group": "interleaved",
        "threads": spec["threads"], "peak_bytes": None,
    }  # fmt: skip
    versions: dict[str, Any] = {"numpy_version": np.__version__}
    if any(i.startswith("torch") for i in impls):
        import torch

        versions |= {"torch_version": torch.__version__, "torch_threads": torch.get_num_threads()}
    records = []
    for impl in impls:
        if impl in failed:
            records.append(common | {"impl": impl, "fwd_bwd_s": None, "skipped": failed[impl]})
            continue
        tot = [f + b for f, b in times[impl]]
        rec = (
            common
            | {
                "impl": impl,
                "fwd_bwd_s": _median(tot),
                "fwd_bwd_min_s": min(tot),
                "fwd_s": _median([f for f, _ in times[impl]]),
                "bwd_s": _median([b for _, b in times[impl]]),
                "repeats": len(tot),
                "warmup_s": built[impl][2],
                "peak_method": "not measured in the interleaved run (see the compare group)",
                "gflop": gflop,
                "gflops": gflop / _median(tot),
                "matmul_gflops": _median(mm_gflops),
                "matmul_fraction": _median(
                    [gflop / t / g for t, g in zip(tot, mm_gflops, strict=True)]
                ),
                "ratio_to": {
                    other: _median([t / u for t, u in zip(tot, _tot(times[other]), strict=True)])
                    for other in names
                    if other != impl
                },
                "fwd_bwd_rounds_s": tot,
                "matmul_gflops_rounds": mm_gflops,
                "loadavg_rounds": loads,
                "others_cpu_rounds": others,
                "steal_cpu_rounds": steal,
                "loadavg_1min": loads[-1] if loads else _loadavg(),
                "loadavg_max": max((v for v in loads if v is not None), default=None),
            }
            | versions
        )
        records.append(rec)
    return records


def _tot(pairs: list[tuple[float, float]]) -> list[float]:
    return [f + b for f, b in pairs]


def main(spec_json: str) -> None:
    """Subprocess entry: print the records as one JSON line."""
    print(json.dumps(interleaved_worker(json.loads(spec_json))))
