"""Command line: ``python -m primal_np {verify,golden export,golden check,train,bench,reproduce} ...``."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from typing import NoReturn


def _cmd_verify(args: argparse.Namespace) -> int:
    from .verify import format_table, run_checks

    if args.only is not None and not args.only.strip():
        print("verify: --only must name some text, got ''", file=sys.stderr)
        return 2
    rows = run_checks(args.only)
    if not rows:
        print(f"verify: --only {args.only!r} matches no check", file=sys.stderr)
        return 2
    failed = any(r.passed is False for r in rows)
    if args.json:
        doc = {"ok": not failed, "checks": [r.as_dict() for r in rows]}
        print(json.dumps(doc, indent=2, allow_nan=False))  # strict JSON: no NaN literals
    else:
        print(format_table(rows))
    return 1 if failed else 0


def _cmd_golden_export(args: argparse.Namespace) -> int:
    from .golden import GoldenExportError, case_names, check_export_target, export, name_problems

    def fail(message: str) -> int:
        print(f"golden export: {message}", file=sys.stderr)
        return 2

    names = args.case or None
    if names:
        unknown, twice = name_problems(names)
        if unknown:
            known = ", ".join(case_names(long=True))
            return fail(f"--case: unknown case(s) {unknown}; known: {known}")
        if twice:
            return fail(f"--case {twice[0]} is given more than once")
    try:
        check_export_target(args.directory, names)  # before any case is built
        cases = export(args.directory, names, long=args.long)
    except GoldenExportError as exc:
        return fail(str(exc))
    except OSError as exc:  # the disk filled up, the directory vanished, ...
        return fail(f"{args.directory}: could not be written: {exc.strerror or exc}")
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
    except OSError as exc:  # a directory that cannot be listed, a file that cannot be read
        print(f"golden check: {exc}", file=sys.stderr)
        return 2
    print(report.to_json() if args.json else report)
    if not report.ok:
        print(f"golden check: {args.candidate}: {report.summary()}", file=sys.stderr)
    return 0 if report.ok else 1


def _parse_task_param(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"takes KEY=VALUE, got {text!r}")
    key, raw = text.split("=", 1)
    for conv in (int, float):
        try:
            return key, conv(raw)
        except ValueError:
            pass
    return key, raw


# TrainConfig field → the train flag that sets it (messages name the flag)
TRAIN_FLAGS = {
    "model": "--model", "task": "--task", "task_params": "--task-param", "steps": "--steps",
    "eta": "--eta", "low_rank": "--low-rank", "rank_multi": "--rank-multi", "dim": "--dim",
    "depth": "--depth", "num_heads": "--heads", "batch_size": "--batch-size", "lr": "--lr",
    "seed": "--seed", "eval_every": "--eval-every", "n_train": "--n-train", "n_val": "--n-val",
    "n_test": "--n-test",
    "checkpoint_dir": "--checkpoint", "checkpoint_every": "--checkpoint-every",
    "ksvd_convention": "--ksvd-convention", "pooling": "--pooling", "positions": "--positions",
    "feature_map": "--feature-map", "trace_no_x": "--trace-x",
    "data_dependent": "--data-independent", "rscores": "--no-rscores", "resume": "--resume",
    "kep_layers": "--kep-layers", "eta_kl": "--eta-kl", "mc_samples": "--mc-samples",
    "mc_average": "--mc-average",
}  # fmt: skip


def _train_config(args: argparse.Namespace):
    """The TrainConfig of the flags (flag-level checks first: one message, exit 2)."""
    from .model.train import TrainConfig, TrainConfigError

    overrides = {
        "model": args.model, "task": args.task, "steps": args.steps, "eta": args.eta,
        "low_rank": args.low_rank, "rank_multi": args.rank_multi, "dim": args.dim,
        "depth": args.depth, "num_heads": args.heads, "batch_size": args.batch_size,
        "lr": args.lr, "seed": args.seed, "eval_every": args.eval_every,
        "n_train": args.n_train, "n_val": args.n_val, "n_test": args.n_test,
        "checkpoint_dir": args.checkpoint,
        "checkpoint_every": args.checkpoint_every, "ksvd_convention": args.ksvd_convention,
        "pooling": args.pooling, "positions": args.positions, "feature_map": args.feature_map,
        "kep_layers": args.kep_layers, "eta_kl": args.eta_kl, "mc_samples": args.mc_samples,
        "mc_average": args.mc_average,
    }  # fmt: skip
    kw: dict = {k: v for k, v in overrides.items() if v is not None}
    if args.checkpoint_every is not None and args.checkpoint_every < 1:
        raise TrainConfigError("checkpoint_every", f"must be >= 1, got {args.checkpoint_every}")
    if args.resume is not None and not args.resume:
        raise TrainConfigError("resume", "must name a checkpoint directory, got ''")
    if args.task_param:
        keys = [k for k, _ in args.task_param]
        twice = sorted({k for k in keys if keys.count(k) > 1})
        if twice:
            raise TrainConfigError("task_params", f"sets {twice} more than once")
        kw["task_params"] = dict(args.task_param)
    if args.trace_x:
        kw["trace_no_x"] = False
    if args.data_independent:
        kw["data_dependent"] = False
    if args.no_rscores:
        kw["rscores"] = False
    return TrainConfig(**kw)


def _cmd_train(args: argparse.Namespace) -> int:
    from .model.train import CheckpointError, TrainConfigError, TrainingDiverged, train

    def fail(message: str) -> int:
        print("train: " + " ".join(message.split()), file=sys.stderr)  # one line
        return 2

    try:
        cfg = _train_config(args)
        result = train(cfg, progress=not args.quiet, resume=args.resume)
    except TrainingDiverged as exc:
        print(f"train: {exc}", file=sys.stderr)
        return 3
    except TrainConfigError as exc:
        return fail(exc.render(TRAIN_FLAGS))
    except CheckpointError as exc:
        return fail(f"{TRAIN_FLAGS[exc.role]} {exc.path}: {exc.problem}")
    except (ValueError, TypeError) as exc:
        return fail(str(exc))
    except MemoryError:
        return fail("not enough memory for this configuration (lower --dim, --depth or --n-train)")
    except OSError as exc:  # the environment (a checkpoint path's filesystem, ...)
        return fail(str(exc))
    kep = "kep" in result.model_config["attention"]
    prediction = (
        "softmax of the logits"
        if not kep
        else "posterior mean (noise 0)"
        if cfg.mc_samples == 0
        else f"{cfg.mc_samples} samples, mean of the {cfg.mc_average}"
    )
    summary = {
        "model": cfg.model,
        "task": cfg.task,
        "accuracy": result.accuracy,
        "nll": result.nll,
        "ece": result.ece,
        "brier": result.brier,
        "prediction": prediction,
        "chance_accuracy": result.chance_accuracy,
        "task_loss": result.test_task_loss,
        "train_task_loss": result.train_task_loss,
        "val_accuracy": result.val_accuracy,
        "ksvd_loss": result.ksvd_loss_per_layer,
        "kl": result.kl_per_layer,
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
        print(
            f"  test NLL {result.nll:.4f}, ECE {result.ece:.4f} (15 bins), Brier "
            f"{result.brier:.4f}; prediction: {prediction}"
        )
        for name, v in result.ksvd_loss_per_layer.items():
            js = result.j_per_layer.get(name, [])
            trail = " → ".join(f"{j:+.3g}" for j in js[:: max(1, len(js) // 5)])
            kl = result.kl_per_layer.get(name)
            kl_text = "" if kl is None else f"; KL {kl:.4g}"
            print(f"  {name}: KSVD loss {v:.3g}{kl_text}; J over training {trail}")
    return 0


def finite_at_least(minimum: float):
    """An argparse type: a finite float >= ``minimum`` (``--k``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        if not math.isfinite(value) or value < minimum:
            raise argparse.ArgumentTypeError(
                f"must be a finite number >= {minimum:g}, got {text!r}"
            )
        return value

    return parse


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line on stderr (exit 2), naming the flag; --help has the rest."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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
        "--only",
        metavar="TEXT",
        help="show only the checks whose text (as printed), group or function name contains "
        "TEXT (case-insensitive)",
    )
    p.set_defaults(func=_cmd_verify)

    g = sub.add_parser(
        "golden",
        help="write or check golden vectors (format: docs/golden-format.md)",
        description="Golden vectors for validating other implementations.",
    )
    gsub = g.add_subparsers(dest="golden_command", required=True, metavar="ACTION")
    ge = gsub.add_parser(
        "export",
        help="write manifest.json and one .npz per case into DIR",
        description="Write the golden vectors (manifest.json and <case>.npz) into DIR.",
        epilog="DIR is created if needed and checked before any case is built. Into a "
        "directory that already holds an export of this primal_np version, the export adds "
        "to it: each case written replaces its entry in manifest.json (or is appended) and "
        "the other entries and files are kept, so the manifest always lists exactly the "
        "cases whose files are there. An unreadable manifest, one naming a missing file, or "
        "(with --case) one written by another version is refused. Exit status: 0 written; "
        "2 a bad --case or an unusable DIR (one line on stderr, nothing written).",
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
        type=finite_at_least(0.0),
        default=2.0,
        metavar="K",
        help="low precision: allowed multiple of primal_np's own error (default 2)",
    )
    gc.add_argument(
        "--atol",
        type=finite_at_least(0.0),
        default=1e-12,
        metavar="ATOL",
        help="absolute slack added to every bound (default 1e-12)",
    )
    gc.add_argument("--json", action="store_true", help="print the report as JSON")
    gc.set_defaults(func=_cmd_golden_check)

    from .feature_maps import FEATURE_MAPS
    from .model.config import MODELS
    from .tasks import TASKS

    t = sub.add_parser(
        "train",
        help="train a small PrimalFormer / Primal.+Trans. / Transformer / KEP-SVGP model on a "
        "synthetic task",
        description="Train a small encoder classifier with manual backprop on a generated task "
        "and report held-out accuracy with the uncertainty metrics of the prediction: negative "
        "log-likelihood, expected calibration error (15 equal-width bins of the maximum "
        "probability) and Brier score. Models: "
        + "; ".join(f"{k}: {v}" for k, v in MODELS.items())
        + ". Tasks: listops and retrieval (classification: encoder, padding mask, pooling); "
        "markov (next-token prediction: a decoder with causal attention, primal layers in "
        "the causal variant; kep-svgp has no causal variant and is refused). KEP-SVGP layers "
        "(the authors' CoLA module) draw fresh noise at every step and predict with "
        "--mc-samples passes (docs/conformance.md). Progress goes to stderr (tqdm when "
        "installed and on a terminal).",
        epilog="Exit status: 0 done; 2 bad input or environment: a flag's value, a --task-param, "
        "an unwritable --checkpoint directory or an unusable --resume checkpoint (one line "
        "naming the flag, before training starts); 3 training diverged: a non-finite value in "
        "the loss, a layer's output, the logits, the KSVD loss, a gradient, or the parameters "
        "after an update (the step and the place are named, and --checkpoint DIR then holds "
        "the last state whose parameters and loss were finite: resume from it, e.g. with a "
        "lower --lr). Checkpoints are written atomically (a crash leaves the previous one "
        "intact) every --checkpoint-every N steps and at the end; --resume DIR continues "
        "exactly where the checkpoint stopped (same flags: the same run, bit for bit).",
    )
    t.add_argument("--model", choices=list(MODELS), default="primalformer")
    t.add_argument("--kep-layers", choices=["last", "all"],
                   help="kep-svgp: KEP-SVGP attention in the last layer (default, as the "
                   "authors' models) or in every layer")  # fmt: skip
    t.add_argument("--eta-kl", type=float,
                   help="weight η_kl of the KEP-SVGP layers' KL term (default 1.0, theirs)")  # fmt: skip
    t.add_argument("--mc-samples", type=int, metavar="K",
                   help="kep-svgp: predict with K forward passes of fresh noise (default 10, "
                   "theirs); 0: the posterior mean (noise 0)")  # fmt: skip
    t.add_argument("--mc-average", choices=["probs", "logits"],
                   help="kep-svgp: average the K softmax probabilities (default: the Monte-Carlo "
                   "predictive distribution) or the K logits (the authors' valid.py)")  # fmt: skip
    t.add_argument("--task", choices=list(TASKS), default=None, help="default: listops")
    t.add_argument("--steps", type=int, help="optimiser steps (default 600)")
    t.add_argument("--eta", type=float,
                   help="weight η of the KSVD loss (default 0.1; of the primal and the KEP-SVGP "
                   "layers)")  # fmt: skip
    t.add_argument("--low-rank", type=int, help="s, rank of the primal layers (default 8)")
    t.add_argument("--rank-multi", type=int, help="n = s·rank_multi sampled rows (default 4)")
    t.add_argument("--ksvd-convention", choices=["lra", "lra_trace_x", "per_sample", "paper"])
    t.add_argument("--trace-x", action="store_true", help="trace on the data-dependent weights")
    t.add_argument("--data-independent", action="store_true", help="W_e, W_r ∈ R^(p×s) directly")
    t.add_argument(
        "--no-rscores",
        action="store_true",
        help="primal layers output E W_cᵀ + b_c without the r-scores (the paper's ablation)",
    )
    t.add_argument(
        "--feature-map",
        choices=sorted(FEATURE_MAPS),
        help="feature map φ of the primal layers (default cosine); maps that change the width "
        "(poly2, positive_random) need --data-independent",
    )
    t.add_argument("--dim", type=int, help="model width D (default 64)")
    t.add_argument("--depth", type=int, help="number of layers (default 2)")
    t.add_argument("--heads", type=int, help="attention heads (default 4)")
    t.add_argument("--pooling", choices=["mean", "cls"])
    t.add_argument("--positions", choices=["learned", "sinusoidal"])
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--seed", type=int)
    t.add_argument("--n-train", type=int, help="training examples (default 20000)")
    t.add_argument("--n-val", type=int, help="validation examples (default 1000)")
    t.add_argument("--n-test", type=int, help="held-out test examples (default 2000)")
    t.add_argument("--eval-every", type=int, help="validation every N steps (default 100)")
    t.add_argument("--task-param", action="append", type=_parse_task_param, metavar="KEY=VALUE",
                   help="task generator parameter, e.g. n_pairs=16 (repeatable)")  # fmt: skip
    t.add_argument("--checkpoint", metavar="DIR",
                   help="save a checkpoint into DIR at the end (and on divergence); DIR is "
                   "created and checked for writing before training starts")  # fmt: skip
    t.add_argument("--checkpoint-every", type=int, metavar="N",
                   help="also save every N >= 1 steps (needs --checkpoint)")  # fmt: skip
    t.add_argument("--resume", metavar="DIR",
                   help="continue from the checkpoint in DIR (give the same model flags)")  # fmt: skip
    t.add_argument("--json", action="store_true", help="the last line of stdout is one JSON object")
    t.add_argument("--quiet", action="store_true", help="no progress output")
    t.set_defaults(func=_cmd_train)

    from .bench import add_bench_parser

    add_bench_parser(sub)

    from .reproduce.command import add_reproduce_parser

    add_reproduce_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except BrokenPipeError:  # the reader went away (`... | head`): stop quietly
        _silence_stdout()
        return 141  # as a process ended by SIGPIPE (128 + 13)


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's final flush of what is left in
    the buffer does not raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # a replaced sys.stdout (tests)
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
