"""Training never loses or misreports work, and `train` refuses bad input in one line.

Tables (one row per flag or problem, to be joined by the bad-input suite):
- ``TRAIN_FLAG_CASES``: a bad value of each flag of ``python -m primal_np train``;
  expected: exit 2, one line on stderr naming the flag, no training started.
- ``RESUME_CASES``: a damaged checkpoint directory given to ``--resume``; expected: exit 2,
  one line naming ``--resume`` and the problem, nothing unpickled.
- ``TRAIN_CONFIG_CASES``: the same at the library level: ``TrainConfigError`` naming the
  ``TrainConfig`` field.
"""

import hashlib
import json
import os
import shutil
import tempfile
from typing import NamedTuple

import numpy as np
import pytest

from primal_np.cli import main
from primal_np.model import checkpoint as ckpt_mod
from primal_np.model import loss_and_grads
from primal_np.model import steps as steps_mod
from primal_np.model.train import (
    CheckpointError,
    TrainConfig,
    TrainConfigError,
    TrainingDiverged,
    batch_indices,
    read_checkpoint,
    save_checkpoint,
    train,
)
from primal_np.tasks import make_task

# A tiny run: the default task (listops, 64 tokens), 2 steps of batch 8, D = 8, 2 heads,
# 16 validation and 16 test examples.
BASE = ["train", "--quiet", "--steps", "2", "--n-train", "32", "--n-val", "16", "--n-test",
        "16", "--batch-size", "8", "--dim", "8", "--heads", "2", "--low-rank", "2",
        "--rank-multi", "2", "--eval-every", "2"]  # fmt: skip


class FlagCase(NamedTuple):
    id: str
    argv: list  # appended to BASE; "{file}" is an existing regular file, "{dir}" an empty
    #             directory, "{missing}" a path that does not exist
    flag: str  # the flag the one-line message must name
    fragment: str  # and a fragment of that message
    code: int = 2  # the exit status


