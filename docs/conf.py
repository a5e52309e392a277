"""Sphinx configuration of the primal_np documentation site (built by ``.ci/docs``).

The source directory is the repository root, so the pages link to each other exactly as
they do on GitHub (README.md → docs/theory.md, notebooks → ../docs/…). Only the files
matched by ``include_patterns`` are pages. Build:

    python -m sphinx -W --keep-going -c docs -b html . docs/_build/html

Notebooks are rendered with their committed outputs and never executed here (CI executes
them separately, see notebooks/README.md). MathJax is served from the built site itself
(``sphinx-mathjax-offline``): the mathematics renders without network access.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # document this checkout's primal_np, not an installed copy

import primal_np  # noqa: E402

project = "primal_np"
author = "primal_np contributors"
copyright = "primal_np contributors, MIT licence"
release = version = primal_np.__version__

root_doc = "docs/index"
include_patterns = [
    "README.md",
    "docs/*.md",
    "docs/api/*.rst",
    "notebooks/*.ipynb",
    "notebooks/README.md",
    "derivations/README.md",
]
exclude_patterns = [".git", ".ci-venv", ".venv", "docs/_build", "**/.ipynb_checkpoints"]
templates_path = ["_templates"]  # relative to docs/

extensions = [
    "myst_nb",  # Markdown (MyST) pages and notebooks; includes myst_parser
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # copies MathJax 3 into _static/mathjax, sets mathjax_path
]

# --- MyST and notebooks
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3  # "theory.md#2-asymmetric-kernel-svd-ksvd-in-the-primal" links
nb_execution_mode = "off"  # render the committed outputs; never execute here
nb_merge_streams = True
nb_render_markdown_format = "myst"  # text/markdown outputs (notebook 2) have $…$ math

# --- API reference from the docstrings
autodoc_default_options = {"members": True, "member-order": "bysource"}
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False

# --- HTML
html_theme = "pydata_sphinx_theme"
html_title = f"primal_np {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "navbar_align": "left",
}
html_static_path: list[str] = []
html_last_updated_fmt = None
html_copy_source = False
# The site's front page is docs/index.html; /index.html redirects there.
html_additional_pages = {"index": "redirect.html"}


# --- Docstrings: the package writes equation displays as indented blocks after a
# paragraph (plain text that reads well in ``help()``). In reStructuredText such a block
# would be a block quote whose lines run together; render it as a literal block instead,
# line breaks and alignment kept. Lists, fields and directives are left alone.
_NOT_PROSE = re.compile(r"^(?::|\.\.|[-*•+] |\d+[.)] |[|=])")


def _displays_as_literal_blocks(app, what, name, obj, options, lines):
    out: list[str] = []
    for i, line in enumerate(lines):
        starts_block = (
            not line.strip()
            and i + 1 < len(lines)
            and lines[i + 1].startswith(" ")
            and lines[i + 1].strip()
        )
        if starts_block:
            prev = next((p for p in reversed(out) if p.strip()), "")
            if prev and not prev.startswith(" ") and not _NOT_PROSE.match(prev):
                if not prev.rstrip().endswith("::"):
                    out += ["", "::"]
        out.append(line)
    lines[:] = out


def setup(app):
    app.connect("autodoc-process-docstring", _displays_as_literal_blocks, priority=600)
