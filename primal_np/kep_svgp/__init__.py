"""KEP-SVGP attention (Chen, Tao, Tonin, Suykens, ICML 2024) with a hand-written backward.

Primal-Attention's KSVD scores E, R become the features of a sparse variational Gaussian
process whose inducing variables are the kernel's eigen-pairs: per head, V₁ = (E + R) Λ
(or [E; R] Λ), the attention output is a sample Y = V₁ M_u + (factor-applied noise) of the
posterior, mapped s → p; training adds the KL term and a KSVD loss.

    y, cache = kep_svgp_attention(x, params, config, noise=eps)        # or rng=seed
    losses, lcache = kep_svgp_losses(cache)                            # (kl, ksvd_loss)
    lg = kep_svgp_losses_backward((eta_kl, eta), lcache)
    grads = kep_svgp_attention_backward(dy, cache, loss_grads=lg)      # grads.x, grads.params

Modules: ``params`` (config, the authors' names and initialisers), ``ops`` (the new pairs),
``loss`` (KL, KSVD), ``layer`` (the composition), ``objective`` (the golden-case objective).
"""

from .layer import (
    KEPSVGPCache,
    KEPSVGPGrads,
    authors_squeeze_problem,
    kep_svgp_attention,
    kep_svgp_attention_backward,
)
from .loss import (
    KEPSVGPLossCache,
    KEPSVGPLosses,
    KEPSVGPLossGrads,
    kep_svgp_kl,
    kep_svgp_kl_backward,
    kep_svgp_ksvd_loss,
    kep_svgp_ksvd_loss_backward,
    kep_svgp_losses,
    kep_svgp_losses_backward,
)
from .objective import KEPSVGPObjective, kep_svgp_objective
from .ops import (
    cholesky_factor,
    cholesky_factor_backward,
    eigen_features,
    eigen_features_backward,
    posterior_mean,
    posterior_mean_backward,
    posterior_sample,
    posterior_sample_backward,
    token_map,
    token_map_backward,
)
from .params import (
    FACTOR_LAYOUTS,
    KEP_VARIANTS,
    KEPSVGPConfig,
    check_kep_params,
    draw_noise,
    init_kep_svgp_params,
    kep_from_state_dict,
    kep_param_shapes,
    kep_sample_indices,
    kep_to_state_dict,
    noise_shape,
)

__all__ = [
    "KEPSVGPConfig",
    "KEP_VARIANTS",
    "FACTOR_LAYOUTS",
    "init_kep_svgp_params",
    "kep_param_shapes",
    "kep_to_state_dict",
    "kep_from_state_dict",
    "check_kep_params",
    "kep_sample_indices",
    "noise_shape",
    "draw_noise",
    "eigen_features",
    "eigen_features_backward",
    "posterior_mean",
    "posterior_mean_backward",
    "cholesky_factor",
    "cholesky_factor_backward",
    "posterior_sample",
    "posterior_sample_backward",
    "token_map",
    "token_map_backward",
    "kep_svgp_kl",
    "kep_svgp_kl_backward",
    "kep_svgp_ksvd_loss",
    "kep_svgp_ksvd_loss_backward",
    "KEPSVGPLosses",
    "KEPSVGPLossCache",
    "KEPSVGPLossGrads",
    "kep_svgp_losses",
    "kep_svgp_losses_backward",
    "KEPSVGPCache",
    "KEPSVGPGrads",
    "kep_svgp_attention",
    "kep_svgp_attention_backward",
    "authors_squeeze_problem",
    "KEPSVGPObjective",
    "kep_svgp_objective",
]
