"""The trainable encoder: whole-model gradients, training, checkpoints, divergence, spectrum."""

import json

import numpy as np
import pytest

from primal_np.cli import main
from primal_np.gradcheck import gradcheck
from primal_np.model import ModelConfig, init_model_params, loss_and_grads, model_forward
from primal_np.model.encoder import kep_layer_indices, model_loss
from primal_np.model.spectrum import attention_spectrum, normalized_cumulative_singular_values
from primal_np.model.train import TrainConfig, TrainingDiverged, load_checkpoint, train

TINY = dict(
    vocab_size=7,
    num_classes=3,
    max_len=6,
    dim=8,
    depth=2,
    num_heads=2,
    mlp_hidden=6,
    low_rank=2,
    rank_multi=2,
)


def _batch(rng):
    ids = rng.integers(2, 7, (3, 6))
    mask = np.ones((3, 6), bool)
    mask[1, 4:] = False
    ids[1, 4:] = 0
    return ids, mask, rng.integers(0, 3, 3)


@pytest.mark.parametrize(
    "model,extra,mode",
    [
        ("primalformer", {}, "elementwise"),  # every entry of every parameter
        ("primal+trans", dict(positions="sinusoidal", pooling="cls"), "directional"),
        ("transformer", {}, "directional"),
        (
            "primalformer",
            dict(ksvd_convention="lra_trace_x", trace_no_x=False, pooling="cls"),
            "directional",
        ),
        ("primalformer", dict(data_dependent=False, ksvd_convention="per_sample"), "directional"),
        # KEP-SVGP in the last layer, then in both, with a fixed non-zero noise: the task loss,
        # η·KSVD and η_kl·KL all reach every parameter
        ("kep-svgp", dict(eta_kl=0.7), "elementwise"),
        ("kep-svgp", dict(kep_layers="all", eta_kl=0.05, pooling="cls"), "directional"),
    ],
)
def test_whole_model_finite_differences(rng, model, extra, mode):
    cfg = ModelConfig(model=model, eta=0.3, **TINY, **extra)
    params = init_model_params(cfg, seed=1)
    ids, mask, labels = _batch(rng)
    noise = {i: rng.standard_normal((3, 2, 6, 2, 1)) for i in kep_layer_indices(cfg)}
    assert len(noise) == {"last": 1, "all": 2}[cfg.kep_layers] or model != "kep-svgp"
    r = loss_and_grads(params, ids, mask, labels, cfg, noise=noise)
    assert set(r.grads) == set(params)
    assert r.loss == model_loss(params, ids, mask, labels, cfg, noise=noise)
    if noise:
        assert r.kl_loss > 0 and set(r.kl_per_layer) == set(noise) and r.ksvd_loss > 0
    rep = gradcheck(
        lambda **p: model_loss(p, ids, mask, labels, cfg, noise=noise),
        params,
        r.grads,
        mode=mode,
        n_directions=6,
    )
    rep.assert_ok()


@pytest.mark.parametrize(
    "model,extra",
    [
        ("primalformer", {}),  # causal primal layers: the fast path
        ("primal+trans", dict(feature_map="poly2", eta=0.0)),  # a reference-only map
        ("transformer", {}),
    ],
)
def test_causal_decoder_finite_differences(rng, model, extra):
    cfg = ModelConfig(model=model, causal=True, **{**TINY, "eta": 0.3, "num_classes": 7, **extra})
    params = init_model_params(cfg, seed=2)
    ids = rng.integers(1, 7, (3, 6))
    labels = np.roll(ids, -1, axis=1)
    labels[:, -1] = -1  # nothing to predict after the last token
    labels[0, :2] = -1
    mask = np.ones(ids.shape, bool)
    r = loss_and_grads(params, ids, mask, labels, cfg)
    assert r.logits.shape == (3, 6, 7) and set(r.grads) == set(params)
    assert r.loss == model_loss(params, ids, mask, labels, cfg)
    gradcheck(
        lambda **p: model_loss(p, ids, mask, labels, cfg), params, r.grads, mode="directional",
        n_directions=6,
    ).assert_ok()  # fmt: skip


