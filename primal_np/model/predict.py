"""The noise of the KEP-SVGP layers, and predictions with their uncertainty.

Training: step t (0-based) gives KEP-SVGP layer l the standard-normal draw of
``np.random.default_rng([seed, 2, t, l])`` (``training_noise``), fresh at every step and a
pure function of (seed, step, layer), so that a resumed run draws what the uninterrupted
run drew.

Prediction (``predict_log_probs``): a model without KEP-SVGP layers predicts
softmax(logits). With them, K = ``mc_samples`` forward passes with independent draws give
logits z⁽¹⁾ … z⁽ᴷ⁾, combined by ``primal_np.nn.metrics.mc_log_probs``: the mean of the K
softmax distributions ("probs", the Monte-Carlo estimate of the predictive distribution)
or the softmax of the mean logits ("logits", the authors' ``valid.py``, with K = 10);
K = 0 is the posterior mean (noise 0) in a single pass.
"""

from __future__ import annotations

import numpy as np

from ..kep_svgp import noise_shape
from ..nn.metrics import MC_AVERAGES, log_softmax, mc_log_probs
from .config import ModelConfig
from .encoder import kep_layer_indices, model_forward

__all__ = ["DEFAULT_MC_SAMPLES", "training_noise", "predict_log_probs"]

DEFAULT_MC_SAMPLES = 10  # the authors' valid.py: 10 forward passes at test time
_NOISE_STREAM = 2  # separates the training noise from the batch order (stream 1) of a seed


def training_noise(
    cfg: ModelConfig, seed: int, step: int, batch: int, num_tokens: int
) -> dict[int, np.ndarray]:
    """KEP-SVGP layer index l → the draw of step ``step``: N(0, 1) of
    ``noise_shape`` (B, H, N, s, 1) from ``default_rng([seed, 2, step, l])``."""
    shape = noise_shape(cfg.kep_config(), batch, num_tokens) if cfg.has_kep else ()
    return {
        i: np.random.default_rng([seed, _NOISE_STREAM, step, i]).standard_normal(shape)
        for i in kep_layer_indices(cfg)
    }


def predict_log_probs(
    params: dict[str, np.ndarray],
    ids: np.ndarray,
    mask: np.ndarray,
    cfg: ModelConfig,
    *,
    mc_samples: int = DEFAULT_MC_SAMPLES,
    average: str = "probs",
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """log p of the model's prediction for ids (B, N): (B, C), or (B, N, C) for a decoder.

    Without KEP-SVGP layers: log_softmax(logits) (``mc_samples`` and ``average`` unused).
    With them: ``mc_samples`` K ≥ 1 passes, each layer's noise drawn from ``rng`` (a
    Generator; default ``default_rng(0)``), combined by ``average`` ("probs" or "logits",
    module docstring); K = 0: the posterior mean (noise 0).
    """
    if isinstance(mc_samples, bool) or not isinstance(mc_samples, (int, np.integer)):
        raise TypeError(f"mc_samples must be an integer, got {mc_samples!r}")
    if mc_samples < 0:
        raise ValueError(f"mc_samples must be >= 0, got {mc_samples}")
    if average not in MC_AVERAGES:
        raise ValueError(f"average must be one of {MC_AVERAGES}, got {average!r}")
    if not cfg.has_kep or mc_samples == 0:
        return log_softmax(model_forward(params, ids, mask, cfg)[0])
    rng = np.random.default_rng(0) if rng is None else rng
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy Generator, got {type(rng).__name__}")
    shape = noise_shape(cfg.kep_config(), *np.shape(ids))
    layers = kep_layer_indices(cfg)
    samples = []
    for _ in range(mc_samples):
        noise = {i: rng.standard_normal(shape) for i in layers}
        samples.append(model_forward(params, ids, mask, cfg, noise=noise)[0])
    return mc_log_probs(np.stack(samples), average)
