"""The public API type-checks the way user code needs: ``mypy --strict`` over the modules
in this folder reports exactly the lines marked ``# error: CODE`` and nothing else."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
MODULES = sorted(path for path in HERE.glob("*.py") if not path.name.startswith(("test_", "__")))
_MARK = re.compile(r"#\s*error:\s*([\w-]+(?:\s*,\s*[\w-]+)*)\s*$")
_REPORTED = re.compile(r"^(?P<path>[^:]+):(?P<line>\d+): error: .*\[(?P<code>[\w-]+)\]$")


def expected_errors(module: Path) -> set[tuple[int, str]]:
    expected: set[tuple[int, str]] = set()
    for number, line in enumerate(module.read_text().splitlines(), start=1):
        mark = _MARK.search(line)
        if mark:
            expected |= {(number, code.strip()) for code in mark[1].split(",")}
    return expected


@pytest.mark.parametrize("module", MODULES, ids=lambda path: path.stem)
def test_mypy_reports_exactly_the_marked_lines(module: Path) -> None:
    expected = expected_errors(module)
    assert expected, f"{module.name} marks no error: it would not show that mistakes are caught"
    checked = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-error-summary",
            "--show-error-codes",
            "--hide-error-context",
            str(module.relative_to(ROOT)),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert checked.returncode in (0, 1), checked.stderr or checked.stdout
    reported = {
        (int(found["line"]), found["code"])
        for found in map(_REPORTED.match, checked.stdout.splitlines())
        if found and Path(found["path"]).name == module.name
    }
    errors = [line for line in checked.stdout.splitlines() if ": error:" in line]
    assert reported == expected, "\n".join(errors)
    assert len(errors) >= len(expected)
