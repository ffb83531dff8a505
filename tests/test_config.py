"""Where an engine keeps its state: given arguments, then ``CADENZA_HOME``, then the per-user
data folder. A library call never writes in the current directory; the ``cadenza`` command
keeps its documented ``./.cadenza``."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from cadenza import Context, RunStatus, StepContext, drive, open_engine, workflow
from cadenza.config import user_data_dir


async def _note(step: StepContext, text: str) -> int:
    assert step.artifacts is not None
    await step.artifacts.put(text.encode(), content_type="text/plain")
    return len(text)


@workflow(name="config-writes-state")
async def writes_state(ctx: Context, text: str) -> int:
    return await ctx.step(_note, text)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory, with no cadenza variables and a private data folder."""
    folder = tmp_path / "project"
    folder.mkdir()
    monkeypatch.chdir(folder)
    for name in ("CADENZA_HOME", "CADENZA_STORE", "CADENZA_ARTIFACTS", "CADENZA_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "user" / "data"))
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "user" / "local"))
    return folder


async def _run_once(*, store: str | None = None, home: Path | None = None) -> None:
    engine = await open_engine(store=store, home=home)
    try:
        run = await engine.start(writes_state, "a note kept as an artifact")
        assert (await drive(engine, run.run_id)).status == RunStatus.SUCCEEDED
    finally:
        await engine.close()


async def test_open_engine_without_a_home_uses_the_per_user_data_folder(project: Path) -> None:
    await _run_once()

    assert list(project.iterdir()) == []
    data = user_data_dir()
    assert data.is_relative_to(Path(os.environ["HOME"]))
    assert (data / "cadenza.db").is_file()
    assert any((data / "artifacts").rglob("*")), "the step's artifact is in the data folder"
    assert stat.S_IMODE((data / "secret").stat().st_mode) == 0o600


async def test_a_given_store_keeps_the_secret_and_artifacts_out_of_the_cwd(
    project: Path, tmp_path: Path
) -> None:
    await _run_once(store=f"sqlite:///{tmp_path / 'app.db'}")

    assert list(project.iterdir()) == []
    assert (tmp_path / "app.db").is_file()
    assert (user_data_dir() / "secret").is_file()


async def test_home_argument_wins_over_cadenza_home(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CADENZA_HOME", str(tmp_path / "from-env"))
    await _run_once(home=tmp_path / "given")

    assert sorted(p.name for p in (tmp_path / "given").iterdir()) == [
        "artifacts",
        "cadenza.db",
        "secret",
    ]
    assert not (tmp_path / "from-env").exists()
    assert not user_data_dir().exists()
    assert list(project.iterdir()) == []


async def test_cadenza_home_holds_everything(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CADENZA_HOME", str(tmp_path / "from-env"))
    await _run_once()

    assert (tmp_path / "from-env" / "cadenza.db").is_file()
    assert (tmp_path / "from-env" / "secret").is_file()
    assert not user_data_dir().exists()
    assert list(project.iterdir()) == []


def test_the_command_keeps_its_state_in_dot_cadenza(project: Path) -> None:
    command = Path(sys.executable).parent / "cadenza"
    listed = subprocess.run(
        [str(command), "runs", "list"], capture_output=True, text=True, timeout=60
    )

    assert listed.returncode == 0, listed.stderr
    assert (project / ".cadenza" / "cadenza.db").is_file()
    assert not user_data_dir().exists()
