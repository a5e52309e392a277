"""Re-execute every teaching notebook and compare each output with the committed one.

For each ``notebooks/NN_*.ipynb`` (or the notebooks named on the command line) this
script runs the notebook top to bottom in a **fresh kernel** (nbclient, working
directory ``notebooks/``, nothing cached between runs) and compares, code cell by code
cell, the fresh outputs with the outputs committed in the ``.ipynb``. It fails on the
first kind of staleness that ``check_sync.py`` cannot see: committed outputs that the
committed code no longer produces.

**What is compared.** Every output of every code cell: its type; the text of ``stdout``
and ``stderr`` streams (consecutive chunks of one stream joined, since the kernel may
split a print across messages); for rich outputs every MIME type of ``data``
(``text/plain``, ``text/markdown``, ``text/html``, ``image/png``, …), images byte for
byte; for errors the exception name and message. Execution counts and output metadata
are not compared (``check_sync.py --require-outputs`` checks the counts).

**What may differ — the one exemption.** The outputs of a code cell tagged ``timing``
(cell metadata ``tags: ["timing"]``; in the jupytext source ``# %% tags=["timing"]``)
are not compared, because they report measured wall-clock times or memory. Such a cell
must still execute without error, and it should hold nothing but the measurement and
its plot: a notebook prints every result it teaches in an untagged cell. Nothing else
is exempt — no pattern of lines, no tolerance on numbers. The notebooks are
deterministic (fixed seeds, ``OPENBLAS_NUM_THREADS=1`` set before NumPy loads), so a
difference anywhere else is a stale output or a real change of behaviour.

    python notebooks/check_outputs.py [--update] [--jobs J] [--timeout S] [NOTEBOOK.ipynb ...]

``--update`` writes the fresh outputs into each ``.ipynb`` instead of failing (the
editing workflow of notebooks/README.md); it records no execution timestamps.
``--jobs`` (default 2) runs that many notebooks at once, each in its own kernel; the
notebooks set one BLAS thread each, so two jobs use the two cores of the CI machine.

Exit status 0 if every notebook reproduces its committed outputs, 1 if not (each
difference is printed as a diff, the first five per notebook), 2 if nbclient, nbformat
or a Jupyter kernel is missing.
"""

from __future__ import annotations

import argparse
import base64
import difflib
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
TIMING_TAG = "timing"
MAX_SHOWN = 5


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def normalise(outputs: list) -> list[tuple]:
    """The comparable content of a cell's outputs, as a list of tuples.

    Consecutive stream outputs of one name are joined; rich outputs become
    ``("data", mime, text)`` entries, one per MIME type, sorted by type.
    """
    out: list[tuple] = []
    for o in outputs:
        kind = o.get("output_type")
        if kind == "stream":
            name, text = o.get("name"), _text(o.get("text", ""))
            if out and out[-1][0] == "stream" and out[-1][1] == name:
                out[-1] = ("stream", name, out[-1][2] + text)
            else:
                out.append(("stream", name, text))
        elif kind in ("execute_result", "display_data"):
            for mime in sorted(o.get("data", {})):
                value = o["data"][mime]
                if mime.startswith("image/") and mime != "image/svg+xml":
                    value = "".join(_text(value).split())  # base64, line breaks dropped
                elif not isinstance(value, (str, list)):
                    value = repr(value)  # application/json and the like
                out.append(("data", mime, _text(value)))
        elif kind == "error":
            out.append(("error", o.get("ename"), o.get("evalue")))
        else:
            out.append((str(kind), "", ""))
    return out


def _describe(item: tuple) -> str:
    kind, name, _ = item
    return f"{kind} {name}".strip()


def _diff_item(want: tuple, got: tuple) -> str:
    label = _describe(want)
    if want[1].startswith("image/"):
        a, b = len(base64.b64decode(want[2])), len(base64.b64decode(got[2]))
        return f"{label}: the image differs ({a} bytes committed, {b} bytes now)"
    diff = difflib.unified_diff(
        want[2].splitlines(), got[2].splitlines(), "committed", "executed now", lineterm="", n=1
    )
    return f"{label} differs:\n" + "\n".join("      " + line for line in diff)