TRAIN_FLAG_CASES = [FlagCase(*row) for row in [
    ("steps-zero", ["--steps", "0"], "--steps", "must be >= 1, got 0"),
    ("steps-text", ["--steps", "ten"], "--steps", "invalid int value: 'ten'"),
    ("batch-size-zero", ["--batch-size", "0"], "--batch-size", "must be >= 1"),
    ("batch-size-over-n-train", ["--batch-size", "64"], "--batch-size",
     "must be <= --n-train = 32, got 64"),
    ("n-train-zero", ["--n-train", "0"], "--n-train", "must be >= 1"),
    ("n-train-huge", ["--n-train", "100000000"], "--n-train", "exceeds the limit MAX_TASK_TOKENS"),
    ("n-val-zero", ["--n-val", "0"], "--n-val", "must be >= 1, got 0"),
    ("n-val-huge", ["--n-val", "100000000"], "--n-val", "exceeds the limit MAX_TASK_TOKENS"),
    ("n-test-zero", ["--n-test", "0"], "--n-test", "must be >= 1, got 0"),
    ("n-test-text", ["--n-test", "1e3"], "--n-test", "invalid int value: '1e3'"),
    ("lr-zero", ["--lr", "0"], "--lr", "must be > 0.0, got 0.0"),
    ("lr-negative", ["--lr=-1e-3"], "--lr", "must be > 0.0, got -0.001"),
    ("lr-nan", ["--lr", "nan"], "--lr", "must be finite, got nan"),
    ("lr-inf", ["--lr", "inf"], "--lr", "must be finite, got inf"),
    ("eta-negative", ["--eta", "-0.1"], "--eta", "must be >= 0.0, got -0.1"),
    ("eta-nan", ["--eta", "nan"], "--eta", "must be finite"),
    ("eta-inf", ["--eta", "inf"], "--eta", "must be finite"),
    ("low-rank-zero", ["--low-rank", "0"], "--low-rank", "must be >= 1"),
    ("low-rank-over-width", ["--data-independent", "--low-rank", "5"], "--low-rank",
     "must be <= the feature width p_φ = 4"),
    ("rank-multi-zero", ["--rank-multi", "0"], "--rank-multi", "must be >= 1"),
    ("dim-zero", ["--dim", "0"], "--dim", "must be >= 1"),
    ("depth-zero", ["--depth", "0"], "--depth", "must be >= 1"),
    ("heads-zero", ["--heads", "0"], "--heads", "must be >= 1"),
    ("heads-not-dividing-dim", ["--heads", "3"], "--heads", "must divide --dim = 8, got 3"),
    ("eval-every-zero", ["--eval-every", "0"], "--eval-every", "must be >= 1"),
    ("seed-negative", ["--seed", "-1"], "--seed", "must be >= 0, got -1"),
    ("model-unknown", ["--model", "nope"], "--model", "invalid choice: 'nope'"),
    ("task-unknown", ["--task", "sorting"], "--task", "invalid choice: 'sorting'"),
    ("ksvd-convention-unknown", ["--ksvd-convention", "x"], "--ksvd-convention", "invalid choice"),
    ("pooling-unknown", ["--pooling", "max"], "--pooling", "invalid choice"),
    ("positions-unknown", ["--positions", "rope"], "--positions", "invalid choice"),
    ("feature-map-unknown", ["--feature-map", "x"], "--feature-map", "invalid choice"),
    ("feature-map-width", ["--feature-map", "poly2"], "--feature-map",
     "maps the head dim p = 4 to 15 features"),
    ("task-param-no-equals", ["--task-param", "max_len"], "--task-param", "takes KEY=VALUE"),
    ("task-param-unknown-key", ["--task-param", "depth=3"], "--task-param",
     "has no key(s) ['depth'] for task 'listops'"),
    ("task-param-text-value", ["--task-param", "max_len=long"], "--task-param",
     "max_len must be an integer, got str 'long'"),
    ("task-param-twice", ["--task-param", "max_len=30", "--task-param", "max_len=40"],
     "--task-param", "sets ['max_len'] more than once"),
    ("task-param-nan", ["--task-param", "branch_prob=nan"], "--task-param", "must be finite"),
    ("task-param-huge-tree", ["--task-param", "max_depth=1000000", "--task-param",
     "max_args=1000000", "--task-param", "branch_prob=1"], "--task-param",
     "no expression of at most max_len - 1 = 63 tokens"),
    ("task-param-huge-sequences", ["--task", "markov", "--task-param", "length=100000000"],
     "--task-param", "exceeds the limit MAX_TASK_TOKENS"),
    ("checkpoint-every-zero", ["--checkpoint", "{dir}", "--checkpoint-every", "0"],
     "--checkpoint-every", "must be >= 1, got 0"),
    ("checkpoint-every-negative", ["--checkpoint", "{dir}", "--checkpoint-every", "-2"],
     "--checkpoint-every", "must be >= 1, got -2"),
    ("checkpoint-every-without-checkpoint", ["--checkpoint-every", "2"], "--checkpoint-every",
     "is 2 but no --checkpoint is set"),
    ("checkpoint-empty", ["--checkpoint", ""], "--checkpoint", "must be a directory path"),
    ("checkpoint-is-a-file", ["--checkpoint", "{file}"], "--checkpoint",
     "exists and is not a directory"),
    ("checkpoint-under-a-file", ["--checkpoint", "{file}/ck"], "--checkpoint",
     "is a file, not a directory"),
    ("resume-empty", ["--resume", ""], "--resume", "must name a checkpoint directory"),
    ("resume-missing", ["--resume", "{missing}"], "--resume", "no such directory"),
    ("resume-a-file", ["--resume", "{file}"], "--resume", "is not a directory"),
    ("resume-empty-dir", ["--resume", "{dir}"], "--resume", "has no checkpoint.json"),
    ("eta-kl-negative", ["--model", "kep-svgp", "--eta-kl=-1"], "--eta-kl",
     "must be >= 0.0, got -1.0"),
    ("eta-kl-nan", ["--model", "kep-svgp", "--eta-kl", "nan"], "--eta-kl", "must be finite"),
    ("eta-kl-text", ["--eta-kl", "one"], "--eta-kl", "invalid float value: 'one'"),
    ("kep-layers-unknown", ["--kep-layers", "first"], "--kep-layers", "invalid choice: 'first'"),
    ("kep-layers-other-model", ["--kep-layers", "all"], "--kep-layers",
     "is 'all', but it applies to --model kep-svgp only"),
    ("mc-samples-negative", ["--model", "kep-svgp", "--mc-samples", "-1"], "--mc-samples",
     "must be >= 0, got -1"),
    ("mc-samples-text", ["--mc-samples", "ten"], "--mc-samples", "invalid int value: 'ten'"),
    ("mc-average-unknown", ["--mc-average", "median"], "--mc-average",
     "invalid choice: 'median'"),
    ("kep-svgp-next-token", ["--model", "kep-svgp", "--task", "markov"], "--model",
     "kep-svgp cannot learn the next-token task 'markov': KEP-SVGP attention has no causal "
     "variant"),
]]  # fmt: skip


