"""Machinery shared by the derivation scripts (it proves nothing itself).

Each ``derive_<topic>.py`` builds a ``Derivation`` out of steps. A step

1. states a forward expression on explicit small matrices of real scalar symbols,
2. derives with SymPy (entry-wise ``diff``, ``jacobian``, Lagrangian stationarity),
3. proves the closed form primal_np uses equal to the derived one exactly (``Step.exact``),
4. checks primal_np's own function numerically against the SymPy result (``Step.close``),

and writes Markdown as it goes. ``Derivation.render()`` returns the script's section of
``derivations/README.md``; ``build_readme.py`` assembles the sections.

Exact comparison of a (matrix) expression a with b, entry by entry:

* ``how="expand"``: ``sympy.expand(a - b) == 0`` (polynomials; exp(x + y) is expanded
  to exp(x)·exp(y), which is exact);
* ``how="cancel"``: ``sympy.cancel(sympy.together(a - b)) == 0`` (rational functions,
  also of exp(s_j) and sqrt(...) treated as generators);
* ``how="numerator"``: the numerator of ``sympy.together(a - b)`` expands to 0 — the same
  statement as "cancel" for denominators that do not vanish (they are products of the
  σ_l > 0 here), cheaper on large expressions.

Numeric comparison: ``primal_np.compare.rel_error``, the project's one relative error. For
a primal_np result a and the SymPy reference r (lambdified and evaluated in float64),

    err(a, r) = max_i |a_i − r_i| / max_i |r_i|,   err = 0 if a ≡ r (both exactly zero);

err = inf when r is all zero but a is not, or on NaN/inf. A check passes iff err ≤ TOL =
1e-12 for every output array at every random point (``Step.close``); arrays of different
shapes are a bug of the derivation and raise. An equation lhs = rhs that should hold at a
numerically computed point (an SVD, say) is checked by ``primal_np.compare.rel_residual`` —
‖lhs − rhs‖_F / (‖lhs‖_F + ‖rhs‖_F) ≤ TOL — since err against an exact 0 is meaningless.

Compositions too large to differentiate as one expression (the whole Primal-Attention
layer) are stated as a ``Graph``: one scalar definition u_k = f_k(inputs, u_1, …, u_{k−1})
per entry of each intermediate (the equations of the definitions, nothing inlined), and
the gradient of a scalar objective is accumulated backwards over the definitions with
SymPy's ``diff`` of each f_k (the chain rule, exactly; ``Graph.gradient``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import textwrap
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import sympy as sp
from sympy.printing.pycode import PythonCodePrinter

if importlib.util.find_spec("primal_np") is None:  # run from a source tree, not installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from primal_np.compare import rel_error  # noqa: E402  (the project's one relative error)

TOL = 1e-12
N_POINTS = 5  # random points per numeric check

HOW_TEXT = {
    "expand": "`expand(a − b) == 0`",
    "cancel": "`cancel(together(a − b)) == 0`",
    "numerator": "`expand(numerator(together(a − b))) == 0`",
}


# --------------------------------------------------------------------------- symbols
def _name(base: str, idx: Sequence[int]) -> str:
    sep = "," if any(i >= 9 for i in idx) or len(idx) > 2 else ""
    return f"{base}_{{{sep.join(str(i + 1) for i in idx)}}}"


def symmat(base: str, rows: int, cols: int) -> sp.Matrix:
    """rows×cols Matrix of real symbols base_{ij} (1-indexed in the name)."""
    return sp.Matrix(rows, cols, lambda i, j: sp.Symbol(_name(base, (i, j)), real=True))


def symvec(base: str, n: int, **assumptions) -> list[sp.Symbol]:
    """[base_1, …, base_n], real (plus any extra assumptions, e.g. positive=True)."""
    assumptions.setdefault("real", True)
    return [sp.Symbol(_name(base, (i,)), **assumptions) for i in range(n)]


def symtensor(base: str, shape: tuple[int, ...]) -> np.ndarray:
    """numpy object array of real symbols base_{i,j,k,…} of the given shape."""
    out = np.empty(shape, dtype=object)
    for idx in np.ndindex(*shape):
        out[idx] = sp.Symbol(_name(base, idx), real=True)
    return out


def flat(*things) -> list[sp.Basic]:
    """Flatten symbols, lists, Matrices and object arrays (row-major) into one list."""
    out: list[sp.Basic] = []
    for t in things:
        if isinstance(t, sp.MatrixBase):
            out.extend(list(t))
        elif isinstance(t, np.ndarray):
            out.extend(t.ravel().tolist())
        elif isinstance(t, (list, tuple)):
            out.extend(flat(*t))
        else:
            out.append(t)
    return out


def grad(f: sp.Expr, wrt) -> sp.Matrix | np.ndarray | list:
    """Entry-wise ∂f/∂x for every symbol of ``wrt``, in the same shape.

    For a long sum f = Σ_k t_k the derivative is taken term by term, each term only with
    respect to the symbols it contains (d/dx is linear and d t_k/dx = 0 when x ∉ t_k):
    the same result as ``sympy.diff``, without re-scanning the whole sum per symbol.
    """
    syms = flat(wrt)
    f = sp.sympify(f)
    if isinstance(f, sp.Add) and len(f.args) > 64:
        wanted = set(syms)
        parts: dict[sp.Basic, list] = {x: [] for x in syms}
        for term in f.args:
            for x in term.free_symbols & wanted:
                parts[x].append(sp.diff(term, x))
        d = {x: sp.Add(*parts[x]) for x in syms}
    else:
        d = {x: sp.diff(f, x) for x in syms}
    if isinstance(wrt, sp.MatrixBase):
        return wrt.applyfunc(lambda x: d[x])
    if isinstance(wrt, np.ndarray):
        out = np.empty(wrt.shape, dtype=object)
        for idx in np.ndindex(*wrt.shape):
            out[idx] = d[wrt[idx]]
        return out
    return [d[x] for x in syms]


def inner(a, b) -> sp.Expr:
    """Σ_ij a_ij b_ij (the Frobenius product) of two equally shaped symbolic arrays."""
    fa, fb = flat(a), flat(b)
    if len(fa) != len(fb):
        raise ValueError(f"inner of arrays with {len(fa)} and {len(fb)} entries")
    return sp.Add(*[x * y for x, y in zip(fa, fb, strict=True)])


# --------------------------------------------------------------------------- exact
def _residue(d: sp.Expr, how: str) -> sp.Expr:
    if how == "expand":
        return sp.expand(d)
    if how == "cancel":
        return sp.cancel(sp.together(d))
    if how == "numerator":
        return sp.expand(sp.fraction(sp.together(d))[0])
    raise ValueError(f"how must be one of {sorted(HOW_TEXT)}, got {how!r}")


def _entries(a) -> tuple[tuple[int, ...], list]:
    if isinstance(a, sp.MatrixBase):
        return a.shape, list(a)
    if isinstance(a, np.ndarray):
        return a.shape, a.ravel().tolist()
    if isinstance(a, (list, tuple)):
        return (len(a),), list(a)
    return (), [a]


def exact_difference(a, b, how: str = "expand") -> sp.Expr | None:
    """None if a − b is exactly zero entry by entry, else the first non-zero residue."""
    sa, ea = _entries(a)
    sb, eb = _entries(b)
    if sa != sb:
        raise ValueError(f"shapes differ: {sa} versus {sb}")
    for x, y in zip(ea, eb, strict=True):
        r = _residue(sp.sympify(x) - sp.sympify(y), how)
        if r != 0:
            return r
    return None


# --------------------------------------------------------------------------- numeric
def err(got, want) -> float:
    """``rel_error(got, want)``: primal_np's result against the SymPy reference ``want``."""
    a, r = np.asarray(got), np.asarray(want)
    if a.shape != r.shape:
        raise ValueError(f"shapes differ: {a.shape} versus {r.shape}")
    return rel_error(a, r)


