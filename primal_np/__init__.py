"""primal_np — self-attention as a kernel machine, in NumPy.

Canonical softmax attention (the dual form) and Primal-Attention (the primal
form, from asymmetric kernel SVD; Chen, Tao, Tonin, Suykens, NeurIPS 2023), with
hand-written backward passes, a gradient checker and golden vectors. The same
group's KEP-SVGP attention (ICML 2024) is in ``primal_np.kep_svgp``.
"""

from importlib.metadata import PackageNotFoundError, version

from . import kep_svgp
from .dual import DualCache, attention_weights, dual_attention, dual_attention_backward
from .equivalence import scores_from_x, scores_from_x_backward, stationary_point
from .feature_maps import (
    FEATURE_MAPS,
    check_feature_map,
    cosine_normalize,
    cosine_normalize_backward,
    draw_random_features,
    get_feature_map,
    identity_features,
    identity_features_backward,
    poly2_features,
    poly2_features_backward,
    positive_random_features,
    positive_random_features_backward,
    register_feature_map,
)
from .gradcheck import check_vjp, gradcheck, taylor_test
from .kep_svgp import (
    KEPSVGPConfig,
    init_kep_svgp_params,
    kep_from_state_dict,
    kep_svgp_attention,
    kep_svgp_attention_backward,
    kep_svgp_losses,
    kep_svgp_losses_backward,
    kep_svgp_objective,
    kep_to_state_dict,
)
from .kernels import (
    asymmetry,
    kernel_matrix,
    kernel_matrix_backward,
    random_feature_softmax_kernel,
    softmax_kernel,
)
from .ksvd import (
    kkt_residuals,
    kkt_weights,
    ksvd,
    ksvd_objective,
    ksvd_objective_grad,
    ksvd_objective_terms,
    primal_weights,
    primal_weights_backward,
    shifted_eigen_residual,
)
from .ksvd_loss import (
    CONVENTIONS,
    KSVDConvention,
    KSVDTerms,
    ksvd_loss,
    ksvd_loss_backward,
    ksvd_terms_from_cache,
)
from .layer import primal_attention, primal_attention_backward
from .mha import init_mha_params, mha_attention, mha_attention_backward
from .objective import layer_objective
from .params import (
    PrimalAttentionConfig,
    from_state_dict,
    init_primal_attention_params,
    load_state_dict,
    save_state_dict,
    to_state_dict,
)
from .primitives import (
    linear,
    linear_backward,
    logsumexp,
    merge_heads,
    softmax,
    softmax_backward,
    split_heads,
)
from .scores import dual_scores, dual_scores_backward, primal_scores, primal_scores_backward

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
    "scores_from_x",
    "scores_from_x_backward",
    "stationary_point",
    "FEATURE_MAPS",
    "check_feature_map",
    "cosine_normalize",
    "cosine_normalize_backward",
    "draw_random_features",
    "get_feature_map",
    "identity_features",
    "identity_features_backward",
    "poly2_features",
    "poly2_features_backward",
    "positive_random_features",
    "positive_random_features_backward",
    "register_feature_map",
    "asymmetry",
    "kernel_matrix",
    "kernel_matrix_backward",
    "random_feature_softmax_kernel",
    "softmax_kernel",
    "kkt_residuals",
    "kkt_weights",
    "ksvd",
    "ksvd_objective",
    "ksvd_objective_grad",
    "ksvd_objective_terms",
    "primal_weights",
    "primal_weights_backward",
    "shifted_eigen_residual",
    "dual_scores",
    "dual_scores_backward",
    "primal_scores",
    "primal_scores_backward",
    "check_vjp",
    "gradcheck",
    "taylor_test",
    "CONVENTIONS",
    "KSVDConvention",
    "KSVDTerms",
    "ksvd_loss",
    "ksvd_loss_backward",
    "ksvd_terms_from_cache",
    "primal_attention",
    "primal_attention_backward",
    "layer_objective",
    "PrimalAttentionConfig",
    "from_state_dict",
    "init_primal_attention_params",
    "load_state_dict",
    "save_state_dict",
    "to_state_dict",
    "kep_svgp",
    "KEPSVGPConfig",
    "init_kep_svgp_params",
    "kep_from_state_dict",
    "kep_to_state_dict",
    "kep_svgp_attention",
    "kep_svgp_attention_backward",
    "kep_svgp_losses",
    "kep_svgp_losses_backward",
    "kep_svgp_objective",
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
