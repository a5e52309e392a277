"""derivations/README.md is what the scripts render (timings excluded), and lists every script."""

from __future__ import annotations

import re

import build_readme
import pytest
import sympy as sp


def test_every_script_is_in_the_readme_order():
    on_disk = sorted(p.stem.removeprefix("derive_") for p in build_readme.HERE.glob("derive_*.py"))
    assert sorted(build_readme.ORDER) == on_disk


def test_readme_is_up_to_date():
    text = build_readme.README.read_text(encoding="utf-8")
    recorded = re.search(r"Rendered with SymPy (\S+)\.", text)
    assert recorded, "README.md lacks the 'Rendered with SymPy <version>.' line"
    if recorded.group(1) != sp.__version__:
        pytest.skip(
            f"README rendered with SymPy {recorded.group(1)}, installed {sp.__version__}: LaTeX may differ"
        )
    fresh = build_readme.strip_timings(build_readme.render_in_process())
    assert build_readme.strip_timings(text) == fresh, (
        "derivations/README.md is stale: run python derivations/build_readme.py"
    )


def test_strip_timings_ignores_only_the_timings_block():
    a = f"x\n{build_readme.BEGIN}\n| 1.0 s |\n{build_readme.END}\ny"
    b = f"x\n{build_readme.BEGIN}\n| 9.9 s |\n{build_readme.END}\ny"
    assert build_readme.strip_timings(a) == build_readme.strip_timings(b)
    assert build_readme.strip_timings(a) != build_readme.strip_timings(b.replace("y", "z"))
