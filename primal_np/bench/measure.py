"""Measurements of ``python -m primal_np bench``: cases, FLOP counts, thread and memory
probes, the subprocess worker, and the runner. The method is in ``primal_np.bench``'s
docstring."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .interleave import ROUNDS, time_fwd_bwd
from .layers import TORCH_IMPLS, make_layer

S, RANK_MULTI, D, H = 32, 10, 256, 4
SCALING_N = (512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)
QUICK_N = (512, 2048)
LARGE_N = 262_144
MATMUL_SIZE = 2048
MAX_SECONDS_PER_RUN = 30.0  # skip a case whose forward + backward is predicted slower
REQUIRED_KEYS = ("layer", "impl", "N", "B", "D", "H", "s", "dtype", "fwd_bwd_s", "peak_bytes")


@dataclass(frozen=True)
class Case:
    """One subprocess measurement. ``group``: "scaling", "compare" (vs torch) or "large"."""

    layer: str  # "primal" | "canonical"
    impl: str  # primal: "reference" | "fast" | "torch" | "torch_compile"; canonical: "primal_np" | "torch"
    N: int
    B: int = 1
    D: int = D
    H: int = H
    s: int = S
    rank_multi: int = RANK_MULTI
    dtype: str = "float32"
    group: str = "scaling"
    repeats: int = 5
    threads: int = 1


# --------------------------------------------------------------------------- counts
def flops(layer: str, B: int, N: int, D: int, H: int, s: int, rank_multi: int) -> int:
    """Matrix-product FLOPs of one forward + backward (module docstring)."""
    if layer == "primal":
        n = s * rank_multi
        return 18 * B * N * D * D + 24 * B * N * D * s + 12 * B * D * n * s
    return 24 * B * N * D * D + 12 * B * N * N * D


def _canonical_bytes(B: int, N: int, D: int, H: int, itemsize: int) -> int:
    """Rough peak of primal_np's canonical layer: P and dP, H·N² each, plus O(N·D) arrays."""
    return 2 * B * H * N * N * itemsize + 24 * B * N * D * itemsize


def _mem_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


# --------------------------------------------------------------------------- threads
def blas_threads() -> int:
    """The thread count of NumPy's BLAS (threadpoolctl, else OpenBLAS via ctypes, else env)."""
    try:
        from threadpoolctl import threadpool_info

        for info in threadpool_info():
            if info.get("user_api") == "blas":
                return int(info["num_threads"])
    except ImportError:
        pass
    import ctypes

    import numpy  # noqa: F401  (loads its BLAS)

    try:
        with open("/proc/self/maps") as f:
            libs = {line.split()[-1] for line in f if "openblas" in line.lower()}
    except OSError:
        libs = set()
    for path in sorted(libs):
        lib = ctypes.CDLL(path)
        for sym in (
            "scipy_openblas_get_num_threads64_",
            "openblas_get_num_threads64_",
            "openblas_get_num_threads",
        ):
            if hasattr(lib, sym):
                return int(getattr(lib, sym)())
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return os.cpu_count() or 1