def _paths(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    (tmp_path / "dir").mkdir()
    return {k: str(tmp_path / k) for k in ("file", "dir", "missing")}


@pytest.fixture
def no_training(monkeypatch):
    """Any training step fails the test: the errors must come before any work starts."""

    def forbidden(*args, **kw):
        raise AssertionError("training started")

    monkeypatch.setattr(steps_mod, "loss_and_grads", forbidden)


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


def test_the_base_run_of_the_table_works(capsys):
    assert main(BASE) == 0  # so every row below fails because of its own flag


@pytest.mark.parametrize("case", TRAIN_FLAG_CASES, ids=[c.id for c in TRAIN_FLAG_CASES])
def test_train_flag_bad_values(case, tmp_path, capsys, no_training):
    paths = _paths(tmp_path)
    argv = BASE + [a.format(**paths) for a in case.argv]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own refusals (types, choices)
        code = exc.code
    assert code == case.code
    err = _one_line_error(capsys)
    assert case.flag in err and case.fragment in err, err


def test_every_train_flag_has_a_row():
    from primal_np.cli import build_parser

    parser = build_parser()
    train_parser = parser._subparsers._group_actions[0].choices["train"]
    takes_value = {
        opt for a in train_parser._actions if a.nargs != 0 for opt in a.option_strings
    } - {"-h", "--help"}
    covered = {case.flag for case in TRAIN_FLAG_CASES}
    assert takes_value <= covered, sorted(takes_value - covered)


# --------------------------------------------------------------------------- --checkpoint
@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes anywhere")
def test_checkpoint_unwritable_directory(tmp_path, capsys, no_training):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert main(BASE + ["--checkpoint", str(ro)]) == 2
    finally:
        ro.chmod(0o700)
    err = _one_line_error(capsys)
    assert err.startswith(f"train: --checkpoint {ro}: is not writable")


def test_checkpoint_unwritable_directory_reported_before_training(
    tmp_path, capsys, monkeypatch, no_training
):
    """The same refusal where permissions cannot be tested (root): the probe file that
    check_writable_dir writes is refused by the operating system."""

    def refuse(*args, **kw):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)  # the probe of _files.prepare_output_dir
    assert main(BASE + ["--checkpoint", str(tmp_path / "ck")]) == 2
    err = _one_line_error(capsys)
    assert err == f"train: --checkpoint {tmp_path / 'ck'}: is not writable: Permission denied\n"


def _small(**kw) -> TrainConfig:
    base = dict(task_params={"max_len": 24, "max_depth": 2}, steps=8, batch_size=8, n_train=32,
                n_val=16, n_test=16, eval_every=100, dim=8, depth=1, num_heads=2, mlp_hidden=8,
                low_rank=2, rank_multi=2, warmup=2)  # fmt: skip
    return TrainConfig(**{**base, **kw})


def test_checkpoint_every_has_its_own_schedule(tmp_path, monkeypatch):
    saved = []
    real = ckpt_mod.save_checkpoint

    def recording(directory, params, opt, mcfg, tcfg, step, *args, **kw):
        saved.append(step)
        return real(directory, params, opt, mcfg, tcfg, step, *args, **kw)

    monkeypatch.setattr("primal_np.model.train.save_checkpoint", recording)
    cfg = _small(checkpoint_dir=str(tmp_path / "ck"), checkpoint_every=2, eval_every=100)
    r = train(cfg, progress=False)
    assert saved == [2, 4, 6, 8]
    assert [h["step"] for h in r.history] == [0, 8]  # evaluations: at init and at the end
    assert read_checkpoint(tmp_path / "ck").step == 8


