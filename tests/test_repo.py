"""Repository contracts: the README's quick start and what CI runs stay in step."""

import re
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
