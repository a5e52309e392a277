"""Repository contracts: the README's quick start and what CI runs stay in step."""

import importlib.util
import re
import tomllib
from pathlib import Path

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
    assert ci.rstrip().splitlines()[-1] == "bash .ci/floors"
    assert "PRIMAL_NP_NO_TORCH" not in ci
    assert "PRIMAL_NP_NO_TORCH=1" in floors and ".ci/lowest.py" in floors
    assert "python-floor" in floors and "python-newest" in floors
