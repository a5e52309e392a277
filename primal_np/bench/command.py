"""``python -m primal_np bench``: argument parsing and output."""

from __future__ import annotations

import argparse
import json
import sys

from .interleave import ROUNDS
from .measure import (
    LARGE_N,
    MATMUL_SIZE,
    MAX_SECONDS_PER_RUN,
    blas_threads,
    default_cases,
    default_interleaved,
    run_bench,
    torch_available,
)
from .report import format_interleaved, format_table, summarize


# --------------------------------------------------------------------------- command line
def _positive(text: str) -> int:
    """An argparse type: an integer >= 1 (a size, a count)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def _sizes(text: str) -> tuple[int, ...]:
    parts = text.split(",")
    if not text.strip() or any(not p.strip() for p in parts):
        raise argparse.ArgumentTypeError(
            f"must be sequence lengths N,N,... (each an integer >= 1), got {text!r}"
        )
    try:
        return tuple(_positive(p.strip()) for p in parts)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"must be sequence lengths N,N,... (each an integer >= 1), got {text!r}"
        ) from None


def _shape(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    try:
        if len(parts) != 2:
            raise argparse.ArgumentTypeError("")
        return _positive(parts[0]), _positive(parts[1])
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"must be BxN with B, N integers >= 1 (e.g. 4x4096), got {text!r}"
        ) from None


def add_bench_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``bench`` subcommand to an argparse ``subparsers`` object; returns its parser."""
    p = subparsers.add_parser(
        "bench",
        help="time and peak memory of the primal and canonical layers (and PyTorch)",
        description="Forward + backward (random upstream gradient, no KSVD loss) of the "
        "Primal-Attention layer (LRA, data-dependent weights: primal_np's reference and fast "
        "implementations) and of the canonical MHA layer (primal_np), against PyTorch CPU "
        "autograd (the authors' layer restated, eager and under torch.compile) with as many "
        "threads as NumPy's BLAS. First an interleaved comparison: all implementations of "
        f"the primal layer in one process, run by run for {ROUNDS} rounds, with np.matmul "
        "in every round; it gives the ratios (median of the per-round ratios). Then each "
        "measurement in a fresh subprocess: median of several runs after a warm-up; peak "
        "memory = peak RSS above the RSS once the inputs exist (the same method for all). "
        "Compilation is never timed; if torch.compile fails, the output says why. Scaling: B=1, D=256, H=4, s=32, rank_multi=10, "
        "float32, N = 512 … 65536 (canonical while its N×N arrays fit and a run stays under "
        f"{MAX_SECONDS_PER_RUN:.0f} s); comparison with torch at B=4, N=4096 in float32 and "
        f"float64; the primal layer at N={LARGE_N}. GFLOP/s counts the matrix products "
        "(primal 18BND² + 24BNDs + 12BD·n·s, canonical 24BND² + 12BN²D) and is also given "
        "as a fraction of a 2048² np.matmul of the same dtype measured in the same run.",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per line per measurement")
    p.add_argument("--quick", action="store_true", help="small N only (well under a minute)")
    p.add_argument("--no-torch", action="store_true", help="measure primal_np only")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    p.add_argument(
        "--interleaved-only",
        action="store_true",
        help="only the interleaved comparison (no subprocess measurements)",
    )
    p.add_argument(
        "--rounds",
        type=_positive,
        metavar="R",
        help=f"rounds of the interleaved comparison (default {ROUNDS}, 5 with --quick)",
    )
    p.add_argument("--sizes", type=_sizes, metavar="N,N,...", help="scaling sequence lengths")
    p.add_argument(
        "--compare",
        type=_shape,
        metavar="BxN",
        help="shape of the torch comparison (default 4x4096)",
    )
    p.add_argument("--no-large", action="store_true", help=f"skip the N={LARGE_N} primal runs")
    p.add_argument("--repeats", type=_positive, metavar="R", help="timed runs per measurement")
    p.add_argument(
        "--matmul-size",
        type=_positive,
        default=MATMUL_SIZE,
        metavar="M",
        help=f"side of the square np.matmul reference (default {MATMUL_SIZE})",
    )
    p.set_defaults(func=_cmd_bench)
    return p


def _cmd_bench(args: argparse.Namespace) -> int:
    with_torch = not args.no_torch and torch_available()
    threads = blas_threads()
    opts = dict(quick=args.quick, with_torch=with_torch, with_compile=not args.no_compile)
    cases = []
    if not args.interleaved_only:
        cases = default_cases(
            **opts,
            threads=threads,
            sizes=args.sizes,
            compare=args.compare,
            repeats=args.repeats,
            large=False if args.no_large else None,
        )
    interleaved = default_interleaved(
        **opts,
        threads=threads,
        compare=args.compare,
        rounds=args.rounds,
        matmul_size=args.matmul_size,
    )
    if args.json:
        run_bench(
            cases,
            emit=lambda r: print(json.dumps(r), flush=True),
            matmul_size=args.matmul_size,
            interleaved=interleaved,
        )
        return 0
    print(
        f"threads: NumPy BLAS {threads}"
        + (f", torch.set_num_threads({threads})" if with_torch else " (torch not measured)")
    )
    results = run_bench(
        cases,
        matmul_size=args.matmul_size,
        interleaved=interleaved,
        emit=lambda r: print(
            f"  {r['group']:<12}{r['layer']:<10}{r['impl']:<14}{r['dtype']:<8}"
            f"B={r['B']} N={r['N']}",
            file=sys.stderr,
            flush=True,
        ),
    )
    print(format_interleaved(results))
    print()
    print(format_table([r for r in results if r.get("group") != "interleaved"]))
    print()
    for what, value, verdict in summarize(results):
        print(f"{what:<62} {value:>14}  {verdict}")
    return 0