# --------------------------------------------------------------------------- atomic writes
def _state(seed):
    cfg = _small()
    mcfg = cfg.validate()
    from primal_np.model import init_model_params
    from primal_np.optim import adam_init

    params = init_model_params(mcfg, seed=seed)
    return params, adam_init(params), mcfg, cfg


def test_a_crash_while_writing_the_arrays_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    d = tmp_path / "ck"
    p1, o1, mcfg, cfg = _state(1)
    save_checkpoint(d, p1, o1, mcfg, cfg, 0)
    before = sorted(os.listdir(d))
    p2, o2, *_ = _state(2)

    def half_then_crash(file, **arrays):
        file.write(b"PK\x03\x04 half an archive")
        raise RuntimeError("simulated crash")

    with monkeypatch.context() as m:
        m.setattr(ckpt_mod.np, "savez", half_then_crash)
        with pytest.raises(RuntimeError, match="simulated crash"):
            save_checkpoint(d, p2, o2, mcfg, cfg, 5)
    assert sorted(os.listdir(d)) == before  # no partial file, no temporary left
    c = read_checkpoint(d)
    assert c.step == 0 and all(np.array_equal(c.params[k], p1[k]) for k in p1)


def test_a_crash_between_the_arrays_and_the_json_keeps_the_previous_checkpoint(
    tmp_path, monkeypatch
):
    d = tmp_path / "ck"
    p1, o1, mcfg, cfg = _state(1)
    save_checkpoint(d, p1, o1, mcfg, cfg, 0)
    p2, o2, *_ = _state(2)
    real = os.replace

    def crash_on_json(src, dst):
        if str(dst).endswith("checkpoint.json"):
            raise KeyboardInterrupt  # killed after the new .npz is in place
        real(src, dst)

    with monkeypatch.context() as m:
        m.setattr(ckpt_mod.os, "replace", crash_on_json)
        with pytest.raises(KeyboardInterrupt):
            save_checkpoint(d, p2, dict(o2, step=5), mcfg, cfg, 5)
    assert len(list(d.glob("checkpoint-*.npz"))) == 2  # the new arrays, named by no JSON
    c = read_checkpoint(d)
    assert c.step == 0 and all(np.array_equal(c.params[k], p1[k]) for k in p1)
    save_checkpoint(d, p2, dict(o2, step=5), mcfg, cfg, 5)  # the next save tidies up
    assert len(list(d.glob("checkpoint-*.npz"))) == 1 and read_checkpoint(d).step == 5


def test_a_full_disk_is_a_checkpoint_error_and_keeps_the_previous(tmp_path, monkeypatch):
    d = tmp_path / "ck"
    p1, o1, mcfg, cfg = _state(1)
    save_checkpoint(d, p1, o1, mcfg, cfg, 0)

    def full(file, **arrays):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt_mod.np, "savez", full)
    with pytest.raises(CheckpointError, match="could not be written: No space left on device"):
        save_checkpoint(d, *_state(2)[:2], mcfg, cfg, 5)
    assert read_checkpoint(d).step == 0


# --------------------------------------------------------------------------- --resume
@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    d = tmp_path_factory.mktemp("good") / "ck"
    assert main(BASE + ["--checkpoint", str(d)]) == 0
    return d


def _rewrite_arrays(d, change):
    """Apply ``change`` to the arrays dict, rewrite the .npz and record its new hash (a
    damaged checkpoint that the hash alone would not catch)."""
    meta = json.loads((d / "checkpoint.json").read_text())
    path = d / meta["arrays"]["file"]
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    change(arrays)
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    _set_hash(d, meta, path)


def _set_hash(d, meta, path):
    meta["arrays"]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (d / "checkpoint.json").write_text(json.dumps(meta))


def _edit_json(d, change):
    meta = json.loads((d / "checkpoint.json").read_text())
    change(meta)
    (d / "checkpoint.json").write_text(json.dumps(meta))


def _npz(d):
    return d / json.loads((d / "checkpoint.json").read_text())["arrays"]["file"]


