"""The kep-svgp model: layer kinds, noise per step, Monte-Carlo prediction, metrics in train."""

import numpy as np
import pytest

from primal_np.cli import main
from primal_np.model import ModelConfig, init_model_params, layer_kinds, model_forward
from primal_np.model import steps as steps_mod
from primal_np.model.predict import predict_log_probs, training_noise
from primal_np.model.spectrum import attention_spectrum
from primal_np.model.steps import evaluate
from primal_np.model.train import TrainConfig, train
from primal_np.nn.losses import cross_entropy, token_cross_entropy
from primal_np.nn.metrics import brier_score, expected_calibration_error
from primal_np.tasks import TaskData

TINY = dict(vocab_size=7, num_classes=3, max_len=6, dim=8, depth=2, num_heads=2, mlp_hidden=6,
            low_rank=2, rank_multi=2)  # fmt: skip


def _batch(rng, b=5):
    ids = rng.integers(2, 7, (b, 6))
    mask = np.ones((b, 6), bool)
    mask[1, 4:] = False
    ids[1, 4:] = 0
    return ids, mask, rng.integers(0, 3, b)


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_layer_kinds_and_the_causal_refusal():
    assert layer_kinds("kep-svgp", 3) == ("canonical", "canonical", "kep")
    assert layer_kinds("kep-svgp", 3, "all") == ("kep", "kep", "kep")
    assert ModelConfig(model="kep-svgp", kep_layers="all", **TINY).attention == ("kep", "kep")
    with pytest.raises(ValueError, match="kep_layers must be one of last, all, got 'first'"):
        ModelConfig(model="kep-svgp", kep_layers="first", **TINY)
    with pytest.raises(ValueError, match="KEP-SVGP attention has no causal variant"):
        ModelConfig(model="kep-svgp", causal=True, **TINY)
    with pytest.raises(ValueError, match="eta_kl must be >= 0"):
        ModelConfig(model="kep-svgp", eta_kl=-1.0, **TINY)
    kc = ModelConfig(model="kep-svgp", **TINY).kep_config()
    assert (kc.variant, kc.low_rank, kc.rank_multi, kc.factor_layout) == ("cola", 2, 2, "authors")


def test_training_noise_is_a_function_of_seed_step_and_layer():
    cfg = ModelConfig(model="kep-svgp", kep_layers="all", **TINY)
    a = training_noise(cfg, 3, 5, 4, 6)
    assert sorted(a) == [0, 1] and a[0].shape == (4, 2, 6, 2, 1)
    b = training_noise(cfg, 3, 5, 4, 6)
    assert all(np.array_equal(a[i], b[i]) for i in a)
    assert not np.array_equal(a[0], a[1])  # layers draw independently
    assert not np.array_equal(a[0], training_noise(cfg, 3, 6, 4, 6)[0])  # fresh per step
    assert not np.array_equal(a[0], training_noise(cfg, 4, 5, 4, 6)[0])  # and per seed
    tcfg = ModelConfig(model="transformer", **TINY)
    assert training_noise(tcfg, 3, 5, 4, 6) == {}
    ids = np.full((4, 6), 2)
    with pytest.raises(ValueError, match="noise is given, but the model has no KEP-SVGP layer"):
        model_forward(init_model_params(tcfg), ids, ids > 0, tcfg, noise=a)


def test_each_training_step_uses_its_own_noise(monkeypatch):
    seen = []
    real = steps_mod.loss_and_grads

    def recording(*args, noise=None, **kw):
        seen.append(noise)
        return real(*args, noise=noise, **kw)

    monkeypatch.setattr(steps_mod, "loss_and_grads", recording)
    cfg = TrainConfig(model="kep-svgp", task_params={"max_len": 24, "max_depth": 2}, steps=3,
                      batch_size=4, n_train=16, n_val=8, n_test=8, eval_every=3, dim=8, depth=2,
                      num_heads=2, mlp_hidden=8, low_rank=2, rank_multi=2, mc_samples=0)  # fmt: skip
    r = train(cfg, progress=False)
    assert len(seen) == 3 and all(list(n) == [1] for n in seen)
    mcfg = ModelConfig.from_dict(r.model_config)
    for t, n in enumerate(seen):
        assert np.array_equal(n[1], training_noise(mcfg, 0, t, 4, 24)[1])
    assert not np.array_equal(seen[0][1], seen[1][1])


