"""Stand-alone attention implementations used as *candidates* by the validation tests.

Written independently of primal_np (einsum, its own softmax) so that a passing check
means two implementations agree, and with switches that plant the classic bugs:

- ``empty_row_guard=False``: the naive softmax exp(s − max s) / Σ on a row with no
  visible key computes (−inf) − (−inf) = NaN;
- ``rowsum_term=False``: the softmax backward dS = P ∘ dP, missing − rowsum(dP ∘ P);
- ``max_shift=False``: exp(s) / Σ exp(s) without subtracting the row maximum: exp
  overflows to inf (inf / inf = NaN) once a logit passes 88.7 in float32 (709.8 in
  float64);
- ``accumulate="bfloat16"``: every sum (over keys, queries or features) is accumulated
  in a bfloat16 register: the running sum is rounded to bfloat16 after each addition
  (a kernel that stores its accumulator in the input precision); products and exp are
  float32.
"""

from __future__ import annotations

import math

import numpy as np


def _bf16(x):
    """Round float32 values to bfloat16 (nearest, ties to even), kept as float32."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    bits = bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))
    return (bits & np.uint32(0xFFFF0000)).view(np.float32)


def _acc_matmul(a, b):
    """a @ b with the running sum over the contracted index rounded to bfloat16 each step."""
    acc = np.zeros(np.broadcast_shapes(a.shape[:-1] + (1,), b.shape[:-2] + (1, b.shape[-1])))
    acc = acc.astype(np.float32)
    for t in range(a.shape[-1]):
        acc = _bf16(acc + a[..., :, t : t + 1] * b[..., t : t + 1, :])
    return acc


def _mm(a, b, accumulate):
    return np.matmul(a, b) if accumulate is None else _acc_matmul(a, b)


def _row_sum(x, accumulate):
    if accumulate is None:
        return x.sum(axis=-1, keepdims=True)
    return _acc_matmul(x, np.ones((x.shape[-1], 1), dtype=x.dtype))


def _probs(q, k, mask, causal, scale, empty_row_guard, max_shift=True, accumulate=None):
    n, m, d = q.shape[-2], k.shape[-2], q.shape[-1]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    s = _mm(q, np.swapaxes(k, -1, -2), accumulate) * q.dtype.type(scale)
    visible = np.ones((n, m), bool) if mask is None else np.asarray(mask, bool)
    if causal:
        visible = visible & (np.arange(m)[None, :] <= np.arange(n)[:, None])
    s = np.where(visible, s, -np.inf)
    top = s.max(axis=-1, keepdims=True) if max_shift else np.zeros_like(s[..., :1])
    if empty_row_guard:
        top = np.where(np.isfinite(top), top, 0)
    with np.errstate(invalid="ignore", over="ignore"):  # the buggy variants make NaN / inf
        e = np.exp(s - top)
        z = _row_sum(e, accumulate)
        if empty_row_guard:
            return np.divide(e, z, out=np.zeros_like(e), where=z > 0), scale
        return e / z, scale


def attention(
    q, k, v, mask=None, causal=False, scale=None, *, empty_row_guard=True, max_shift=True,
    accumulate=None,
):  # fmt: skip
    """out = softmax(scale · q kᵀ over visible keys) v, computed in q's dtype."""
    p, _ = _probs(q, k, mask, causal, scale, empty_row_guard, max_shift, accumulate)
    with np.errstate(invalid="ignore"):
        return _mm(p, v, accumulate)


def attention_backward(
    q, k, v, mask, causal, scale, dout, *, empty_row_guard=True, rowsum_term=True,
    max_shift=True, accumulate=None,
):  # fmt: skip
    """(dq, dk, dv) of Σ dout ∘ out, recomputing P."""
    p, scale = _probs(q, k, mask, causal, scale, empty_row_guard, max_shift, accumulate)
    dout = dout.astype(q.dtype)
    with np.errstate(invalid="ignore"):
        dv = _mm(np.swapaxes(p, -1, -2), dout, accumulate)
        dp = _mm(dout, np.swapaxes(v, -1, -2), accumulate)
        if rowsum_term:
            dp = dp - _row_sum(dp * p, accumulate)
        ds = p * dp
        dq = _mm(ds, k, accumulate) * q.dtype.type(scale)
        dk = _mm(np.swapaxes(ds, -1, -2), q, accumulate) * q.dtype.type(scale)
    return dq, dk, dv


