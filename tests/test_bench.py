"""The benchmark's output schema (never its timings) and its FLOP count."""

import argparse
import importlib.util
import json
import subprocess
import sys

import pytest

from primal_np.bench import (
    REQUIRED_KEYS,
    Case,
    add_bench_parser,
    flops,
    run_case,
    summarize,
)

# one scaling size, a tiny comparison shape, one timed run each, a small matmul reference
TINY = "--sizes 32 --compare 1x32 --no-large --repeats 1 --matmul-size 64".split()


def _parser():
    parser = argparse.ArgumentParser(prog="python -m primal_np")
    add_bench_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def _check_record(rec):
    for key in REQUIRED_KEYS:
        assert key in rec, (key, rec)
    assert rec["layer"] in ("primal", "canonical")
    assert rec["impl"] in ("primal_np", "torch")
    assert rec["dtype"] in ("float32", "float64")
    for key in ("N", "B", "D", "H", "s"):
        assert isinstance(rec[key], int) and rec[key] > 0
    if rec.get("skipped"):
        assert rec["fwd_bwd_s"] is None and rec["peak_bytes"] is None
    else:
        assert isinstance(rec["fwd_bwd_s"], float) and rec["fwd_bwd_s"] > 0
        assert isinstance(rec["peak_bytes"], int)
        assert rec["gflops"] > 0 and rec["matmul_fraction"] > 0


@pytest.mark.slow
def test_bench_json_lines_have_the_schema(capsys):
    args = _parser().parse_args(["bench", "--json", "--no-torch", *TINY])
    assert args.func(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    records = [json.loads(line) for line in lines]
    # scaling: 2 layers × 1 size; compare: 2 layers × 2 dtypes
    assert len(records) == 6
    for rec in records:
        _check_record(rec)
    assert {r["layer"] for r in records} == {"primal", "canonical"}
    assert {r["dtype"] for r in records} == {"float32", "float64"}
    assert all(isinstance(row, tuple) and len(row) == 3 for row in summarize(records))


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
@pytest.mark.parametrize("layer", ["primal", "canonical"])
def test_torch_records_have_the_schema(layer):
    rec = run_case(Case(layer, "torch", 32, repeats=1, threads=1), {"float32": 1.0})
    _check_record(rec)
    assert rec["torch_threads"] == 1


def test_help_names_the_method(capsys):
    with pytest.raises(SystemExit) as exc:
        _parser().parse_args(["bench", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--quick" in out and "--json" in out and "peak" in out


def test_flop_count_matches_the_matrix_products():
    """The documented count equals the sum of 2·m·k·n over the layer's matrix products."""
    B, N, D, H, s, m = 2, 48, 12, 3, 2, 5
    p, n = D // H, s * m
    mm = lambda a, b, c: 2 * a * b * c  # noqa: E731
    fwd = mm(B * N, D, 2 * D) + 2 * mm(B * H * p, n, s) + 2 * mm(B * H * N, p, s)
    fwd += mm(B * N * H, 2 * s, p) + mm(B * N, D, D)
    bwd = 2 * mm(B * N, D, D) + 2 * mm(B * N * H, p, 2 * s) + 4 * mm(B * H * N, s, p)
    bwd += 4 * mm(B * H * n, p, s) + 2 * mm(B * N, 2 * D, D)
    assert flops("primal", B, N, D, H, s, m) == fwd + bwd
    fwd = mm(B * N, D, 3 * D) + 2 * mm(B * H * N, p, N) + mm(B * N, D, D)
    bwd = 2 * mm(B * N, D, D) + 4 * mm(B * H * N, N, p) + 2 * mm(B * N, 3 * D, D)
    assert flops("canonical", B, N, D, H, s, m) == fwd + bwd


def test_the_package_does_not_import_matplotlib():
    code = "import sys, primal_np, primal_np.bench; sys.exit('matplotlib' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
