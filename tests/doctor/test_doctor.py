"""``cadenza doctor`` as a user runs it, with each failure it diagnoses simulated."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from cadenza.cli import doctor
from cadenza.cli.doctor import EXTRAS

CADENZA = str(Path(sys.executable).with_name("cadenza"))
REPO = Path(__file__).resolve().parents[2]


def run_doctor(
    home: Path, *args: str, site: Path | None = None, **env: str
) -> tuple[int, dict[str, Any]]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CADENZA_")}
    environ.update(CADENZA_HOME=str(home), **env)
    if site is not None:
        environ["PYTHONPATH"] = str(site)
    done = subprocess.run(
        [CADENZA, "doctor", "--json", *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=300,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout)


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in report["checks"]}


def sitecustomize(folder: Path, code: str) -> Path:
    """A sitecustomize module that every Python process started with PYTHONPATH=folder runs."""
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(code)
    return folder


def test_a_fresh_machine_passes_and_the_doctor_creates_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    code, report = run_doctor(home, "--no-model")
    checks = by_name(report)
    assert code == 0 and report["ok"] is True
    assert checks["python"]["status"] == "ok"
    assert "none yet" in checks["store"]["detail"]
    assert "none yet" in checks["secret"]["detail"]
    assert not home.exists()  # read-only: no store, secret or folder made


def test_a_secret_readable_by_others_fails_with_chmod(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "secret").write_text("s3cret")
    (home / "secret").chmod(0o644)
    code, report = run_doctor(home, "--no-model")
    secret = by_name(report)["secret"]
    assert code == 1 and secret["status"] == "fail"
    assert "0644" in secret["detail"] and secret["fix"] == f"chmod 600 {home / 'secret'}"


def test_an_unreachable_postgres_store_fails_with_how_to_start_it(tmp_path: Path) -> None:
    code, report = run_doctor(
        tmp_path, "--no-model", CADENZA_STORE="postgresql://postgres@127.0.0.1:1/nowhere"
    )
    store = by_name(report)["store"]
    assert code == 1 and store["status"] == "fail"
    assert "unreachable" in store["detail"] and "127.0.0.1:1" in store["fix"]


@pytest.mark.postgres
def test_a_postgres_store_without_schema_asks_for_an_upgrade(tmp_path: Path) -> None:
    from tests.contract.pg import fresh_database

    with fresh_database() as url:
        code, report = run_doctor(tmp_path, "--no-model", CADENZA_STORE=url)
        store = by_name(report)["store"]
        assert code == 0 and store["status"] == "warn"
        assert "schema version 0" in store["detail"] and "cadenza db upgrade" in store["fix"]
        subprocess.run(
            [CADENZA, "db", "upgrade"], env={**os.environ, "CADENZA_STORE": url}, check=True
        )
        code, report = run_doctor(tmp_path, "--no-model", CADENZA_STORE=url)
        assert code == 0 and "up to date" in by_name(report)["store"]["detail"]


def test_an_existing_sqlite_store_reports_its_schema(tmp_path: Path) -> None:
    subprocess.run(
        [CADENZA, "db", "upgrade"], env={**os.environ, "CADENZA_HOME": str(tmp_path)}, check=True
    )
    code, report = run_doctor(tmp_path, "--no-model")
    assert code == 0 and "up to date" in by_name(report)["store"]["detail"]


def test_a_missing_extra_is_named_with_its_install_command(tmp_path: Path) -> None:
    # A module set to None in sys.modules is one Python cannot find: boto3 "not installed".
    site = sitecustomize(tmp_path / "site", "import sys\nsys.modules['boto3'] = None\n")
    code, report = run_doctor(tmp_path / "home", "--no-model", site=site)
    aws = by_name(report)["extra aws"]
    assert code == 0  # an optional extra is a warning, not a failure
    assert aws["status"] == "warn" and aws["fix"].startswith("pip install 'cadenza[aws]'")


@pytest.mark.skipif(
    subprocess.run([sys.executable, "-c", "import llama_cpp"], capture_output=True).returncode,
    reason="llama-cpp-python is not installed",
)
def test_a_model_that_crashes_its_process_is_reported_with_the_rebuild(tmp_path: Path) -> None:
    # The model check's child dies as a llama.cpp built for another CPU does (SIGILL).
    site = sitecustomize(
        tmp_path / "site",
        "import os, signal, sys\n"
        "if 'cadenza.models._probe' in sys.orig_argv:\n"
        "    os.kill(os.getpid(), signal.SIGILL)\n",
    )
    code, report = run_doctor(tmp_path / "home", site=site)
    model = by_name(report)["local model"]
    assert code == 1 and model["status"] == "fail"
    assert "SIGILL" in model["detail"] and "GGML_NATIVE=OFF" in model["fix"]


@pytest.mark.skipif(
    subprocess.run([sys.executable, "-c", "import llama_cpp"], capture_output=True).returncode,
    reason="llama-cpp-python is not installed",
)
def test_a_model_that_cannot_load_is_a_failure(tmp_path: Path) -> None:
    code, report = run_doctor(tmp_path, "--model", f"local:{tmp_path / 'missing.gguf'}")
    model = by_name(report)["local model"]
    assert code == 1 and model["status"] == "fail" and "did not load" in model["detail"]


@pytest.mark.slow
@pytest.mark.skipif(
    subprocess.run([sys.executable, "-c", "import llama_cpp"], capture_output=True).returncode,
    reason="llama-cpp-python is not installed",
)
def test_the_local_model_loads_and_answers_in_a_child(tmp_path: Path) -> None:
    code, report = run_doctor(tmp_path)
    checks = by_name(report)
    assert checks["local model"]["status"] == "ok", checks["local model"]
    assert "answered" in checks["local model"]["detail"]
    assert checks["local runtime build"]["status"] == "ok"  # built by scripts/install-llama.sh
    assert code == 0


def test_python_too_old_is_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "version_info", (3, 10, 12, "final", 0))
    check = doctor.check_python()
    assert check.status == "fail" and "3.11" in (check.fix or "")


def test_compiled_features_this_cpu_lacks_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    out = "system_info CPU : SSE3 = 1 | AVX2 = 1 | AVX512 = 1 | AMX_INT8 = 1 | FMA = 0 |\n"
    features = doctor._compiled_features(out)
    assert features == {"SSE3", "AVX2", "AVX512", "AMX_INT8"}
    cpuinfo = "processor: 0\nflags\t\t: fpu pni avx avx2\n"
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: cpuinfo)
    assert doctor._lacking(features) == ["AMX_INT8", "AVX512"]


def test_a_native_crash_fails_one_test_not_the_run(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # so the child finds tests._native
    pytester.makepyfile(
        test_crash="""
        import os, signal
        import pytest

        @pytest.mark.native
        def test_crashes():
            os.kill(os.getpid(), signal.SIGSEGV)

        def test_still_runs():
            assert True
        """
    )
    result = pytester.runpytest_subprocess(
        "-p", "tests._native", "-p", "no:cacheprovider", "-W", "ignore::DeprecationWarning"
    )
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(["*killed by SIGSEGV*cadenza doctor*"])


def test_with_other_threads_running_a_native_test_runs_in_a_fresh_interpreter(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A module that starts a thread when imported: a fork now could copy a lock it holds.
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    pytester.makeconftest("pytest_plugins = ['tests._native']")
    pytester.makepyfile(
        test_threads="""
        import os, signal, threading
        import pytest

        threading.Thread(target=threading.Event().wait, daemon=True).start()

        @pytest.mark.native
        def test_crashes():
            os.kill(os.getpid(), signal.SIGSEGV)

        @pytest.mark.native
        def test_passes_in_its_own_interpreter():
            assert os.environ.get("CADENZA_NATIVE_INLINE") == "1"

        @pytest.mark.native
        def test_fails_with_its_message():
            assert 1 == 2, "one is not two"

        def test_still_runs():
            assert True
        """
    )
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-W", "ignore::DeprecationWarning"
    )
    result.assert_outcomes(failed=2, passed=2)
    result.stdout.fnmatch_lines(["*killed by SIGSEGV*cadenza doctor*"])
    result.stdout.fnmatch_lines(["*one is not two*"])


def test_every_extra_in_pyproject_is_checked() -> None:
    # A new extra that the doctor does not know of would go unreported on a broken install.
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    extras = set(pyproject["project"]["optional-dependencies"]) - {"dev"}
    assert extras == set(EXTRAS)


def test_a_missing_service_extra_is_named(tmp_path: Path) -> None:
    site = sitecustomize(tmp_path / "site", "import sys\nsys.modules['fastapi'] = None\n")
    code, report = run_doctor(tmp_path / "home", "--no-model", site=site)
    service = by_name(report)["extra service"]
    assert code == 0 and service["status"] == "warn" and "fastapi" in service["detail"]
    assert by_name(report)["extra otel"]["status"] == "ok"
