"""Command line: ``python -m primal_np {verify,golden export,golden check,train,bench} ...``."""

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
        known = case_names(long=True)
        unknown = [n for n in names if n not in known]
        if unknown:
            print(f"unknown case(s) {unknown}; known: {', '.join(known)}", file=sys.stderr)
            return 2
    cases = export(args.directory, names, long=args.long)
    for c in cases:
        print(f"wrote {args.directory}/{c.name}.npz  ({c.op}, {len(c.arrays)} arrays)")
    print(f"wrote {args.directory}/manifest.json  ({len(cases)} cases)")
    return 0


def _cmd_golden_check(args: argparse.Namespace) -> int:
    from .golden import GoldenFormatError
    from .golden.check import check_candidate

    try:
        report = check_candidate(
            args.directory, args.candidate, case=args.case, precision=args.dtype, k=args.k,
            atol=args.atol,
        )  # fmt: skip
    except (GoldenFormatError, ValueError) as exc:
        print(f"golden check: {exc}", file=sys.stderr)
        return 2
    print(report.to_json() if args.json else report)
    if not report.ok:
        print(f"golden check: {args.candidate}: {report.summary()}", file=sys.stderr)
    return 0 if report.ok else 1


def _parse_task_param(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--task-param takes KEY=VALUE, got {text!r}")
    key, raw = text.split("=", 1)
    for conv in (int, float):
        try:
            return key, conv(raw)
        except ValueError:
            pass
    return key, raw


def _cmd_train(args: argparse.Namespace) -> int:
    from .model.train import TrainConfig, TrainingDiverged, train

    overrides = {
        "model": args.model, "task": args.task, "steps": args.steps, "eta": args.eta,
        "low_rank": args.low_rank, "rank_multi": args.rank_multi, "dim": args.dim,
        "depth": args.depth, "num_heads": args.heads, "batch_size": args.batch_size,
        "lr": args.lr, "seed": args.seed, "eval_every": args.eval_every,
        "n_train": args.n_train, "checkpoint_dir": args.checkpoint,
        "checkpoint_every": args.checkpoint_every, "ksvd_convention": args.ksvd_convention,
        "pooling": args.pooling, "positions": args.positions,
    }  # fmt: skip
    kw = {k: v for k, v in overrides.items() if v is not None}
    if args.task_param:
        kw["task_params"] = dict(args.task_param)
    if args.trace_x:
        kw["trace_no_x"] = False
    if args.data_independent:
        kw["data_dependent"] = False
    try:
        cfg = TrainConfig(**kw)
        result = train(cfg, progress=not args.quiet, resume=args.resume)
    except TrainingDiverged as exc:
        print(f"train: {exc}", file=sys.stderr)
        return 3
    except (ValueError, TypeError) as exc:
        print(f"train: {exc}", file=sys.stderr)
        return 2
    summary = {
        "model": cfg.model,
        "task": cfg.task,
        "accuracy": result.accuracy,
        "chance_accuracy": result.chance_accuracy,
        "task_loss": result.test_task_loss,
        "train_task_loss": result.train_task_loss,
        "val_accuracy": result.val_accuracy,
        "ksvd_loss": result.ksvd_loss_per_layer,
        "J": result.j_per_layer,
        "steps": result.steps,
        "seconds": result.seconds,
        "tokens_per_second": result.tokens_per_second,
        "config": result.train_config,
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"{cfg.model} on {cfg.task}: held-out accuracy {result.accuracy:.3f} "
            f"(chance {result.chance_accuracy:.3f}), test loss {result.test_task_loss:.3f}, "
            f"{result.steps} steps in {result.seconds:.0f} s ({result.tokens_per_second:.0f} tokens/s)"
        )
        for name, v in result.ksvd_loss_per_layer.items():
            js = result.j_per_layer.get(name, [])
            trail = " → ".join(f"{j:+.3g}" for j in js[:: max(1, len(js) // 5)])
            print(f"  {name}: KSVD loss {v:.3g}; J over training {trail}")
    return 0


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
    ge.add_argument(
        "--long",
        action="store_true",
        help="also write the long-sequence cases (dual_attention_long: N = M = 4096, "
        "causal, about 4 MB), left out by default",
    )
    ge.set_defaults(func=_cmd_golden_export)
    gc = gsub.add_parser(
        "check",
        help="compare a candidate .npz with a golden case",
        description="Compare a candidate .npz (the case's output.* / grad.* arrays, computed by "
        "the implementation under test from the case's input.*, param.* and cotangent.* "
        "arrays) with a case of DIR. Prints a table (array, max abs error, max rel error, "
        "bound, pass/fail, worst index). float64: pass iff max|c-r| <= 1e-10*A + ATOL. "
        "float32/float16/bfloat16: pass iff max|c-r| <= K*max|p-r| + 2*eps*A + ATOL, "
        "p = primal_np's own result in that precision, A = max|r|, or for the dual-attention "
        "cases max(max|r|, the operand magnitude) (docs/validation.md).",
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
    gc.add_argument(
        "--atol",
        type=float,
        default=1e-12,
        metavar="ATOL",
        help="absolute slack added to every bound (default 1e-12)",
    )
    gc.add_argument("--json", action="store_true", help="print the report as JSON")
    gc.set_defaults(func=_cmd_golden_check)

    from .model.config import MODELS
    from .tasks import TASKS

    t = sub.add_parser(
        "train",
        help="train a small PrimalFormer / Primal.+Trans. / Transformer on a synthetic task",
        description="Train a small encoder classifier with manual backprop on a generated task "
        "and report held-out accuracy. Models: "
        + "; ".join(f"{k}: {v}" for k, v in MODELS.items())
        + ". Progress goes to stderr (tqdm when installed and on a terminal).",
        epilog="Exit status: 0 done; 2 bad configuration (before training starts); 3 the loss "
        "went non-finite (the step and layer are named, the last good checkpoint is kept).",
    )
    t.add_argument("--model", choices=list(MODELS), default="primalformer")
    t.add_argument("--task", choices=list(TASKS), default=None, help="default: listops")
    t.add_argument("--steps", type=int, help="optimiser steps (default 600)")
    t.add_argument("--eta", type=float, help="weight η of the KSVD loss (default 0.1)")
    t.add_argument("--low-rank", type=int, help="s, rank of the primal layers (default 8)")
    t.add_argument("--rank-multi", type=int, help="n = s·rank_multi sampled rows (default 4)")
    t.add_argument("--ksvd-convention", choices=["lra", "lra_trace_x", "per_sample", "paper"])
    t.add_argument("--trace-x", action="store_true", help="trace on the data-dependent weights")
    t.add_argument("--data-independent", action="store_true", help="W_e, W_r ∈ R^(p×s) directly")
    t.add_argument("--dim", type=int, help="model width D (default 64)")
    t.add_argument("--depth", type=int, help="number of layers (default 2)")
    t.add_argument("--heads", type=int, help="attention heads (default 4)")
    t.add_argument("--pooling", choices=["mean", "cls"])
    t.add_argument("--positions", choices=["learned", "sinusoidal"])
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--seed", type=int)
    t.add_argument("--n-train", type=int, help="training examples (default 20000)")
    t.add_argument("--eval-every", type=int, help="validation every N steps (default 100)")
    t.add_argument("--task-param", action="append", type=_parse_task_param, metavar="KEY=VALUE",
                   help="task generator parameter, e.g. n_pairs=16 (repeatable)")  # fmt: skip
    t.add_argument("--checkpoint", metavar="DIR", help="save checkpoint.npz/.json into DIR")
    t.add_argument("--checkpoint-every", type=int, help="also every N steps (needs --checkpoint)")
    t.add_argument("--resume", metavar="DIR", help="continue from a checkpoint directory")
    t.add_argument("--json", action="store_true", help="the last line of stdout is one JSON object")
    t.add_argument("--quiet", action="store_true", help="no progress output")
    t.set_defaults(func=_cmd_train)

    from .bench import add_bench_parser

    add_bench_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
