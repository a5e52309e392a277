"""Command line: ``python -m primal_np {verify,golden export,golden check} ...``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


def _cmd_verify(args: argparse.Namespace) -> int:
    from .verify import format_table, run_checks

    rows = run_checks(args.only)
    if not rows:
        print(f"no check matches {args.only!r}", file=sys.stderr)
        return 2
    failed = any(r.passed is False for r in rows)
    if args.json:
        print(json.dumps({"ok": not failed, "checks": [r.as_dict() for r in rows]}, indent=2))
    else:
        print(format_table(rows))
    return 1 if failed else 0


def _cmd_golden_export(args: argparse.Namespace) -> int:
    from .golden import case_names, export

    names = args.case or None
    if names:
        unknown = [n for n in names if n not in case_names()]
        if unknown:
            print(f"unknown case(s) {unknown}; known: {', '.join(case_names())}", file=sys.stderr)
            return 2
    cases = export(args.directory, names)
    for c in cases:
        print(f"wrote {args.directory}/{c.name}.npz  ({c.op}, {len(c.arrays)} arrays)")
    print(f"wrote {args.directory}/manifest.json  ({len(cases)} cases)")
    return 0


def _cmd_golden_check(args: argparse.Namespace) -> int:
    from .golden import GoldenFormatError
    from .golden.check import check_candidate

    try:
        report = check_candidate(
            args.directory, args.candidate, case=args.case, precision=args.dtype, k=args.k
        )
    except (GoldenFormatError, ValueError) as exc:
        print(f"golden check: {exc}", file=sys.stderr)
        return 2
    print(report.to_json() if args.json else report)
    if not report.ok:
        print(f"golden check: {args.candidate}: {report.summary()}", file=sys.stderr)
    return 0 if report.ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m primal_np",
        description="Reference NumPy implementation of canonical (dual) attention and "
        "Primal-Attention (KSVD, primal form).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "verify",
        help="run the library's identity and gradient checks",
        description="Run the identity and gradient checks at default sizes and print a table "
        "(check, measured error, bound, pass/fail). Exits 1 if any check fails.",
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument(
        "--only", metavar="TEXT", help="run only checks whose group or name contains TEXT"
    )
    p.set_defaults(func=_cmd_verify)

    g = sub.add_parser(
        "golden",
        help="write or check golden vectors (format: GOLDEN.md)",
        description="Golden vectors for validating other implementations.",
    )
    gsub = g.add_subparsers(dest="golden_command", required=True, metavar="ACTION")
    ge = gsub.add_parser(
        "export",
        help="write manifest.json and one .npz per case into DIR",
        description="Write the golden vectors (manifest.json and <case>.npz) into DIR.",
    )
    ge.add_argument("directory", metavar="DIR")
    ge.add_argument(
        "--case", action="append", metavar="NAME", help="export only this case (repeatable)"
    )
    ge.set_defaults(func=_cmd_golden_export)
    gc = gsub.add_parser(
        "check",
        help="compare a candidate .npz with a golden case",
        description="Compare a candidate .npz (the case's output.* / grad.* arrays, computed by "
        "the implementation under test from the case's input.*, param.* and cotangent.* "
        "arrays) with a case of DIR. Prints a table (array, max abs error, max rel error, "
        "bound, pass/fail, worst index). float64: pass iff max|c-r| <= 1e-10*max|r| + 1e-12. "
        "float32/float16/bfloat16: pass iff max|c-r| <= K*max|p-r| + 2*eps*max|r| + 1e-12, "
        "p = primal_np's own result in that precision (docs/validation.md).",
        epilog="Exit status: 0 every array within its bound; 1 an array is outside its bound, "
        "missing, misshapen, of a wrong dtype or not finite (named in the table); 2 the "
        "directory or candidate could not be read (one-line error). Files are never "
        "unpickled.",
    )
    gc.add_argument("directory", metavar="DIR", help="a directory written by golden export")
    gc.add_argument("--candidate", required=True, metavar="FILE.npz", help="the candidate's arrays")
    gc.add_argument(
        "--case",
        metavar="NAME",
        help="the case to compare with; default: the file name <case>.npz or "
        "<case>.<anything>.npz names it",
    )
    gc.add_argument(
        "--dtype",
        choices=["float64", "float32", "float16", "bfloat16"],
        help="the precision the candidate computed in; wins over the default, which is "
        "inferred from the candidate arrays' dtype (store bfloat16 results as float32 "
        "and pass --dtype bfloat16)",
    )
    gc.add_argument(
        "--k",
        type=float,
        default=2.0,
        metavar="K",
        help="low precision: allowed multiple of primal_np's own error (default 2)",
    )
    gc.add_argument("--json", action="store_true", help="print the report as JSON")
    gc.set_defaults(func=_cmd_golden_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
