"""``python -m primal_np reproduce``: argument checks, running, files and output."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from .registry import ALIASES, CLAIMS, EXTRA

DEFAULT_SEEDS, QUICK_SEEDS = 5, 2
DEFAULT_OUT = "reproduction"


def add_reproduce_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``reproduce`` subcommand to an argparse ``subparsers`` object."""
    claims = ", ".join(f"{n} {c}" for n, c in ALIASES.items())
    p = subparsers.add_parser(
        "reproduce",
        help="the paper's claims, reproduced in miniature on CPU (docs/reproduction.md)",
        description="Run one of the paper's claims in miniature (or all), with several seeds, "
        f"and write DIR/<claim>.json (every row's config and result, 95%% t-intervals over "
        f"seeds, the verdict and its reason) and DIR/<claim>.png. Claims: {claims}; 'all'; "
        "'selection' (the validation-only choice of learning rates behind the set-ups). "
        "Progress goes to stderr.",
        epilog="Exit status: 0 done (whatever the verdicts; with --rerun: the row was "
        "reproduced bit for bit); 1 a run failed, or --rerun found a difference; 2 bad input "
        "(unknown claim, --seeds or --jobs < 1, unwritable --out, no such row), checked before "
        "any work; 130 interrupted. Re-run one row: python -m primal_np reproduce CLAIM --rerun ROW_ID "
        "[--quick] --out DIR (reads DIR/<claim>[.quick].json).",
    )
    p.add_argument("claim", metavar="CLAIM", help="1-5, a claim name, 'all' or 'selection'")
    p.add_argument(
        "--seeds",
        metavar="K",
        help=f"seeds 0..K-1 per configuration (default {DEFAULT_SEEDS}; {QUICK_SEEDS} with --quick)",
    )
    p.add_argument("--quick", action="store_true",
                   help="tiny settings, under a minute per claim (files named <claim>.quick.*)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the records as one JSON object")
    p.add_argument("--out", metavar="DIR", default=DEFAULT_OUT,
                   help=f"where the JSON and PNG files go (default ./{DEFAULT_OUT})")  # fmt: skip
    p.add_argument("--jobs", metavar="J", default=str(min(2, os.cpu_count() or 1)),
                   help="worker processes for the training runs (default: 2, or 1 on one core)")  # fmt: skip
    p.add_argument("--rerun", metavar="ROW_ID", help="run one recorded row again and compare")
    p.set_defaults(func=_cmd_reproduce)
    return p


def _fail(msg: str) -> int:
    print(f"reproduce: {msg}", file=sys.stderr)
    return 2


def _positive(text: str) -> int | None:
    try:
        value = int(text)
    except (TypeError, ValueError):
        return None
    return value if value >= 1 else None


def _writable(out: Path) -> str | None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as exc:
        return f"--out {str(out)!r} is not a writable directory ({exc.strerror or exc})"
    return None


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from .registry import resolve_claims

    try:
        names = resolve_claims(args.claim)
    except ValueError as exc:
        return _fail(str(exc))
    if args.seeds is None:
        args.seeds = str(QUICK_SEEDS if args.quick else DEFAULT_SEEDS)
    seeds = _positive(args.seeds)
    if seeds is None:
        return _fail(f"--seeds must be an integer >= 1, got {args.seeds!r}")
    jobs = _positive(args.jobs)
    if jobs is None:
        return _fail(f"--jobs must be an integer >= 1, got {args.jobs!r}")
    out = Path(args.out)
    if args.rerun:
        if len(names) != 1:
            return _fail("--rerun needs one claim, not 'all'")
        return _rerun(names[0], args.rerun, out, args.quick, args.json)
    problem = _writable(out)
    if problem:
        return _fail(problem)
    return _run(names, seeds, jobs, out, args.quick, args.json)


def _rerun(name: str, row_id: str, out: Path, quick: bool, as_json: bool) -> int:
    from .common import deterministic_part, read_record, record_path, set_blas_threads
    from .run import rerun

    path = record_path(out, name, quick)
    try:
        record = read_record(path)
    except (OSError, ValueError) as exc:
        return _fail(f"--out: cannot read {path} ({exc})")
    rows = record.get("rows") if isinstance(record, dict) else None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        return _fail(f"--out: {path} is not a reproduce record (no list of rows)")
    if not any(r.get("id") == row_id for r in rows):
        return _fail(f"--rerun: no row {row_id!r} in {path}")
    set_blas_threads(1)
    try:
        new, diff = rerun(record, row_id)
    except Exception as exc:  # a failed run: one line, no traceback
        print(f"reproduce: --rerun {row_id}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    old = next(r for r in record["rows"] if r["id"] == row_id)["result"]
    if as_json:
        print(json.dumps({"row": row_id, "identical": not diff, "differences": diff,
                          "rerun": new}, allow_nan=False))  # fmt: skip
    elif diff:
        print(f"{row_id}: DIFFERENT in {', '.join(diff)}")
    elif not deterministic_part(old):
        print(f"{row_id}: a measurement only (nothing in it is compared bit for bit)")
    else:
        print(f"{row_id}: identical to {path} (every deterministic field, bit for bit)")
    if not as_json:
        for key in ("peak_bytes", "median_seconds", "seconds"):  # measured: shown, not compared
            if key in old and key in new["result"]:
                print(f"  measured {key}: recorded {old[key]:.6g}, now {new['result'][key]:.6g}")
    return 1 if diff else 0


def _run(names: list[str], seeds: int, jobs: int, out: Path, quick: bool, as_json: bool) -> int:
    from .common import record_path, seed_list, set_blas_threads, write_record
    from .plots import plot_record
    from .report import text_summary
    from .run import run_claim
    from .runner import Context

    set_blas_threads(1)
    ctx = Context(seeds=seed_list(seeds), quick=quick, jobs=jobs)
    records = []
    for name in names:
        try:
            record = run_claim(name, ctx)
        except KeyboardInterrupt:
            print(f"reproduce: claim {name}: interrupted", file=sys.stderr)
            return 130
        except Exception as exc:  # a failed run: one line, no traceback
            print(f"reproduce: claim {name}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        path = record_path(out, name, quick)
        record["figure"] = plot_record(record, path.with_suffix(".png"))
        write_record(path, record)
        records.append(record)
        if not as_json:
            print(text_summary(record, path))
    if as_json:
        from .common import SCHEMA

        print(json.dumps({"schema": SCHEMA, "records": records}, allow_nan=False))
    return 0


__all__ = ["add_reproduce_parser", "CLAIMS", "EXTRA"]