class Lambdified:
    """float64 evaluation of symbolic outputs at numeric values of symbolic inputs.

    ``Lambdified([A, x], [G, f])(a, xv)`` with A a Matrix (or object array) of symbols and
    a a numpy array of the same shape returns [G(a, xv), f(a, xv)] as numpy arrays in the
    shapes of G and f. Uses ``sympy.lambdify(..., modules="numpy", cse=True)``; with
    ``defs`` (a ``Graph``'s definitions, ``[(u, expr), …]`` in evaluation order) the
    definitions are evaluated in order first, and the outputs may use their symbols.
    """

    def __init__(self, inputs: Sequence, outputs: Sequence, defs: Sequence[tuple] | None = None):
        self.in_sizes = [len(flat(t)) for t in inputs]
        self.out_shapes = [_entries(o)[0] for o in outputs]
        # Plain identifiers for the arguments: lambdify would otherwise re-substitute every
        # symbol whose name is LaTeX (slow on large expressions).
        syms = flat(*inputs)
        if defs is not None:
            self._f = _program(syms, [_entries(o)[1] for o in outputs], defs)
            return
        safe = [sp.Symbol(f"a{i}", real=True) for i in range(len(syms))]
        rename = dict(zip(syms, safe, strict=True))
        exprs = [[sp.sympify(e).xreplace(rename) for e in _entries(o)[1]] for o in outputs]
        self._f = sp.lambdify(safe, exprs, modules="numpy", cse=True)

    def __call__(self, *values) -> list[np.ndarray]:
        args: list[float] = []
        for v, n in zip(values, self.in_sizes, strict=True):
            v = np.asarray(v, dtype=np.float64).ravel()
            if v.size != n:
                raise ValueError(f"expected {n} values, got {v.size}")
            args.extend(v.tolist())
        outs = self._f(*args)
        return [
            np.array(o, dtype=np.float64).reshape(shape)
            for o, shape in zip(outs, self.out_shapes, strict=True)
        ]