def compare_cell(committed: list, executed: list) -> list[str]:
    """Differences between the committed and the fresh outputs of one cell."""
    want, got = normalise(committed), normalise(executed)
    problems = []
    if [_describe(w) for w in want] != [_describe(g) for g in got]:
        problems.append(
            f"outputs [{', '.join(map(_describe, want))}] committed, "
            f"[{', '.join(map(_describe, got))}] now"
        )
    for w, g in zip(want, got, strict=False):
        if _describe(w) == _describe(g) and w[2] != g[2]:
            problems.append(_diff_item(w, g))
    return problems


def execute(nb, timeout: int):
    """Run a copy of ``nb`` in a fresh kernel from notebooks/; return the executed copy."""
    import copy

    from nbclient import NotebookClient

    run = copy.deepcopy(nb)
    client = NotebookClient(
        run,
        timeout=timeout,
        kernel_name=nb.metadata.get("kernelspec", {}).get("name", "python3"),
        resources={"metadata": {"path": str(HERE)}},
        record_timing=False,
    )
    client.execute()
    return run


def check_notebook(
    path: Path, timeout: int, update: bool
) -> tuple[list[str], list[int], float, bool]:
    """(problems, indices of exempt code cells, seconds, executed cleanly) for one notebook."""
    import nbformat
    from nbclient.exceptions import CellExecutionError

    committed = nbformat.read(path, as_version=4)
    t0 = time.perf_counter()
    try:
        executed = execute(committed, timeout)
    except CellExecutionError as exc:
        seconds = time.perf_counter() - t0
        return [f"  a cell raised during execution:\n{str(exc)[-2000:]}"], [], seconds, False
    seconds = time.perf_counter() - t0
    problems, exempt = [], []
    code = [(c, e) for c, e in zip(committed.cells, executed.cells, strict=True)]
    code = [(c, e) for c, e in code if c.cell_type == "code"]
    for i, (c, e) in enumerate(code):
        if TIMING_TAG in c.metadata.get("tags", []):
            exempt.append(i)
            continue
        for p in compare_cell(c.get("outputs", []), e.get("outputs", [])):
            problems.append(f"  code cell {i}: {p}")
    if update:
        for cell in executed.cells:  # timestamps of an earlier run, kept by the executor
            cell.metadata.pop("execution", None)
        nbformat.write(executed, path)
    return problems, exempt, seconds, True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/NN_*.ipynb")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per cell (default 600)")
    ap.add_argument(
        "--jobs", type=int, default=2, help="notebooks executed at once, each in its own kernel"
    )
    ap.add_argument(
        "--update", action="store_true", help="write the fresh outputs into each .ipynb"
    )
    args = ap.parse_args(argv)
    try:
        import nbclient  # noqa: F401
        import nbformat  # noqa: F401
        from jupyter_client.kernelspec import NoSuchKernel
    except ImportError as exc:
        print(f"check_outputs: {exc.name} is not installed (pip install -e '.[notebooks]')",
              file=sys.stderr)  # fmt: skip
        return 2
    paths = args.notebooks or sorted(HERE.glob("[0-9][0-9]_*.ipynb"))
    if not paths:
        print(f"check_outputs: no notebooks NN_*.ipynb in {HERE}", file=sys.stderr)
        return 1
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [
            pool.submit(check_notebook, p.resolve(), args.timeout, args.update) for p in paths
        ]
        try:
            outcomes = [f.result() for f in futures]
        except NoSuchKernel as exc:
            print(f"check_outputs: no Jupyter kernel ({exc})", file=sys.stderr)
            return 2
    failed = 0
    for path, (problems, exempt, seconds, clean) in zip(paths, outcomes, strict=True):
        note = f" (timing cells not compared: {exempt})" if exempt else ""
        if not clean or (problems and not args.update):
            failed += 1
            what = "execution failed" if not clean else f"{len(problems)} cell output(s) differ"
            print(f"FAIL {path.name}: {what}, {seconds:.0f} s")
            for p in problems[:MAX_SHOWN]:
                print(p)
            if len(problems) > MAX_SHOWN:
                print(f"  ({len(problems) - MAX_SHOWN} further differences not shown)")
        elif args.update:
            print(f"wrote {path.name}: {len(problems)} cell(s) changed, {seconds:.0f} s{note}")
        else:
            print(f"ok   {path.name}: outputs reproduced, {seconds:.0f} s{note}")
    print(f"check_outputs: {len(paths)} notebook(s), {args.jobs} at a time, "
          f"{time.perf_counter() - t0:.0f} s in all")  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