# --------------------------------------------------------------------------- primal scores
def _sum_to(g, shape):
    """Sum the broadcast leading axes of ``g`` back to ``shape``."""
    g = g.sum(axis=tuple(range(g.ndim - len(shape))))
    return g.sum(
        axis=tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1), keepdims=True
    )


def scores(phi_q, phi_k, W_e, W_r):
    """E = Φ_q W_e, R = Φ_k W_r with broadcast leading axes."""
    return np.einsum("...np,...ps->...ns", phi_q, W_e), np.einsum("...mp,...ps->...ms", phi_k, W_r)


def scores_backward(phi_q, phi_k, W_e, W_r, dE, dR, *, sum_broadcast=True):
    """(dΦ_q, dΦ_k, dW_e, dW_r); ``sum_broadcast=False`` forgets to sum the weights'
    gradients over the axes they were broadcast along (returns them at the batch shape)."""
    dW_e = np.einsum("...np,...ns->...ps", phi_q, dE)
    dW_r = np.einsum("...mp,...ms->...ps", phi_k, dR)
    if sum_broadcast:
        dW_e, dW_r = _sum_to(dW_e, W_e.shape), _sum_to(dW_r, W_r.shape)
    dphi_q = np.einsum("...ns,...ps->...np", dE, W_e)
    dphi_k = np.einsum("...ms,...ps->...mp", dR, W_r)
    return dphi_q, dphi_k, dW_e, dW_r


# --------------------------------------------------------------------------- KSVD loss
# Written from docs/conformance.md (discrepancies 1–4, the presets) and the paper's J. A layer is
# (escore, rscore, lam, We, Wr, we_x, wr_x); quadratic="lambda" plants the classic slip of
# the code conventions: ½ eᵀ diag(λ) e instead of ½‖λ ⊙ e‖².
_LOSS = {  # convention -> (quadratic, token reduction, trace on, square, layer reduction)
    "lra": ("lambda_sq", "mean", "params", "batch", "mean"),
    "lra_trace_x": ("lambda_sq", "mean", "data", "batch", "mean"),
    "per_sample": ("lambda_sq", "mean", "params", "sample", "mean"),
    "paper": ("Lambda", "sum", "params", "problem", "sum"),
}


def _loss_terms(layer, convention, quadratic):
    E, R, lam, We, Wr, we_x, wr_x = layer
    quad, tokens, trace, square, _ = _LOSS[convention]
    if quadratic is not None and convention != "paper":
        quad = quadratic
    B, H, N, s = E.shape
    coef = lam * lam if quad == "lambda_sq" else lam  # (H, s): q(e) = ½ Σ_l coef_l e_l²
    w = 1.0 / N if tokens == "mean" else 1.0
    A = 0.5 * w * np.einsum("bhns,hs->bh", E * E + R * R, coef)
    if trace == "data":
        T = np.einsum("bhps,bhps->bh", we_x, wr_x)
    else:
        T = np.broadcast_to(np.einsum("hns,hns->h", We, Wr), (B, H))
    return A - T, quad, coef, w, trace, square  # j (B, H)


def ksvd_loss(layers, convention, *, quadratic=None):
    # Accumulated in the scores' dtype with scalars of that dtype, never a Python number:
    # under NumPy 1.x a float32 scalar combined with a Python float (or int) is float64.
    f = layers[0][0].dtype.type
    total = f(0)
    for layer in layers:
        j, *_, square = _loss_terms(layer, convention, quadratic)
        if square == "batch":
            jm = j.mean()
            total = total + jm * jm
        elif square == "sample":
            jm = j.mean(axis=1)
            total = total + (jm * jm).mean()
        else:
            total = total + (j * j).sum()
    return total / f(len(layers)) if _LOSS[convention][4] == "mean" else total


