"""The standing bad-input suite of the commands (issue 13, class 5).

``COMMAND_CASES``: a bad flag value, a bad path or a damaged golden directory given to
``python -m primal_np``, the exit status (2: bad input or environment) and a regex that
the one line on stderr must match (naming the flag or the file). No traceback, nothing on
stdout, and no work started: the output paths and the flags are checked first (a case
built by ``golden export``, a benchmark run or a training step fails the test).

``test_every_flag_of_every_command_has_a_row`` makes the table standing: every flag and
positional argument of every subcommand (found by argparse introspection) needs a row here
or, for ``train``, in ``tests/test_train_robust.py``'s ``TRAIN_FLAG_CASES`` (joined here).
``PENDING_FLAGS`` lists the flags that other branches are adding; it is emptied when they
are merged with their rows.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from typing import NamedTuple

import numpy as np
import pytest
from test_train_robust import TRAIN_FLAG_CASES

import primal_np.bench.command as bench_command
import primal_np.golden as golden
import primal_np.golden.check as golden_check
import primal_np.reproduce.run as reproduce_run
from primal_np import verify
from primal_np.cli import build_parser, main
from primal_np.model import steps as steps_mod

CASE = "dual_attention_masked"  # the golden case the check rows use


class CommandCase(NamedTuple):
    id: str
    argv: list  # "{file}": a regular file, "{dir}": an empty directory, "{missing}": a path
    #             that does not exist, "{golden}": a golden export of CASE (damaged by
    #             ``damage``), "{cand}": a correct candidate for CASE
    code: int
    flag: str  # the flag (or positional, by its metavar) the row is about
    stderr: str  # regex searched in the one line on stderr
    damage: object = None  # damage(golden_dir) before the command runs


def _manifest(d):
    return json.loads((d / "manifest.json").read_text())


def _write_manifest(d, m):
    (d / "manifest.json").write_text(json.dumps(m))


def _duplicate_case(d):
    m = _manifest(d)
    m["cases"].append(dict(m["cases"][0]))
    _write_manifest(d, m)


def _truncate(d):
    path = d / f"{CASE}.npz"
    path.write_bytes(path.read_bytes()[:300])


def _truncated_member(d):
    """A zip whose member .npy lost its data: "No data left in file" inside NumPy."""
    import zipfile

    path = d / f"{CASE}.npz"
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    with zipfile.ZipFile(path, "w") as zf:
        for n, data in members.items():
            zf.writestr(n, data[:-40] if n == "output.out.npy" else data)


def _other_version(d):
    m = _manifest(d)
    m["primal_np_version"] = "0.0.0-other"
    _write_manifest(d, m)


G = ["golden", "check", "{golden}", "--candidate", "{cand}"]  # a good check command
E = ["golden", "export", "{golden}"]  # export into the existing golden directory

COMMAND_CASES = [CommandCase(*row) for row in [
    # ---------------------------------------------------------------- verify
    ("verify-json-with-value", ["verify", "--json=yes"], 2, "--json", r"argument --json: ignored explicit argument 'yes'"),
    ("verify-only-missing-value", ["verify", "--only"], 2, "--only", r"argument --only: expected one argument"),
    ("verify-only-empty", ["verify", "--only", ""], 2, "--only", r"^verify: --only must name some text, got ''$"),
    ("verify-only-no-match", ["verify", "--only", "no-such-check"], 2, "--only", r"^verify: --only 'no-such-check' matches no check$"),
    ("verify-unknown-flag", ["verify", "--fast"], 2, "verify", r"unrecognized arguments: --fast"),
    # ---------------------------------------------------------------- golden export
    ("export-no-dir", ["golden", "export"], 2, "DIR", r"the following arguments are required: DIR"),
    ("export-empty-dir", ["golden", "export", ""], 2, "DIR", r"^golden export: DIR must be a directory path, got ''$"),
    ("export-into-a-file", ["golden", "export", "{file}"], 2, "DIR", r"^golden export: .*file: exists and is not a directory$"),
    ("export-under-a-file", ["golden", "export", "{file}/sub/dir"], 2, "DIR", r"^golden export: .*file/sub/dir: cannot be created: .*file is a file, not a directory$"),
    ("export-unknown-case", ["golden", "export", "{dir}", "--case", "nope"], 2, "--case", r"^golden export: --case: unknown case\(s\) \['nope'\]; known: dual_attention"),
    ("export-case-twice", ["golden", "export", "{dir}", "--case", CASE, "--case", CASE], 2, "--case", rf"^golden export: --case {CASE} is given more than once$"),
    ("export-case-missing-value", ["golden", "export", "{dir}", "--case"], 2, "--case", r"argument --case: expected one argument"),
    ("export-into-unreadable-manifest", [*E, "--case", "dual_attention"], 2, "DIR", r"^golden export: .*manifest.json: not valid JSON .*; remove it or export into another directory$",
     lambda d: (d / "manifest.json").write_text("{")),
    ("export-into-duplicate-manifest", [*E, "--case", "dual_attention"], 2, "DIR", r"^golden export: .*manifest.json: case name\(s\) \['dual_attention_masked'\] appear more than once",
     _duplicate_case),
    ("export-into-manifest-missing-file", [*E, "--case", "dual_attention"], 2, "DIR", rf"^golden export: .*manifest.json: lists case '{CASE}' whose file {CASE}.npz is missing",
     lambda d: (d / f"{CASE}.npz").unlink()),
    ("export-case-into-other-version", [*E, "--case", "dual_attention"], 2, "--case", r"^golden export: .*manifest.json: written by primal_np 0.0.0-other, this is .*; export every case \(without --case\)",
     _other_version),
    # ---------------------------------------------------------------- golden check
    ("check-no-candidate", ["golden", "check", "{golden}"], 2, "--candidate", r"the following arguments are required: --candidate"),
    ("check-no-dir", ["golden", "check"], 2, "DIR", r"the following arguments are required: DIR, --candidate"),
    ("check-missing-dir", ["golden", "check", "{missing}", "--candidate", "{cand}"], 2, "DIR", r"^golden check: .*missing: no such directory"),
    ("check-dir-is-a-file", ["golden", "check", "{file}", "--candidate", "{cand}"], 2, "DIR", r"^golden check: .*file: not a directory"),
    ("check-no-manifest", G, 2, "DIR", r"^golden check: .*manifest.json: no manifest", lambda d: (d / "manifest.json").unlink()),
    ("check-manifest-not-json", G, 2, "DIR", r"^golden check: .*manifest.json: not valid JSON", lambda d: (d / "manifest.json").write_text("[1,")),
    ("check-manifest-not-an-object", G, 2, "DIR", r"^golden check: .*manifest.json: top level must be an object$", lambda d: (d / "manifest.json").write_text("[]")),
    ("check-duplicate-case-names", G, 2, "DIR", r"^golden check: .*manifest.json: case name\(s\) \['dual_attention_masked'\] appear more than once$", _duplicate_case),
    ("check-missing-case-file", G, 2, "DIR", rf"^golden check: .*{CASE}.npz: file not found$", lambda d: (d / f"{CASE}.npz").unlink()),
    ("check-truncated-npz", G, 2, "DIR", rf"^golden check: .*{CASE}.npz: not a readable .npz file", _truncate),
    ("check-truncated-npz-member", G, 2, "DIR", rf"^golden check: .*{CASE}.npz: ", _truncated_member),
    ("check-candidate-missing", ["golden", "check", "{golden}", "--candidate", "{missing}"], 2, "--candidate", r"^golden check: .*missing: candidate file not found$"),
    ("check-candidate-a-dir", ["golden", "check", "{golden}", "--candidate", "{dir}"], 2, "--candidate", r"^golden check: .*dir: cannot read the candidate"),
    ("check-candidate-not-npz", ["golden", "check", "{golden}", "--candidate", "{file}", "--case", CASE], 2, "--candidate", r"^golden check: .*file: not a readable .npz file"),
    ("check-unknown-case", [*G, "--case", "nope"], 2, "--case", r"^golden check: .*manifest.json: no case 'nope'"),
    ("check-dtype-unknown", [*G, "--dtype", "float8"], 2, "--dtype", r"argument --dtype: invalid choice: 'float8'"),
    ("check-k-negative", [*G, "--k=-1"], 2, "--k", r"argument --k: must be a finite number >= 0, got '-1'"),
    ("check-k-nan", [*G, "--k", "nan"], 2, "--k", r"argument --k: must be a finite number >= 0, got 'nan'"),
    ("check-k-text", [*G, "--k", "two"], 2, "--k", r"argument --k: must be a number, got 'two'"),
    ("check-json-with-value", [*G, "--json=1"], 2, "--json", r"argument --json: ignored explicit argument '1'"),
    ("check-atol-negative", [*G, "--atol", "-1"], 2, "--atol", r"argument --atol: must be a finite number >= 0"),
    ("check-atol-nan", [*G, "--atol", "nan"], 2, "--atol", r"argument --atol: must be a finite number >= 0"),
    ("check-atol-text", [*G, "--atol", "tiny"], 2, "--atol", r"argument --atol: must be a number, got 'tiny'"),
    ("export-long-with-value", ["golden", "export", "{dir}", "--long=1"], 2, "--long", r"argument --long: ignored explicit argument '1'"),
    # ---------------------------------------------------------------- bench
    ("bench-sizes-zero", ["bench", "--sizes", "0"], 2, "--sizes", r"argument --sizes: must be sequence lengths N,N,\.\.\. \(each an integer >= 1\), got '0'"),
    ("bench-sizes-negative", ["bench", "--sizes", "512,-4"], 2, "--sizes", r"argument --sizes: .* got '512,-4'"),
    ("bench-sizes-empty", ["bench", "--sizes", ""], 2, "--sizes", r"argument --sizes: .* got ''"),
    ("bench-sizes-text", ["bench", "--sizes", "1k"], 2, "--sizes", r"argument --sizes: .* got '1k'"),
    ("bench-compare-zero", ["bench", "--compare", "0x4096"], 2, "--compare", r"argument --compare: must be BxN with B, N integers >= 1 \(e.g. 4x4096\), got '0x4096'"),
    ("bench-compare-malformed", ["bench", "--compare", "4096"], 2, "--compare", r"argument --compare: must be BxN .* got '4096'"),
    ("bench-repeats-zero", ["bench", "--repeats", "0"], 2, "--repeats", r"argument --repeats: must be an integer >= 1, got '0'"),
    ("bench-repeats-negative", ["bench", "--repeats", "-3"], 2, "--repeats", r"argument --repeats: must be an integer >= 1, got '-3'"),
    ("bench-repeats-float", ["bench", "--repeats", "2.5"], 2, "--repeats", r"argument --repeats: must be an integer >= 1, got '2.5'"),
    ("bench-matmul-size-zero", ["bench", "--matmul-size", "0"], 2, "--matmul-size", r"argument --matmul-size: must be an integer >= 1, got '0'"),
    ("bench-json-with-value", ["bench", "--json=1"], 2, "--json", r"argument --json: ignored explicit argument '1'"),
    ("bench-quick-with-value", ["bench", "--quick=yes"], 2, "--quick", r"argument --quick: ignored explicit argument 'yes'"),
    ("bench-no-torch-with-value", ["bench", "--no-torch=0"], 2, "--no-torch", r"argument --no-torch: ignored explicit argument '0'"),
    ("bench-rounds-zero", ["bench", "--rounds", "0"], 2, "--rounds", r"argument --rounds: must be an integer >= 1, got '0'"),
    ("bench-rounds-text", ["bench", "--rounds", "x"], 2, "--rounds", r"argument --rounds: must be an integer >= 1, got 'x'"),
    ("bench-no-compile-with-value", ["bench", "--no-compile=1"], 2, "--no-compile", r"argument --no-compile: ignored explicit argument '1'"),
    ("bench-interleaved-only-with-value", ["bench", "--interleaved-only=1"], 2, "--interleaved-only", r"argument --interleaved-only: ignored explicit argument '1'"),
    ("bench-no-large-with-value", ["bench", "--no-large=1"], 2, "--no-large", r"argument --no-large: ignored explicit argument '1'"),
    # ---------------------------------------------------------------- train (store-true flags;
    # the flags that take a value are TRAIN_FLAG_CASES in test_train_robust.py)
    ("train-json-with-value", ["train", "--json=1"], 2, "--json", r"argument --json: ignored explicit argument '1'"),
    ("train-quiet-with-value", ["train", "--quiet=no"], 2, "--quiet", r"argument --quiet: ignored explicit argument 'no'"),
    ("train-trace-x-with-value", ["train", "--trace-x=false"], 2, "--trace-x", r"argument --trace-x: ignored explicit argument 'false'"),
    ("train-data-independent-with-value", ["train", "--data-independent=0"], 2, "--data-independent", r"argument --data-independent: ignored explicit argument '0'"),
    ("train-no-rscores-with-value", ["train", "--no-rscores=1"], 2, "--no-rscores", r"argument --no-rscores: ignored explicit argument '1'"),
    # ---------------------------------------------------------------- reproduce
    ("reproduce-claim-unknown", ["reproduce", "6", "--out", "{dir}"], 2, "CLAIM", r"^reproduce: unknown claim '6'; valid: 1, 2, .*all"),
    ("reproduce-claim-empty", ["reproduce", "", "--out", "{dir}"], 2, "CLAIM", r"^reproduce: unknown claim ''"),
    ("reproduce-seeds-zero", ["reproduce", "1", "--seeds", "0", "--out", "{dir}"], 2, "--seeds", r"^reproduce: --seeds must be an integer >= 1, got '0'$"),
    ("reproduce-seeds-text", ["reproduce", "1", "--seeds", "five", "--out", "{dir}"], 2, "--seeds", r"^reproduce: --seeds must be an integer >= 1, got 'five'$"),
    ("reproduce-jobs-zero", ["reproduce", "1", "--jobs", "0", "--out", "{dir}"], 2, "--jobs", r"^reproduce: --jobs must be an integer >= 1, got '0'$"),
    ("reproduce-jobs-float", ["reproduce", "1", "--jobs", "1.5", "--out", "{dir}"], 2, "--jobs", r"^reproduce: --jobs must be an integer >= 1, got '1.5'$"),
    ("reproduce-out-is-a-file", ["reproduce", "1", "--out", "{file}"], 2, "--out", r"^reproduce: --out '.*file' is not a writable directory"),
    ("reproduce-out-under-a-file", ["reproduce", "1", "--out", "{file}/sub"], 2, "--out", r"^reproduce: --out '.*file/sub' is not a writable directory"),
    ("reproduce-rerun-all", ["reproduce", "all", "--rerun", "accuracy/listops/primalformer/seed0", "--out", "{dir}"], 2, "--rerun", r"^reproduce: --rerun needs one claim, not 'all'$"),
    ("reproduce-rerun-no-record", ["reproduce", "1", "--rerun", "accuracy/listops/primalformer/seed0", "--out", "{dir}"], 2, "--rerun", r"^reproduce: --out: cannot read .*accuracy\.json \(.*No such file"),
    ("reproduce-quick-with-value", ["reproduce", "1", "--quick=1"], 2, "--quick", r"argument --quick: ignored explicit argument '1'"),
    ("reproduce-rerun-no-such-row", ["reproduce", "1", "--rerun", "accuracy/nothing", "--out", "{record}"], 2, "--rerun", r"^reproduce: --rerun: no row 'accuracy/nothing' in .*accuracy\.json$"),
    ("reproduce-rerun-not-a-record", ["reproduce", "1", "--rerun", "accuracy/nothing", "--out", "{badrecord}"], 2, "--rerun", r"^reproduce: --out: .*accuracy\.json is not a reproduce record \(no list of rows\)$"),
    ("reproduce-json-with-value", ["reproduce", "1", "--json=yes"], 2, "--json", r"argument --json: ignored explicit argument 'yes'"),
    # ---------------------------------------------------------------- the command line itself
    ("no-command", [], 2, "COMMAND", r"the following arguments are required: COMMAND"),
    ("unknown-command", ["serve"], 2, "COMMAND", r"argument COMMAND: invalid choice: 'serve'"),
    ("golden-no-action", ["golden"], 2, "ACTION", r"the following arguments are required: ACTION"),
]]  # fmt: skip

# Flags that other branches are adding; the lead empties this list when they are merged
# (with their rows). "*": the whole subcommand. Nothing that exists on this branch.
PENDING_FLAGS: set[tuple[str, str]] = set()


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def golden_export(tmp_path_factory):
    d = tmp_path_factory.mktemp("golden") / "g"
    assert main(["golden", "export", str(d), "--case", CASE]) == 0
    arrays = golden.load_arrays(d / f"{CASE}.npz")
    cand = d.parent / f"{CASE}.npz"  # the reference's own outputs: a candidate that passes
    np.savez(cand, **{k: v for k, v in arrays.items() if k.startswith(("output.", "grad."))})
    return d, cand


@pytest.fixture
def no_work(monkeypatch):
    """Every refusal comes before any work: building a golden case, a benchmark run or a
    training step fails the test. verify's checks are replaced by one quick row (its
    --only filter needs the rows' text)."""

    def forbidden(*args, **kw):
        raise AssertionError("work started before the arguments were checked")

    monkeypatch.setattr(golden, "build_case", forbidden)
    monkeypatch.setattr(golden_check, "build_case", forbidden)  # bound at its import
    monkeypatch.setattr(bench_command, "run_bench", forbidden)
    monkeypatch.setattr(steps_mod, "loss_and_grads", forbidden)
    monkeypatch.setattr(reproduce_run, "run_claim", forbidden)
    monkeypatch.setattr(reproduce_run, "rerun", forbidden)
    monkeypatch.setattr(verify, "_REGISTRY", [("demo", lambda: verify.result("demo row", 0, 1))])
    monkeypatch.setattr(verify, "_CHECK_MODULES", ())


