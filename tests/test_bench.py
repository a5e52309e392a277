"""The benchmark's output schema (never its timings) and its FLOP count."""

import argparse
import importlib.util
import json
import subprocess
import sys
from dataclasses import asdict

import pytest

from primal_np.bench import (
    CANONICAL_IMPLS,
    PRIMAL_IMPLS,
    REQUIRED_KEYS,
    Case,
    Interleaved,
    add_bench_parser,
    default_cases,
    default_interleaved,
    flops,
    format_interleaved,
    format_table,
    run_case,
    summarize,
)
from primal_np.bench.interleave import interleaved_worker

# one scaling size, a tiny comparison shape, one timed run each, a small matmul reference
TINY = "--sizes 32 --compare 1x32 --no-large --repeats 1 --rounds 2 --matmul-size 64".split()


def _parser():
    parser = argparse.ArgumentParser(prog="python -m primal_np")
    add_bench_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def _check_record(rec):
    for key in REQUIRED_KEYS:
        assert key in rec, (key, rec)
    assert rec["layer"] in ("primal", "canonical")
    assert rec["impl"] in (PRIMAL_IMPLS if rec["layer"] == "primal" else CANONICAL_IMPLS)
    assert rec["dtype"] in ("float32", "float64")
    for key in ("N", "B", "D", "H", "s"):
        assert isinstance(rec[key], int) and rec[key] > 0
    if rec.get("skipped"):
        assert rec["fwd_bwd_s"] is None and rec["peak_bytes"] is None
        return
    assert isinstance(rec["fwd_bwd_s"], float) and rec["fwd_bwd_s"] > 0
    assert rec["gflops"] > 0 and rec["matmul_fraction"] > 0
    if rec["group"] == "interleaved":  # one process: times and ratios, no peak memory
        assert rec["peak_bytes"] is None
        assert len(rec["fwd_bwd_rounds_s"]) == rec["repeats"] == len(rec["loadavg_rounds"])
        assert len(rec["matmul_gflops_rounds"]) == rec["repeats"]
        assert rec["impl"] not in rec["ratio_to"]
    else:
        assert isinstance(rec["peak_bytes"], int)


@pytest.mark.slow
def test_bench_json_lines_have_the_schema(capsys):
    args = _parser().parse_args(["bench", "--json", "--no-torch", *TINY])
    assert args.func(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    records = [json.loads(line) for line in lines]
    # interleaved: reference and fast; then, per group, primal (reference, fast) and
    # canonical (primal_np): scaling 1 size, compare 2 dtypes
    assert len(records) == 2 + 3 + 2 * 3
    for rec in records:
        _check_record(rec)
    inter = [r for r in records if r["group"] == "interleaved"]
    assert [r["impl"] for r in inter] == ["reference", "fast"]
    assert set(inter[0]["ratio_to"]) == {"fast"} and set(inter[1]["ratio_to"]) == {"reference"}
    assert {(r["layer"], r["impl"]) for r in records} == {
        ("primal", "reference"), ("primal", "fast"), ("canonical", "primal_np")
    }  # fmt: skip
    assert {r["dtype"] for r in records} == {"float32", "float64"}
    rows = summarize(records)
    assert all(isinstance(row, tuple) and len(row) == 3 for row in rows)
    assert any("reference / fast" in what and value != "not measured" for what, value, _ in rows)
    text = format_interleaved(records) + format_table(records)
    assert "reference" in text and "fast" in text


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
@pytest.mark.parametrize("layer", ["primal", "canonical"])
def test_torch_records_have_the_schema(layer):
    rec = run_case(Case(layer, "torch", 32, repeats=1, threads=1), {"float32": 1.0})
    _check_record(rec)
    assert rec["torch_threads"] == 1


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
def test_interleaved_run_with_torch_eager_has_the_schema():
    spec = Interleaved("primal", ("fast", "torch"), 32, rounds=2, matmul_size=32)
    records = interleaved_worker(asdict(spec))
    assert [r["impl"] for r in records] == ["fast", "torch"]
    for rec in records:
        _check_record(rec)
    assert records[1]["torch_threads"] == 1


def test_an_implementation_that_fails_is_reported_and_the_others_go_on():
    spec = Interleaved("primal", ("fast", "no_such_impl"), 16, rounds=1, matmul_size=16)
    fast, bad = interleaved_worker(asdict(spec))
    _check_record(fast)
    assert bad["fwd_bwd_s"] is None and bad["peak_bytes"] is None
    assert "no_such_impl" in bad["skipped"] and "ValueError" in bad["skipped"]
    assert fast["ratio_to"] == {}


def test_default_plan_names_both_primal_implementations_and_compile_only_at_the_compare_shape():
    cases = default_cases(with_torch=True, threads=2)
    by_group = {
        g: {(c.layer, c.impl) for c in cases if c.group == g} for g in ("scaling", "compare")
    }
    assert by_group["compare"] == {("primal", i) for i in PRIMAL_IMPLS} | {
        ("canonical", i) for i in CANONICAL_IMPLS
    }
    assert ("primal", "torch_compile") not in by_group["scaling"]
    assert {("primal", "reference"), ("primal", "fast")} <= by_group["scaling"]
    (inter,) = default_interleaved(with_torch=True, threads=2)
    assert (inter.B, inter.N, inter.D, inter.H, inter.s, inter.rank_multi) == (
        4,
        4096,
        256,
        4,
        32,
        10,
    )
    assert inter.impls == PRIMAL_IMPLS and inter.dtype == "float32" and inter.threads == 2
    assert default_interleaved(with_torch=False)[0].impls == ("reference", "fast")
    assert "torch_compile" not in default_interleaved(with_compile=False)[0].impls


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
