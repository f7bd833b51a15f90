"""docs/TESTING.md's pytest example runs as written (through pytester, with the plugin)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.plugin.test_reports import PLUGIN_ARGS

DOC = Path(__file__).resolve().parents[2] / "docs" / "TESTING.md"


def first_python_block(text: str) -> str:
    match = re.search(r"```python\n(.*?)```", text, re.DOTALL)
    assert match, "docs/TESTING.md has no python example"
    return match[1]


def test_the_documented_path_kill_example_passes(pytester: pytest.Pytester) -> None:
    example = first_python_block(DOC.read_text(encoding="utf-8"))
    assert "path_down(1" in example and "nvmeof_target" in example
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    pytester.makepyfile(test_example=example)
    result = pytester.runpytest_inprocess(*PLUGIN_ARGS, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
