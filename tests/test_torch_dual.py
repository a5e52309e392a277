"""PyTorch autograd cross-check of dual_attention and the MHA layer, in float64."""

import numpy as np
import pytest

from primal_np import (
    dual_attention,
    dual_attention_backward,
    init_mha_params,
    mha_attention,
    mha_attention_backward,
)
from primal_np.compare import rel_error

pytestmark = pytest.mark.torch

TOL = 1e-12  # both sides are float64 evaluations of the same formulas


def _torch_sdpa_grads(torch, q, k, v, cot, **kw):
    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    if kw.get("attn_mask") is not None:
        kw["attn_mask"] = torch.tensor(kw["attn_mask"])
    out = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, **kw)
    (out * torch.tensor(cot)).sum().backward()
    return out.detach().numpy(), tq.grad.numpy(), tk.grad.numpy(), tv.grad.numpy()


@pytest.mark.parametrize(
    "variant", ["plain", "mask", "causal", "mask+causal", "scale", "empty-row"]
)
def test_dual_attention_matches_torch_sdpa(torch, rng, variant):
    b, h, n, m, d, dv = 2, 3, 5, 7, 4, 3
    if "causal" in variant:
        m = n  # torch's is_causal is top-left aligned, like ours; keep N = M to be explicit
    q, k, v = (
        rng.standard_normal((b, h, n, d)),
        rng.standard_normal((b, h, m, d)),
        rng.standard_normal((b, h, m, dv)),
    )
    ours, theirs = {}, {}
    if "mask" in variant or variant == "empty-row":
        mask = rng.random((b, 1, n, m)) > 0.4
        mask[..., 0] = True
        if variant == "empty-row":
            mask[1, 0, 2] = False  # a query that sees no key, in every head of batch 1
        ours["mask"] = theirs["attn_mask"] = mask
    if "causal" in variant:
        if "mask" in variant:  # torch takes one or the other: fold the causal triangle in
            tri = np.tri(n, m, dtype=bool)
            ours["mask"] = theirs["attn_mask"] = mask & tri
        else:
            ours["causal"] = theirs["is_causal"] = True
    if variant == "scale":
        ours["scale"] = theirs["scale"] = 0.37
    out, cache = dual_attention(q, k, v, **ours)
    cot = rng.standard_normal(out.shape)
    grads = dual_attention_backward(cot, cache)
    t_out, *t_grads = _torch_sdpa_grads(torch, q, k, v, cot, **theirs)
    assert np.all(np.isfinite(t_out))
    assert rel_error(out, t_out) < TOL
    for g, tg in zip(grads, t_grads, strict=True):
        assert rel_error(g, tg) < TOL


def test_mha_layer_matches_torch_functional(torch, rng):
    bsz, n, dim, heads = 2, 6, 8, 2
    x = rng.standard_normal((bsz, n, dim))
    params = init_mha_params(dim, seed=3)
    pad = np.ones((bsz, n), bool)
    pad[1, 4:] = False
    y, cache = mha_attention(x, params, num_heads=heads, padding_mask=pad)
    cot = rng.standard_normal(y.shape)
    dx, grads = mha_attention_backward(cot, cache)

    t = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    tx = torch.tensor(x, requires_grad=True)
    # torch's functional MHA takes (N, B, D) and key_padding_mask True = *ignore*.
    ty, _ = torch.nn.functional.multi_head_attention_forward(
        tx.transpose(0, 1),
        tx.transpose(0, 1),
        tx.transpose(0, 1),
        dim,
        heads,
        in_proj_weight=None,
        in_proj_bias=torch.cat([t["b_q"], t["b_k"], t["b_v"]]),
        bias_k=None,
        bias_v=None,
        add_zero_attn=False,
        dropout_p=0.0,
        out_proj_weight=t["W_o"],
        out_proj_bias=t["b_o"],
        training=False,
        key_padding_mask=torch.tensor(~pad),
        need_weights=False,
        use_separate_proj_weight=True,
        q_proj_weight=t["W_q"],
        k_proj_weight=t["W_k"],
        v_proj_weight=t["W_v"],
    )
    ty = ty.transpose(0, 1)
    (ty * torch.tensor(cot)).sum().backward()
    assert rel_error(y, ty.detach().numpy()) < TOL
    assert rel_error(dx, tx.grad.numpy()) < TOL
    for name in params:
        if name == "b_k":
            # Exactly zero in exact arithmetic: adding b_k shifts every logit of a query row
            # by the same q_i·b_k, and softmax is shift invariant. Both sides are rounding.
            assert np.abs(grads[name]).max() < 1e-14 and np.abs(t[name].grad.numpy()).max() < 1e-14
            continue
        assert rel_error(grads[name], t[name].grad.numpy()) < TOL, name


@pytest.mark.parametrize(
    "case", ["dual_attention", "dual_attention_masked", "dual_attention_causal"]
)
def test_golden_dual_cases_match_torch(torch, tmp_path, case):
    from primal_np.golden import export, load_arrays, read_manifest

    export(tmp_path, [case])
    entry = read_manifest(tmp_path)["cases"][0]
    a = load_arrays(tmp_path / entry["file"])
    kw = {"is_causal": True} if entry["config"]["causal"] else {}
    if "input.mask" in a:
        kw["attn_mask"] = a["input.mask"]
    t_out, *t_grads = _torch_sdpa_grads(
        torch, a["input.q"], a["input.k"], a["input.v"], a["cotangent.out"], **kw
    )
    assert rel_error(a["output.out"], t_out) < TOL
    for name, tg in zip("qkv", t_grads, strict=True):
        assert rel_error(a[f"grad.{name}"], tg) < TOL
