"""``python -m primal_np golden check`` and the determinism / size of ``golden export``."""

import json
import subprocess
import sys

import candidates as C
import numpy as np
import pytest
from candidates import attention, attention_backward

from primal_np.cli import main
from primal_np.golden import case_names, export, load_arrays
from primal_np.golden.check import case_for_file, check_candidate


@pytest.fixture(scope="module")
def golden(tmp_path_factory):
    d = tmp_path_factory.mktemp("golden")
    export(d, ["dual_attention", "dual_attention_masked", "dual_attention_causal"])
    return d


def _candidate(golden, case, dtype=np.float64):
    """The case's outputs and grads from the independent NumPy attention in tests/candidates.py."""
    a = load_arrays(golden / f"{case}.npz")
    q, k, v, cot = (a[n].astype(dtype) for n in ("input.q", "input.k", "input.v", "cotangent.out"))
    mask, causal = a.get("input.mask"), case.endswith("causal")
    dq, dk, dv = attention_backward(q, k, v, mask, causal, None, cot)
    return {
        "output.out": attention(q, k, v, mask, causal),
        "grad.q": dq,
        "grad.k": dk,
        "grad.v": dv,
    }


def _run(capsys, *argv):
    code = main(["golden", "check", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_export_of_all_cases_is_byte_identical_and_under_1_MB(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    export(a)
    export(b)
    files = sorted(p.name for p in a.iterdir())
    assert files == sorted(p.name for p in b.iterdir())
    assert files == sorted(["manifest.json", *(f"{n}.npz" for n in case_names())])
    for name in files:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert sum((a / n).stat().st_size for n in files) <= 1_000_000


@pytest.mark.parametrize(
    "case", ["dual_attention", "dual_attention_masked", "dual_attention_causal"]
)
def test_correct_float64_candidate_passes(golden, tmp_path, capsys, case):
    path = tmp_path / f"{case}.numpy-einsum.npz"  # the file name names the case
    np.savez(path, **_candidate(golden, case))
    code, out, err = _run(capsys, golden, "--candidate", path)
    assert code == 0 and err == ""
    assert f"case {case} " in out and "precision float64" in out
    header = out.splitlines()[2]
    for col in ("array", "max abs err", "max rel err", "bound", "result", "worst index"):
        assert col in header
    rows = [ln for ln in out.splitlines() if ln.startswith(("output.", "grad."))]
    assert len(rows) == 4 and all(" pass " in r for r in rows) and "PASS (4 arrays)" in out


def test_gradient_off_by_1e4_relative_fails_naming_it(golden, tmp_path, capsys):
    cand = _candidate(golden, "dual_attention_masked")
    cand["grad.k"] = cand["grad.k"] * (1 + 1e-4)
    np.savez(tmp_path / "c.npz", **cand)
    code, out, err = _run(
        capsys, golden, "--candidate", tmp_path / "c.npz", "--case", "dual_attention_masked"
    )
    assert code == 1
    (line,) = [ln for ln in out.splitlines() if ln.startswith("grad.k")]
    assert "FAIL" in line
    assert sum("FAIL" in ln for ln in out.splitlines() if ln.startswith(("grad", "output"))) == 1
    assert len(err.strip().splitlines()) == 1 and "grad.k: outside bound" in err


def test_float32_candidates_pass_with_inferred_precision(golden, tmp_path, capsys):
    # an independent float32 implementation, and primal_np's own float32 path
    np.savez(
        tmp_path / "dual_attention.f32.npz", **_candidate(golden, "dual_attention", np.float32)
    )
    code, out, _ = _run(capsys, golden, "--candidate", tmp_path / "dual_attention.f32.npz")
    assert code == 0 and "precision float32" in out and "primal_np err" in out
    from primal_np.golden import build_case

    a = load_arrays(golden / "dual_attention_causal.npz")
    own = build_case("dual_attention_causal").recompute(a, np.dtype(np.float32))
    np.savez(tmp_path / "dual_attention_causal.npz", **own)
    rep = check_candidate(golden, tmp_path / "dual_attention_causal.npz")
    assert rep.ok and rep.precision == "float32"
    # claimed float64, stored float32: fails, naming the dtype problem
    code, out, _ = _run(
        capsys, golden, "--candidate", tmp_path / "dual_attention_causal.npz", "--dtype", "float64"
    )
    assert code == 1 and "less precise than the claimed precision float64" in out


def test_json_output(golden, tmp_path, capsys):
    np.savez(tmp_path / "dual_attention.npz", **_candidate(golden, "dual_attention"))
    code, out, _ = _run(capsys, golden, "--candidate", tmp_path / "dual_attention.npz", "--json")
    data = json.loads(out)
    assert code == 0 and data["ok"] is True and data["precision"] == "float64"
    assert {r["name"] for r in data["arrays"]} == {"output.out", "grad.q", "grad.k", "grad.v"}
    row = data["arrays"][0]
    assert {"max_abs_err", "max_rel_err", "mean_abs_err", "worst_index", "bound", "passed"} <= set(
        row
    )


@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda c: c.pop("grad.v"), "grad.v: missing from the candidate"),
        (lambda c: c.update({"grad.q": c["grad.q"][:, :, :-1]}), "grad.q: shape (2, 3, 4, 4), expected (2, 3, 5, 4)"),
        (lambda c: c.update({"grad.k": c["grad.k"].astype(np.int64)}), "grad.k: dtype int64 is not floating"),
        (lambda c: c["output.out"].__setitem__((1, 2, 1, 0), np.nan), "output.out: 1 NaN and 0 inf of 90 values (first at (1, 2, 1, 0)"),
    ],
    ids=["missing", "shape", "dtype", "nan"],
)  # fmt: skip
def test_bad_candidate_arrays_fail_with_a_one_line_error(
    golden, tmp_path, capsys, damage, expected
):
    cand = _candidate(golden, "dual_attention_masked")
    damage(cand)
    np.savez(tmp_path / "dual_attention_masked.npz", **cand)
    code, out, err = _run(capsys, golden, "--candidate", tmp_path / "dual_attention_masked.npz")
    assert code == 1
    assert len(err.strip().splitlines()) == 1 and expected in err
    assert str(tmp_path / "dual_attention_masked.npz") in err
    name = expected.split(":")[0]
    (line,) = [ln for ln in out.splitlines() if ln.startswith(name + " ")]
    assert "FAIL" in line and expected.split(": ", 1)[1] in line