def _paths(tmp_path, golden_export, damage):
    (tmp_path / "file").write_text("not a directory, not an npz")
    (tmp_path / "dir").mkdir()
    g = tmp_path / "golden"
    shutil.copytree(golden_export[0], g)
    if damage is not None:
        damage(g)
    rec, bad = tmp_path / "record", tmp_path / "badrecord"  # a reproduce record, a damaged one
    rec.mkdir()
    (rec / "accuracy.json").write_text(json.dumps({"rows": [{"id": "accuracy/x", "config": {}}]}))
    bad.mkdir()
    (bad / "accuracy.json").write_text(json.dumps([1, 2]))
    return {"file": str(tmp_path / "file"), "dir": str(tmp_path / "dir"),
            "missing": str(tmp_path / "missing"), "golden": str(g),
            "cand": str(golden_export[1]), "record": str(rec), "badrecord": str(bad)}  # fmt: skip


def _run(argv) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's own refusals
        return exc.code


# --------------------------------------------------------------------------- the tests
@pytest.mark.parametrize("case", COMMAND_CASES, ids=[c.id for c in COMMAND_CASES])
def test_bad_command(case, tmp_path, golden_export, capsys, no_work):
    paths = _paths(tmp_path, golden_export, case.damage)
    argv = [a.format(**paths) for a in case.argv]
    before = sorted(os.listdir(paths["golden"]))
    assert _run(argv) == case.code
    out, err = capsys.readouterr()
    assert out == "", out
    assert err.endswith("\n") and err.count("\n") == 1, err  # one line
    assert "Traceback" not in err
    assert re.search(case.stderr, err.rstrip("\n")), err
    assert sorted(os.listdir(paths["golden"])) == before  # nothing written on refusal


