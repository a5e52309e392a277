"""Shared helpers of ``python -m primal_np reproduce``: seeds, 95 % intervals, records, BLAS
threads, the environment and the training rows every claim is made of.

A *row* is one re-runnable unit: ``{"id", "kind", "config", "result"}``. ``config`` holds
everything needed to run it again (for a training row, every field of ``TrainConfig``);
``result`` holds what it produced. Fields listed in ``MEASURED_FIELDS`` are
measurements (times and load averages depend on the machine and its load; the peak
memory of a training step varies by ~10⁻⁵ with Python's own allocations); every other
result field is a deterministic function of the config and the code, so a re-run
reproduces it bit for bit (same code, same BLAS thread count).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "SCHEMA",
    "Interval",
    "t_interval",
    "paired_differences",
    "seed_list",
    "set_blas_threads",
    "blas_thread_count",
    "environment",
    "code_fingerprint",
    "params_digest",
    "train_row",
    "RowCache",
    "MEASURED_FIELDS",
    "deterministic_part",
    "record_path",
    "write_record",
    "read_record",
]

SCHEMA = "primal_np.reproduce/1"
LEVEL = 0.95
MEASURED_FIELDS = (
    "seconds", "cpu_seconds", "loadavg",
    "step_seconds", "step_cpu_seconds", "step_loadavg", "median_seconds", "peak_bytes",
)  # fmt: skip


# --------------------------------------------------------------------------- statistics
class Interval(NamedTuple):
    """Mean of ``n`` values and its two-sided ``level`` t-interval (Student, n − 1 d.o.f.):
    mean ± t_{(1+level)/2, n−1} · sd / √n, sd the sample standard deviation (ddof 1).
    With n = 1 the interval is undefined: lo = hi = None."""

    mean: float
    lo: float | None
    hi: float | None
    n: int
    sd: float | None

    def as_dict(self) -> dict:
        return self._asdict()

    def excludes(self, value: float) -> int:
        """+1 if the whole interval lies above ``value``, −1 below, 0 if it contains it
        (or is undefined)."""
        if self.lo is None or self.hi is None:
            return 0
        return 1 if self.lo > value else -1 if self.hi < value else 0


def t_interval(values: Sequence[float] | np.ndarray, level: float = LEVEL) -> Interval:
    """The ``level`` Student-t confidence interval of the mean of ``values`` (seeds)."""
    from scipy.stats import t as student_t

    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if x.size == 0 or not np.all(np.isfinite(x)):
        raise ValueError(f"values must be a non-empty sequence of finite numbers, got {values!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    mean = float(x.mean())
    if x.size == 1:
        return Interval(mean, None, None, 1, None)
    sd = float(x.std(ddof=1))
    half = float(student_t.ppf(0.5 + level / 2, x.size - 1)) * sd / math.sqrt(x.size)
    return Interval(mean, mean - half, mean + half, int(x.size), sd)


def paired_differences(a: dict[int, float], b: dict[int, float]) -> list[float]:
    """a[seed] − b[seed] over the seeds both have (runs paired by seed share their data)."""
    return [a[s] - b[s] for s in sorted(set(a) & set(b))]


def seed_list(k: int) -> list[int]:
    """The evaluation seeds 0 … k − 1 (selection uses seeds ≥ 1000, never these)."""
    return list(range(k))


# --------------------------------------------------------------------------- environment
def _openblas_libs() -> list:
    import ctypes

    try:
        with open("/proc/self/maps") as f:
            paths = sorted({ln.split()[-1] for ln in f if "openblas" in ln.lower()})
    except OSError:
        return []
    return [ctypes.CDLL(p) for p in paths]


def set_blas_threads(n: int) -> int:
    """Limit NumPy's BLAS to ``n`` threads (threadpoolctl if installed, else OpenBLAS's own
    setter); returns the thread count in force afterwards."""
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=n, user_api="blas")
    except ImportError:
        for lib in _openblas_libs():
            for sym in (
                "scipy_openblas_set_num_threads64_",
                "openblas_set_num_threads64_",
                "openblas_set_num_threads",
            ):
                if hasattr(lib, sym):
                    getattr(lib, sym)(int(n))
                    break
    return blas_thread_count()


def blas_thread_count() -> int:
    from ..bench.measure import blas_threads

    return blas_threads()


def code_fingerprint() -> str:
    """sha256 over the source of primal_np (every .py file, sorted by path), 16 hex digits:
    rows made by the same code share it."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def environment() -> dict:
    import scipy

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "blas_threads": blas_thread_count(),
        "code": code_fingerprint(),
    }


def loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


# --------------------------------------------------------------------------- training rows
def params_digest(params: dict[str, np.ndarray]) -> str:
    """sha256 of every parameter array (name, dtype, shape, bytes), names sorted."""
    h = hashlib.sha256()
    for name in sorted(params):
        a = np.ascontiguousarray(params[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def train_row(row_id: str, config: dict, extra=None) -> dict:
    """Train ``TrainConfig(**config)`` and return the row. ``extra(result, train_config)``,
    if given, adds fields computed from the trained model (e.g. spectra) to the result.
    A run that diverges is a result too: ``{"diverged": message}`` (the claims leave its
    seed out and say so)."""
    from ..model.train import TrainConfig, TrainingDiverged, train

    cfg = TrainConfig(**config)
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        res = train(cfg, progress=False)
    except TrainingDiverged as exc:
        failed = {"diverged": str(exc), "seconds": time.perf_counter() - t0,
                  "cpu_seconds": time.process_time() - c0, "loadavg": loadavg()}  # fmt: skip
        return {"id": row_id, "kind": "train", "config": asdict(cfg), "result": failed}
    result: dict[str, Any] = {
        "accuracy": res.accuracy,
        "val_accuracy": res.val_accuracy,
        "chance_accuracy": res.chance_accuracy,
        "test_task_loss": res.test_task_loss,
        "train_task_loss": res.train_task_loss,
        "val_curve": [[h["step"], h["val_accuracy"]] for h in res.history],
        "J_final": {k: v[-1] for k, v in res.j_per_layer.items()},
        "ksvd_loss_final": res.ksvd_loss_per_layer,
        "params_sha256": params_digest(res.params),
    }
    if extra is not None:
        result.update(extra(res, cfg))
    result["seconds"] = time.perf_counter() - t0
    result["cpu_seconds"] = time.process_time() - c0
    result["loadavg"] = loadavg()
    return {"id": row_id, "kind": "train", "config": asdict(cfg), "result": result}


def full_train_config(**kw) -> dict:
    """Every field of ``TrainConfig`` (defaults filled in), as a plain dict."""
    from ..model.train import TrainConfig

    cfg = TrainConfig(**kw)
    return {f.name: getattr(cfg, f.name) for f in fields(cfg)}


class RowCache:
    """Rows already run in this process, by (kind, config): a row shared by two claims
    (e.g. the PrimalFormer of claims 1, 3 and 4) runs once per ``reproduce all``."""

    def __init__(self) -> None:
        self._rows: dict[str, dict] = {}

    @staticmethod
    def key(kind: str, config: dict, extra_key: str = "") -> str:
        return kind + "|" + extra_key + "|" + json.dumps(config, sort_keys=True)

    def get(self, key: str) -> dict | None:
        return self._rows.get(key)

    def put(self, key: str, row: dict) -> None:
        self._rows[key] = row


def deterministic_part(result: dict) -> dict:
    """A row's result without the measured fields (``MEASURED_FIELDS``)."""
    return {k: v for k, v in result.items() if k not in MEASURED_FIELDS}


# --------------------------------------------------------------------------- records
def record_path(out: str | Path, name: str, quick: bool) -> Path:
    return Path(out) / f"{name}{'.quick' if quick else ''}.json"


def _clean(obj):
    """JSON-safe copy: NumPy scalars to Python, tuples to lists, non-finite floats to None."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, np.generic):
        return _clean(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_record(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(_clean(record), indent=1, allow_nan=False) + "\n")
    tmp.replace(path)


def read_record(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())