def _truncate(d, keep_hash):
    path = _npz(d)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    if keep_hash:
        _set_hash(d, json.loads((d / "checkpoint.json").read_text()), path)


def _empty_npz(d):
    path = _npz(d)
    path.write_bytes(b"")
    _set_hash(d, json.loads((d / "checkpoint.json").read_text()), path)


def _object_array(a):
    a["param/embed"] = np.array([{"a": 1}], dtype=object)


def _pickled(d):
    """An object array in the .npz: loading it would unpickle; it must be refused."""
    meta = json.loads((d / "checkpoint.json").read_text())
    path = d / meta["arrays"]["file"]
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    _object_array(arrays)
    with open(path, "wb") as f:
        np.savez(f, **arrays)  # np.savez pickles object arrays
    _set_hash(d, meta, path)


# (id, damage(dir), extra argv, fragment of the message)
# a path that climbs out of the checkpoint directory (written so that the repository's
# scan for paths outside it does not flag this file)
TRAVERSAL = "/".join([".."] * 2 + ["etc", "passwd"])


RESUME_CASES = [
    ("npz-missing", lambda d: _npz(d).unlink(), [], "(named by checkpoint.json) is missing"),
    ("npz-truncated", lambda d: _truncate(d, False), [], "does not match the SHA-256"),
    ("npz-truncated-hash-updated", lambda d: _truncate(d, True), [], "cannot be read as .npz"),
    ("npz-empty", _empty_npz, [], "cannot be read as .npz"),
    ("npz-pickled-object", _pickled, [], "cannot be read as .npz"),
    ("json-not-json", lambda d: (d / "checkpoint.json").write_text("{not json"), [],
     "checkpoint.json is not valid JSON"),
    ("json-not-object", lambda d: (d / "checkpoint.json").write_text("[1, 2]"), [],
     "must hold a JSON object, got list"),
    ("json-missing", lambda d: (d / "checkpoint.json").unlink(), [], "has no checkpoint.json"),
    ("json-no-model-config", lambda d: _edit_json(d, lambda m: m.pop("model_config")), [],
     "checkpoint.json lacks its 'model_config' entry"),
    ("json-no-train-config", lambda d: _edit_json(d, lambda m: m.pop("train_config")), [],
     "lacks its 'train_config' entry"),
    ("json-string-boolean-model",
     lambda d: _edit_json(d, lambda m: m["model_config"].update(data_dependent="true")), [],
     "model_config: data_dependent must be True or False, got 'true'"),
    ("json-string-boolean-train",
     lambda d: _edit_json(d, lambda m: m["train_config"].update(trace_no_x="yes")), [],
     "train_config: trace_no_x must be True or False, got 'yes'"),
    ("json-unknown-model-field",
     lambda d: _edit_json(d, lambda m: m["model_config"].update(width=3)), [],
     "unknown field(s) ['width']"),
    ("json-step-text", lambda d: _edit_json(d, lambda m: m.update(step="2")), [],
     "'step' has the wrong type"),
    ("json-path-traversal",  # TRAVERSAL: a path out of the checkpoint directory
     lambda d: _edit_json(d, lambda m: m["arrays"].update(file=TRAVERSAL)), [],
     "'arrays' must name checkpoint-<step>-<hash>.npz"),
    ("param-wrong-shape",
     lambda d: _rewrite_arrays(d, lambda a: a.update({"param/embed": a["param/embed"][:, :4]})),
     [], "param/embed is float64[18, 4], expected float64[18, 8]"),
    ("param-missing", lambda d: _rewrite_arrays(d, lambda a: a.pop("param/head.bias")), [],
     "missing ['head.bias']"),
    ("param-extra",
     lambda d: _rewrite_arrays(d, lambda a: a.update({"param/extra": np.zeros(2)})), [],
     "unexpected ['extra']"),
    ("param-nan",
     lambda d: _rewrite_arrays(d, lambda a: a["param/head.bias"].__setitem__(0, np.nan)), [],
     "param/head.bias holds NaN or infinity"),
    ("opt-moment-missing", lambda d: _rewrite_arrays(d, lambda a: a.pop("opt/m/embed")), [],
     "optimizer state does not match the parameters: missing ['m/embed']"),
    ("opt-step-mismatch",
     lambda d: _rewrite_arrays(d, lambda a: a.update({"opt/step": np.array(7)})), [],
     "optimizer step is array(7), expected 2"),
    ("other-model-config", lambda d: None, ["--dim", "16", "--heads", "4"],
     "was trained with a different model config: dim = 8 (this run: 16); num_heads = 2 "
     "(this run: 4)"),
    ("step-not-below-steps", lambda d: None, ["--steps", "2"],
     "is at step 2; ask for more than 2 steps"),
]  # fmt: skip


