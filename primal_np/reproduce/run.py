"""Running one claim into its record, and re-running one recorded row."""

from __future__ import annotations

import datetime
import json
import resource
import time

from .common import SCHEMA, _clean, deterministic_part, environment, loadavg
from .registry import claim_module
from .runner import Context, run_row

__all__ = ["run_claim", "rerun", "compare_results"]


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run_claim(name: str, ctx: Context) -> dict:
    """Run claim ``name`` with ``ctx`` (seeds, quick, jobs, shared row cache) and return
    its record (``SCHEMA``)."""
    mod = claim_module(name)
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    load0, t0, c0 = loadavg(), time.perf_counter(), _cpu_seconds()
    ctx.log(f"claim {mod.NUMBER} ({mod.NAME}): {mod.TITLE}")
    if hasattr(mod, "specs"):
        rows = ctx.run(mod.specs(ctx.seeds, ctx.quick))
    else:
        rows = mod.measure(ctx.seeds, ctx.quick, ctx.log)
    analysis = mod.analyse(rows)
    record = {
        "schema": SCHEMA,
        "claim": mod.NAME,
        "number": mod.NUMBER,
        "title": mod.TITLE,
        "paper": mod.PAPER,
        "setup": mod.setup(),
        "quick": ctx.quick,
        "seeds": list(ctx.seeds),
        "jobs": ctx.jobs,
        "rows": rows,
        **analysis,
        "environment": environment(),
        "started": started,
        "seconds": time.perf_counter() - t0,
        "cpu_seconds": _cpu_seconds() - c0,
        # every row's own CPU time, reused rows included: what the claim costs on its own
        "rows_cpu_seconds": sum(r["result"].get("cpu_seconds", 0.0) for r in rows),
        "loadavg": {"start": load0, "end": loadavg()},
        "rerun": f"python -m primal_np reproduce {mod.NAME} --rerun ROW_ID"
        + (" --quick" if ctx.quick else "")
        + " --out DIR",
    }
    return _clean(record)


def compare_results(recorded: dict, new: dict) -> list[str]:
    """Names of the deterministic result fields that differ (after a JSON round trip)."""
    a = deterministic_part(recorded)
    b = deterministic_part(json.loads(json.dumps(_clean(new))))
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def rerun(record: dict, row_id: str) -> tuple[dict, list[str]]:
    """Run the row ``row_id`` of ``record`` again from its recorded config (in this
    process); return (the new row, the deterministic fields that differ)."""
    rows = {r["id"]: r for r in record.get("rows", [])}
    if row_id not in rows:
        known = ", ".join(list(rows)[:5]) + (" …" if len(rows) > 5 else "")
        raise KeyError(f"no row {row_id!r} in the record (rows: {known})")
    old = rows[row_id]
    new = run_row(old["kind"], row_id, old["config"])
    return new, compare_results(old["result"], new["result"])