def test_the_good_commands_of_the_table_work(golden_export, tmp_path, capsys):
    """The rows fail because of their own flag: the same commands without it succeed."""
    d, cand = golden_export
    assert main(["golden", "check", str(d), "--candidate", str(cand)]) == 0
    assert main(["golden", "export", str(tmp_path / "new"), "--case", CASE]) == 0


def _commands(parser, prefix=""):
    """(command path, parser) for every subcommand, e.g. ("golden check", its parser)."""
    for action in parser._subparsers._group_actions if parser._subparsers else []:
        for name, sub in action.choices.items():
            path = f"{prefix} {name}".strip()
            yield path, sub
            yield from _commands(sub, path)


def _arguments(parser):
    """The option strings and positional metavars of one parser (not --help, not the
    subcommand choice, which is covered by the rows flagged COMMAND and ACTION)."""
    out = set()
    for a in parser._actions:
        if isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        out |= set(a.option_strings) if a.option_strings else {a.metavar or a.dest}
    return out


def test_every_flag_of_every_command_has_a_row():
    parser = build_parser()
    covered = {(c.argv[0] if c.argv else "", c.flag) for c in COMMAND_CASES}
    covered |= {(" ".join(c.argv[:2]), c.flag) for c in COMMAND_CASES if c.argv[:1] == ["golden"]}
    covered |= {("train", c.flag) for c in TRAIN_FLAG_CASES}
    missing = []
    for path, sub in _commands(parser):
        if (path, "*") in PENDING_FLAGS:
            continue
        for flag in _arguments(sub):
            if (path, flag) not in covered and (path, flag) not in PENDING_FLAGS:
                missing.append(f"{path} {flag}")
    assert not missing, "flags without a bad-input row: " + ", ".join(sorted(missing))
    stale = [p for p in PENDING_FLAGS if p in covered]
    assert not stale, f"PENDING_FLAGS entries that now have rows (remove them): {stale}"