def test_decoder_does_not_see_the_future(rng):
    for model in ("primalformer", "transformer"):
        cfg = ModelConfig(model=model, causal=True, **{**TINY, "num_classes": 7})
        params = init_model_params(cfg, seed=3)
        ids = rng.integers(1, 7, (2, 6))
        ids2 = ids.copy()
        ids2[:, 4:] = rng.integers(1, 7, (2, 2))
        a, _ = model_forward(params, ids, np.ones(ids.shape, bool), cfg)
        b, _ = model_forward(params, ids2, np.ones(ids.shape, bool), cfg)
        np.testing.assert_array_equal(a[:, :4], b[:, :4])


def test_training_a_causal_primalformer_and_a_registered_feature_map():
    from primal_np.feature_maps import (
        FEATURE_MAPS,
        identity_features,
        identity_features_backward,
        register_feature_map,
    )

    kw = dict(steps=200, batch_size=16, n_train=3200, n_val=100, n_test=200, eval_every=200,
              warmup=5, lr=3e-3,
              dim=16, depth=1, num_heads=2, mlp_hidden=16, low_rank=2, rank_multi=2)  # fmt: skip
    r = train(TrainConfig(model="primalformer", task="markov", task_params={"length": 12}, **kw),
              progress=False)  # fmt: skip
    assert r.model_config["causal"] and r.train_config["task"] == "markov"
    assert r.accuracy > 2 * r.chance_accuracy  # 200 steps learn the bigram part (0.35)
    assert r.model_config["ksvd_convention"] == "per_sample"  # the authors' causal loss
    register_feature_map("mine", identity_features, identity_features_backward)
    try:
        r = train(TrainConfig(model="primalformer", feature_map="mine", **kw), progress=False)
        assert r.model_config["feature_map"] == "mine" and np.isfinite(r.test_task_loss)
    finally:
        FEATURE_MAPS.pop("mine")


