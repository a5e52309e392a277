"""docs/golden-format.md is the public contract of the golden files: what it states, by
hand, must be what ``golden export`` writes."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from primal_np.golden import FORMAT, PREFIXES, VERSION, export

DOC = Path(__file__).resolve().parents[1] / "docs" / "golden-format.md"


def _table(heading: str) -> list[list[str]]:
    """Rows (cells stripped of backticks) of the first Markdown table after ``heading``."""
    text = DOC.read_text(encoding="utf-8")
    after = text.split(heading, 1)[1]
    rows = []
    for line in after.splitlines():
        if line.startswith("|"):
            rows.append([c.strip().strip("`") for c in re.split(r"(?<!\\)\|", line)[1:-1]])
        elif rows:
            break
    return rows[2:]  # no header, no |---| line


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("golden-doc")
    export(d)
    return d, json.loads((d / "manifest.json").read_text())


def test_prefixes_are_the_documented_ones():
    documented = [row[0].split(".", 1)[0] for row in _table("Every array name has one of")]
    assert documented == list(PREFIXES)


def test_manifest_keys_are_the_documented_ones(exported):
    _, manifest = exported
    text = DOC.read_text(encoding="utf-8")
    rows = [r[0] for r in _table("### `manifest.json`")]
    keys = [k for k in rows if not k.startswith("cases[].")]
    case_keys = [k.removeprefix("cases[].") for k in rows if k.startswith("cases[].")]
    assert keys == list(manifest)
    for case in manifest["cases"]:
        assert case_keys == list(case)
    assert f'"format": "{FORMAT}"' in text and manifest["format"] == FORMAT
    assert f'"version": {VERSION}' in text and manifest["version"] == VERSION == 1


def test_every_documented_case_is_exported_as_documented(exported):
    directory, manifest = exported
    entries = {c["name"]: c for c in manifest["cases"]}
    rows = _table("## The cases")
    assert [r[0] for r in rows] == list(entries)  # the same cases, in export order
    for name, op, _, cotangents, outputs in rows:
        entry = entries[name]
        assert entry["op"] == op and entry["file"] == f"{name}.npz"
        with np.load(directory / entry["file"], allow_pickle=False) as data:
            files = set(data.files)
        got_cot = {n.split(".", 1)[1] for n in files if n.startswith("cotangent.")}
        got_out = {n.split(".", 1)[1] for n in files if n.startswith("output.")}
        assert got_cot == set(cotangents.replace("`", "").split(", ")), name
        assert got_out == set(outputs.replace("`", "").split(", ")), name
        if op.startswith("primal_attention"):
            assert {"eta", "trace_no_x"} <= set(entry["config"]), name
            params = {n.split(".", 1)[1] for n in files if n.startswith("param.")}
            grads = {n.split(".", 1)[1] for n in files if n.startswith("grad.")}
            assert grads == params | {"x"}, name