class _Printer(PythonCodePrinter):
    """Python source of an expression; input symbols printed as a0, a1, … (their names are
    LaTeX), sums in SymPy's internal order (sorting terms only costs time)."""

    def __init__(self, names: dict):
        super().__init__({"order": "none"})
        self.names = names

    def _print_Symbol(self, expr):
        return self.names.get(expr) or super()._print_Symbol(expr)


def _program(inputs: list, outputs: list[list], defs: Sequence[tuple]) -> Callable:
    """A Python function of the inputs: every definition u = e in order, then the outputs.
    (What ``sympy.lambdify`` with ``cse`` generates, written directly: lambdify's own
    preprocessing of a few thousand definitions costs more than the printing.)"""
    pr = _Printer({x: f"a{i}" for i, x in enumerate(inputs)})
    lines = [f"def _f({', '.join(f'a{i}' for i in range(len(inputs)))}):"]
    lines += [f"    {u.name} = {pr.doprint(e)}" for u, e in defs]
    outs = ", ".join("[" + ", ".join(pr.doprint(sp.sympify(e)) for e in o) + "]" for o in outputs)
    lines.append(f"    return [{outs}]")
    namespace = {"math": math}
    exec("\n".join(lines), namespace)  # noqa: S102 (our own generated source)
    return namespace["_f"]


def _like(wrt, values: dict):
    """values[x] for every symbol x of ``wrt``, in the shape of ``wrt``."""
    if isinstance(wrt, sp.MatrixBase):
        return wrt.applyfunc(lambda x: values[x])
    if isinstance(wrt, np.ndarray):
        out = np.empty(wrt.shape, dtype=object)
        for idx in np.ndindex(*wrt.shape):
            out[idx] = values[wrt[idx]]
        return out
    return [values[x] for x in flat(wrt)]


