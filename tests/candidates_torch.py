"""Candidates that wrap the PyTorch statement of the authors' code (primal_np/torch_reference.py)
and torch autograd as NumPy-in, NumPy-out functions, computing in the dtype of their inputs.

Import only inside tests that use the ``torch`` fixture (importing this module imports torch).
These are the wrappers docs/validation.md describes for wrapping the authors' own modules.
"""

from __future__ import annotations

import numpy as np
import torch

from primal_np import torch_reference as ref


def _t(a, grad: bool):
    return torch.from_numpy(np.ascontiguousarray(a)).requires_grad_(grad)


def scores(phi_q, phi_k, W_e, W_r, dE=None, dR=None):
    """check_primal_scores: fn(phi_q, phi_k, W_e, W_r) and, with dE, dR, the backward."""
    t = [_t(a, dE is not None) for a in (phi_q, phi_k, W_e, W_r)]
    E, R = t[0] @ t[2], t[1] @ t[3]  # matmul broadcasts the leading axes
    if dE is None:
        return E.detach().numpy(), R.detach().numpy()
    torch.autograd.backward([E, R], [torch.from_numpy(dE), torch.from_numpy(dR)])
    return tuple(a.grad.numpy() for a in t)


def _torch_loss(layers, convention):
    # primal_np's layer order (escore, rscore, lam, We, Wr, we_x, wr_x) -> torch_reference's
    # (E, R, we_x, wr_x, lam, We, Wr)
    terms = [(E, R, wex, wrx, lam, We, Wr) for E, R, lam, We, Wr, wex, wrx in layers]
    if convention in ("lra", "lra_trace_x"):
        return ref.ksvd_loss_batch_mean(terms, trace_no_x=convention == "lra")
    if convention == "per_sample":
        return ref.ksvd_loss_per_sample(terms)
    raise NotImplementedError(f"the authors' code has no {convention!r} loss")


def ksvd_loss(layers, convention):
    """check_ksvd_loss: fn(layers, convention) for the authors' conventions."""
    tl = [[None if a is None else _t(a, False) for a in layer] for layer in layers]
    return _torch_loss(tl, convention).detach().numpy()


def ksvd_loss_backward(layers, convention, dloss):
    tl = [[None if a is None else _t(a, True) for a in layer] for layer in layers]
    loss = _torch_loss(tl, convention)
    loss.backward(torch.tensor(dloss, dtype=loss.dtype))
    return [
        tuple(None if a is None or a.grad is None else a.grad.numpy() for a in layer)
        for layer in tl
    ]


def _layer(x, state_dict, mask, config, grad: bool):
    tx = _t(x, grad)
    sd = {k: _t(v, grad) for k, v in state_dict.items()}
    H, s, m = config["num_heads"], config["low_rank"], config["rank_multi"]
    if config["variant"] == "lra":
        tm = None if mask is None else torch.from_numpy(mask)  # bool; the layer casts it
        y, *terms = ref.lra_layer(sd, tx, H, s, m, tm)
        loss = ref.ksvd_loss_batch_mean([terms], config["trace_no_x"])
    elif config["variant"] == "vision":
        y, *terms = ref.vision_layer(sd, tx, H, s, m)
        loss = ref.ksvd_loss_batch_mean([terms], config["trace_no_x"])
    else:
        y, *terms = ref.causal_layer(sd, tx, H, s)
        loss = ref.ksvd_loss_per_sample([terms])
    return tx, sd, y, terms, loss


def layer(x, state_dict, mask, config):
    """check_primal_attention: fn(x, state_dict, mask, config)."""
    _, _, y, terms, loss = _layer(x, state_dict, mask, config, grad=False)
    return {
        "out": y.numpy(),
        "escore": terms[0].numpy(),
        "rscore": terms[1].numpy(),
        "ksvd_loss": loss.numpy(),
    }


def layer_backward(x, state_dict, mask, config, dout, eta):
    """check_primal_attention: backward(x, state_dict, mask, config, dout, eta)."""
    tx, sd, y, _, loss = _layer(x, state_dict, mask, config, grad=True)
    (torch.sum(y * torch.from_numpy(dout)) + eta * loss).backward()
    return {"x": tx.grad.numpy()} | {k: v.grad.numpy() for k, v in sd.items()}


def multi_head_attention(x, state_dict, key_padding_mask, attn_mask, causal, num_heads, dout=None):
    """check_multi_head_attention's fn (and, with dout, backward) around
    ``torch.nn.MultiheadAttention`` (docs/validation.md): its state dict as given, primal_np's
    mask polarity (True = may attend / real token) inverted for torch (True = hidden), the
    causal triangle folded into the attention mask; bfloat16 from ``current_precision()``."""
    from primal_np.adapters import current_precision

    dt = torch.bfloat16 if current_precision() == "bfloat16" else getattr(torch, x.dtype.name)
    layer = torch.nn.MultiheadAttention(x.shape[-1], num_heads, batch_first=True, dtype=dt)
    layer.load_state_dict({k: torch.from_numpy(v).to(dt) for k, v in state_dict.items()})
    tx = torch.from_numpy(x).to(dt).requires_grad_(dout is not None)
    if causal:
        tri = np.tri(x.shape[1], dtype=bool)
        attn_mask = tri if attn_mask is None else attn_mask & tri
    kw = {"need_weights": False}
    if key_padding_mask is not None:
        kw["key_padding_mask"] = torch.from_numpy(~key_padding_mask)
    if attn_mask is not None:
        kw["attn_mask"] = torch.from_numpy(~attn_mask)
    out, _ = layer(tx, tx, tx, **kw)
    host = (
        (lambda a: a.detach().float().numpy())
        if dt == torch.bfloat16
        else (lambda a: a.detach().numpy())
    )
    if dout is None:
        return host(out)
    out.backward(torch.from_numpy(dout).to(dt))
    return {"x": host(tx.grad)} | {n: host(p.grad) for n, p in layer.named_parameters()}
