"""The supported range declared in pyproject.toml, for the CI runs at its two ends.

pyproject.toml is the single source; .ci/floors reads it through this script:

    python .ci/lowest.py               every runtime and test requirement at its floor,
                                       ``name==X`` for ``name>=X``, one a line (pip -c)
    python .ci/lowest.py python-floor  the lowest Python, from requires-python (3.11)
    python .ci/lowest.py python-newest the newest Python, the highest
                                       "Programming Language :: Python :: 3.N" classifier

Each of those requirements must be a plain floor, ``name>=X``: anything else (no floor,
an upper bound, a marker) stops this script, so nothing is declared that the floor run
does not pin. PEP 440 pads with zeros: ``numpy==2.2`` is NumPy 2.2.0.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
FLOOR = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*>=\s*([0-9]+(?:\.[0-9]+)*)")
EXTRAS = ("test",)  # the optional dependencies the floor run installs


def _project() -> dict:
    return tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]


def floors() -> dict[str, str]:
    """{name: floor} of the runtime dependencies and the test extra, in declared order."""
    project = _project()
    reqs = list(project["dependencies"])
    for extra in EXTRAS:
        reqs += project["optional-dependencies"][extra]
    out: dict[str, str] = {}
    for req in reqs:
        m = FLOOR.fullmatch(req.strip())
        if m is None:
            raise SystemExit(f"{PYPROJECT.name}: {req!r} is not a plain floor 'name>=X'")
        name = m.group(1).lower().replace("_", "-")
        if name in out and out[name] != m.group(2):
            raise SystemExit(f"{PYPROJECT.name}: two floors for {name}: {out[name]}, {m.group(2)}")
        out[name] = m.group(2)
    return out


def python_floor() -> str:
    spec = _project()["requires-python"].strip()
    m = re.fullmatch(r">=\s*(3\.[0-9]+)", spec)
    if m is None:
        raise SystemExit(f"{PYPROJECT.name}: requires-python {spec!r} is not '>=3.N'")
    return m.group(1)


def python_newest() -> str:
    prefix = "Programming Language :: Python :: "
    versions = [
        c.removeprefix(prefix)
        for c in _project().get("classifiers", [])
        if c.startswith(prefix) and re.fullmatch(r"3\.[0-9]+", c.removeprefix(prefix))
    ]
    if not versions:
        raise SystemExit(f"{PYPROJECT.name}: no 'Programming Language :: Python :: 3.N' classifier")
    return max(versions, key=lambda v: int(v.split(".")[1]))


def main(argv: list[str]) -> None:
    if argv == []:
        print("\n".join(f"{name}=={v}" for name, v in floors().items()))
    elif argv == ["python-floor"]:
        print(python_floor())
    elif argv == ["python-newest"]:
        print(python_newest())
    else:
        raise SystemExit(f"usage: {sys.argv[0]} [python-floor | python-newest]")


if __name__ == "__main__":
    main(sys.argv[1:])