def _one_line_error(capsys, *argv):
    code, out, err = _run(capsys, *argv)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1, err
    return err


def test_malformed_manifest(golden, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "manifest.json").write_text('{"format": "primal_np-golden", "version": 1, "cases": [')
    np.savez(tmp_path / "dual_attention.npz", **_candidate(golden, "dual_attention"))
    err = _one_line_error(capsys, bad, "--candidate", tmp_path / "dual_attention.npz")
    assert "manifest.json" in err and "not valid JSON" in err
    (bad / "manifest.json").write_text('{"format": "other", "version": 1, "cases": []}')
    err = _one_line_error(capsys, bad, "--candidate", tmp_path / "dual_attention.npz")
    assert "format is 'other'" in err


def test_pickled_object_array_is_refused(golden, tmp_path, capsys):
    cand = _candidate(golden, "dual_attention")
    cand["grad.q"] = np.array([cand["grad.q"], "not numbers"], dtype=object)
    np.savez(tmp_path / "dual_attention.npz", **cand)  # savez pickles object arrays
    err = _one_line_error(capsys, golden, "--candidate", tmp_path / "dual_attention.npz")
    assert "'grad.q' is an object (pickled) array; refusing to unpickle" in err
    # a pickled .npy (np.save with allow_pickle) under an .npz name
    np.save(tmp_path / "p.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (tmp_path / "dual_attention.p.npz").write_bytes((tmp_path / "p.npy").read_bytes())
    err = _one_line_error(capsys, golden, "--candidate", tmp_path / "dual_attention.p.npz")
    assert "dual_attention.p.npz" in err and "unpickle" in err


def test_unreadable_or_unnamed_candidates(golden, tmp_path, capsys):
    (tmp_path / "dual_attention.npz").write_bytes(b"not a zip file")
    err = _one_line_error(capsys, golden, "--candidate", tmp_path / "dual_attention.npz")
    assert "not a readable .npz" in err
    np.savez(tmp_path / "mine.npz", **_candidate(golden, "dual_attention"))
    err = _one_line_error(capsys, golden, "--candidate", tmp_path / "mine.npz")
    assert "names no case" in err and "--case" in err
    err = _one_line_error(capsys, golden, "--candidate", tmp_path / "mine.npz", "--case", "nope")
    assert "no case 'nope'" in err
    mixed = _candidate(golden, "dual_attention")
    mixed["grad.v"] = mixed["grad.v"].astype(np.float32)
    np.savez(tmp_path / "dual_attention.mixed.npz", **mixed)
    err = _one_line_error(capsys, golden, "--candidate", tmp_path / "dual_attention.mixed.npz")
    assert "mixed precision" in err and "--dtype" in err


def test_golden_directory_is_re_verified(golden, tmp_path, capsys):
    bad = tmp_path / "g"
    export(bad, ["dual_attention"])
    arrays = load_arrays(bad / "dual_attention.npz")
    arrays["output.out"][0, 0, 0, 0] = np.nan
    np.savez(bad / "dual_attention.npz", **arrays)
    np.savez(tmp_path / "dual_attention.npz", **_candidate(golden, "dual_attention"))
    err = _one_line_error(capsys, bad, "--candidate", tmp_path / "dual_attention.npz")
    assert "dual_attention.npz: array 'output.out' contains NaN" in err


def test_case_for_file():
    names = ["dual_attention", "dual_attention_masked"]
    assert case_for_file("x/dual_attention.npz", names) == "dual_attention"
    assert case_for_file("dual_attention_masked.torch.fp32.npz", names) == "dual_attention_masked"
    assert case_for_file("dual_attention_maskedx.npz", names) is None
    assert case_for_file("my_dual_attention.npz", names) is None


def test_exit_status_from_a_real_process(golden, tmp_path):
    cand = _candidate(golden, "dual_attention")
    np.savez(tmp_path / "dual_attention.npz", **cand)
    cmd = [sys.executable, "-m", "primal_np", "golden", "check", str(golden), "--candidate"]
    proc = subprocess.run(
        [*cmd, str(tmp_path / "dual_attention.npz")], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    cand["output.out"] = cand["output.out"] + 1e-6
    np.savez(tmp_path / "dual_attention.bad.npz", **cand)
    proc = subprocess.run(
        [*cmd, str(tmp_path / "dual_attention.bad.npz")], capture_output=True, text=True
    )
    assert proc.returncode == 1 and "output.out: outside bound" in proc.stderr


def test_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["golden", "check", "--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0 and "--candidate" in out and "Exit status" in out


@pytest.mark.torch
def test_torch_bfloat16_candidate_passes_with_dtype_flag(torch, golden, tmp_path, capsys):
    a = load_arrays(golden / "dual_attention_masked.npz")
    t = {n: torch.tensor(a[f"input.{n}"]).to(torch.bfloat16).requires_grad_() for n in "qkv"}
    out = torch.nn.functional.scaled_dot_product_attention(
        t["q"], t["k"], t["v"], attn_mask=torch.tensor(a["input.mask"])
    )
    out.backward(torch.tensor(a["cotangent.out"]).to(torch.bfloat16))
    cand = {"output.out": out.detach().float().numpy()}
    cand |= {f"grad.{n}": t[n].grad.float().numpy() for n in "qkv"}  # bfloat16 → float32, exact
    np.savez(tmp_path / "dual_attention_masked.torch-bf16.npz", **cand)
    path = tmp_path / "dual_attention_masked.torch-bf16.npz"
    code, out, _ = _run(capsys, golden, "--candidate", path, "--dtype", "bfloat16")
    assert code == 0 and "precision bfloat16" in out
    # without --dtype the float32 storage is taken at its word, and bfloat16 results fail it
    code, out, _ = _run(capsys, golden, "--candidate", path)
    assert code == 1 and "precision float32" in out


# --------------------------------------------------------------------------- layer cases
LAYER_CASES = [
    "primal_attention_lra",
    "primal_attention_lra_trace_x",
    "primal_attention_vision",
    "primal_attention_causal",
]


@pytest.fixture(scope="module")
def golden_layers(tmp_path_factory):
    d = tmp_path_factory.mktemp("golden_layers")
    export(d, LAYER_CASES)
    return d


def _layer_candidate(golden, case, fn, backward, dtype=np.float64):
    """A case's output.* and grad.* from a ``check_primal_attention``-style candidate: the
    same functions serve both checks, fed the case's arrays and its manifest config."""
    cases = json.loads((golden / "manifest.json").read_text())["cases"]
    config = next(c["config"] for c in cases if c["name"] == case)
    a = load_arrays(golden / f"{case}.npz")
    x, dout = a["input.x"].astype(dtype), a["cotangent.out"].astype(dtype)
    sd = {n.removeprefix("param."): v.astype(dtype) for n, v in a.items() if n.startswith("param.")}
    mask = a.get("input.mask")
    outs = fn(x, sd, mask, config)
    grads = backward(x, sd, mask, config, dout, config["eta"])
    return {f"output.{n}": v for n, v in outs.items()} | {f"grad.{n}": g for n, g in grads.items()}


@pytest.mark.parametrize("case", LAYER_CASES)
def test_layer_cases_independent_numpy_candidate_passes(golden_layers, tmp_path, capsys, case):
    cand = _layer_candidate(golden_layers, case, C.primal_layer, C.primal_layer_backward)
    np.savez(tmp_path / f"{case}.numpy-einsum.npz", **cand)
    code, out, err = _run(
        capsys, golden_layers, "--candidate", tmp_path / f"{case}.numpy-einsum.npz"
    )
    assert code == 0 and err == "", out
    assert "output.ksvd_loss" in out and "grad.x" in out


def test_layer_case_wrong_lambda_squared_fails_naming_loss_and_affected_grads(
    golden_layers, tmp_path, capsys
):
    bug = {"quadratic": "lambda"}  # ½ eᵀ diag(λ) e instead of ½‖λ ⊙ e‖²
    cand = _layer_candidate(
        golden_layers,
        "primal_attention_lra",
        lambda *a: C.primal_layer(*a, **bug),
        lambda *a: C.primal_layer_backward(*a, **bug),
    )
    path = tmp_path / "primal_attention_lra.lambda-bug.npz"
    np.savez(path, **cand)
    code, out, err = _run(capsys, golden_layers, "--candidate", path)
    assert code == 1
    failed = {
        ln.split()[0]
        for ln in out.splitlines()
        if ln.startswith(("output.", "grad.")) and " FAIL " in ln
    }
    assert failed == {
        "output.ksvd_loss", "grad.x", "grad.W_q.weight", "grad.W_q.bias", "grad.W_k.weight",
        "grad.W_k.bias", "grad.We", "grad.Wr", "grad.attn.Lambda",
    }  # the output path (out, scores, concate_weight, ff) is right  # fmt: skip
    assert len(err.strip().splitlines()) == 1
    assert "output.ksvd_loss: outside bound" in err and "grad.attn.Lambda: outside bound" in err


@pytest.mark.torch
def test_layer_case_torch_candidate_passes_in_float64_and_float32(
    torch, golden_layers, tmp_path, capsys
):
    import candidates_torch as T

    for dtype, flags in ((np.float64, []), (np.float32, ["--dtype", "float32"])):
        cand = _layer_candidate(
            golden_layers, "primal_attention_lra", T.layer, T.layer_backward, dtype
        )
        assert {a.dtype for a in cand.values()} == {np.dtype(dtype)}
        path = tmp_path / f"primal_attention_lra.torch-{np.dtype(dtype).name}.npz"
        np.savez(path, **cand)
        code, out, err = _run(capsys, golden_layers, "--candidate", path, *flags)
        assert code == 0 and err == "", out
        assert f"precision {np.dtype(dtype).name}" in out and "PASS (16 arrays)" in out


# --------------------------------------------------------------------------- large logits, long case
def _case_candidate(golden, case, dtype, **bugs):
    """A dual-attention case's outputs and grads from tests/candidates.py, with the case's scale."""
    cases = json.loads((golden / "manifest.json").read_text())["cases"]
    config = next(c["config"] for c in cases if c["name"] == case)
    a = load_arrays(golden / f"{case}.npz")
    q, k, v, cot = (a[n].astype(dtype) for n in ("input.q", "input.k", "input.v", "cotangent.out"))
    args = (q, k, v, a.get("input.mask"), config["causal"], config["scale"])
    dq, dk, dv = C.attention_backward(*args, cot, **bugs)
    return {"output.out": C.attention(*args, **bugs), "grad.q": dq, "grad.k": dk, "grad.v": dv}


def test_large_logits_case_passes_a_correct_float32_kernel_and_fails_one_without_max_shift(
    tmp_path, capsys
):
    export(tmp_path, ["dual_attention_large_logits"])
    config = json.loads((tmp_path / "manifest.json").read_text())["cases"][0]["config"]
    a = load_arrays(tmp_path / "dual_attention_large_logits.npz")
    logits = config["scale"] * np.einsum("...nd,...md->...nm", a["input.q"], a["input.k"])
    assert logits[a["input.mask"]].max() > 2 * 88.7  # float32 exp overflows beyond 88.7
    good = tmp_path / "dual_attention_large_logits.f32.npz"
    np.savez(good, **_case_candidate(tmp_path, "dual_attention_large_logits", np.float32))
    code, out, _ = _run(capsys, tmp_path, "--candidate", good)
    assert code == 0 and "precision float32" in out and "A = max(max|r|, operand magnitude)" in out
    bad = tmp_path / "dual_attention_large_logits.noshift.npz"
    cand = _case_candidate(tmp_path, "dual_attention_large_logits", np.float32, max_shift=False)
    np.savez(bad, **cand)
    code, out, err = _run(capsys, tmp_path, "--candidate", bad)
    assert code == 1 and "output.out: " in err and "NaN" in err


def test_atol_flag_widens_every_bound(golden, tmp_path, capsys):
    cand = _candidate(golden, "dual_attention")
    cand["grad.v"] = cand["grad.v"] + 1e-6
    np.savez(tmp_path / "dual_attention.npz", **cand)
    code, _, err = _run(capsys, golden, "--candidate", tmp_path / "dual_attention.npz")
    assert code == 1 and "grad.v: outside bound" in err
    code, out, _ = _run(
        capsys, golden, "--candidate", tmp_path / "dual_attention.npz", "--atol", "1e-5"
    )
    assert code == 0 and "+ 1e-05" in out


def test_long_case_only_with_the_long_flag_and_checkable(tmp_path, capsys):
    assert "dual_attention_long" not in case_names()
    assert "dual_attention_long" in case_names(long=True)
    assert main(["golden", "export", str(tmp_path), "--long", "--case", "dual_attention_long"]) == 0
    capsys.readouterr()
    (case,) = json.loads((tmp_path / "manifest.json").read_text())["cases"]
    assert case["name"] == "dual_attention_long" and case["config"]["causal"] is True
    assert "block_size=512" in case["config"]["reference"]
    assert (tmp_path / "dual_attention_long.npz").stat().st_size < 5_000_000
    a = load_arrays(tmp_path / "dual_attention_long.npz")
    assert a["input.q"].shape == (1, 1, 4096, 16) and a["grad.k"].shape == (1, 1, 4096, 16)
    # a float64 candidate off by 1e-8 relative in one gradient fails, naming it
    cand = {n: x for n, x in a.items() if n.split(".")[0] in ("output", "grad")}
    cand["grad.q"] = cand["grad.q"] * (1 + 1e-8)
    np.savez(tmp_path / "dual_attention_long.off.npz", **cand)
    code, out, err = _run(capsys, tmp_path, "--candidate", tmp_path / "dual_attention_long.off.npz")
    assert code == 1 and err.strip().endswith("grad.q: outside bound")
