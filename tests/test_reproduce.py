"""``python -m primal_np reproduce``: the plumbing with tiny settings (not the science).

The science is in the committed records (docs/reproduction/*.json); here: the interval
helper against closed forms, the verdict rules, the spectrum summaries on matrices with a
known spectrum, exit codes, the JSON schema, seeds recorded per row, a bit-for-bit re-run
of one row (and a tampered record caught), worker processes giving the same rows as one
process, and the committed selection agreeing with the learning rates in use.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from primal_np.cli import main
from primal_np.model.train import TrainConfig
from primal_np.reproduce import efficiency, setups
from primal_np.reproduce.common import Interval, t_interval
from primal_np.reproduce.probe import curve_summary
from primal_np.reproduce.verdicts import direction, parity

REPO = Path(__file__).resolve().parents[1]
TINY = dict(steps=3, warmup=1, n_train=64, n_val=16, n_test=16, eval_every=3, batch_size=8)


@pytest.fixture
def tiny(monkeypatch):
    """--quick becomes a few steps on a few examples (plumbing, not science)."""
    monkeypatch.setattr(setups, "QUICK", TINY)
    monkeypatch.setattr(efficiency, "QUICK_SIZES", (16, 32))
    monkeypatch.setattr(efficiency, "QUICK_PRIMAL_SIZES", (64,))


# --------------------------------------------------------------------------- statistics
# scipy.stats.t.ppf is accurate to ~3e-11 relative at the SciPy floor (1.15; 1e-15 in
# newer releases): the quantile checks allow 1e-10.
T_PPF_REL = 1e-10


def test_t_interval_two_values_matches_the_cauchy_quantile():
    # one degree of freedom: Student's t is Cauchy, quantile tan(π(q − 1/2))
    a, b = 0.3, 0.7
    iv = t_interval([a, b])
    half = math.tan(math.pi * (0.975 - 0.5)) * (abs(a - b) / math.sqrt(2)) / math.sqrt(2)
    assert iv.mean == pytest.approx(0.5, abs=1e-15)
    assert iv.lo == pytest.approx(0.5 - half, rel=T_PPF_REL)
    assert iv.hi == pytest.approx(0.5 + half, rel=T_PPF_REL)
    assert iv.n == 2


def test_t_interval_three_values_matches_the_two_dof_closed_form():
    # two degrees of freedom: t_q = (2q − 1) / sqrt(2 q (1 − q))
    x = [1.0, 2.0, 4.0]
    q = 0.975
    tq = (2 * q - 1) / math.sqrt(2 * q * (1 - q))
    mean = 7 / 3
    sd = math.sqrt(sum((v - mean) ** 2 for v in x) / 2)
    iv = t_interval(x)
    assert iv.mean == pytest.approx(mean, rel=1e-15)
    assert iv.hi - iv.mean == pytest.approx(tq * sd / math.sqrt(3), rel=T_PPF_REL)
    assert iv.sd == pytest.approx(sd, rel=1e-15)


def test_t_interval_one_value_and_bad_input():
    assert t_interval([0.4]) == Interval(0.4, None, None, 1, None)
    for bad in ([], [1.0, float("nan")]):
        with pytest.raises(ValueError, match="values"):
            t_interval(bad)
    with pytest.raises(ValueError, match="level"):
        t_interval([1.0, 2.0], level=1.5)


def test_verdict_rules_on_hand_made_intervals():
    iv = lambda lo, hi: Interval((lo + hi) / 2, lo, hi, 5, 0.1)  # noqa: E731
    assert parity(iv(-0.02, 0.05))[0] == "reproduced"
    assert parity(iv(-0.10, -0.04))[0] == "not reproduced"
    assert parity(iv(-0.05, 0.01))[0] == "inconclusive"
    assert direction(iv(0.01, 0.05))[0] == "reproduced"
    assert direction(iv(-0.05, -0.01))[0] == "not reproduced"
    assert direction(iv(-0.01, 0.05))[0] == "inconclusive"
    # contains 0 but excludes the paper's effect of +0.12
    assert direction(iv(-0.01, 0.05), 0.12)[0] == "not reproduced"
    assert direction(Interval(0.2, None, None, 1, None))[0] == "inconclusive"


def test_curve_summary_on_known_spectra():
    from primal_np.model.spectrum import normalized_cumulative_singular_values as ncsv

    K = 10
    rank_one = np.outer(np.arange(1.0, K + 1), np.ones(K))
    s = curve_summary(ncsv(rank_one))
    assert s["c1"] == pytest.approx(1.0) and s["auc"] == pytest.approx(1.0) and s["k90"] == 1
    flat = curve_summary(ncsv(np.eye(K)))  # c(k) = k / K
    assert flat["auc"] == pytest.approx((K + 1) / (2 * K))
    assert flat["c4"] == pytest.approx(0.4) and flat["k90"] == 9


# --------------------------------------------------------------------------- exit codes
@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["reproduce", "7"], "unknown claim"),
        (["reproduce", "everything"], "unknown claim"),
        (["reproduce", "1", "--seeds", "0"], "--seeds"),
        (["reproduce", "1", "--seeds", "two"], "--seeds"),
        (["reproduce", "1", "--jobs", "0"], "--jobs"),
    ],
)
def test_bad_input_exits_2_with_one_line(argv, flag, capsys, tmp_path):
    assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert flag in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "o").exists()  # checked before any work


def test_unwritable_out_exits_2(capsys, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    assert main(["reproduce", "1", "--quick", "--out", str(blocker / "sub")]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and err.count("\n") == 1


def test_rerun_without_a_record_or_row_exits_2(capsys, tmp_path):
    assert main(["reproduce", "1", "--rerun", "x", "--out", str(tmp_path)]) == 2
    assert "--out" in capsys.readouterr().err
    (tmp_path / "accuracy.json").write_text(json.dumps({"rows": [{"id": "a"}]}))
    assert main(["reproduce", "1", "--rerun", "nope", "--out", str(tmp_path)]) == 2
    assert "no row 'nope'" in capsys.readouterr().err


# --------------------------------------------------------------------------- records
def test_accuracy_record_schema_seeds_and_bit_for_bit_rerun(tiny, tmp_path, capsys):
    assert main(["reproduce", "1", "--quick", "--seeds", "2", "--jobs", "1",
                 "--out", str(tmp_path), "--json"]) == 0  # fmt: skip
    doc = json.loads(capsys.readouterr().out)
    (rec,) = doc["records"]
    assert rec == json.loads((tmp_path / "accuracy.quick.json").read_text())
    for key in ("schema", "claim", "number", "paper", "setup", "seeds", "rows", "summary",
                "verdict", "reason", "environment", "seconds", "loadavg"):  # fmt: skip
        assert key in rec
    assert rec["verdict"] in ("reproduced", "not reproduced", "inconclusive")
    assert rec["seeds"] == [0, 1]
    train_fields = set(TrainConfig.__dataclass_fields__)
    assert len(rec["rows"]) == 2 * 3 * 2  # tasks × models × seeds
    for row in rec["rows"]:
        assert set(row["config"]) == train_fields  # every field: the row can be re-run
        assert row["id"].endswith(f"seed{row['config']['seed']}")
        assert 0.0 <= row["result"]["accuracy"] <= 1.0
    cell = rec["summary"]["accuracy"]["listops"]["transformer"]
    assert cell["n"] == 2 and cell["lo"] <= cell["mean"] <= cell["hi"]
    if rec.get("figure"):
        assert (tmp_path / rec["figure"]).stat().st_size > 0

    row_id = rec["rows"][4]["id"]
    argv = ["reproduce", "accuracy", "--quick", "--rerun", row_id, "--out", str(tmp_path)]
    assert main(argv) == 0
    assert "identical" in capsys.readouterr().out

    rec["rows"][4]["result"]["accuracy"] += 1e-12  # a record that the code did not produce
    (tmp_path / "accuracy.quick.json").write_text(json.dumps(rec))
    assert main(argv) == 1
    assert "DIFFERENT in accuracy" in capsys.readouterr().out


def test_worker_processes_give_the_same_rows(tiny, tmp_path, capsys):
    recs = {}
    for jobs in ("1", "2"):
        out = tmp_path / jobs
        assert main(["reproduce", "ksvd", "--quick", "--seeds", "1", "--jobs", jobs,
                     "--out", str(out)]) == 0  # fmt: skip
        recs[jobs] = json.loads((out / "ksvd.quick.json").read_text())
    capsys.readouterr()
    for a, b in zip(recs["1"]["rows"], recs["2"]["rows"], strict=True):
        assert a["id"] == b["id"]
        assert a["result"]["params_sha256"] == b["result"]["params_sha256"]
        assert a["result"]["accuracy"] == b["result"]["accuracy"]


def test_all_claims_run_and_share_rows(tiny, tmp_path, capsys):
    assert main(["reproduce", "all", "--quick", "--seeds", "1", "--jobs", "1",
                 "--out", str(tmp_path), "--json"]) == 0  # fmt: skip
    doc = json.loads(capsys.readouterr().out)
    names = [r["claim"] for r in doc["records"]]
    assert names == ["accuracy", "efficiency", "rscores", "ksvd", "spectrum"]
    by = {r["claim"]: r for r in doc["records"]}
    # claim 3's "with r-scores" rows are claim 1's runs, reused
    reused = [r for r in by["rscores"]["rows"] if r.get("reused")]
    assert len(reused) == 2 * 2 and all(not r["id"].endswith("-no-r/seed0") for r in reused)
    timing = by["efficiency"]["rows"][0]
    assert {"step_seconds", "step_loadavg", "peak_bytes"} <= set(timing["result"])
    assert len(timing["result"]["step_loadavg"]) == 1
    spec = by["spectrum"]["summary"]["curves"]["transformer"]["1"]["canonical"]
    curve = np.asarray(spec["mean"])  # truncated at K = min_len tokens: ends at most at 1
    assert curve.size == 20 and np.all(np.diff(curve) >= 0) and 0 < curve[0] and curve[-1] <= 1


def test_the_learning_rates_in_use_are_the_committed_selection():
    rec = json.loads((REPO / "docs" / "reproduction" / "selection.json").read_text())
    chosen = rec["summary"]["chosen"]
    assert {(t, m): lr for t, ms in chosen.items() for m, lr in ms.items()} == setups.LR
    assert rec["setup"]["grid"] == list(setups.LR_GRID)
    assert all(r["config"]["seed"] >= 1000 and r["config"]["n_test"] == 1 for r in rec["rows"])


def test_a_diverged_run_is_recorded_and_its_seed_left_out(tiny, tmp_path, capsys, monkeypatch):
    import primal_np.model.train as mt

    real = mt.train

    def flaky(cfg, **kw):
        if cfg.model == "primal+trans" and cfg.task == "retrieval" and cfg.seed == 1:
            raise mt.TrainingDiverged(
                "non-finite loss at step 2: layers.1 (primal attention)",
                step=2,
                where="layers.1",
                detail="overflow",
                kept_step=None,
                checkpoint_dir=None,
            )
        return real(cfg, **kw)

    monkeypatch.setattr(mt, "train", flaky)
    assert main(["reproduce", "1", "--quick", "--seeds", "2", "--jobs", "1",
                 "--out", str(tmp_path), "--json"]) == 0  # fmt: skip
    (rec,) = json.loads(capsys.readouterr().out)["records"]
    bad = "accuracy/retrieval/primal+trans/seed1"
    assert rec["summary"]["diverged"] == [bad]
    assert "non-finite loss" in next(r for r in rec["rows"] if r["id"] == bad)["result"]["diverged"]
    assert rec["summary"]["accuracy"]["retrieval"]["primal+trans"]["n"] == 1
    assert rec["summary"]["difference_vs_transformer"]["retrieval"]["primal+trans"]["n"] == 1
    assert bad in rec["reason"]