def ksvd_loss_backward(layers, convention, dloss, *, quadratic=None):
    """Per layer (d_escore, d_rscore, d_lam, d_We, d_Wr, d_we_x, d_wr_x); None = zero."""
    scale = dloss / len(layers) if _LOSS[convention][4] == "mean" else dloss
    out = []
    for layer in layers:
        E, R, lam, We, Wr, we_x, wr_x = layer
        j, quad, coef, w, trace, square = _loss_terms(layer, convention, quadratic)
        B, H = j.shape
        if square == "batch":  # L = (mean_bh j)²
            g = np.full((B, H), 2 * j.mean() / (B * H))
        elif square == "sample":  # L = mean_b (mean_h j)²
            g = np.repeat(2 * j.mean(axis=1, keepdims=True) / (B * H), H, axis=1)
        else:  # L = Σ_bh j²
            g = 2 * j
        g = (scale * g).astype(E.dtype)
        gw = (g * w)[:, :, None, None] * coef[None, :, None, :]
        dcoef = np.einsum("bh,bhns->hs", g * w, 0.5 * (E * E + R * R))
        d_lam = dcoef * 2 * lam if quad == "lambda_sq" else dcoef
        if trace == "data":
            grads = (None, None, -g[:, :, None, None] * wr_x, -g[:, :, None, None] * we_x)
        else:
            gh = g.sum(axis=0)[:, None, None]
            grads = (-gh * Wr, -gh * We, None, None)
        out.append((gw * E, gw * R, d_lam, *grads))
    return out


# --------------------------------------------------------------------------- Primal-Attention layer
# The authors' layers on their state dicts (docs/conformance.md), forward and a hand-written
# backward of Σ⟨dout, out⟩ + η·KSVD. Planted bugs: ``drop_rscores`` (the head output from
# [E, 0], i.e. W_c[:, :s] only), ``index="np_linspace"`` (np.linspace(...).astype(int)),
# ``index="shift"`` (the middle sampled index moved by one), ``quadratic="lambda"`` (the
# KSVD loss with λ instead of λ²).
_NAMES = {  # role -> the authors' state-dict name
    "lra": {"wq": "W_q.weight", "bq": "W_q.bias", "wk": "W_k.weight", "bk": "W_k.bias",
            "we": "We", "wr": "Wr", "lam": "attn.Lambda", "wc": "attn.concate_weight.weight",
            "bc": "attn.concate_weight.bias", "wo": "ff.weight", "bo": "ff.bias"},
    "vision": {"wqk": "qk.weight", "bqk": "qk.bias", "we": "we", "wr": "wr", "lam": "Lambda",
               "wc": "concate_weight.weight", "bc": "concate_weight.bias",
               "wo": "proj.weight", "bo": "proj.bias"},
    "causal": {"wq": "query_projection.weight", "bq": "query_projection.bias",
               "wk": "key_projection.weight", "bk": "key_projection.bias", "we": "We",
               "wr": "Wr", "lam": "Lambda", "wc": "concate_weight.weight",
               "bc": "concate_weight.bias", "wo": "out_projection.weight",
               "bo": "out_projection.bias"},
}  # fmt: skip


