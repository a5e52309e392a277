"""The framework examples of docs/validation.md run as printed: each ```python block of the
"Multi-head attention" and "JAX" sections is executed up to its final ``report = ...``,
and the functions it defines are checked here."""

import re
from pathlib import Path

import pytest

from primal_np.adapters import DUAL_ATTENTION_GRID, check_dual_attention, check_multi_head_attention

DOC = Path(__file__).resolve().parents[1] / "docs" / "validation.md"


def _definitions(section: str) -> dict:
    text = DOC.read_text()
    start = text.index(f"### {section}")
    end = text.find("\n### ", start + 1)
    (block,) = re.findall(r"```python\n(.*?)```", text[start:end], re.S)[:1]
    namespace: dict = {}
    exec(compile(block.split("\nreport = ")[0], f"{DOC}:{section}", "exec"), namespace)
    return namespace


@pytest.mark.torch
def test_multi_head_attention_glue_in_the_docs(torch):
    ns = _definitions("Multi-head attention")
    f = ns["torch_mha"]
    rep = check_multi_head_attention(lambda *a: f(*a), backward=f)
    assert rep.ok, str(rep)


@pytest.mark.jax
def test_jax_glue_in_the_docs(jax):
    ns = _definitions("JAX")
    f = ns["jax_attention"]
    fn = lambda q, k, v, mask, causal, scale, precision: f(  # noqa: E731
        q, k, v, mask, causal, scale, precision=precision
    )
    grid = [DUAL_ATTENTION_GRID[10]]  # one leading axis, dv ≠ d (the padding), a dead row
    rep = check_dual_attention(fn, backward=f, grid=grid, dtypes=("float32",))
    assert rep.ok, str(rep)


@pytest.mark.torch
def test_authors_ksvd_loss_glue_in_the_docs(torch):
    """The docs' ``candidate`` around the authors' inline loss lines, with those lines (LRA and
    vision: model_wrapper.py, engine_primal.py) restated here as ``their_loss``."""
    text = DOC.read_text()
    start = text.index("### The authors' modules")
    (block,) = re.findall(r"```python\n(.*?)```", text[start:], re.S)[:1]
    ns: dict = {}
    exec(compile(block.split("\ncheck_ksvd_loss(")[0], f"{DOC}:authors", "exec"), ns)

    def their_loss(score_list, Lambda_list, trace_no_x):
        loss = 0
        for (E, R, A, B), lam in zip(score_list, Lambda_list, strict=True):
            diag = torch.diag_embed(lam)[None]
            e = torch.mean(torch.einsum("...nd,...ds->...ns", E, diag).norm(dim=-1) ** 2) / 2
            r = torch.mean(torch.einsum("...nd,...ds->...ns", R, diag).norm(dim=-1) ** 2) / 2
            tr = torch.einsum("...ps,...pd->...sd", A, B)
            tr = (tr.mean(dim=0) if trace_no_x else tr.mean(dim=(0, 1))).trace()
            loss = loss + (e + r - tr) ** 2
        return loss / len(score_list)

    ns["their_loss"] = their_loss
    rep = ns["check_ksvd_loss"](
        ns["candidate"], backward=ns["candidate"], conventions=("lra", "lra_trace_x")
    )
    assert rep.ok, str(rep)
