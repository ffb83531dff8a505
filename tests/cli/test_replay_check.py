"""``cadenza replay-check``: would changed code still replay the stored runs? A real
``cadenza`` process against runs started by the old code, then by an edited module."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

CADENZA = str(Path(sys.executable).with_name("cadenza"))

HEADER = """
from datetime import timedelta
from cadenza import Context, workflow

async def a() -> str:
    return "a"

async def b() -> str:
    return "b"

async def c() -> str:
    return "c"

@workflow(name="rc-flow", version="1")
async def flow(ctx: Context) -> str:
"""
OLD = """
    first = await ctx.step(a)
    await ctx.wait(timedelta(hours=1), name="pause")
    return first + await ctx.step(c)
"""
BROKEN = """
    first = await ctx.step(b)
    await ctx.wait(timedelta(hours=1), name="pause")
    return first + await ctx.step(c)
"""
PATCHED = """
    first = await ctx.step(b) if ctx.patched("use-b") else await ctx.step(a)
    await ctx.wait(timedelta(hours=1), name="pause")
    return first + await ctx.step(c)
"""
LATER = """
    first = await ctx.step(a)
    await ctx.wait(timedelta(hours=1), name="pause")
    await ctx.step(b)
    return first + await ctx.step(c)
"""


class Project:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("CADENZA_STORE", "CADENZA_SECRET", "CADENZA_ARTIFACTS")
        }
        self.env["CADENZA_HOME"] = str(root / ".cadenza")

    def code(self, body: str) -> None:
        (self.root / "wf.py").write_text(HEADER + body)

    def __call__(self, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [CADENZA, *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == code, (
            f"cadenza {' '.join(args)} exited {proc.returncode}, not {code}\n"
            f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
        )
        return proc

    def check(self, *args: str, code: int = 0) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(
            self("replay-check", "wf.py:flow", "--json", *args, code=code).stdout
        )
        return out


@pytest.fixture
def project(tmp_path: Path) -> Project:
    project = Project(tmp_path)
    project.code(OLD)
    return project


def start(project: Project) -> str:
    run_id: str = json.loads(project("run", "wf.py:flow", "--json").stdout)["run_id"]
    return run_id


def test_replay_check_reports_runs_the_changed_code_would_break(project: Project) -> None:
    runs = [start(project), start(project)]
    history = [project("runs", "history", r, "--json").stdout for r in runs]

    report = project.check()
    assert (report["checked"], report["incompatible"]) == (2, 0)
    assert all(r["compatible"] for r in report["runs"])

    project.code(BROKEN)
    report = project.check(code=1)
    assert report["incompatible"] == 2
    assert [r["run_id"] for r in report["runs"]] == runs[::-1]  # newest first
    first = report["runs"][0]
    assert first["op_id"] == "1" and first["status"] == "SUSPENDED"
    assert first["recorded"] == "step 'a'" and first["asked"] == "step 'b'"
    text = project("replay-check", "wf.py:flow", code=1).stdout
    assert runs[0] in text and "the journal recorded step 'a'" in text
    assert "ctx.patched" in text

    # Nothing was executed or written: the runs are as they were.
    assert [project("runs", "history", r, "--json").stdout for r in runs] == history

    project.code(PATCHED)
    assert project.check()["incompatible"] == 0
    project.code(LATER)  # the change lies past where the runs wait: they will run it live
    assert project.check()["incompatible"] == 0


def test_replay_check_limits_and_reports_an_empty_workflow(project: Project) -> None:
    assert "no runs of rc-flow v1 to check" in project("replay-check", "wf.py:flow").stdout
    start(project)
    newest = start(project)
    project.code(BROKEN)
    report = project.check("--limit", "1", code=1)
    assert [r["run_id"] for r in report["runs"]] == [newest]


def test_replay_check_names_a_reference_that_is_not_a_workflow(project: Project) -> None:
    proc = project("replay-check", "wf.py:nothing", code=3)
    assert "wf.py has no attribute 'nothing'" in proc.stderr
