"""Golden vectors on disk — the format of docs/golden-format.md (a public contract).

    DIR/manifest.json      {"format": "primal_np-golden", "version": 1, ...,"cases": [...]}
    DIR/<case>.npz         arrays named input.* / param.* / output.* / cotangent.* / grad.*

Files are written deterministically (fixed zip timestamps, sorted names), so two
exports by the same version on the same machine are byte-identical, and they are
read with ``allow_pickle=False`` only.

Long cases (``register_case(name, long=True)``, e.g. ``dual_attention_long``, a few MB
each) are not part of a default export; ``export(..., long=True)`` (``golden export
--long``) adds them.
"""

from __future__ import annotations

import importlib
import io
import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, Any

import numpy as np

from .._files import OutputDirError, prepare_output_dir, write_atomic

__all__ = [
    "FORMAT",
    "VERSION",
    "PREFIXES",
    "GoldenCase",
    "register_case",
    "case_names",
    "build_case",
    "export",
    "write_npz",
    "GoldenFormatError",
    "GoldenExportError",
    "check_export_target",
    "read_manifest",
    "load_arrays",
]

FORMAT = "primal_np-golden"
VERSION = 1
PREFIXES = ("input", "param", "output", "cotangent", "grad")

# Modules whose import registers cases, in manifest order.
_CASE_MODULES = (
    "primal_np.golden.dual_cases",
    "primal_np.golden.layer_cases",
    "primal_np.golden.ksvd_cases",
    "primal_np.golden.kep_svgp_cases",
)


class GoldenFormatError(ValueError):
    """A golden directory or candidate file that does not follow docs/golden-format.md."""


class GoldenExportError(ValueError):
    """``export`` cannot write where it was asked to; the message names the path."""


Recompute = Callable[[dict[str, np.ndarray], np.dtype], dict[str, np.ndarray]]
Magnitudes = Callable[[dict[str, np.ndarray]], dict[str, Any]]


@dataclass
class GoldenCase:
    """One golden case.

    ``recompute(arrays, dtype)`` re-runs primal_np on the case's ``input.*``,
    ``param.*`` and ``cotangent.*`` arrays cast to ``dtype`` and returns the
    ``output.*`` and ``grad.*`` arrays it computes. The comparison policy uses it to
    measure primal_np's own error in a low precision. ``magnitudes(arrays)`` gives the
    operand scale of each ``output.*`` / ``grad.*`` array (``primal_np.magnitudes``), so
    that ``golden check`` judges arrays that are zero in exact arithmetic, large logits
    and long sums as the adapters do; None: the bounds use max|r|.
    """

    name: str
    op: str
    config: dict
    objective: str
    arrays: dict[str, np.ndarray]
    recompute: Recompute | None = field(default=None, repr=False)
    dtype: str = "float64"
    seed: int = 0
    magnitudes: Magnitudes | None = field(default=None, repr=False)

    def manifest_entry(self) -> dict:
        return {
            "name": self.name,
            "file": f"{self.name}.npz",
            "op": self.op,
            "dtype": self.dtype,
            "seed": self.seed,
            "config": self.config,
            "objective": self.objective,
        }


_BUILDERS: dict[str, Callable[[], GoldenCase]] = {}
_LONG: set[str] = set()


def register_case(
    name: str, *, long: bool = False
) -> Callable[[Callable[[], GoldenCase]], Callable[[], GoldenCase]]:
    """Register a case builder; ``long=True`` keeps it out of a default export."""

    def deco(fn: Callable[[], GoldenCase]) -> Callable[[], GoldenCase]:
        _BUILDERS[name] = fn
        if long:
            _LONG.add(name)
        return fn

    return deco


def _load_builders() -> None:
    for mod in _CASE_MODULES:
        importlib.import_module(mod)


def case_names(*, long: bool = False) -> list[str]:
    """The registered cases, in manifest order; the long ones only with ``long=True``."""
    _load_builders()
    return [n for n in _BUILDERS if long or n not in _LONG]


