"""Check a Python implementation of an op (PyTorch, JAX, CUDA bindings, ...) against primal_np.

One ``check_*`` function per op runs the candidate over a grid of shapes, variants
and precisions and judges every output and gradient with ``primal_np.compare``:

==============================  ====================================================  ==========================================================================================
function                        op                                                    candidate forward
==============================  ====================================================  ==========================================================================================
``check_dual_attention``        canonical softmax attention                           ``fn(q, k, v, mask, causal, scale) -> out``
``check_primal_scores``         E = Φ_q W_e, R = Φ_k W_r                              ``fn(phi_q, phi_k, W_e, W_r) -> (E, R)``
``check_ksvd_loss``             the KSVD loss, per convention                         ``fn(layers, convention) -> loss``
``check_primal_attention``      the authors' Primal-Attention layer                   ``fn(x, state_dict, mask, config) -> {"out", "escore", "rscore"}``
``check_multi_head_attention``  canonical multi-head self-attention (PyTorch layout)  ``fn(x, state_dict, key_padding_mask, attn_mask, causal, num_heads) -> out``
==============================  ====================================================  ==========================================================================================

Each takes an optional ``backward`` (documented with the function); without it only
the forward outputs are checked; each takes ``atol=`` (absolute slack of the rule). The
machinery is generic (``primal_np.adapters.core``): an ``OpSpec`` per op, registered in
``OPS``, and ``check_callable(spec, fn, ...)``. The candidate takes and returns NumPy
arrays and can ask which precision is checked (``current_precision()``, or a
``precision=`` parameter); docs/validation.md shows PyTorch and JAX wrappers.
"""

from .core import (
    OPS,
    AdapterReport,
    GridResult,
    OpSpec,
    check_callable,
    current_precision,
    describe_exception,
    register_op,
)
from .dual import (
    DUAL_ATTENTION_GRID,
    LARGE_LOGIT_POINTS,
    LONG_SUM_POINTS,
    AttentionPoint,
    check_dual_attention,
)
from .layer import PRIMAL_ATTENTION_GRID, LayerPoint, check_primal_attention
from .loss import KSVD_LOSS_GRID, KSVD_LOSS_LAYER_FIELDS, KSVDLossPoint, check_ksvd_loss
from .mha import MHA_GRID, MHA_STATE_DICT_NAMES, MHAPoint, check_multi_head_attention
from .scores import PRIMAL_SCORES_GRID, ScoresPoint, check_primal_scores

__all__ = [
    "OpSpec",
    "OPS",
    "register_op",
    "GridResult",
    "AdapterReport",
    "check_callable",
    "current_precision",
    "describe_exception",
    "AttentionPoint",
    "DUAL_ATTENTION_GRID",
    "LARGE_LOGIT_POINTS",
    "LONG_SUM_POINTS",
    "check_dual_attention",
    "ScoresPoint",
    "PRIMAL_SCORES_GRID",
    "check_primal_scores",
    "KSVDLossPoint",
    "KSVD_LOSS_GRID",
    "KSVD_LOSS_LAYER_FIELDS",
    "check_ksvd_loss",
    "LayerPoint",
    "PRIMAL_ATTENTION_GRID",
    "check_primal_attention",
    "MHAPoint",
    "MHA_GRID",
    "MHA_STATE_DICT_NAMES",
    "check_multi_head_attention",
]
