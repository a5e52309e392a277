"""primal_np — self-attention as a kernel machine, in NumPy.

Canonical softmax attention (the dual form) and Primal-Attention (the primal
form, from asymmetric kernel SVD; Chen, Tao, Tonin, Suykens, NeurIPS 2023), with
hand-written backward passes, a gradient checker and golden vectors.
"""

from importlib.metadata import PackageNotFoundError, version

from .dual import DualCache, attention_weights, dual_attention, dual_attention_backward
from .gradcheck import check_vjp, gradcheck, taylor_test
from .mha import init_mha_params, mha_attention, mha_attention_backward
from .primitives import (
    linear,
    linear_backward,
    logsumexp,
    merge_heads,
    softmax,
    softmax_backward,
    split_heads,
)

try:
    __version__ = version("primal-np")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.1.0"

__all__ = [
    "__version__",
    "DualCache",
    "attention_weights",
    "dual_attention",
    "dual_attention_backward",
    "check_vjp",
    "gradcheck",
    "taylor_test",
    "init_mha_params",
    "mha_attention",
    "mha_attention_backward",
    "linear",
    "linear_backward",
    "logsumexp",
    "merge_heads",
    "softmax",
    "softmax_backward",
    "split_heads",
]
