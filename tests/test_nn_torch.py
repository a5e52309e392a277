"""PyTorch autograd cross-checks of the nn blocks, in float64."""

import numpy as np
import pytest

from primal_np.compare import rel_error
from primal_np.nn import (
    cross_entropy,
    cross_entropy_backward,
    embedding,
    embedding_backward,
    gelu,
    gelu_backward,
    init_mlp_params,
    layer_norm,
    layer_norm_backward,
    mlp,
    mlp_backward,
)

pytestmark = pytest.mark.torch

TOL = 1e-12  # both sides are float64 evaluations of the same formulas


def _leaves(torch, *arrays):
    return [torch.tensor(a, requires_grad=True) for a in arrays]


@pytest.mark.parametrize("shape", [(2, 5, 6), (1, 1, 3), (4, 1)])
def test_layer_norm_matches_torch(torch, rng, shape):
    d = shape[-1]
    x, w, b = rng.standard_normal(shape) * 3 + 1, rng.standard_normal(d), rng.standard_normal(d)
    y, cache = layer_norm(x, w, b)
    cot = rng.standard_normal(shape)
    grads = layer_norm_backward(cot, cache)
    tx, tw, tb = _leaves(torch, x, w, b)
    ty = torch.nn.functional.layer_norm(tx, (d,), tw, tb, eps=1e-5)
    (ty * torch.tensor(cot)).sum().backward()
    assert rel_error(y, ty.detach().numpy()) < TOL
    if d > 1:
        for g, t in zip(grads, (tx, tw, tb), strict=True):
            assert rel_error(g, t.grad.numpy()) < TOL
    else:
        # D = 1: x − μ = 0, so ours gives dx = dw = 0 exactly; torch keeps rounding noise
        # of x − μ amplified by r = 1/sqrt(ε) ≈ 316. Compare on that scale instead.
        scale = np.abs(cot).sum() * max(1.0, np.abs(w).max()) / np.sqrt(1e-5)
        assert not grads[0].any() and not grads[1].any()
        assert np.abs(tx.grad.numpy()).max() <= TOL * scale
        assert np.abs(tw.grad.numpy()).max() <= TOL * scale
        assert rel_error(grads[2], tb.grad.numpy()) < TOL


def test_gelu_matches_torch(torch, rng):
    x = np.concatenate([rng.standard_normal(50) * 3, [-30.0, 0.0, 30.0]])
    y, cache = gelu(x)
    cot = rng.standard_normal(x.shape)
    (tx,) = _leaves(torch, x)
    ty = torch.nn.functional.gelu(tx)  # approximate="none": the erf form
    (ty * torch.tensor(cot)).sum().backward()
    assert rel_error(y, ty.detach().numpy()) < TOL
    assert rel_error(gelu_backward(cot, cache).x, tx.grad.numpy()) < TOL


@pytest.mark.parametrize("scale", [1.0, 400.0])  # 400: logits far beyond exp's range
def test_cross_entropy_matches_torch(torch, rng, scale):
    z, y = rng.standard_normal((6, 5)) * scale, rng.integers(0, 5, size=6)
    loss, cache = cross_entropy(z, y)
    dloss = float(rng.standard_normal())
    dz = cross_entropy_backward(dloss, cache).logits
    (tz,) = _leaves(torch, z)
    tl = torch.nn.functional.cross_entropy(tz, torch.tensor(y))
    (tl * dloss).backward()
    assert rel_error(loss, tl.item()) < TOL
    assert rel_error(dz, tz.grad.numpy()) < TOL


def test_mlp_matches_torch(torch, rng):
    params = init_mlp_params(6, 10, seed=4)
    x = rng.standard_normal((2, 3, 6))
    y, cache = mlp(x, params)
    cot = rng.standard_normal(y.shape)
    dx, grads = mlp_backward(cot, cache)
    tx, *tp = _leaves(torch, x, *params.values())
    tpar = dict(zip(params, tp, strict=True))
    F = torch.nn.functional
    h = F.gelu(F.linear(tx, tpar["fc1.weight"], tpar["fc1.bias"]))
    ty = F.linear(h, tpar["fc2.weight"], tpar["fc2.bias"])
    (ty * torch.tensor(cot)).sum().backward()
    assert rel_error(y, ty.detach().numpy()) < TOL
    assert rel_error(dx, tx.grad.numpy()) < TOL
    for name, t in tpar.items():
        assert rel_error(grads[name], t.grad.numpy()) < TOL, name


def test_embedding_matches_torch(torch, rng):
    table, ids = rng.standard_normal((7, 4)), rng.integers(0, 7, size=(3, 9))
    out, cache = embedding(ids, table)
    cot = rng.standard_normal(out.shape)
    (tt,) = _leaves(torch, table)
    to = torch.nn.functional.embedding(torch.tensor(ids), tt)
    (to * torch.tensor(cot)).sum().backward()
    assert rel_error(out, to.detach().numpy()) == 0.0
    assert rel_error(embedding_backward(cot, cache).table, tt.grad.numpy()) < TOL
