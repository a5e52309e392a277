"""KEP-SVGP attention against an independent PyTorch statement of the authors' module (noise
injected), with torch autograd: outputs, KL, KSVD loss and every gradient ≤ 1e-10 relative in
float64; their ``.squeeze()``; the golden cases checked with torch candidates."""

import itertools
import json

import numpy as np
import pytest

from primal_np.compare import rel_error
from primal_np.golden import export, load_arrays
from primal_np.golden.check import check_candidate
from primal_np.kep_svgp import (
    KEPSVGPConfig,
    authors_squeeze_problem,
    draw_noise,
    init_kep_svgp_params,
    kep_svgp_attention,
    kep_svgp_objective,
)

pytestmark = pytest.mark.torch

TOL = 1e-10
CONFIGS = {
    "vision": (dict(embed_len=9), 2, 9),
    "vision-concate": (dict(embed_len=9, concate=True), 2, 9),
    "vision-all-tokens-qk-bias-proj": (
        dict(embed_len=5, rank_multi=3, qk_bias=True, apply_proj=True),
        2,
        5,
    ),
    "vision-B=1": (dict(embed_len=9), 1, 9),
    "cola-mask": (dict(variant="cola"), 2, 9),
    "cola-N<n": (dict(variant="cola", rank_multi=4), 2, 5),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_parity_with_torch_autograd(torch, rng, name):
    from primal_np import torch_kep_svgp as T

    kw, B, N = CONFIGS[name]
    cfg = KEPSVGPConfig(dim=8, num_heads=2, low_rank=2, **{"rank_multi": 2, **kw})
    P = init_kep_svgp_params(cfg, seed=5)
    x, cot = rng.standard_normal((2, B, N, 8))
    noise = draw_noise(rng, cfg, B, N)
    mask = None
    if cfg.variant == "cola":
        mask = np.ones((B, N), bool)
        mask[-1, N - 3 :] = False
    r = kep_svgp_objective(x, P, cfg, noise=noise, cotangent=cot, eta=0.1, eta_kl=1.0, mask=mask)
    t = T.layer_objective(cfg, P, x, noise, cot, 0.1, 1.0, mask=mask)
    assert rel_error(r.out, t["out"]) <= TOL
    assert rel_error(r.escore, t["escore"]) <= TOL and rel_error(r.rscore, t["rscore"]) <= TOL
    assert rel_error(r.kl, t["kl"]) <= TOL and rel_error(r.ksvd_loss, t["ksvd"]) <= TOL
    assert rel_error(r.dx, t["dx"]) <= TOL
    for k, g in t["grads"].items():
        if g is None:  # not reached by their objective: proj (created, not applied)
            assert k.startswith("proj.") and not cfg.apply_proj and not np.any(r.grads[k])
        else:
            assert rel_error(r.grads[k], g) <= TOL, k


def test_their_squeeze_fails_exactly_where_predicted(torch, rng):
    """Their ``.squeeze()`` over every B, H, N, s ∈ {1, 2} (and concate): torch raises iff
    ``authors_squeeze_problem`` names a problem; where it runs it agrees with primal_np."""
    from primal_np import torch_kep_svgp as T

    for B, H, N, s, concate in itertools.product((1, 2), (1, 2), (1, 2), (1, 2), (False, True)):
        cfg = KEPSVGPConfig(
            dim=2 * H, num_heads=H, low_rank=s, rank_multi=1, embed_len=N, concate=concate
        )
        P = init_kep_svgp_params(cfg, seed=0)
        x = rng.standard_normal((B, N, 2 * H))
        noise = draw_noise(rng, cfg, B, N)
        sd = {k: torch.tensor(v) for k, v in P.items()}
        problem = authors_squeeze_problem(B, H, 2 * N if concate else N, s)
        try:
            out, _, _ = T.kep_svgp_layer(sd, torch.tensor(x), torch.tensor(noise), H=H, s=s, m=1,
                                         embed_len=N, concate=concate, squeeze=True)  # fmt: skip
        except RuntimeError:
            assert problem is not None, (B, H, N, s, concate)
            continue
        assert problem is None, (B, H, N, s, concate)
        y, _ = kep_svgp_attention(x, P, cfg, noise=noise)
        assert rel_error(y, out.numpy()) <= TOL


def _torch_candidate(T, torch, golden, case, dtype):
    entry = {c["name"]: c for c in json.loads((golden / "manifest.json").read_text())["cases"]}[
        case
    ]
    c = entry["config"]
    cfg = KEPSVGPConfig(dim=c["dim"], num_heads=c["num_heads"], low_rank=c["low_rank"],
                        rank_multi=c["rank_multi"], embed_len=c["embed_len"], concate=c["concate"])  # fmt: skip
    a = load_arrays(golden / f"{case}.npz")
    sd = {k.removeprefix("param."): v for k, v in a.items() if k.startswith("param.")}
    r = T.layer_objective(cfg, sd, a["input.x"], a["input.noise"], a["cotangent.out"],
                          c["eta"], c["eta_kl"], dtype=dtype)  # fmt: skip
    out = {"output.out": r["out"], "output.escore": r["escore"], "output.rscore": r["rscore"],
           "output.kl": np.asarray(r["kl"]), "output.ksvd_loss": np.asarray(r["ksvd"]), "grad.x": r["dx"]}  # fmt: skip
    out.update(
        {f"grad.{k}": np.zeros_like(sd[k]) if g is None else g for k, g in r["grads"].items()}
    )
    np_dt = np.float64 if dtype == torch.float64 else np.float32
    return {k: np.asarray(v).astype(np_dt) for k, v in out.items()}, sd


@pytest.mark.parametrize("case", ["kep_svgp_attention", "kep_svgp_attention_concate"])
def test_golden_cases_pass_torch_candidates_and_catch_a_planted_bug(torch, tmp_path, case):
    from primal_np import torch_kep_svgp as T

    golden = tmp_path / "golden"
    export(golden, [case])
    a = load_arrays(golden / f"{case}.npz")
    assert a["input.noise"].shape[-1] == 1 and a["input.x"].shape[:2][0] >= 2
    for dtype in (torch.float64, torch.float32):
        cand, _ = _torch_candidate(T, torch, golden, case, dtype)
        path = tmp_path / f"{case}.torch-{str(dtype)[-7:]}.npz"
        np.savez(path, **cand)
        rep = check_candidate(golden, path)
        assert rep.ok, str(rep)
        assert rep.precision == ("float64" if dtype == torch.float64 else "float32")
    # planted bug: Λ = diag(exp(ℓ)) instead of diag(exp(ℓ))² in V₁ (scores kept)
    cand, sd = _torch_candidate(T, torch, golden, case, torch.float64)
    wrong = T.kep_svgp_layer(
        {k: torch.tensor(v) for k, v in {**sd, "log_lambda_sqrt_inv_diag": sd["log_lambda_sqrt_inv_diag"] / 2}.items()},
        torch.tensor(a["input.x"]), torch.tensor(a["input.noise"]), H=2, s=2, m=2, embed_len=7,
        concate=case.endswith("concate"),
    )[0]  # fmt: skip
    cand["output.out"] = wrong.detach().numpy()
    path = tmp_path / f"{case}.wrong.npz"
    np.savez(path, **cand)
    rep = check_candidate(golden, path)
    assert not rep.ok and [r.name for r in rep.failures] == ["output.out"]