class Graph:
    """A computation stated as scalar definitions, and gradients by the chain rule over them.

    ``g.define(value)`` takes an expression, a Matrix or an object array and returns the
    same shape of fresh symbols u_k, recording the definition u_k = value_k of every entry
    that is not already a symbol or a number. With ``inline=True`` it returns ``value``
    itself instead, so the same statement gives the composed expression (for comparing
    with ``sympy.diff`` of the whole on tiny cases).

    ``g.gradient(f, [w1, w2, …])``: ∂f/∂x for every symbol x of each block (in its shape), f a scalar
    expression of inputs and defined symbols, by reverse accumulation — newest definition
    first, the adjoint of u_k is

        ū_k = ∂f/∂u_k + Σ_{j > k} ū_j ∂f_j/∂u_k,     and   ∂f/∂x = ∂f/∂x + Σ_j ū_j ∂f_j/∂x,

    where every partial is SymPy's ``diff`` of one definition f_j with respect to one of
    its arguments (all others held fixed). That is the chain rule for the composition,
    exactly; nothing about the definitions is assumed. The adjoints are recorded as
    definitions too, so ``Lambdified(inputs, outputs, defs=g.defs)`` evaluates values and
    gradients in one pass.
    """

    def __init__(self, inline: bool = False):
        self.inline = inline
        self.defs: list[tuple[sp.Symbol, sp.Expr]] = []

    def _new(self, prefix: str, expr) -> sp.Basic:
        expr = sp.sympify(expr)
        if self.inline or isinstance(expr, (sp.Symbol, sp.Number)):
            return expr
        u = sp.Symbol(f"{prefix}{len(self.defs)}", real=True)
        self.defs.append((u, expr))
        return u

    def define(self, value):
        if isinstance(value, sp.MatrixBase):
            return value.applyfunc(lambda e: self._new("u", e))
        if isinstance(value, np.ndarray):
            out = np.empty(value.shape, dtype=object)
            for idx in np.ndindex(*value.shape):
                out[idx] = self._new("u", value[idx])
            return out
        return self._new("u", value)

    def gradient(self, f, wrt: Sequence) -> list:
        """[∂f/∂w for w in wrt], each in the shape of w (see the class docstring)."""
        if self.inline:
            return [grad(f, w) for w in wrt]
        adj: dict[sp.Basic, list] = {a: [d] for a, d in _partials(sp.sympify(f)).items()}
        for u, e in reversed(list(self.defs)):
            terms = adj.pop(u, None)
            if not terms:
                continue
            ubar = self._new("v", sp.Add(*terms))
            for a, d in _partials(e).items():
                adj.setdefault(a, []).append(ubar * d)
        return [_like(w, {x: sp.Add(*adj.get(x, [])) for x in flat(w)}) for w in wrt]


def _partials(e: sp.Expr) -> dict:
    """{a: ∂e/∂a} for every free symbol a of e; a sum term by term, each term only with
    respect to its own symbols (``sympy.diff`` is linear; the same result as diff(e, a))."""
    terms = e.args if isinstance(e, sp.Add) else (e,)
    parts: dict[sp.Basic, list] = {}
    for t in terms:
        for a in t.free_symbols:
            parts.setdefault(a, []).append(sp.diff(t, a))
    return {a: sp.Add(*d) for a, d in parts.items()}


# --------------------------------------------------------------------------- steps
def latex(x) -> str:
    return x if isinstance(x, str) else sp.latex(x)


class Step:
    """One derivation: Markdown parts, counts of exact and numeric checks, worst error."""

    def __init__(self, title: str):
        self.title = title
        self.parts: list[str] = []
        self.n_exact = 0  # entries proved exactly
        self.n_rejected = 0  # deliberately wrong forms rejected
        self.numeric: list[tuple[str, float]] = []  # (label, worst err)
        self.seconds = 0.0

    # prose and formulas
    def text(self, s: str) -> None:
        self.parts.append(textwrap.dedent(s).strip())

    def math(self, tex: str) -> None:
        self.parts.append(f"$$\n{tex.strip()}\n$$")

    def eq(self, lhs: str, rhs, *more) -> None:
        """Display lhs = rhs (= more …), each side a LaTeX string or a SymPy object."""
        self.math(" = ".join([lhs, latex(rhs), *(latex(m) for m in more)]))

    # checks
    def exact(self, label: str, derived, closed, how: str = "expand") -> None:
        """Prove ``closed`` (primal_np's formula) equal to ``derived`` exactly; assert."""
        r = exact_difference(derived, closed, how)
        n = len(_entries(derived)[1])
        assert r is None, f"{self.title}: {label}: not exactly equal, residue {str(r)[:400]}"
        self.n_exact += n
        on = "on all {n} entries" if n > 1 else "on the single entry"
        self.parts.append(f"- **Proved** {label} — {HOW_TEXT[how]} {on.format(n=n)}.")

    def rejects(self, label: str, derived, wrong, how: str = "expand") -> None:
        """Sanity: a deliberately wrong closed form must NOT pass ``exact``."""
        r = exact_difference(derived, wrong, how)
        assert r is not None, f"{self.title}: the wrong form {label!r} was accepted"
        self.n_rejected += 1
        self.parts.append(f"- **Rejected** (sanity check of the comparison) {label}.")

    def close(self, label: str, pairs: Iterable[tuple], points: int = N_POINTS) -> None:
        """Numeric: every (primal_np, SymPy) pair has err ≤ TOL; assert."""
        errs = [err(g, w) for g, w in pairs]
        worst = max(errs)
        assert worst <= TOL, f"{self.title}: {label}: err {worst:.3e} > {TOL:g}"
        self.numeric.append((label, worst))
        where = f"at {points} random points" if points > 1 else "at 1 point"
        self.parts.append(f"- **Checked** {label} — err ≤ 1e-12 {where}.")

    def small(self, label: str, residuals: Iterable[float], points: int = N_POINTS) -> None:
        """Numeric: every relative residual (``rel_residual``) is ≤ TOL; assert."""
        worst = max(residuals)
        assert worst <= TOL, f"{self.title}: {label}: residual {worst:.3e} > {TOL:g}"
        self.numeric.append((label, worst))
        where = f"at {points} random points" if points > 1 else "at 1 point"
        self.parts.append(f"- **Checked** {label} — relative residual ≤ 1e-12 {where}.")

    def not_small(self, label: str, residuals: Iterable[float]) -> None:
        """Sanity: relative residuals of a deliberately wrong point must exceed TOL."""
        best = min(residuals)
        assert best > TOL, f"{self.title}: the wrong point {label!r} passed (residual {best:.3e})"
        self.n_rejected += 1
        self.parts.append(f"- **Rejected numerically** (sanity check) {label}.")

    def far(self, label: str, pairs: Iterable[tuple]) -> None:
        """Sanity: a deliberately wrong numeric result must fail the criterion at every point."""
        best = min(err(g, w) for g, w in pairs)
        assert best > TOL, f"{self.title}: the wrong result {label!r} passed (err {best:.3e})"
        self.n_rejected += 1
        self.parts.append(f"- **Rejected numerically** (sanity check) {label}.")

    def markdown(self) -> str:
        """Title and parts; consecutive list items form one list."""
        out = [f"### {self.title}"]
        for part in self.parts:
            if part.startswith("- ") and out[-1].startswith("- "):
                out[-1] += "\n" + part
            else:
                out.append(part)
        return "\n\n".join(out)


