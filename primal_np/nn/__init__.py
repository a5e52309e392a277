"""Building blocks of a small trainable Transformer, as pure forward/backward pairs.

Every op follows the package convention ``out, cache = op(...)`` /
``grads = op_backward(dout, cache)``; the attention layer itself is
``primal_np.mha`` (canonical) or the Primal-Attention layer.

=============  ======================================================================
module         ops
=============  ======================================================================
``embedding``  token lookup, learned positions (y = x + P[:N]), sinusoidal positions
``norm``       LayerNorm over the last axis (PyTorch semantics)
``mlp``        exact GELU, the D → hidden → D MLP block
``pooling``    masked mean pooling, CLS pooling
``losses``     softmax cross-entropy from logits, accuracy
``metrics``    NLL, expected calibration error, Brier score, reliability bins, MC averaging
=============  ======================================================================
"""

from .embedding import (
    EmbeddingCache,
    PositionalCache,
    embedding,
    embedding_backward,
    learned_positional,
    learned_positional_backward,
    sinusoidal_positions,
)
from .losses import CrossEntropyCache, accuracy, cross_entropy, cross_entropy_backward
from .metrics import (
    CalibrationMetrics,
    ReliabilityBins,
    brier_score,
    calibration_metrics,
    expected_calibration_error,
    mc_log_probs,
    negative_log_likelihood,
    reliability_bins,
)
from .mlp import (
    MLP_PARAM_NAMES,
    GeluCache,
    MLPCache,
    gelu,
    gelu_backward,
    init_mlp_params,
    mlp,
    mlp_backward,
)
from .norm import LayerNormCache, layer_norm, layer_norm_backward
from .pooling import (
    ClsPoolCache,
    MeanPoolCache,
    cls_pool,
    cls_pool_backward,
    mean_pool,
    mean_pool_backward,
)

__all__ = [
    "EmbeddingCache",
    "PositionalCache",
    "embedding",
    "embedding_backward",
    "learned_positional",
    "learned_positional_backward",
    "sinusoidal_positions",
    "CrossEntropyCache",
    "accuracy",
    "cross_entropy",
    "cross_entropy_backward",
    "CalibrationMetrics",
    "ReliabilityBins",
    "brier_score",
    "calibration_metrics",
    "expected_calibration_error",
    "mc_log_probs",
    "negative_log_likelihood",
    "reliability_bins",
    "MLP_PARAM_NAMES",
    "GeluCache",
    "MLPCache",
    "gelu",
    "gelu_backward",
    "init_mlp_params",
    "mlp",
    "mlp_backward",
    "LayerNormCache",
    "layer_norm",
    "layer_norm_backward",
    "ClsPoolCache",
    "MeanPoolCache",
    "cls_pool",
    "cls_pool_backward",
    "mean_pool",
    "mean_pool_backward",
]