def build_case(name: str) -> GoldenCase:
    _load_builders()
    if name not in _BUILDERS:
        raise KeyError(f"unknown golden case {name!r}; known: {', '.join(_BUILDERS)}")

    case = _BUILDERS[name]()
    for key, arr in case.arrays.items():
        prefix = key.split(".", 1)[0]
        if prefix not in PREFIXES or "." not in key:
            raise AssertionError(
                f"case {name}: array name {key!r} lacks one of the prefixes {PREFIXES}"
            )
        if arr.dtype.kind not in "fbiu":
            raise AssertionError(f"case {name}: array {key} has non-numeric dtype {arr.dtype}")
    return case


def write_npz(path: Path | io.BufferedWriter, arrays: dict[str, np.ndarray]) -> None:
    """Write an ``.npz`` (to a path or a binary file) byte-identically for identical arrays
    (sorted, fixed timestamps)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            buf = io.BytesIO()
            arr = np.asarray(arrays[name])
            # (np.ascontiguousarray would turn a 0-d scalar into shape (1,))
            arr = arr if arr.flags.c_contiguous else arr.copy(order="C")
            np.lib.format.write_array(buf, arr, allow_pickle=False)
            zf.writestr(info, buf.getvalue())


def export(
    directory: str | Path, names: list[str] | None = None, *, long: bool = False
) -> list[GoldenCase]:
    """Write the manifest and one ``.npz`` per case into ``directory`` (created if needed).

    ``names``: the cases to write (default: every case; the long ones only with ``long``).
    The directory is checked before any case is built (``check_export_target``). Into a
    directory that already holds an export of this primal_np version, the export adds to
    it: each case written replaces its entry in ``manifest.json`` (or is appended) and the
    other entries are kept, so the manifest always lists exactly the cases whose files are
    there. Every file is written to a temporary name and renamed, the manifest last.
    """
    from .. import __version__

    if names is not None:
        _check_names(names)
    out, kept = check_export_target(directory, names)
    cases = [build_case(n) for n in (names or case_names(long=long))]
    for case in cases:
        _write_atomic(out, f"{case.name}.npz", partial(_write_arrays, arrays=case.arrays))
    written = {c.name: c.manifest_entry() for c in cases}
    entries = [written.pop(e["name"], e) for e in kept] + list(written.values())
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "primal_np_version": __version__,
        "cases": entries,
    }
    text = json.dumps(manifest, indent=2, sort_keys=False) + "\n"
    _write_atomic(out, "manifest.json", lambda f: f.write(text.encode()))
    return cases


def _write_arrays(f: io.BufferedWriter, arrays: dict[str, np.ndarray]) -> None:
    write_npz(f, arrays)


def name_problems(names: list[str]) -> tuple[list[str], list[str]]:
    """(the names that are no golden case, the names given more than once, sorted)."""
    known = case_names(long=True)
    unknown = [n for n in names if n not in known]
    twice = sorted({n for n in names if names.count(n) > 1})
    return unknown, twice


def _check_names(names: list[str]) -> None:
    unknown, twice = name_problems(names)
    if unknown:
        raise ValueError(f"unknown case(s) {unknown}; known: {', '.join(case_names(long=True))}")
    if twice:
        raise ValueError(f"case(s) {twice} named more than once")


def check_export_target(
    directory: str | Path, names: list[str] | None = None
) -> tuple[Path, list[dict]]:
    """Check, before any work, that ``directory`` can receive an export of ``names`` (None:
    every case); returns it and the manifest entries an export there must keep.

    ``GoldenExportError`` (one line naming the path) when: the path is empty, is a file or
    lies under one; the directory cannot be created or written; it holds a ``manifest.json``
    that cannot be read, lists a case whose file is missing, or was written by another
    primal_np version while only some cases are exported (export every case, which starts
    a new manifest, or use an empty directory).
    """
    from .. import __version__

    if str(directory) == "":
        raise GoldenExportError("DIR must be a directory path, got ''")
    try:
        d = prepare_output_dir(directory)
    except OutputDirError as exc:
        raise GoldenExportError(str(exc)) from None
    if not (d / "manifest.json").exists():
        return d, []
    try:
        old = read_manifest(d)
    except GoldenFormatError as exc:
        raise GoldenExportError(f"{exc}; remove it or export into another directory") from None
    if old.get("primal_np_version") != __version__:
        if names:
            raise GoldenExportError(
                f"{d / 'manifest.json'}: written by primal_np {old.get('primal_np_version')}, "
                f"this is {__version__}; export every case (without --case) or into an empty "
                "directory"
            )
        return d, []  # every case is rewritten: a new manifest
    for entry in old["cases"]:
        if entry["name"] not in (names or case_names()) and not (d / entry["file"]).is_file():
            raise GoldenExportError(
                f"{d / 'manifest.json'}: lists case {entry['name']!r} whose file "
                f"{entry['file']} is missing; remove the manifest or export into another "
                "directory"
            )
    return d, old["cases"]


def _write_atomic(d: Path, name: str, write: Callable[[IO[bytes]], object]) -> None:
    """``_files.write_atomic`` under a name starting with the file's own: a crash leaves
    the previous file (or none), never a partial one."""
    write_atomic(d, name, write, tmp_prefix=f".{name}.")


def read_manifest(directory: str | Path) -> dict:
    """Read and validate ``DIR/manifest.json``; one-line ``GoldenFormatError`` on any problem."""
    path = Path(directory) / "manifest.json"
    if not Path(directory).exists():
        raise GoldenFormatError(f"{directory}: no such directory (expected a golden directory)")
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise GoldenFormatError(f"{path}: no manifest (expected a golden directory)") from None
    except NotADirectoryError:
        raise GoldenFormatError(
            f"{directory}: not a directory (expected a golden directory)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise GoldenFormatError(f"{path}: cannot be read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise GoldenFormatError(
            f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})"
        ) from None
    if not isinstance(manifest, dict):
        raise GoldenFormatError(f"{path}: top level must be an object")
    if manifest.get("format") != FORMAT:
        raise GoldenFormatError(
            f"{path}: format is {manifest.get('format')!r}, expected {FORMAT!r}"
        )
    if manifest.get("version") != VERSION:
        raise GoldenFormatError(
            f"{path}: version {manifest.get('version')!r} is not supported (expected {VERSION})"
        )
    cases = manifest.get("cases")
    if not isinstance(cases, list):
        raise GoldenFormatError(f"{path}: 'cases' must be a list")
    for i, c in enumerate(cases):
        need = ("name", "file", "op", "dtype", "seed", "config", "objective")
        if not isinstance(c, dict) or any(k not in c for k in need):
            raise GoldenFormatError(f"{path}: case #{i} must be an object with keys {list(need)}")
        if not isinstance(c["name"], str) or not c["name"]:
            raise GoldenFormatError(f"{path}: case #{i} has name {c['name']!r}, expected a string")
    names = [c["name"] for c in cases]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise GoldenFormatError(f"{path}: case name(s) {twice} appear more than once")
    return manifest


def load_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """Load an ``.npz`` without unpickling; reject object arrays, bad names and NaN."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise GoldenFormatError(f"{path}: file not found") from None
    except ValueError as exc:  # includes "Object arrays cannot be loaded when allow_pickle=False"
        raise GoldenFormatError(f"{path}: {exc}") from None
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise GoldenFormatError(f"{path}: not a readable .npz file ({exc})") from None
    for name, arr in arrays.items():
        if "." not in name or name.split(".", 1)[0] not in PREFIXES:
            raise GoldenFormatError(
                f"{path}: array {name!r} has no prefix among {', '.join(p + '.' for p in PREFIXES)}"
            )
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            raise GoldenFormatError(f"{path}: array {name!r} contains NaN or infinity")
        if arr.dtype.kind not in "fbiu":
            raise GoldenFormatError(f"{path}: array {name!r} has unsupported dtype {arr.dtype}")
    return arrays
