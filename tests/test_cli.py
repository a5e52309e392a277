"""The command line: verify, golden export, --help."""

import json
import subprocess
import sys

import numpy as np
import pytest

from primal_np.cli import main
from primal_np.golden import PREFIXES, load_arrays, read_manifest


def test_verify_passes_and_prints_a_table(capsys):
    assert main(["verify", "--only", "dual"]) == 0
    out = capsys.readouterr().out
    assert "dual_attention: VJP vs finite differences" in out and "FAIL" not in out


def test_verify_json(capsys):
    assert main(["verify", "--json", "--only", "primitives"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is True
    assert {"check", "error", "bound", "passed"} <= set(data["checks"][0])
    assert all(c["error"] <= c["bound"] for c in data["checks"])


def test_verify_only_matches_the_printed_check_text(capsys):
    assert main(["verify", "--only", "KKT residuals"]) == 0
    out = capsys.readouterr().out
    assert "KKT residuals (1)–(6)" in out and "1 passed, 0 failed" in out


def test_verify_json_is_strict_json_with_a_crashed_check(monkeypatch, capsys):
    from primal_np import verify

    def boom():
        raise RuntimeError("broken check")

    monkeypatch.setattr(verify, "_REGISTRY", [("demo", boom)])
    assert main(["verify", "--json"]) == 1
    text = capsys.readouterr().out
    doc = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert doc["checks"][0]["error"] is None and "broken check" in doc["checks"][0]["note"]


def test_verify_unknown_filter_is_an_error(capsys):
    assert main(["verify", "--only", "no-such-check"]) == 2


def test_verify_exit_status_reflects_a_failure(monkeypatch, capsys):
    from primal_np import verify

    monkeypatch.setattr(
        verify, "_REGISTRY", [("demo", lambda: verify.result("always wrong", 1.0, 0.5))]
    )
    monkeypatch.setattr(verify, "_CHECK_MODULES", ())
    assert main(["verify"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_golden_export_is_deterministic_and_well_formed(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["golden", "export", str(a), "--case", "dual_attention_masked"]) == 0
    assert main(["golden", "export", str(b), "--case", "dual_attention_masked"]) == 0
    assert (a / "dual_attention_masked.npz").read_bytes() == (
        b / "dual_attention_masked.npz"
    ).read_bytes()
    manifest = read_manifest(a)
    (case,) = manifest["cases"]
    assert case["name"] == "dual_attention_masked" and case["file"] == "dual_attention_masked.npz"
    arrays = load_arrays(a / case["file"])
    assert all(name.split(".")[0] in PREFIXES for name in arrays)
    assert arrays["input.mask"].dtype == np.bool_
    assert not arrays["input.mask"].any(-1).all()  # the documented fully masked row is there
    with np.load(a / case["file"], allow_pickle=False) as data:
        assert set(data.files) == set(arrays)


@pytest.mark.parametrize("argv", [[], ["verify"], ["golden"], ["golden", "export"]])
def test_help_everywhere(argv):
    proc = subprocess.run(
        [sys.executable, "-m", "primal_np", *argv, "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0 and "usage:" in proc.stdout