# --------------------------------------------------------------------------- memory
def _status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> tuple[int, str]:
    """Reset the peak-RSS counter; return (baseline RSS in bytes, method name)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return (_status_kib("VmRSS") or 0) * 1024, "VmHWM-VmRSS after clear_refs"
    except (OSError, TypeError):
        import resource  # no clear_refs: ru_maxrss minus RSS, valid only if the layer's peak
        #                  exceeds everything before it (true at the sizes measured here)

        rss = _status_kib("VmRSS")
        base = (
            rss if rss is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        ) * 1024
        return base, "ru_maxrss-baseline"


def _peak_kib() -> int:
    hwm = _status_kib("VmHWM")
    if hwm is not None:
        return hwm
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


# --------------------------------------------------------------------------- the layers
def _make(case: Case, N: int):
    """(fwd, bwd) of ``case`` at N tokens (``layers.make_layer``)."""
    return make_layer(
        case.layer, case.impl, case.B, N, case.D, case.H, case.s, case.rank_multi, case.dtype
    )


def _time_runs(fwd, bwd, repeats: int) -> dict:
    t0 = time.perf_counter()
    bwd(fwd())  # warm-up
    warm = time.perf_counter() - t0
    if warm > 5.0:
        repeats = min(repeats, 3)
    f_times, b_times = [], []
    for _ in range(repeats):
        tf, tb = time_fwd_bwd(fwd, bwd)
        f_times.append(tf)
        b_times.append(tb)
    tot = sorted(f + b for f, b in zip(f_times, b_times, strict=True))
    med = sorted(f_times)[len(f_times) // 2], sorted(b_times)[len(b_times) // 2]
    return {
        "fwd_bwd_s": _median(tot),
        "fwd_bwd_min_s": tot[0],
        "fwd_s": med[0],
        "bwd_s": med[1],
        "repeats": repeats,
        "warmup_s": warm,
    }


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    m = len(xs) // 2
    return xs[m] if len(xs) % 2 else 0.5 * (xs[m - 1] + xs[m])


def _matmul_worker(dtype: str, threads: int, size: int = MATMUL_SIZE) -> dict:
    import numpy as np

    a = np.random.default_rng(0).standard_normal((size, size)).astype(dtype)
    b = a.T.copy()
    a @ b
    times = []
    for _ in range(7):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    gf = 2 * size**3 / min(times) / 1e9  # the best run: what the machine can do
    return {"dtype": dtype, "matmul_gflops": gf, "size": size, "threads": threads}


def _worker(spec_json: str) -> None:
    """Subprocess entry: run one Case (or a matmul reference) and print one JSON line."""
    spec = json.loads(spec_json)
    if spec.get("kind") == "matmul":
        print(json.dumps(_matmul_worker(spec["dtype"], spec["threads"], spec["size"])))
        return
    if spec.get("kind") == "interleave":
        from .interleave import main

        main(json.dumps(spec))
        return
    case = Case(**spec)
    if case.impl in TORCH_IMPLS:
        import torch

        torch.set_num_threads(case.threads)
    if case.impl != "torch_compile":  # (compiling at N = 64 would not help the real shape)
        tiny_f, tiny_b = _make(case, 64)  # initialise library state outside the measurement
        tiny_b(tiny_f())
        del tiny_f, tiny_b
    fwd, bwd = _make(case, case.N)
    if case.impl == "torch_compile":
        bwd(fwd())  # compile outside the measurement (the warm-up run below is a second one)
    base, method = _reset_peak()
    res = _time_runs(fwd, bwd, case.repeats)
    res["peak_bytes"] = _peak_kib() * 1024 - base
    res["peak_method"] = method
    if case.impl in TORCH_IMPLS:
        import torch

        res["torch_threads"] = torch.get_num_threads()
        res["torch_version"] = torch.__version__
    import numpy as np

    res["numpy_version"] = np.__version__
    print(json.dumps(res))


def _spawn(spec: dict, timeout: float | None = None) -> Any:
    pkg_root = str(Path(__file__).resolve().parents[2])  # the directory holding primal_np/
    env = dict(os.environ)
    env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    code = "import sys; from primal_np.bench import _worker; _worker(sys.argv[1])"
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"bench worker failed ({spec}):\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- running
def torch_available() -> bool:
    try:
        import importlib.util

        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


def default_cases(
    *,
    quick: bool = False,
    with_torch: bool = True,
    with_compile: bool = True,
    threads: int = 1,
    sizes: tuple[int, ...] | None = None,
    compare: tuple[int, int] | None = None,
    repeats: int | None = None,
    large: bool | None = None,
) -> list[Case]:
    """The subprocess measurements, in run order (see ``python -m primal_np bench --help``).

    ``torch_compile`` runs in the compare group only (compiling costs tens of seconds per
    shape), never with ``quick``."""
    torch_impls = ["torch"] + (["torch_compile"] if with_compile and not quick else [])
    primal = ["reference", "fast"] + (torch_impls if with_torch else [])
    canonical = ["primal_np"] + (["torch"] if with_torch else [])
    sizes = sizes or (QUICK_N if quick else SCALING_N)
    compare = compare or ((2, 1024) if quick else (4, 4096))
    reps = repeats or (3 if quick else 5)
    large = (not quick) if large is None else large
    common: dict[str, Any] = dict(repeats=reps, threads=threads)
    cases = []
    for layer, impls in (("primal", primal), ("canonical", canonical)):
        scaling = [i for i in impls if i != "torch_compile"]
        for n in sizes:
            cases += [Case(layer, impl, n, group="scaling", **common) for impl in scaling]
    for dtype in ("float32",) if quick else ("float32", "float64"):
        for layer, impls in (("primal", primal), ("canonical", canonical)):
            cases += [
                Case(layer, impl, compare[1], B=compare[0], dtype=dtype, group="compare", **common)
                for impl in impls
            ]
    if large:
        for impl, dtype in (("fast", "float32"), ("fast", "float64"), ("reference", "float32")):
            cases.append(Case("primal", impl, LARGE_N, dtype=dtype, group="large", **common))
        if with_torch:
            cases.append(Case("primal", "torch", LARGE_N, dtype="float32", group="large", **common))
    return cases


@dataclass(frozen=True)
class Interleaved:
    """One interleaved comparison (``primal_np.bench.interleave``): every implementation in
    ``impls`` in one process, round by round, with np.matmul in each round."""

    layer: str
    impls: tuple[str, ...]
    N: int
    B: int = 1
    D: int = D
    H: int = H
    s: int = S
    rank_multi: int = RANK_MULTI
    dtype: str = "float32"
    threads: int = 1
    rounds: int = ROUNDS
    matmul_size: int = MATMUL_SIZE


def default_interleaved(
    *,
    quick: bool = False,
    with_torch: bool = True,
    with_compile: bool = True,
    threads: int = 1,
    compare: tuple[int, int] | None = None,
    rounds: int | None = None,
    matmul_size: int = MATMUL_SIZE,
) -> list[Interleaved]:
    """The interleaved comparison of the primal layer's implementations at the compare shape
    (float32): reference, fast and, with torch, eager and (not with ``quick``) compiled."""
    compare = compare or ((2, 1024) if quick else (4, 4096))
    impls: tuple[str, ...] = ("reference", "fast")
    if with_torch:
        impls += ("torch",) + (("torch_compile",) if with_compile and not quick else ())
    return [
        Interleaved(
            "primal", impls, compare[1], B=compare[0], threads=threads,
            rounds=rounds or (5 if quick else ROUNDS), matmul_size=matmul_size,
        )
    ]  # fmt: skip


def _skip_reason(case: Case, done: list[dict]) -> str | None:
    """Why a case would not fit in memory or time, from the N×N size and the smaller runs."""
    itemsize = 4 if case.dtype == "float32" else 8
    if case.layer == "canonical" and case.impl == "primal_np":
        need = _canonical_bytes(case.B, case.N, case.D, case.H, itemsize)
        avail = _mem_available()
        if avail is not None and need > 0.8 * avail:
            return (
                f"the N×N arrays P and dP (2·B·H·N²·{itemsize} B ≈ {need / 2**30:.1f} GiB) "
                f"would not fit in the {avail / 2**30:.1f} GiB available"
            )
    prev = [
        r
        for r in done
        if r.get("fwd_bwd_s") is not None
        and (r["layer"], r["impl"], r["B"], r["dtype"])
        == (case.layer, case.impl, case.B, case.dtype)
        and r["N"] < case.N
    ]
    if prev:
        last = max(prev, key=lambda r: r["N"])
        grow = (case.N / last["N"]) ** (2 if case.layer == "canonical" else 1)
        predicted = last["fwd_bwd_s"] * grow
        if predicted > MAX_SECONDS_PER_RUN:
            return (
                f"predicted {predicted:.0f} s per forward + backward (from N = {last['N']}), "
                f"beyond the {MAX_SECONDS_PER_RUN:.0f} s budget of one run"
            )
    return None


def run_case(case: Case, matmul_gflops: dict[str, float]) -> dict:
    """Measure one case in a fresh subprocess; return its JSON record."""
    rec: dict[str, Any] = {
        "layer": case.layer, "impl": case.impl, "N": case.N, "B": case.B, "D": case.D,
        "H": case.H, "s": case.s, "rank_multi": case.rank_multi, "dtype": case.dtype,
        "group": case.group, "threads": case.threads,
    }  # fmt: skip
    try:
        rec.update(_spawn(asdict(case)))
    except RuntimeError as exc:
        if case.impl != "torch_compile":
            raise
        tail = str(exc).strip().splitlines()[-1] if str(exc).strip() else "no message"
        return rec | {
            "fwd_bwd_s": None,
            "peak_bytes": None,
            "skipped": f"torch.compile failed: {tail}",
        }
    gflop = flops(case.layer, case.B, case.N, case.D, case.H, case.s, case.rank_multi) / 1e9
    rec["gflop"] = gflop
    rec["gflops"] = gflop / rec["fwd_bwd_s"]
    ref = matmul_gflops.get(case.dtype)
    if ref:
        rec["matmul_gflops"] = ref
        rec["matmul_fraction"] = rec["gflops"] / ref
    rec["loadavg_1min"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return rec


def run_interleaved(spec: Interleaved) -> list[dict]:
    """One interleaved comparison in a fresh subprocess; one record per implementation."""
    return _spawn({"kind": "interleave", **asdict(spec)})


def run_bench(
    cases: list[Case],
    emit=None,
    *,
    matmul_size: int = MATMUL_SIZE,
    interleaved: list[Interleaved] | tuple = (),
) -> list[dict]:
    """Run the interleaved comparisons, then the cases in order (skipping those that would
    not fit); ``emit(record)`` each.

    Before the cases, measures the np.matmul reference (``matmul_size``² matrices) of each
    dtype; the interleaved comparisons measure their own in every round."""
    done: list[dict] = []
    for spec in interleaved:
        for rec in run_interleaved(spec):
            done.append(rec)
            if emit is not None:
                emit(rec)
    threads = cases[0].threads if cases else 1
    matmul = {}
    for dtype in sorted({c.dtype for c in cases}):
        spec = {"kind": "matmul", "dtype": dtype, "threads": threads, "size": matmul_size}
        matmul[dtype] = _spawn(spec)["matmul_gflops"]
    for case in cases:
        reason = _skip_reason(case, done)
        if reason is not None:
            rec = {
                "layer": case.layer, "impl": case.impl, "N": case.N, "B": case.B, "D": case.D,
                "H": case.H, "s": case.s, "rank_multi": case.rank_multi, "dtype": case.dtype,
                "group": case.group, "threads": case.threads, "fwd_bwd_s": None,
                "peak_bytes": None, "skipped": reason,
            }  # fmt: skip
        else:
            rec = run_case(case, matmul)
        done.append(rec)
        if emit is not None:
            emit(rec)
    return done