def test_mc_prediction_against_explicit_forward_passes(rng):
    cfg = ModelConfig(model="kep-svgp", **TINY)
    p = init_model_params(cfg, seed=4)
    ids, mask, _ = _batch(rng)
    # K = 0: the posterior mean, i.e. the forward pass with zero noise
    mean_logits, _ = model_forward(p, ids, mask, cfg, noise={1: np.zeros((5, 2, 6, 2, 1))})
    np.testing.assert_allclose(
        predict_log_probs(p, ids, mask, cfg, mc_samples=0), np.log(_softmax(mean_logits)),
        rtol=1e-12,
    )  # fmt: skip
    # K = 3: three passes with the draws of the generator, in order (sample, layer)
    gen = np.random.default_rng(11)
    z = np.stack([
        model_forward(p, ids, mask, cfg, noise={1: gen.standard_normal((5, 2, 6, 2, 1))})[0]
        for _ in range(3)
    ])  # fmt: skip
    assert np.abs(z[0] - z[1]).max() > 1e-3  # the noise does move the logits
    got = predict_log_probs(p, ids, mask, cfg, mc_samples=3, rng=np.random.default_rng(11))
    np.testing.assert_allclose(got, np.log(_softmax(z).mean(0)), rtol=1e-12)
    got = predict_log_probs(p, ids, mask, cfg, mc_samples=3, average="logits",
                            rng=np.random.default_rng(11))  # fmt: skip
    np.testing.assert_allclose(got, np.log(_softmax(z.mean(0))), rtol=1e-12)
    with pytest.raises(ValueError, match="mc_samples must be >= 0, got -1"):
        predict_log_probs(p, ids, mask, cfg, mc_samples=-1)
    with pytest.raises(ValueError, match=r"noise\[1\] has shape \(5, 2, 6, 2\)"):
        model_forward(p, ids, mask, cfg, noise={1: np.zeros((5, 2, 6, 2))})
    with pytest.raises(ValueError, match=r"noise must map each KEP-SVGP layer index \[1\]"):
        model_forward(p, ids, mask, cfg, noise={0: np.zeros((5, 2, 6, 2, 1))})


def test_evaluate_metrics_of_deterministic_classifier_and_decoder(rng):
    cfg = ModelConfig(model="primal+trans", **TINY)
    p = init_model_params(cfg, seed=5)
    ids, mask, labels = _batch(rng, 7)
    data = TaskData(ids, mask, labels, 3, 7, "classification")
    m = evaluate(p, data, cfg, batch_size=3)  # three batches
    logits, _ = model_forward(p, ids, mask, cfg)
    probs = _softmax(logits)
    assert m.accuracy == np.mean(probs.argmax(1) == labels)
    assert np.isclose(m.nll, float(cross_entropy(logits, labels)[0]), rtol=1e-13)
    assert np.isclose(m.brier, brier_score(probs, labels), rtol=1e-13)
    assert np.isclose(m.ece, expected_calibration_error(probs, labels), rtol=1e-12)
    # a decoder: over the scored positions only
    dcfg = ModelConfig(model="transformer", causal=True, **{**TINY, "num_classes": 7})
    p = init_model_params(dcfg, seed=6)
    nxt = np.roll(ids, -1, axis=1)
    nxt[:, -1] = -1
    nxt[0, :3] = -1
    data = TaskData(ids, np.ones(ids.shape, bool), nxt, 7, 7, "next_token")
    m = evaluate(p, data, dcfg, batch_size=4)
    logits, _ = model_forward(p, ids, data.mask, dcfg)
    s = nxt >= 0
    probs = _softmax(logits[s])
    assert np.isclose(m.nll, float(token_cross_entropy(logits, nxt)[0]), rtol=1e-13)
    assert np.isclose(m.brier, brier_score(probs, nxt[s]), rtol=1e-13)
    assert np.isclose(m.ece, expected_calibration_error(probs, nxt[s]), rtol=1e-12)
    assert m.accuracy == np.mean(probs.argmax(1) == nxt[s])


def test_evaluate_kep_is_reproducible_and_k0_is_the_posterior_mean(rng):
    cfg = ModelConfig(model="kep-svgp", **TINY)
    p = init_model_params(cfg, seed=7)
    ids, mask, labels = _batch(rng, 6)
    data = TaskData(ids, mask, labels, 3, 7, "classification")
    a = evaluate(p, data, cfg, mc_samples=4, seed=1)
    assert a == evaluate(p, data, cfg, mc_samples=4, seed=1)
    assert a.nll != evaluate(p, data, cfg, mc_samples=4, seed=2).nll
    m0 = evaluate(p, data, cfg, mc_samples=0)
    probs = _softmax(model_forward(p, ids, mask, cfg)[0])  # no noise: the posterior mean
    assert np.isclose(m0.brier, brier_score(probs, labels), rtol=1e-13)
    assert np.isclose(m0.nll, -np.mean(np.log(probs[np.arange(6), labels])), rtol=1e-13)


def test_spectrum_leaves_out_kep_layers(rng):
    cfg = ModelConfig(model="kep-svgp", **TINY)
    ids, mask, _ = _batch(rng)
    res = attention_spectrum(init_model_params(cfg, seed=1), cfg, ids, mask)
    assert [r.kind for r in res] == ["canonical"]


def test_cli_text_summary_reports_metrics_and_kl(capsys):
    argv = ["train", "--model", "kep-svgp", "--steps", "2", "--quiet", "--n-train", "16",
            "--n-val", "8", "--n-test", "8", "--batch-size", "8", "--dim", "8", "--heads", "2",
            "--low-rank", "2", "--rank-multi", "2", "--eta-kl", "0.5", "--mc-samples", "3",
            "--mc-average", "logits", "--task-param", "max_len=24"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "test NLL" in out and "ECE" in out and "Brier" in out
    assert "prediction: 3 samples, mean of the logits" in out
    assert "layer 1: KSVD loss" in out and "; KL " in out
