"""The ``cadenza`` command run as a user runs it: in a subprocess with a home of its own,
the repository importable (the tests' workflows live in it) and no store or service taken
from the environment of whoever runs the tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CADENZA = str(Path(sys.executable).with_name("cadenza"))

#: ``cadenza(*args)``: the command run in a subprocess, its output captured.
Cadenza = Callable[..., subprocess.CompletedProcess[str]]


def cli_env(home: Path) -> dict[str, str]:
    """The environment of a command whose ``CADENZA_HOME`` is ``home``."""
    env = {**os.environ, "CADENZA_HOME": str(home), "PYTHONPATH": str(REPO_ROOT)}
    env.pop("CADENZA_STORE", None)
    env.pop("CADENZA_URL", None)
    return env


def cadenza_in(home: Path) -> Cadenza:
    """``cadenza(*args)``: the command, run with ``home`` as its home and working directory.

    >>> cadenza = cadenza_in(tmp_path)
    >>> assert cadenza("runs", "list").returncode == 0
    """
    home.mkdir(parents=True, exist_ok=True)
    env = cli_env(home)

    def cadenza(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CADENZA, *args], capture_output=True, text=True, env=env, timeout=60, cwd=home
        )

    return cadenza


def run_to_end(cadenza: Cadenza, ref: str, input: str) -> str:
    """Run ``ref`` with the JSON ``input`` through ``cadenza run``; return the run's id."""
    started = cadenza("run", ref, "--input", input, "--json")
    assert started.returncode == 0, started.stderr
    run_id: str = json.loads(started.stdout)["run_id"]
    return run_id