def test_export_into_an_existing_export_keeps_the_manifest_consistent(tmp_path, capsys):
    """The documented choice: an export with --case into an existing export of the same
    version adds to it, and golden check then finds every case whose file is there."""
    d = tmp_path / "g"
    assert main(["golden", "export", str(d), "--case", CASE]) == 0
    assert main(["golden", "export", str(d), "--case", "dual_attention"]) == 0
    assert main(["golden", "export", str(d), "--case", CASE]) == 0  # replaced, not repeated
    names = [c["name"] for c in _manifest(d)["cases"]]
    assert names == [CASE, "dual_attention"]
    assert sorted(p.name for p in d.iterdir()) == sorted(
        [f"{CASE}.npz", "dual_attention.npz", "manifest.json"]
    )  # no temporary file left
    for name in names:
        assert golden.load_arrays(d / f"{name}.npz")
    capsys.readouterr()


def test_export_of_every_case_replaces_another_versions_manifest(tmp_path, monkeypatch):
    d = tmp_path / "g"
    d.mkdir()
    _write_manifest(d, {"format": golden.FORMAT, "version": golden.VERSION,
                        "primal_np_version": "0.0.0-other", "cases": []})  # fmt: skip
    monkeypatch.setattr(golden, "case_names", lambda long=False: [CASE])
    golden.export(d)
    m = _manifest(d)
    assert [c["name"] for c in m["cases"]] == [CASE] and m["primal_np_version"] != "0.0.0-other"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes anywhere")
