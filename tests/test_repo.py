"""Repository contracts: the README's quick start and what CI runs stay in step, and the
repository stands alone (no reference to a path outside it)."""

import importlib.util
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _quick_start_commands():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section)


def test_quick_start_has_exactly_two_commands():
    cmds = _quick_start_commands()
    assert len(cmds) == 2
    assert "python -m primal_np verify" in cmds[0]
    assert "pytest" in cmds[1]


def test_ci_runs_the_readme_test_command_verbatim_after_torch():
    ci = (ROOT / ".ci" / "run").read_text()
    test_cmd = _quick_start_commands()[1]
    assert test_cmd in ci.splitlines()
    assert ci.index("pip install torch==2.13.0") < ci.index(test_cmd)


# --------------------------------------------------------------------------- supported versions
def _lowest():
    """.ci/lowest.py: the supported range as read from pyproject.toml."""
    spec = importlib.util.spec_from_file_location("ci_lowest", ROOT / ".ci" / "lowest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _readme_section(title):
    return (ROOT / "README.md").read_text().split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_the_floor_run_pins_every_runtime_and_test_requirement():
    lowest = _lowest()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [*project["dependencies"], *project["optional-dependencies"]["test"]]
    floors = lowest.floors()
    assert set(floors) == {re.split(r"[<>=!~ ]", r, maxsplit=1)[0].lower() for r in declared}
    assert {"numpy", "scipy", "pytest", "hypothesis", "sympy"} <= set(floors)
    assert lowest.python_floor() == "3.11" and lowest.python_newest() == "3.13"


def test_readme_states_the_declared_range():
    lowest = _lowest()
    section = _readme_section("Supported versions")
    for name, floor in [("python", lowest.python_floor()), *lowest.floors().items()]:
        assert re.search(rf"{name}\W{{0,5}}≥ {re.escape(floor)}\b", section, re.I), name
    assert "SPEC 0" in section


def test_ci_runs_the_floors_and_the_newest_python_without_torch_only_there():
    ci = (ROOT / ".ci" / "run").read_text()
    floors = (ROOT / ".ci" / "floors").read_text()
    # after the main run and its notebooks, which keep failing on a skipped cross-check
    assert ci.index("bash .ci/floors") > ci.index("notebooks/check_outputs.py")
    assert "PRIMAL_NP_NO_TORCH" not in ci
    assert "PRIMAL_NP_NO_TORCH=1" in floors and ".ci/lowest.py" in floors
    assert "python-floor" in floors and "python-newest" in floors


# --------------------------------------------------------------------------- self-contained
# The repository stands alone: no file points outside it. The spec names are built by
# concatenation so that this file does not contain what it looks for.
_SPEC_NAMES = "|".join(n + r"\.md\b|" + n + " §" for n in ("THEORY", "CONFORMANCE", "GOLDEN"))
OUTSIDE_PATTERNS = {
    "a path to the shared folder beside the repository": re.compile(r"\.\./" + "shared"),
    "a path to the lead's spec folder": re.compile("shared" + "/spec"),
    "a spec file outside the repository": re.compile(r"\b(?:" + _SPEC_NAMES + ")"),
    "an absolute path on the development machine": re.compile(r"(?<![\w.~-])/" + "work/"),
}
MD_LINK = re.compile(r"\]\(\s*<?([^)\s\"'<>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
UP = "." + "./"  # written so that this file holds no ../ path
UP_PATH = re.compile(r"(?<![\w/.])(?:\.\./)+[\w.-][\w./-]*")


def _tracked_text_files() -> list[Path]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
        ).stdout.decode()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the tracked files are unknown")
    files = []
    for name in filter(None, out.split("\0")):
        path = ROOT / name
        try:
            raw = path.read_bytes()
        except OSError:
            continue  # deleted in the work tree
        if b"\0" not in raw[:8192]:
            files.append(path)
    return files


def _link_lines(path: Path, text: str) -> list[tuple[int, str]]:
    """The lines whose Markdown links are checked: Markdown and notebooks, and the comment
    lines of Python files (the Markdown cells of the jupytext notebooks)."""
    lines = list(enumerate(text.splitlines(), 1))
    if path.suffix in (".md", ".ipynb"):
        return lines
    if path.suffix == ".py":
        return [(i, line) for i, line in lines if line.lstrip().startswith("#")]
    return []


def outside_references(path: Path, text: str, root: Path = ROOT) -> list[str]:
    """Every reference in ``text`` (the content of ``path``) to a path outside ``root``:
    the patterns above, Markdown links that leave the repository or name a missing file,
    and ``../`` paths that leave it."""
    rel = path.relative_to(root)
    found = []
    for i, line in enumerate(text.splitlines(), 1):
        for what, pattern in OUTSIDE_PATTERNS.items():
            for m in pattern.finditer(line):
                found.append(f"{rel}:{i}: {what}: {m.group(0)!r}")
        for m in UP_PATH.finditer(line):
            target = (path.parent / m.group(0)).resolve()
            if not target.is_relative_to(root.resolve()):
                found.append(f"{rel}:{i}: a relative path leaving the repository: {m.group(0)!r}")
    for i, line in _link_lines(path, text):
        for m in MD_LINK.finditer(line):
            link = m.group(1).split("#", 1)[0].split("?", 1)[0]
            if not link or re.match(r"^[a-zA-Z][\w+.-]*:", link):
                continue  # an anchor on the same page, or a URL
            target = (root / link.lstrip("/")) if link.startswith("/") else (path.parent / link)
            target = target.resolve()
            if not target.is_relative_to(root.resolve()):
                found.append(f"{rel}:{i}: a link leaving the repository: {m.group(1)!r}")
            elif not target.exists():
                found.append(f"{rel}:{i}: a link to a missing file: {m.group(1)!r}")
    return found


def test_no_reference_to_a_path_outside_the_repository():
    files = _tracked_text_files()
    assert len(files) > 50  # the scan really saw the repository
    found = [f for path in files for f in outside_references(path, path.read_text("utf-8"))]
    assert not found, "references outside the repository:\n" + "\n".join(found)


def test_the_outside_reference_scanner_catches_planted_references(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "theory.md").write_text("# theory\n")
    page = tmp_path / "docs" / "page.md"
    spec, shared = "THEORY" + ".md", UP + "shared"
    planted = {
        "the shared folder": f"see {shared}/notes.txt",
        "the lead's spec folder": "see " + "shared" + "/spec/x",
        "a spec file outside": f"as {spec} says",
        "a spec section outside": "as CONFORMANCE" + " §2 says",
        "an absolute path": "run /" + "work/venv/bin/python",
        "a link leaving the repository": "[x](" + UP * 2 + "outside.md)",
        "a link to a missing file": "[x](no_such_page.md#intro)",
        "a relative path leaving the repository": "open " + UP * 2 + "elsewhere/f.txt",
    }
    for what, line in planted.items():
        assert outside_references(page, line, tmp_path), f"{what} not caught: {line!r}"
    clean = (
        "See [the theory](theory.md#1-notation), [home](../docs/theory.md), "
        "[a site](https://example.org/a.md), [anchor](#top) and docs/theory.md §2.\n"
    )
    assert outside_references(page, clean, tmp_path) == []
    code = tmp_path / "mod.py"
    assert outside_references(code, "y = fns[k](x)\n", tmp_path) == []  # code, not a link
    assert outside_references(code, "# [x](missing.md)\n", tmp_path)  # a comment is Markdown


def test_api_reference_lists_every_public_name_once():
    """docs/api/primal_np.rst names each entry of primal_np.__all__ exactly once."""
    import primal_np

    text = (ROOT / "docs" / "api" / "primal_np.rst").read_text()
    listed = re.findall(r"^\.\. (?:auto\w+:: primal_np\.|py:data:: )(\w+)", text, flags=re.M)
    assert sorted(listed) == sorted(primal_np.__all__)
    assert len(listed) == len(set(listed))