class Derivation:
    """A script's steps, run once each (cached) and rendered in order."""

    def __init__(self, slug: str, title: str, summary: str):
        self.slug, self.title, self.summary = slug, title, textwrap.dedent(summary).strip()
        self._runners: list[Callable[[], Step]] = []
        self._done: dict[str, Step] = {}

    def step(self, title: str):
        """Decorator: ``fn(step)`` becomes a cached runner returning its ``Step``."""

        def deco(fn: Callable[[Step], None]) -> Callable[[], Step]:
            key = fn.__name__

            def run() -> Step:
                if key not in self._done:
                    st = Step(title)
                    t0 = time.perf_counter()
                    fn(st)
                    st.seconds = time.perf_counter() - t0
                    self._done[key] = st
                return self._done[key]

            run.__name__ = fn.__name__
            run.__doc__ = fn.__doc__
            self._runners.append(run)
            return run

        return deco

    def run_all(self) -> list[Step]:
        return [r() for r in self._runners]

    def render(self) -> str:
        """The script's README section (deterministic: no timings, no measured errors)."""
        body = "\n\n".join(s.markdown() for s in self.run_all())
        return (
            f"## {self.title}\n\n"
            f"Script: [`derive_{self.slug}.py`](derive_{self.slug}.py)\n\n{self.summary}\n\n{body}\n"
        )

    def metrics(self) -> dict:
        steps = self.run_all()
        return {
            "slug": self.slug,
            "title": self.title,
            "steps": len(steps),
            "exact": sum(s.n_exact for s in steps),
            "rejected": sum(s.n_rejected for s in steps),
            "numeric": sum(len(s.numeric) for s in steps),
            "worst_err": max((e for s in steps for _, e in s.numeric), default=0.0),
            "seconds": sum(s.seconds for s in steps),
        }

    def main(self, argv: Sequence[str] | None = None) -> int:
        ap = argparse.ArgumentParser(description=f"{self.title}: run every step, print Markdown")
        ap.add_argument("--json", action="store_true", help="print markdown and metrics as JSON")
        args = ap.parse_args(argv)
        md = self.render()  # raises on the first failing proof or check
        m = self.metrics()
        if args.json:
            print(json.dumps({"markdown": md, "metrics": m}))
        else:
            print(md)
            print(
                f"{self.slug}: {m['exact']} entries proved exactly, {m['numeric']} numeric checks "
                f"(worst err {m['worst_err']:.1e}), {m['rejected']} wrong forms rejected, "
                f"{m['seconds']:.2f} s",
                file=sys.stderr,
            )
        return 0