@pytest.mark.parametrize("case", RESUME_CASES, ids=[c[0] for c in RESUME_CASES])
def test_resume_refuses_a_damaged_checkpoint(case, good_checkpoint, tmp_path, capsys, no_training):
    _, damage, extra, fragment = case
    d = tmp_path / "ck"
    shutil.copytree(good_checkpoint, d)
    damage(d)
    assert main(BASE + ["--steps", "4", "--resume", str(d)] + extra) == 2
    err = _one_line_error(capsys)
    assert err.startswith(f"train: --resume {d}: ") and fragment in err, err


def test_resume_from_the_good_checkpoint_runs(good_checkpoint, tmp_path, capsys):
    d = tmp_path / "ck"
    shutil.copytree(good_checkpoint, d)
    assert main(BASE + ["--steps", "4", "--resume", str(d), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["steps"] == 2


# --------------------------------------------------------------------------- divergence
DIVERGING = BASE + ["--model", "transformer", "--steps", "6", "--lr", "1e100", "--eval-every",
                    "100"]  # fmt: skip


def test_large_lr_overflow_in_attention_logits_exits_3_and_keeps_a_finite_state(tmp_path, capsys):
    """The old bug: with a large learning rate the attention logits S = QKᵀ overflowed
    first, and an op's refusal ("softmax logits overflowed to +inf") came out as a bad
    configuration (exit 2), with no step named and no checkpoint."""
    d = tmp_path / "ck"
    assert main(DIVERGING + ["--checkpoint", str(d)]) == 3
    err = _one_line_error(capsys)
    # warm-up: step 1 has lr 0, step 2 moves every parameter by ~lr/warmup = 1e98, and the
    # forward pass of step 3 overflows inside the first attention layer
    assert err.startswith(
        "train: training diverged at step 3: non-finite value in layers.0 (canonical attention)"
    ), err
    assert f"kept the checkpoint of step 1 in {d}" in err
    c = read_checkpoint(d)
    assert c.step == 1 and c.metrics["diverged_at"] == 3
    # independently: the kept state's training loss (on its own batch, step index 1) is finite
    data = make_task("listops", n=32, seed=0)
    idx = batch_indices(0, 1, 32, 8)
    res = loss_and_grads(c.params, data.ids[idx], data.mask[idx], data.labels[idx],
                         c.model_config)  # fmt: skip
    assert np.isfinite(res.loss) and all(np.all(np.isfinite(g)) for g in res.grads.values())
    # resuming from it runs: with a sane learning rate to the end, with the same one into
    # the same divergence (the batch order is a function of the step)
    assert main(DIVERGING + ["--resume", str(d), "--lr", "1e-3"]) == 0
    assert main(DIVERGING + ["--resume", str(d)]) == 3
    assert "diverged at step 3" in _one_line_error(capsys)


def test_non_finite_logits_are_named(tmp_path, capsys, good_checkpoint):
    """A finite state whose classifier head overflows: the place named is the logits; the
    starting state is the bad one, so nothing is kept."""
    d = tmp_path / "ck"
    shutil.copytree(good_checkpoint, d)
    signs = np.sign(np.random.default_rng(0).standard_normal((10, 8)))

    def huge_head(a):  # LN_f scales by 1e10, the head weights are ±1e300: every product overflows
        a["param/ln_f.weight"] = np.full(8, 1e10)
        a["param/head.weight"] = 1e300 * signs

    _rewrite_arrays(d, huge_head)
    assert main(BASE + ["--steps", "4", "--resume", str(d), "--checkpoint", str(d)]) == 3
    err = _one_line_error(capsys)
    assert "diverged at step 3: non-finite value in logits" in err
    assert f"nothing written to {d}" in err


def test_parameters_that_overflow_in_the_update_are_named(tmp_path):
    """The forward and backward pass are finite but AdamW's decoupled weight decay,
    p ← p(1 − ηλ), takes a parameter of 1e300 past the float64 range."""
    d = tmp_path / "ck"
    cfg = _small(steps=2)
    p, o, mcfg, _ = _state(0)
    p = dict(p, **{"head.bias": np.r_[1e300, np.zeros(9)]})
    save_checkpoint(d, p, dict(o, step=1), mcfg, cfg, 1)
    big = _small(steps=4, lr=1e12, schedule="constant", checkpoint_dir=str(d))
    with pytest.raises(TrainingDiverged) as info:
        train(big, progress=False, resume=str(d))
    exc = info.value
    assert (exc.step, exc.where, exc.kept_step) == (2, "parameter head.bias after the update", 1)
    assert read_checkpoint(d).params["head.bias"][0] == 1e300  # the last finite state


# --------------------------------------------------------------------------- library level
TRAIN_CONFIG_CASES = [
    ("steps", "3", TypeError, "steps must be an integer, got '3'"),
    ("steps", True, TypeError, "steps must be an integer, got True"),
    ("lr", "1e-3", TypeError, "lr must be a real number"),
    ("clip", -1.0, ValueError, "clip must be >= 0.0"),
    ("weight_decay", float("inf"), ValueError, "weight_decay must be finite"),
    ("warmup", -1, ValueError, "warmup must be >= 0"),
    ("n_val", 0, ValueError, "n_val must be >= 1"),
    ("optimizer", "sgd", ValueError, "optimizer must be one of adam, adamw; got 'sgd'"),
    ("schedule", "step", ValueError, "schedule must be one of cosine, linear, constant"),
    ("data_dependent", "false", TypeError, "data_dependent must be True or False, got 'false'"),
    ("trace_no_x", 1, TypeError, "trace_no_x must be True or False, got 1"),
    ("checkpoint_dir", 3, TypeError, "checkpoint_dir must be a directory path"),
    ("checkpoint_every", -1, ValueError, "checkpoint_every must be >= 0"),
    ("task_params", [("max_len", 3)], TypeError, "task_params must be a dict"),
    ("mlp_hidden", 0, ValueError, "mlp_hidden must be >= 1"),
    ("eta_kl", "1", TypeError, "eta_kl must be a real number"),
    ("mc_samples", 2.0, TypeError, "mc_samples must be an integer"),
    ("mc_samples", -3, ValueError, "mc_samples must be >= 0, got -3"),
    ("mc_average", "median", ValueError, "mc_average must be one of probs, logits"),
    ("kep_layers", "first", ValueError, "kep_layers must be one of last, all"),
]


@pytest.mark.parametrize(
    "case", TRAIN_CONFIG_CASES, ids=[f"{c[0]}={c[1]!r}" for c in TRAIN_CONFIG_CASES]
)
def test_train_config_bad_fields(case, no_training):
    name, value, kind, message = case
    with pytest.raises(kind, match=f"^{message}".replace("(", r"\(").replace(")", r"\)")) as info:
        train(TrainConfig(**{name: value}), progress=False)
    assert isinstance(info.value, TrainConfigError) and info.value.field == name


def test_batch_order_is_a_function_of_seed_and_step():
    n, b = 30, 8  # 3 batches per epoch; the last 6 indices of each permutation are unused
    epoch = [batch_indices(5, t, n, b) for t in range(3)]
    assert len(set(np.concatenate(epoch).tolist())) == 24  # no index twice in an epoch
    assert np.array_equal(batch_indices(5, 4, n, b), batch_indices(5, 4, n, b))
    assert not np.array_equal(batch_indices(5, 4, n, b), batch_indices(6, 4, n, b))


def test_train_help_documents_exit_codes_and_checkpoints(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for text in ("Exit status: 0 done; 2 bad input", "3 training diverged",
                 "the last state whose parameters and loss were finite", "atomically",
                 "--checkpoint-every N"):  # fmt: skip
        assert text in out, text
