"""Adapter spec of canonical multi-head self-attention: ``check_multi_head_attention``.

The candidate works on PyTorch's layout (the state dict of
``torch.nn.MultiheadAttention(D, H, batch_first=True)``), so that a PyTorch layer is
checked with a few lines of glue (docs/validation.md); the reference is
``primal_np.mha_attention``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..compare import ATOL, DEFAULT_K
from ..magnitudes import mha_magnitudes
from ..mha import init_mha_params, mha_attention, mha_attention_backward
from .core import OPS, AdapterReport, Arrays, OpSpec, check_callable, register_op

__all__ = ["MHAPoint", "MHA_GRID", "MHA_STATE_DICT_NAMES", "check_multi_head_attention"]

MHA_STATE_DICT_NAMES = ("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias")
# reported array (after "grad.") -> primal_np's parameter name
_REPORTED = {
    "in_proj_weight.q": "W_q", "in_proj_weight.k": "W_k", "in_proj_weight.v": "W_v",
    "in_proj_bias.q": "b_q", "in_proj_bias.k": "b_k", "in_proj_bias.v": "b_v",
    "out_proj.weight": "W_o", "out_proj.bias": "b_o",
}  # fmt: skip


@dataclass(frozen=True)
class MHAPoint:
    """One grid point: x (batch, tokens, dim), ``heads`` heads, self-attention.

    x is standard normal times ``x_scale`` (large activations give large logits);
    parameters ``init_mha_params`` (uniform ±1/√D weights and biases). ``padding``: the
    last sequence's final max(1, N // 3) tokens are padding (hidden as keys).
    ``attn_mask``: None or "random" ((N, N), True = may attend, every query sees a key).
    ``causal``: key j visible to query i iff j ≤ i.
    """

    batch: int = 2
    tokens: int = 6
    dim: int = 8
    heads: int = 2
    padding: bool = False
    attn_mask: str | None = None
    causal: bool = False
    x_scale: float = 1.0

    def __str__(self) -> str:
        s = f"B={self.batch} N={self.tokens} D={self.dim} H={self.heads}"
        s += " padding" if self.padding else ""
        s += f" attn_mask={self.attn_mask}" if self.attn_mask else ""
        s += " causal" if self.causal else ""
        return s + (f" x_scale={self.x_scale:g}" if self.x_scale != 1.0 else "")


# Every query sees at least one key: PyTorch's nn.MultiheadAttention zeroes the whole output
# row of a query that sees none (its bias too), primal_np gives the output bias there.
MHA_GRID = (
    MHAPoint(),
    MHAPoint(padding=True),
    MHAPoint(causal=True),
    MHAPoint(attn_mask="random"),
    MHAPoint(padding=True, causal=True),
    MHAPoint(batch=1, tokens=9, dim=12, heads=3),
    MHAPoint(tokens=1),  # one key: dW_q, db_q, dW_k, db_k are zero in exact arithmetic
    MHAPoint(tokens=7, x_scale=4.0),  # logits ~16× larger
)


def _draw_mha(pt: MHAPoint, rng: np.random.Generator) -> tuple[Arrays, dict]:
    if pt.attn_mask not in (None, "random"):
        raise ValueError(f"MHAPoint.attn_mask must be None or 'random', got {pt.attn_mask!r}")
    params = init_mha_params(pt.dim, seed=int(rng.integers(2**31)))
    x = rng.standard_normal((pt.batch, pt.tokens, pt.dim)) * pt.x_scale
    padding = None
    if pt.padding:
        padding = np.ones((pt.batch, pt.tokens), dtype=bool)
        padding[-1, pt.tokens - max(1, pt.tokens // 3) :] = False
    attn_mask = None
    if pt.attn_mask == "random":
        attn_mask = rng.random((pt.tokens, pt.tokens)) > 0.35
        attn_mask[:, 0] |= ~attn_mask.any(-1)
    tensors = {"x": x} | _state_dict(params)
    options = {"num_heads": pt.heads, "padding": padding, "attn_mask": attn_mask,
               "causal": pt.causal}  # fmt: skip
    return tensors, options


def _state_dict(params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """primal_np's W_q, b_q, ... → PyTorch's in_proj_weight, in_proj_bias, out_proj.*."""
    return {
        "in_proj_weight": np.concatenate([params["W_q"], params["W_k"], params["W_v"]]),
        "in_proj_bias": np.concatenate([params["b_q"], params["b_k"], params["b_v"]]),
        "out_proj.weight": params["W_o"],
        "out_proj.bias": params["b_o"],
    }


def _params(t: Arrays) -> dict[str, np.ndarray]:
    """PyTorch's state dict → primal_np's W_q, b_q, ..., W_o, b_o."""
    w, b = np.split(t["in_proj_weight"], 3), np.split(t["in_proj_bias"], 3)
    p = {f"W_{c}": w[i] for i, c in enumerate("qkv")} | {
        f"b_{c}": b[i] for i, c in enumerate("qkv")
    }
    return p | {"W_o": t["out_proj.weight"], "b_o": t["out_proj.bias"]}


def _reported(grads: Mapping[str, np.ndarray], x_grad: np.ndarray) -> Arrays:
    """{"x": dx, "in_proj_weight.q": dW_q, ...} from primal_np-named gradients."""
    return {"x": x_grad} | {name: grads[p] for name, p in _REPORTED.items()}


def _mha_reference(t: Arrays, o: dict) -> tuple[Arrays, Callable[[Arrays], Arrays]]:
    y, cache = mha_attention(
        t["x"], _params(t), num_heads=o["num_heads"], padding_mask=o["padding"],
        attn_mask=o["attn_mask"], causal=o["causal"],
    )  # fmt: skip

    def vjp(cot: Arrays) -> Arrays:
        g = mha_attention_backward(cot["out"], cache)
        return _reported(g.params, g.x)

    return {"out": y}, vjp


def _mha_magnitudes(t: Arrays, o: dict, cot: Arrays) -> dict:
    mags = mha_magnitudes(
        t["x"], _params(t), cot["out"], num_heads=o["num_heads"], padding_mask=o["padding"],
        attn_mask=o["attn_mask"], causal=o["causal"],
    )  # fmt: skip
    out = {"output.out": mags["out"], "grad.x": mags["x"]}
    return out | {f"grad.{name}": mags[p] for name, p in _REPORTED.items()}


def _call_mha(fn: Callable, t: Arrays, o: dict) -> Arrays:
    sd = {n: t[n] for n in MHA_STATE_DICT_NAMES}
    return {"out": fn(t["x"], sd, o["padding"], o["attn_mask"], o["causal"], o["num_heads"])}


def _split_rows(g: object, name: str) -> dict[str, np.ndarray]:
    """in_proj_* gradient (3D, ...) → its q, k, v blocks; a misshapen one is reported as is
    under the three names (each row then names the shape problem)."""
    g = np.asarray(g)
    if g.ndim >= 1 and g.shape[0] % 3 == 0:
        return {f"{name}.{c}": a for c, a in zip("qkv", np.split(g, 3), strict=True)}
    return {f"{name}.{c}": g for c in "qkv"}


def _call_mha_backward(bwd: Callable, t: Arrays, o: dict, cot: Arrays) -> Arrays:
    sd = {n: t[n] for n in MHA_STATE_DICT_NAMES}
    g = bwd(t["x"], sd, o["padding"], o["attn_mask"], o["causal"], o["num_heads"], cot["out"])
    if not isinstance(g, Mapping):
        raise TypeError(
            "backward must return a dict keyed by 'x' and the state-dict names; "
            f"got {type(g).__name__}"
        )
    out = {n: np.asarray(g[n]) for n in ("x", "out_proj.weight", "out_proj.bias") if n in g}
    for name in ("in_proj_weight", "in_proj_bias"):
        if name in g:
            out |= _split_rows(g[name], name)
    return out


register_op(
    OpSpec(
        "multi_head_attention",
        MHA_GRID,
        _draw_mha,
        _call_mha,
        _call_mha_backward,
        _mha_reference,
        magnitudes=_mha_magnitudes,
    )
)


def check_multi_head_attention(
    fn: Callable,
    *,
    backward: Callable | None = None,
    grid: Sequence[MHAPoint] | None = None,
    dtypes: Sequence[str] = ("float64", "float32"),
    k: float = DEFAULT_K,
    seed: int = 0,
    atol: float = ATOL,
) -> AdapterReport:
    """Check a canonical multi-head self-attention layer against ``primal_np.mha_attention``.

    ``fn(x, state_dict, key_padding_mask, attn_mask, causal, num_heads) -> out``:

    - ``x`` (B, N, D), batch first; the layer attends over x itself (query = key = value);
    - ``state_dict``: PyTorch's names and layouts — ``in_proj_weight`` (3D, D) = [W_q; W_k;
      W_v], ``in_proj_bias`` (3D,), ``out_proj.weight`` (D, D), ``out_proj.bias`` (D,) —
      the state dict of ``torch.nn.MultiheadAttention(D, H, batch_first=True)``;
    - ``key_padding_mask``: None or boolean (B, N), **True = real token** (primal_np's
      polarity: PyTorch's is the opposite, pass ``~mask``); padded tokens are hidden as
      keys, their own output rows are still computed;
    - ``attn_mask``: None or boolean (N, N), **True = may attend** (PyTorch's boolean
      ``attn_mask`` is the opposite);
    - ``causal``: key j visible to query i iff j ≤ i, combined with the masks by AND;
    - ``num_heads``: H (head dim p = D / H, scale 1/√p).

    Returns out (B, N, D) = merge_heads(softmax(Q Kᵀ/√p) V) W_oᵀ + b_o.

    ``backward(x, state_dict, key_padding_mask, attn_mask, causal, num_heads, dout) ->
    dict`` (optional): the gradients of Σ⟨dout, out⟩ with respect to ``"x"`` and each
    state-dict entry (its name). The in-projection's gradients are reported in three
    parts, ``grad.in_proj_weight.q`` / ``.k`` / ``.v`` and ``grad.in_proj_bias.q`` / ``.k``
    / ``.v``, so a report says which projection is wrong; ``grad.in_proj_bias.k`` is zero
    in exact arithmetic (a shift common to all keys cancels in the softmax) and is judged
    against its operand magnitude (``primal_np.magnitudes``), not against max|r|.

    Default grid ``MHA_GRID``: padding, causal, an (N, N) mask, padding with causal, three
    heads, N = 1 (the whole query and key path has zero gradient), large activations.
    See ``check_callable`` for the other arguments.
    """
    return check_callable(
        OPS["multi_head_attention"], fn, backward=backward, grid=grid, dtypes=dtypes, k=k,
        seed=seed, atol=atol,
    )  # fmt: skip
