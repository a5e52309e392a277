"""The layers ``python -m primal_np bench`` runs: one forward + backward closure per
implementation, on seeded inputs and the same parameter values for all of them.

Implementations (``impl``):

* primal layer: ``"reference"`` (``primal_np.primal_attention``, the composition of public
  pairs), ``"fast"`` (``primal_np.fast.fast_primal_attention``, the tuned path),
  ``"torch"`` (``torch_reference.lra_layer``, our statement of the authors' LRA Attention
  module, eager autograd) and ``"torch_compile"`` (the same function under
  ``torch.compile``; the compilation happens in the warm-up run and is never timed);
* canonical layer: ``"primal_np"`` (``primal_np.mha``) and ``"torch"``
  (``torch.nn.functional.multi_head_attention_forward``, need_weights=False).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

PRIMAL_IMPLS = ("reference", "fast", "torch", "torch_compile")
CANONICAL_IMPLS = ("primal_np", "torch")
TORCH_IMPLS = ("torch", "torch_compile")


def impls_for(layer: str) -> tuple[str, ...]:
    """The implementation names of ``layer`` ("primal" | "canonical")."""
    return PRIMAL_IMPLS if layer == "primal" else CANONICAL_IMPLS


def make_layer(layer: str, impl: str, B: int, N: int, D: int, H: int, s: int,
               rank_multi: int, dtype: str):  # fmt: skip
    """(fwd, bwd): ``bwd(fwd())`` runs forward + backward once; every parameter and the
    input get their gradient. Inputs: X, dY ~ N(0, 1) (seed 0), parameters by
    ``init_primal_attention_params`` / ``init_mha_params`` (seed 0)."""
    import numpy as np

    if impl not in impls_for(layer):
        raise ValueError(f"impl {impl!r} is not one of {impls_for(layer)} for the {layer} layer")
    dt = np.dtype(dtype)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, N, D)).astype(dt)
    dy = rng.standard_normal((B, N, D)).astype(dt)
    if layer == "primal":
        from ..params import PrimalAttentionConfig, init_primal_attention_params

        cfg = PrimalAttentionConfig(D, H, s, rank_multi, variant="lra")
        params = init_primal_attention_params(cfg, seed=0, dtype=dt)
        if impl in TORCH_IMPLS:
            return _torch_primal(x, dy, params, cfg, compiled=impl == "torch_compile")
        from .. import fast
        from .. import layer as reference

        pairs: dict[str, tuple[Callable[..., Any], Callable[..., Any]]] = {
            "fast": (fast.fast_primal_attention, fast.fast_primal_attention_backward),
            "reference": (reference.primal_attention, reference.primal_attention_backward),
        }
        fwd_fn, bwd_fn = pairs[impl]
        return (lambda: fwd_fn(x, params, cfg)), (lambda out: bwd_fn(dy, out[1]))

    from ..mha import init_mha_params, mha_attention, mha_attention_backward

    params = init_mha_params(D, seed=0, dtype=dt)
    if impl == "torch":
        return _torch_canonical(x, dy, params, H)

    return (
        lambda: mha_attention(x, params, num_heads=H),
        lambda out: mha_attention_backward(dy, out[1]),
    )


def _torch_backward(leaves, tdy):
    def bwd(y):
        y.backward(tdy)
        return [t.grad for t in leaves]

    return bwd


def _torch_primal(x, dy, params, cfg, *, compiled: bool):
    import torch

    from ..params import to_state_dict
    from ..torch_reference import lra_layer

    tx = torch.tensor(x, requires_grad=True)
    sd = {k: torch.tensor(v, requires_grad=True) for k, v in to_state_dict(params, cfg).items()}
    leaves = [tx, *sd.values()]
    layer = torch.compile(lra_layer, dynamic=False) if compiled else lra_layer
    H, s, m = cfg.num_heads, cfg.low_rank, cfg.rank_multi

    def fwd():
        for t in leaves:
            t.grad = None
        return layer(sd, tx, H, s, m)[0]

    return fwd, _torch_backward(leaves, torch.tensor(dy))


def _torch_canonical(x, dy, params, H):
    import torch
    import torch.nn.functional as tF

    D = x.shape[-1]
    tx = torch.tensor(x, requires_grad=True)
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    leaves = [tx, *tp.values()]

    def fwd():
        for t in leaves:
            t.grad = None
        xt = tx.transpose(0, 1)  # (N, B, D), the functional's layout
        w = torch.cat([tp["W_q"], tp["W_k"], tp["W_v"]])
        b = torch.cat([tp["b_q"], tp["b_k"], tp["b_v"]])
        y, _ = tF.multi_head_attention_forward(
            xt, xt, xt, D, H, w, b, None, None, False, 0.0, tp["W_o"], tp["b_o"],
            training=True, need_weights=False,
        )  # fmt: skip
        return y.transpose(0, 1)

    return fwd, _torch_backward(leaves, torch.tensor(dy))
