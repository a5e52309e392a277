"""verify rows for the Primal-Attention layer and its KSVD loss."""

from __future__ import annotations

import importlib.util
import tracemalloc

import numpy as np

from ..gradcheck import gradcheck
from ..ksvd import ksvd_objective
from ..ksvd_loss import KSVDConvention, ksvd_loss, ksvd_terms_from_cache
from ..layer import primal_attention, primal_attention_backward
from ..objective import layer_objective
from ..params import PrimalAttentionConfig, init_primal_attention_params, to_state_dict
from . import CheckResult, register_check, result
from .dual_checks import FD_RTOL

_VARIANTS = {
    "lra, trace on params": (dict(variant="lra"), "lra", True),
    "lra, trace on W_{e|X}": (dict(variant="lra"), "lra_trace_x", True),
    "vision": (dict(variant="vision", num_tokens=5), "vision", False),
    "causal, per-sample loss": (dict(variant="causal"), "per_sample", False),
}


def _setup(kw, seed):
    cfg = PrimalAttentionConfig(dim=6, num_heads=2, low_rank=2, **{"rank_multi": 3, **kw})
    params = init_primal_attention_params(cfg, seed=seed, linear_init="torch")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 5, 6))
    cot = rng.standard_normal(x.shape)
    return cfg, params, x, cot


@register_check("primal layer")
def layer_gradients():
    rows = []
    for i, (label, (kw, conv, masked)) in enumerate(_VARIANTS.items()):
        cfg, params, x, cot = _setup(kw, 30 + i)
        mask = np.array([[True] * 5, [True, True, True, False, False]]) if masked else None

        def value(x, _cfg=cfg, _conv=conv, _mask=mask, _cot=cot, **p):
            return layer_objective(
                x, p, _cfg, cotangent=_cot, eta=0.5, convention=_conv, mask=_mask
            ).value

        r = layer_objective(x, params, cfg, cotangent=cot, eta=0.5, convention=conv, mask=mask)
        rep = gradcheck(value, {"x": x, **params}, {"x": r.dx, **r.grads}, rtol=FD_RTOL)
        rows.append(
            result(
                f"primal layer + KSVD loss ({label}): all gradients vs finite differences",
                rep.max_rel_err,
                FD_RTOL,
            )
        )
    return rows


@register_check("primal layer")
def torch_parity():
    label = "primal layer parity with the PyTorch statement of the authors' code (4 variants)"
    if importlib.util.find_spec("torch") is None:
        return CheckResult(label, float("nan"), 1e-10, None, "torch not installed")
    from .. import torch_reference as ref

    worst = 0.0
    for i, (kw, conv, masked) in enumerate(_VARIANTS.values()):
        cfg, params, x, cot = _setup(kw, 40 + i)
        mask = np.array([[True] * 5, [True, True, True, False, False]]) if masked else None
        trace_no_x = conv != "lra_trace_x"
        ours = layer_objective(x, params, cfg, cotangent=cot, eta=0.5, convention=conv, mask=mask)
        theirs = ref.layer_objective(
            cfg, to_state_dict(params, cfg), x, cot, 0.5, mask=mask, trace_no_x=trace_no_x
        )
        pairs = [
            (ours.out, theirs["out"]),
            (ours.escore, theirs["escore"]),
            (ours.dx, theirs["dx"]),
        ]
        pairs += [(np.asarray(ours.ksvd_loss), np.asarray(theirs["loss"]))]
        ours_sd = to_state_dict(ours.grads, cfg)
        pairs += [(ours_sd[k], v) for k, v in theirs["grads"].items()]
        for a, b in pairs:
            worst = max(worst, float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300)))
    return result(label, worst, 1e-10)


@register_check("primal layer")
def reparametrisation():
    """The code's per-problem term with λ equals the paper's J with Λ = λ²/N."""
    cfg, params, x, _ = _setup(dict(variant="lra"), 50)
    _, cache = primal_attention(x, params, cfg)
    n_tok = x.shape[1]
    conv = KSVDConvention(trace="data", square="problem")
    _, lc = ksvd_loss([ksvd_terms_from_cache(cache)], conv)
    j = lc.layers[0].j
    err = 0.0
    for b in range(x.shape[0]):
        for h in range(cfg.num_heads):
            J = ksvd_objective(
                cache.phi_q[b, h],
                cache.phi_k[b, h],
                cache.we_x[b, h],
                cache.wr_x[b, h],
                params["lam"][h] ** 2 / n_tok,
            )
            err = max(err, abs(J - j[b, h]) / abs(J))
    return result(
        "code's KSVD term with λ = paper's J with Λ = λ²/N (per sequence and head)", err, 1e-12
    )


@register_check("primal layer")
def linear_memory():
    cfg = PrimalAttentionConfig(dim=16, num_heads=2, low_rank=4, rank_multi=2)
    params = init_primal_attention_params(cfg, seed=0)
    n = 4096
    x = np.random.default_rng(0).standard_normal((1, n, 16))
    tracemalloc.start()
    y, cache = primal_attention(x, params, cfg)
    primal_attention_backward(y, cache)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return result(
        "primal layer peak memory at N = 4096, as a fraction of one N×N float64 array",
        peak / (n * n * 8),
        0.1,
    )


@register_check("primal layer")
def fast_path_against_reference():
    from ..fast.validate import check_fast_path

    rep = check_fast_path()
    worst = max(
        (a.max_abs_err / a.bound for r in rep.results for a in r.report.rows if a.bound),
        default=float("inf"),
    )
    return result(
        f"fast path vs reference through check_primal_attention ({len(rep.results)} grid "
        "points × precisions; max err/bound)",
        worst if rep.ok else float("inf"),
        1.0,
        "" if rep.ok else rep.results[0].report.summary(),
    )
