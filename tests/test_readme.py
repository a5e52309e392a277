"""Every ```python block of README.md runs as written.

The blocks run in the order they appear, in one namespace per top-level (``## ``)
section of the README: a section's later blocks may use what its earlier blocks defined
(the imports and ``rng`` of "Using it"), as a reader who runs the section from the top
does; nothing crosses from one section to the next. Blocks are executed verbatim, with no
setup added.

Only Python blocks are executed. The ```bash blocks are not (they install packages, train
for minutes, build the documentation site); the two quick-start commands are checked by
``tests/test_repo.py`` instead (CI runs the test command verbatim).
"""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _sections() -> dict[str, list[str]]:
    """Section title → its ```python blocks, in order (sections without one left out)."""
    out: dict[str, list[str]] = {}
    title = "(top)"
    for part in re.split(r"^## (.+)$", README.read_text(encoding="utf-8"), flags=re.M):
        blocks = re.findall(r"^```python\n(.*?)^```$", part, flags=re.M | re.S)
        if blocks:
            out[title] = blocks
        title = part.strip()
    return out


SECTIONS = _sections()


def test_the_readme_has_its_examples():
    assert sum(len(b) for b in SECTIONS.values()) >= 4, SECTIONS.keys()


@pytest.mark.parametrize("title", list(SECTIONS))
def test_readme_section_runs_as_written(title, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # anything an example writes stays out of the repository
    namespace: dict = {"__name__": "__readme__"}
    for i, block in enumerate(SECTIONS[title]):
        code = compile(block, f"README.md, section {title!r}, python block {i + 1}", "exec")
        exec(code, namespace)
