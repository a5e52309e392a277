"""Check that each teaching notebook's jupytext source and its committed .ipynb agree.

The source of truth is ``notebooks/NN_name.py`` (jupytext ``py:percent``); the paired
``NN_name.ipynb`` is committed with its outputs so that it renders on GitHub. For every
pair this script converts the ``.py`` to a notebook with jupytext and compares, cell by
cell, the cell types and sources (code and markdown) with the committed ``.ipynb``.
Outputs, execution counts and metadata are ignored, except that both files must carry
the pairing ``ipynb,py:percent`` (so that ``jupytext --sync`` works). Sources are
compared after stripping trailing whitespace on each line and blank lines at both ends
of a cell.

With ``--require-outputs`` it also checks that each ``.ipynb`` was executed from top to
bottom (execution counts 1, 2, … on the code cells) without an error output, i.e. that
the committed outputs belong to the committed code.

    python notebooks/check_sync.py [--require-outputs] [NOTEBOOK.py ...]

Exit status 0 if every pair agrees, 1 if not (each problem is printed), 2 if jupytext or
nbformat is missing. To fix a reported difference: edit the ``.py`` and run
``jupytext --sync notebooks/NN_name.py`` (then re-execute, see notebooks/README.md).
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PAIRING = {"ipynb", "py:percent"}


def _norm(source: str) -> str:
    return "\n".join(line.rstrip() for line in source.strip("\n").splitlines())


def _formats(nb) -> set[str]:
    text = nb.metadata.get("jupytext", {}).get("formats", "")
    return {f.strip() for f in text.split(",") if f.strip()}


def _cell_diff(i: int, kind: str, want: str, got: str) -> str:
    diff = difflib.unified_diff(
        want.splitlines(), got.splitlines(), "from .py", "in .ipynb", lineterm="", n=1
    )
    return f"  cell {i} ({kind}) differs:\n" + "\n".join("    " + line for line in diff)


def check_pair(py: Path, require_outputs: bool) -> list[str]:
    """Problems with one pair (an empty list if it is in sync)."""
    import jupytext
    import nbformat

    ipynb = py.with_suffix(".ipynb")
    if not ipynb.exists():
        return [f"{ipynb.name} is missing (create it: jupytext --to ipynb {py.name})"]
    source = jupytext.read(py)
    committed = nbformat.read(ipynb, as_version=4)
    problems = []
    for label, nb in ((py.name, source), (ipynb.name, committed)):
        if not PAIRING <= _formats(nb):
            problems.append(
                f"{label} lacks the pairing metadata 'formats: ipynb,py:percent' "
                f"(has {sorted(_formats(nb)) or 'none'}): jupytext --set-formats ipynb,py:percent {py.name}"
            )
    want = [(c.cell_type, _norm(c.source)) for c in source.cells]
    got = [(c.cell_type, _norm(c.source)) for c in committed.cells]
    if len(want) != len(got):
        problems.append(f"{py.name} has {len(want)} cells, {ipynb.name} has {len(got)}")
    for i, (w, g) in enumerate(zip(want, got, strict=False)):
        if w[0] != g[0]:
            problems.append(f"  cell {i}: {w[0]} in {py.name}, {g[0]} in {ipynb.name}")
        elif w[1] != g[1]:
            problems.append(_cell_diff(i, w[0], w[1], g[1]))
        if len(problems) >= 5:
            problems.append("  (further differences not shown)")
            break
    if require_outputs:
        code = [c for c in committed.cells if c.cell_type == "code"]
        counts = [c.get("execution_count") for c in code]
        if counts != list(range(1, len(code) + 1)):
            problems.append(
                f"{ipynb.name} was not executed top to bottom in one run (execution counts "
                f"{counts}): jupyter nbconvert --to notebook --execute --inplace {ipynb.name}"
            )
        for i, c in enumerate(code):
            errors = [o for o in c.get("outputs", []) if o.get("output_type") == "error"]
            if errors:
                problems.append(
                    f"{ipynb.name}: code cell {i} holds an error output ({errors[0].get('ename')})"
                )
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--require-outputs",
        action="store_true",
        help="also require every .ipynb to be executed top to bottom, without errors",
    )
    ap.add_argument(
        "sources", nargs="*", type=Path, help="notebook sources (default: notebooks/NN_*.py)"
    )
    args = ap.parse_args(argv)
    try:
        import jupytext  # noqa: F401
        import nbformat  # noqa: F401
    except ImportError as exc:
        print(
            f"check_sync: {exc.name} is not installed (pip install -e '.[notebooks]')",
            file=sys.stderr,
        )
        return 2
    sources = args.sources or sorted(HERE.glob("[0-9][0-9]_*.py"))
    if not sources:
        print(f"check_sync: no notebook sources NN_*.py in {HERE}", file=sys.stderr)
        return 1
    failed = 0
    orphans = [
        nb for nb in sorted(HERE.glob("[0-9][0-9]_*.ipynb")) if not nb.with_suffix(".py").exists()
    ]
    for nb in orphans if not args.sources else []:
        print(f"FAIL {nb.name}: no jupytext source {nb.with_suffix('.py').name}")
        failed += 1
    for py in sources:
        problems = check_pair(py.resolve(), args.require_outputs)
        if problems:
            failed += 1
            print(f"FAIL {py.name}")
            for p in problems:
                print(p if p.startswith("  ") else "  " + p)
        else:
            print(f"ok   {py.name} ↔ {py.with_suffix('.ipynb').name}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
