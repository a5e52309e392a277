"""``golden check``: compare a candidate ``.npz`` with a golden case (docs/golden-format.md, "Reading and checking").

The candidate holds the case's ``output.*`` and ``grad.*`` arrays, computed by the
implementation under test from the case's ``input.*``, ``param.*`` and
``cotangent.*`` arrays. Verdicts follow ``primal_np.compare``.

Which case: ``case=`` (``--case``) when given; otherwise the candidate's file name
names it — ``<case>.npz`` or ``<case>.<anything>.npz`` (for example
``dual_attention_masked.torch-fp32.npz``). A file name is the only pickle-free place
for it: an ``.npz`` of plain numeric arrays cannot carry a string.

Which precision: ``precision=`` (``--dtype``) wins when given; otherwise it is
inferred from the dtype of the candidate's floating ``output.*`` / ``grad.*``
arrays (float64, float32 or float16; mixed dtypes are an error asking for
``--dtype``). bfloat16 cannot be stored in an ``.npz``: store bfloat16 results as
float32 (exact) and pass ``--dtype bfloat16``. An array stored in a dtype less
precise than the claimed precision fails.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ..compare import ATOL, DEFAULT_K, PRECISIONS, CompareReport, compare, emulate_precision
from . import GoldenFormatError, build_case, case_names, load_arrays, read_manifest

__all__ = ["CHECKED_PREFIXES", "case_for_file", "load_candidate", "check_candidate"]

CHECKED_PREFIXES = ("output", "grad")
_INPUT_PREFIXES = ("input", "param", "cotangent")
_INFERRED = {np.dtype(np.float64): "float64", np.dtype(np.float32): "float32",
             np.dtype(np.float16): "float16"}  # fmt: skip


def case_for_file(path: str | Path, names: list[str]) -> str | None:
    """The case a candidate file names: its stem is ``<case>`` or starts with ``<case>.``."""
    stem = Path(path).name.removesuffix(".npz")
    hits = [n for n in names if stem == n or stem.startswith(n + ".")]
    return max(hits, key=len) if hits else None


def load_candidate(path: str | Path) -> dict[str, np.ndarray]:
    """Load a candidate ``.npz`` without unpickling; one-line ``GoldenFormatError`` on failure.

    Unlike ``load_arrays`` it keeps NaN and odd dtypes, which ``compare`` reports per array.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            magic = fh.read(6)
    except FileNotFoundError:
        raise GoldenFormatError(f"{path}: candidate file not found") from None
    except OSError as exc:
        raise GoldenFormatError(f"{path}: cannot read the candidate ({exc})") from None
    if not magic.startswith((b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY")):
        raise GoldenFormatError(
            f"{path}: not a readable .npz file (no zip header; write it with np.savez)"
        )
    try:
        data = np.load(path, allow_pickle=False)
    except ValueError as exc:  # "Cannot load file containing pickled data ..."
        raise GoldenFormatError(f"{path}: refusing to unpickle ({exc})") from None
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise GoldenFormatError(f"{path}: not a readable .npz file ({exc})") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise GoldenFormatError(f"{path}: a single .npy array, expected an .npz of named arrays")
    arrays: dict[str, np.ndarray] = {}
    with data:
        for name in data.files:
            try:
                arrays[name] = data[name]
            except ValueError as exc:  # "Object arrays cannot be loaded when allow_pickle=False"
                raise GoldenFormatError(
                    f"{path}: array {name!r} is an object (pickled) array; refusing to unpickle "
                    f"it — save plain numeric arrays ({exc})"
                ) from None
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise GoldenFormatError(f"{path}: array {name!r} is unreadable ({exc})") from None
    return arrays


def _select_case(manifest: dict, directory: Path, candidate: Path, case: str | None) -> dict:
    entries = {c["name"]: c for c in manifest["cases"]}
    if case is None:
        case = case_for_file(candidate, list(entries))
        if case is None:
            raise GoldenFormatError(
                f"{candidate}: the file name names no case of {directory / 'manifest.json'}; "
                f"name it <case>.npz or <case>.<anything>.npz, or pass --case "
                f"(cases: {', '.join(entries)})"
            )
    if case not in entries:
        raise GoldenFormatError(
            f"{directory / 'manifest.json'}: no case {case!r} (cases: {', '.join(entries)})"
        )
    entry = entries[case]
    file = entry["file"]
    if not isinstance(file, str) or Path(file).name != file or not file.endswith(".npz"):
        raise GoldenFormatError(
            f"{directory / 'manifest.json'}: case {case!r} has file {file!r}; expected a plain "
            "<name>.npz inside the directory"
        )
    return entry


def _infer_precision(candidate: dict[str, np.ndarray], names: list[str], path: Path) -> str:
    found = {
        _INFERRED[a.dtype]: n for n, a in candidate.items() if n in names and a.dtype in _INFERRED
    }
    if len(found) > 1:
        detail = ", ".join(f"{n} is {p}" for p, n in sorted(found.items()))
        raise GoldenFormatError(
            f"{path}: arrays of mixed precision ({detail}); pass --dtype to say which to check"
        )
    return next(iter(found), "float64")


def check_candidate(
    directory: str | Path,
    candidate: str | Path,
    *,
    case: str | None = None,
    precision: str | None = None,
    k: float = DEFAULT_K,
    atol: float = ATOL,
) -> CompareReport:
    """Compare the candidate ``.npz`` with a case of the golden directory.

    Args:
        directory: a directory written by ``golden export`` (manifest.json + <case>.npz).
        candidate: path of the candidate ``.npz`` (``output.*`` / ``grad.*`` arrays).
        case: the case name; default: named by the candidate's file name (module doc).
        precision: "float64", "float32", "float16" or "bfloat16"; default: inferred.
        k: the low-precision factor of the comparison rule.
        atol: the absolute slack of both rules (default 1e-12).

    Returns the ``CompareReport`` over the case's ``output.*`` and ``grad.*`` arrays. When
    this primal_np version knows the case and it defines operand magnitudes (the
    dual-attention cases), the bounds use them (``primal_np.magnitudes``), as the
    adapters do.
    Raises ``GoldenFormatError`` (one line naming the file and the problem) when the
    directory or the candidate file cannot be read as docs/golden-format.md says.
    """
    directory, candidate = Path(directory), Path(candidate)
    manifest = read_manifest(directory)
    if not candidate.exists():
        raise GoldenFormatError(f"{candidate}: candidate file not found")
    if not candidate.is_file():
        raise GoldenFormatError(f"{candidate}: cannot read the candidate (not a regular file)")
    entry = _select_case(manifest, directory, candidate, case)
    name = entry["name"]
    reference = load_arrays(directory / entry["file"])
    names = sorted(
        (n for n in reference if n.split(".", 1)[0] in CHECKED_PREFIXES),
        key=lambda n: (CHECKED_PREFIXES.index(n.split(".", 1)[0]), n),
    )  # output.* first, then grad.*
    if not names:
        raise GoldenFormatError(f"{directory / entry['file']}: no output.* or grad.* arrays")
    cand = load_candidate(candidate)
    if precision is None:
        precision = _infer_precision(cand, names, candidate)
    elif precision not in PRECISIONS:
        raise GoldenFormatError(f"--dtype must be one of {list(PRECISIONS)}, got {precision!r}")
    own = None
    gc = build_case(name) if name in case_names(long=True) else None
    if gc is not None and gc.op != entry["op"]:
        gc = None
    if precision != "float64":
        if gc is None or gc.recompute is None:
            raise GoldenFormatError(
                f"{directory / 'manifest.json'}: case {name!r} (op {entry['op']!r}) cannot be "
                f"recomputed in {precision} by this primal_np version, so the {precision} bound "
                "cannot be derived; check it as float64 or use a matching version"
            )
        inputs = {n: a for n, a in reference.items() if n.split(".", 1)[0] in _INPUT_PREFIXES}
        own = emulate_precision(gc.recompute, inputs, precision)
        missing = [n for n in names if n not in own]
        if missing:
            raise GoldenFormatError(
                f"case {name!r}: primal_np's recompute does not produce {missing}; cannot "
                f"derive the {precision} bound"
            )
    scales = None
    if gc is not None and gc.magnitudes is not None:
        scales = gc.magnitudes(
            {n: a for n, a in reference.items() if n.split(".", 1)[0] in _INPUT_PREFIXES}
        )
    title = f"golden check: case {name} ({entry['op']}) of {directory}; candidate {candidate}"
    return compare(
        cand, reference, precision=precision, own=own, k=k, atol=atol, scales=scales,
        names=names, title=title,
    )  # fmt: skip