def test_cli_feature_map_needs_data_independent_for_width_changing_maps(capsys):
    code = main(["train", "--feature-map", "poly2", "--steps", "1", "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert "maps the head dim p = 16 to 153 features" in err and "--data-independent" in err


def test_model_kinds_and_bad_configs():
    assert ModelConfig(model="primal+trans", **{**TINY, "depth": 3}).attention == (
        "canonical",
        "canonical",
        "primal",
    )
    with pytest.raises(
        ValueError,
        match="unknown model 'primalformer2'; valid: primalformer, primal\\+trans, transformer",
    ):
        ModelConfig(model="primalformer2", **TINY)
    with pytest.raises(ValueError, match="dim 8 is not divisible by num_heads 3"):
        ModelConfig(**{**TINY, "num_heads": 3})
    with pytest.raises(
        ValueError, match="primal attention layers: low_rank 5 exceeds the feature width p_φ = 4"
    ):
        ModelConfig(**{**TINY, "low_rank": 5}, data_dependent=False)
    with pytest.raises(
        ValueError, match="task must be one of listops, retrieval, markov; got 'sorting'"
    ):
        train(TrainConfig(task="sorting"))


def test_padding_does_not_change_the_logits_of_canonical_models(rng):
    """Transformer: padded keys are masked and mean pooling skips padded rows, so the
    content of padded positions cannot matter. (Primal layers deliberately differ: the
    authors' code lets padded tokens enter F.)"""
    cfg = ModelConfig(model="transformer", **TINY)
    p = init_model_params(cfg, seed=0)
    ids, mask, _ = _batch(rng)
    a, _ = model_forward(p, ids, mask, cfg)
    ids2 = ids.copy()
    ids2[1, 4:] = 5
    b, _ = model_forward(p, ids2, mask, cfg)
    np.testing.assert_allclose(a, b, rtol=1e-13)


def _small_train(tmp_path, **kw):
    base = dict(
        task="listops", task_params={"max_len": 24, "max_depth": 2}, steps=6, batch_size=8,
        n_train=64, n_val=16, n_test=16, eval_every=3, dim=16, depth=2, num_heads=2, mlp_hidden=16,
        low_rank=2, rank_multi=2, warmup=2,
    )  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)


def test_training_runs_is_deterministic_and_records_j(tmp_path):
    cfg = _small_train(tmp_path)
    r1 = train(cfg, progress=False)
    r2 = train(cfg, progress=False)
    assert (
        r1.accuracy == r2.accuracy
        and r1.history[-1]["train_task_loss"] == r2.history[-1]["train_task_loss"]
    )
    assert (
        set(r1.j_per_layer) == {"layer 0", "layer 1"} and len(r1.j_per_layer["layer 0"]) == 3
    )  # init, step 3, step 6
    assert 0.0 <= r1.accuracy <= 1.0 and r1.chance_accuracy >= 0.1 - 1e-12
    assert r1.tokens_per_second > 0
    assert set(r1.params) >= {"embed", "head.weight"} and "params" not in r1.as_dict()
    json.dumps(r1.as_dict())


def _interrupt_at_step(monkeypatch, k):
    """Make the k-th training step (1-based) die as a killed process would."""
    from primal_np.model import steps

    calls = {"n": 0}
    real = steps.loss_and_grads

    def dying(*args, **kw):
        calls["n"] += 1
        if calls["n"] == k:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(steps, "loss_and_grads", dying)


@pytest.mark.parametrize("model", ["primalformer", "kep-svgp"])
def test_checkpoint_resume_equals_uninterrupted(tmp_path, monkeypatch, model):
    """Killed during step 7 of 8, the run left its step-6 --checkpoint-every save; resuming
    from it gives the uninterrupted run's parameters, optimiser state, history and
    accuracy bit for bit (all but the wall-clock seconds). KEP-SVGP: the noise of each
    step and of the Monte-Carlo evaluations is the same in both runs."""
    kw = dict(steps=8, eval_every=3, checkpoint_every=2, model=model, mc_samples=2)
    full = train(_small_train(tmp_path, **kw, checkpoint_dir=str(tmp_path / "full")),
                 progress=False)  # fmt: skip
    ck = tmp_path / "ck"
    cfg = _small_train(tmp_path, **kw, checkpoint_dir=str(ck))
    with monkeypatch.context() as m:
        _interrupt_at_step(m, 7)
        with pytest.raises(KeyboardInterrupt):
            train(cfg, progress=False)
    params, opt, mcfg, tcfg, step = load_checkpoint(ck)
    assert step == 6 and opt["step"] == 6 and mcfg.model == model and tcfg == cfg
    resumed = train(cfg, progress=False, resume=str(ck))
    assert resumed.steps == 2 and full.steps == 8
    assert set(resumed.params) == set(full.params)
    for k, v in full.params.items():
        assert np.array_equal(resumed.params[k], v), k
    _, opt_full, *_ = load_checkpoint(tmp_path / "full")
    _, opt_resumed, *_ = load_checkpoint(ck)
    assert opt_full.keys() == opt_resumed.keys() and opt_resumed["step"] == 8
    for k in opt_full:
        assert np.array_equal(opt_full[k], opt_resumed[k]), k

    def no_seconds(history):
        return [{k: v for k, v in rec.items() if k != "seconds"} for rec in history]

    assert [r["step"] for r in full.history] == [0, 3, 6, 8]
    assert no_seconds(resumed.history) == no_seconds(full.history)
    assert resumed.j_per_layer == full.j_per_layer
    assert resumed.ksvd_loss_per_layer == full.ksvd_loss_per_layer
    assert resumed.kl_per_layer == full.kl_per_layer
    assert (resumed.nll, resumed.ece, resumed.brier) == (full.nll, full.ece, full.brier)
    if model == "kep-svgp":
        assert list(full.kl_per_layer) == ["layer 1"] and "kl" in full.history[-1]
    assert (resumed.train_task_loss, resumed.val_accuracy) == (full.train_task_loss,
                                                               full.val_accuracy)  # fmt: skip
    assert (resumed.accuracy, resumed.test_task_loss) == (full.accuracy, full.test_task_loss)
    meta = json.loads((ck / "checkpoint.json").read_text())
    assert meta["train_config"]["steps"] == 8 and meta["metrics"]["accuracy"] == full.accuracy
    with np.load(ck / meta["arrays"]["file"], allow_pickle=False) as data:
        assert all(k.startswith(("param/", "opt/")) for k in data.files)


def test_divergence_names_step_and_layer_and_keeps_checkpoint(tmp_path):
    ck = tmp_path / "ck"
    cfg = _small_train(tmp_path, checkpoint_dir=str(ck), lr=1e30, clip=0.0, steps=50)
    with pytest.raises(
        TrainingDiverged,
        match=r"training diverged at step \d+: non-finite value in .*kept the checkpoint of step",
    ) as info:
        train(cfg, progress=False)
    exc = info.value
    params, opt, _, _, step = load_checkpoint(ck)
    assert step == exc.kept_step == exc.step - 2  # the state of step k-1 had a finite loss
    assert all(np.all(np.isfinite(v)) for v in params.values())


def test_cli_train_json_last_line(capsys):
    argv = [
        "train", "--model", "primal+trans", "--task", "listops", "--steps", "4", "--json", "--quiet",
        "--n-train", "32", "--batch-size", "8", "--dim", "16", "--heads", "2", "--eval-every", "2",
        "--task-param", "max_len=24", "--task-param", "max_depth=2", "--n-val", "64",
        "--n-test", "64",
    ]  # fmt: skip
    assert main(argv) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    out = json.loads(last)
    for key in (
        "accuracy",
        "nll",
        "ece",
        "brier",
        "chance_accuracy",
        "task_loss",
        "ksvd_loss",
        "steps",
        "seconds",
        "tokens_per_second",
    ):
        assert key in out
    assert out["steps"] == 4 and list(out["ksvd_loss"]) == ["layer 1"]


def test_cli_train_rejects_bad_config_before_training(capsys):
    assert main(["train", "--heads", "3", "--steps", "1", "--quiet"]) == 2
    assert capsys.readouterr().err == "train: --heads must divide --dim = 64, got 3\n"
    with pytest.raises(SystemExit):
        main(["train", "--model", "nope"])
    err = capsys.readouterr().err
    assert "invalid choice: 'nope'" in err and all(
        m in err for m in ("primalformer", "primal+trans", "transformer")
    )


def test_normalized_cumulative_singular_values_closed_forms():
    # rank one: all the mass in the first singular value
    u, v = np.arange(1.0, 5.0), np.array([1.0, -2.0, 0.5, 3.0])
    np.testing.assert_allclose(
        normalized_cumulative_singular_values(np.outer(u, v)), [1, 1, 1, 1], atol=1e-15
    )
    # identity: uniform spectrum, linear ramp
    np.testing.assert_allclose(
        normalized_cumulative_singular_values(np.eye(4)), [0.25, 0.5, 0.75, 1.0]
    )
    np.testing.assert_array_equal(
        normalized_cumulative_singular_values(np.zeros((3, 3))), np.zeros(3)
    )


def test_attention_spectrum_labels_and_shapes(rng):
    cfg = ModelConfig(model="primal+trans", **TINY)
    p = init_model_params(cfg, seed=2)
    ids, mask, _ = _batch(rng)
    res = attention_spectrum(p, cfg, ids, mask)
    assert [r.kind for r in res] == ["canonical", "primal"]
    assert "softmax" in res[0].label and "Φ_q Fᵀ F Φ_kᵀ" in res[1].label
    for r in res:
        assert r.curve.shape == (4,)  # the shortest sequence has 4 real tokens
        assert (
            np.all(np.diff(r.curve) >= -1e-12)
            and abs(r.curve[-1] - 1) < 1e-12
            or r.curve.shape[0] < 6
        )
        assert r.n_matrices == 3 * cfg.num_heads
    cos = attention_spectrum(p, cfg, ids, mask, primal_kernel="cosine")
    assert "Φ_q Φ_kᵀ" in cos[1].label


def test_resume_continues_from_the_checkpoint(tmp_path):
    ck = tmp_path / "ck"
    train(_small_train(tmp_path, steps=3, checkpoint_dir=str(ck)), progress=False)
    r = train(_small_train(tmp_path, steps=6), progress=False, resume=str(ck))
    assert r.steps == 3 and [h["step"] for h in r.history] == [0, 3, 6]  # history continues
    with pytest.raises(ValueError, match="is at step 3; ask for more than 3 steps"):
        train(_small_train(tmp_path, steps=3), progress=False, resume=str(ck))