def linspace_indices(num_tokens, n):
    """torch.linspace(0, N − 1, n, dtype=int64): step in double, two-sided, truncated."""
    if n == 1:
        return np.zeros(1, dtype=np.int64)
    end, step = num_tokens - 1, (num_tokens - 1) / (n - 1)
    vals = [i * step if i < n // 2 else end - step * (n - 1 - i) for i in range(n)]
    return np.array([int(v) for v in vals], dtype=np.int64)


def _indices(num_tokens, config, index):
    n = config["low_rank"] * config["rank_multi"]
    if config["variant"] == "vision" and num_tokens <= n:
        idx = np.arange(num_tokens)
    elif index == "np_linspace":
        idx = np.linspace(0, num_tokens - 1, n).astype(int)
    else:
        idx = linspace_indices(num_tokens, n)
    if index == "shift":
        i, idx = len(idx) // 2, idx.copy()
        idx[i] += 1 if idx[i] < num_tokens - 1 else -1
    return idx


def _split(t, H):
    B, N, D = t.shape
    return t.reshape(B, N, H, D // H).transpose(0, 2, 1, 3)


def _join(t):
    B, H, N, p = t.shape
    return t.transpose(0, 2, 1, 3).reshape(B, N, H * p)


def _layer_forward(x, sd, mask, config, index=None, drop_rscores=False, quadratic=None):
    v, H, s = config["variant"], config["num_heads"], config["low_rank"]
    B, N, D = x.shape
    P = {role: sd[name] for role, name in _NAMES[v].items() if name in sd}
    if v == "vision":
        qk = np.einsum("bnd,ed->bne", x, P["wqk"]) + P.get("bqk", 0)
        qk = qk.reshape(B, N, 2, H, D // H)
        q, k = qk[:, :, 0].transpose(0, 2, 1, 3), qk[:, :, 1].transpose(0, 2, 1, 3)
    else:
        q = _split(np.einsum("bnd,ed->bne", x, P["wq"]) + P["bq"], H)
        k = _split(np.einsum("bnd,ed->bne", x, P["wk"]) + P["bk"], H)
    steps = np.arange(1, N + 1).astype(x.dtype)[:, None]
    if v == "causal":  # running means, 1-indexed
        q, k = np.cumsum(q, axis=2) / steps, np.cumsum(k, axis=2) / steps
    nq = np.linalg.norm(q, axis=-1, keepdims=True)
    nk = np.linalg.norm(k, axis=-1, keepdims=True)
    phi_q, phi_k = q / np.maximum(nq, 1e-12), k / np.maximum(nk, 1e-12)
    idx = F = we_x = wr_x = None
    if v == "causal":  # data-independent weights (H, p, s)
        E = np.einsum("bhNp,hps->bhNs", phi_q, P["we"])
        R = np.einsum("bhNp,hps->bhNs", phi_k, P["wr"])
    else:  # W_{e|X} = Fᵀ We with F the sampled rows of x, head h's channels
        idx = _indices(N, config, index)
        F = _split(x[:, idx, :], H)
        we_x = np.einsum("bhnp,hns->bhps", F, P["we"])
        wr_x = np.einsum("bhnp,hns->bhps", F, P["wr"])
        E = np.einsum("bhNp,bhps->bhNs", phi_q, we_x)
        R = np.einsum("bhNp,bhps->bhNs", phi_k, wr_x)
    cat = np.concatenate([E, np.zeros_like(R) if drop_rscores else R], axis=-1)
    head = np.einsum("bhnc,pc->bhnp", cat, P["wc"]) + P["bc"]
    if mask is not None:
        head = head * mask[:, None, :, None]
    merged = _join(head)
    out = np.einsum("bnd,ed->bne", merged, P["wo"]) + P["bo"]
    conv = "per_sample" if v == "causal" else ("lra" if config["trace_no_x"] else "lra_trace_x")
    terms = (E, R, P["lam"], P["we"], P["wr"], we_x, wr_x)
    loss = ksvd_loss([terms], conv, quadratic=quadratic)
    return locals()


def primal_layer(x, sd, mask, config, **bugs):
    """fn(x, state_dict, mask, config) of ``check_primal_attention``."""
    c = _layer_forward(x, sd, mask, config, **bugs)
    return {"out": c["out"], "escore": c["E"], "rscore": c["R"], "ksvd_loss": np.asarray(c["loss"])}


def _cosine_backward(dphi, phi, norm):
    """φ = x / max(‖x‖, 1e-12) ⇒ dx = (dφ − φ ⟨φ, dφ⟩) / ‖x‖ (or dφ / 1e-12 below the clamp)."""
    tangential = (dphi - phi * (phi * dphi).sum(-1, keepdims=True)) / np.maximum(norm, 1e-12)
    return np.where(norm > 1e-12, tangential, dphi / 1e-12)


def primal_layer_backward(x, sd, mask, config, dout, eta, **bugs):
    """backward(x, state_dict, mask, config, dout, eta) of ``check_primal_attention``."""
    c = _layer_forward(x, sd, mask, config, **bugs)
    P, v, s, idx = c["P"], c["v"], c["s"], c["idx"]
    B, N, D = x.shape
    dout = dout.astype(x.dtype)
    g = {"wo": np.einsum("bne,bnd->ed", dout, c["merged"]), "bo": dout.sum(axis=(0, 1))}
    dhead = _split(np.einsum("bne,ed->bnd", dout, P["wo"]), c["H"])
    if mask is not None:
        dhead = dhead * mask[:, None, :, None]
    g["wc"] = np.einsum("bhnp,bhnc->pc", dhead, c["cat"])
    g["bc"] = dhead.sum(axis=(0, 1, 2))
    dcat = np.einsum("bhnp,pc->bhnc", dhead, P["wc"])
    dE, dR = dcat[..., :s], dcat[..., s:] * (not bugs.get("drop_rscores", False))
    quadratic = bugs.get("quadratic")
    ((lE, lR, g["lam"], lWe, lWr, lwe_x, lwr_x),) = ksvd_loss_backward(
        [c["terms"]], c["conv"], eta, quadratic=quadratic
    )
    dE, dR = dE + lE, dR + lR
    g["we"] = np.zeros_like(P["we"]) if lWe is None else lWe
    g["wr"] = np.zeros_like(P["wr"]) if lWr is None else lWr
    phi_q, phi_k = c["phi_q"], c["phi_k"]
    dx = np.zeros_like(x)
    if v == "causal":
        dphi_q = np.einsum("bhNs,hps->bhNp", dE, P["we"])
        dphi_k = np.einsum("bhNs,hps->bhNp", dR, P["wr"])
        g["we"] = g["we"] + np.einsum("bhNp,bhNs->hps", phi_q, dE)
        g["wr"] = g["wr"] + np.einsum("bhNp,bhNs->hps", phi_k, dR)
    else:
        dphi_q = np.einsum("bhNs,bhps->bhNp", dE, c["we_x"])
        dphi_k = np.einsum("bhNs,bhps->bhNp", dR, c["wr_x"])
        dwe_x = np.einsum("bhNp,bhNs->bhps", phi_q, dE) + (0 if lwe_x is None else lwe_x)
        dwr_x = np.einsum("bhNp,bhNs->bhps", phi_k, dR) + (0 if lwr_x is None else lwr_x)
        g["we"] = g["we"] + np.einsum("bhnp,bhps->hns", c["F"], dwe_x)
        g["wr"] = g["wr"] + np.einsum("bhnp,bhps->hns", c["F"], dwr_x)
        dF = np.einsum("hns,bhps->bhnp", P["we"], dwe_x)
        dF = dF + np.einsum("hns,bhps->bhnp", P["wr"], dwr_x)
        gather = (idx[:, None] == np.arange(N)[None, :]).astype(x.dtype)  # F = gather · x
        dx = dx + np.einsum("jN,bjd->bNd", gather, _join(dF))
    dq = _cosine_backward(dphi_q, phi_q, c["nq"])
    dk = _cosine_backward(dphi_k, phi_k, c["nk"])
    if v == "causal":  # q̃_i = (1/i) Σ_{t≤i} q_t ⇒ dq_t = Σ_{i≥t} dq̃_i / i
        dq = np.flip(np.cumsum(np.flip(dq / c["steps"], 2), 2), 2)
        dk = np.flip(np.cumsum(np.flip(dk / c["steps"], 2), 2), 2)
    if v == "vision":
        dqk = np.stack([dq.transpose(0, 2, 1, 3), dk.transpose(0, 2, 1, 3)], axis=2)
        dqk = dqk.reshape(B, N, 2 * D)
        g["wqk"] = np.einsum("bne,bnd->ed", dqk, x)
        if "bqk" in P:
            g["bqk"] = dqk.sum(axis=(0, 1))
        dx = dx + np.einsum("bne,ed->bnd", dqk, P["wqk"])
    else:
        for t, d in (("q", _join(dq)), ("k", _join(dk))):
            g[f"w{t}"] = np.einsum("bne,bnd->ed", d, x)
            g[f"b{t}"] = d.sum(axis=(0, 1))
            dx = dx + np.einsum("bne,ed->bnd", d, P[f"w{t}"])
    return {"x": dx} | {_NAMES[v][role]: g[role] for role in P}


# --------------------------------------------------------------------------- multi-head attention
# check_multi_head_attention's candidate on PyTorch's state dict, from the attention above.
# Planted bugs: ``bug="padding_polarity"`` (the key padding mask taken as PyTorch's, True =
# padding, without inverting it), ``bug="scale_by_dim"`` (logits scaled by 1/sqrt(D) instead
# of 1/sqrt(p)), ``bug="bias_v"`` (the value bias's gradient off by 1e-4 relative).
def _mha_parts(x, sd, key_padding_mask, attn_mask, causal, num_heads, bug):
    B, N, D = x.shape
    p = D // num_heads
    w, b = np.split(sd["in_proj_weight"], 3), np.split(sd["in_proj_bias"], 3)
    heads = [_split(x @ w[i].T + b[i], num_heads) for i in range(3)]  # (B, H, N, p)
    vis = np.ones((B, 1, N, N), bool)
    if attn_mask is not None:
        vis = vis & attn_mask
    if key_padding_mask is not None:
        keys = ~key_padding_mask if bug == "padding_polarity" else key_padding_mask
        vis = vis & keys[:, None, None, :]
    scale = 1.0 / math.sqrt(D if bug == "scale_by_dim" else p)
    return w, heads, vis, scale


def mha(x, sd, key_padding_mask, attn_mask, causal, num_heads, *, bug=None):
    """fn of check_multi_head_attention: y = merge(softmax(Q Kᵀ/√p) V) W_oᵀ + b_o."""
    _, (q, k, v), vis, scale = _mha_parts(
        x, sd, key_padding_mask, attn_mask, causal, num_heads, bug
    )
    o = _join(attention(q, k, v, vis, causal, scale))
    return o @ sd["out_proj.weight"].T + sd["out_proj.bias"]


def mha_backward(x, sd, key_padding_mask, attn_mask, causal, num_heads, dout, *, bug=None):
    """backward of check_multi_head_attention: gradients keyed like the state dict, and "x"."""
    w, (q, k, v), vis, scale = _mha_parts(
        x, sd, key_padding_mask, attn_mask, causal, num_heads, bug
    )
    dout = dout.astype(x.dtype)
    o = _join(attention(q, k, v, vis, causal, scale))
    x2, o2, d2 = (
        x.reshape(-1, x.shape[-1]),
        o.reshape(-1, o.shape[-1]),
        dout.reshape(-1, x.shape[-1]),
    )
    do = _split(dout @ sd["out_proj.weight"], num_heads)
    grads = [_join(g) for g in attention_backward(q, k, v, vis, causal, scale, do)]
    dw = [g.reshape(-1, g.shape[-1]).T @ x2 for g in grads]
    db = [g.reshape(-1, g.shape[-1]).sum(axis=0) for g in grads]
    if bug == "bias_v":
        db[2] = db[2] * (1 + 1e-4)
    return {
        "x": sum(g @ w[i] for i, g in enumerate(grads)),
        "in_proj_weight": np.concatenate(dw),
        "in_proj_bias": np.concatenate(db),
        "out_proj.weight": d2.T @ o2,
        "out_proj.bias": d2.sum(axis=0),
    }