def test_export_into_an_unwritable_directory(tmp_path, capsys, no_work):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert main(["golden", "export", str(ro / "g")]) == 2
    finally:
        ro.chmod(0o700)
    assert (
        capsys.readouterr().err
        == f"golden export: {ro / 'g'}: is not writable: Permission denied\n"
    )


def test_export_into_an_unwritable_directory_as_root(tmp_path, capsys, no_work, monkeypatch):
    """The same where permissions cannot be tested (root): the probe write is refused."""

    def refuse(*args, **kw):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)  # the probe of _files.prepare_output_dir
    assert main(["golden", "export", str(tmp_path / "g")]) == 2
    assert capsys.readouterr().err == (
        f"golden export: {tmp_path / 'g'}: is not writable: Permission denied\n"
    )


def test_a_full_disk_during_the_export_is_one_line(tmp_path, capsys, monkeypatch):
    def full(path, arrays):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(golden, "write_npz", full)
    assert main(["golden", "export", str(tmp_path / "g"), "--case", CASE]) == 2
    out, err = capsys.readouterr()
    assert (
        err == f"golden export: {tmp_path / 'g'}: could not be written: No space left on device\n"
    )
    assert not list((tmp_path / "g").iterdir())  # no partial file, no manifest


class _ClosedPipe:
    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self):
        raise BrokenPipeError(32, "Broken pipe")


def test_a_closed_pipe_ends_quietly(golden_export, monkeypatch, capsys):
    d, cand = golden_export
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    assert main(["golden", "check", str(d), "--candidate", str(cand)]) == 141
    assert capsys.readouterr().err == ""


def test_golden_check_into_head_exits_quietly(golden_export):
    """``golden check ... | head``: the reader is gone before anything is written."""
    d, cand = golden_export
    proc = subprocess.Popen(
        [sys.executable, "-m", "primal_np", "golden", "check", str(d), "--candidate", str(cand)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # as `head` does when it has read enough
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert err == "", err
