"""``cadenza runs trace`` on a large run: loading the trace and drawing it, against just
reading the run from the store.

    python benchmarks/bench_trace.py                # a run of 10,000 operations
    python benchmarks/bench_trace.py --quick        # 1,000 operations, for a smoke check
    python benchmarks/bench_trace.py --ops 20000 --repeat 7

One run of N cheap steps on SQLite (a temporary folder). Each figure is a median of
``--repeat`` repetitions after one warm-up, in the same process:

- baseline: ``get_run`` + ``history`` + ``load_journal``, what any view of the run reads;
- ``load_trace``: the baseline plus the trace query and building the span tree;
- text: ``load_trace`` and the waterfall rendered as ``cadenza runs trace`` prints it
  (rich, 200 columns, into memory);
- ``--json``: ``load_trace`` and the JSON document as ``--json`` prints it;
- the whole command in a fresh process (interpreter start and imports included), fewer
  repetitions.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from rich.console import Console

from cadenza import Context, drive, workflow
from cadenza.cli._common import _default
from cadenza.cli.trace import _as_json, _waterfall
from cadenza.config import open_engine
from cadenza.engine.engine import Engine
from cadenza.ports.run_store import RunStatus
from cadenza.telemetry._trace import load_trace

SECRET = b"bench-secret-0123456789abcdef"


def item(i: int) -> int:
    return i * 2


@workflow(name="bench-trace")
async def many_steps(ctx: Context, ops: int) -> int:
    total = 0
    for i in range(ops):
        total += await ctx.step(item, i, name=f"item-{i}")
    return total


async def timed(fn: Callable[[], Awaitable[Any]], repeat: int) -> tuple[float, Any]:
    """Median seconds of ``fn`` over ``repeat`` calls after a warm-up, and its last value."""
    value = await fn()
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        value = await fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples), value


def rendered(engine: Engine, tree: Any) -> str:
    """The text ``cadenza runs trace`` prints when piped (200 columns), into memory."""
    out = io.StringIO()
    console = Console(file=out, width=200, highlight=False, soft_wrap=True, emoji=False)
    now = engine.clock.now()
    console.print(_waterfall(tree, now))
    ops = list(tree.ops())
    console.print(f"trace {tree.trace_id}: {len(ops)} operation(s)", markup=False)
    return out.getvalue()


async def measure(folder: Path, ops: int, repeat: int) -> tuple[dict[str, Any], str]:
    store = f"sqlite:///{folder / 'cadenza.db'}"
    engine = await open_engine(store=store, home=folder, secret=SECRET)
    try:
        started = time.perf_counter()
        run = await engine.start(many_steps, ops)
        done = await drive(engine, run.run_id)
        build = time.perf_counter() - started
        assert done.status == RunStatus.SUCCEEDED, done.error
        run_id = run.run_id

        async def baseline() -> int:
            await engine.store.get_run(run_id)
            history = await engine.store.history(run_id)
            journal = await engine.store.load_journal(run_id)
            return len(history) + len(journal)

        async def trace() -> Any:
            return await load_trace(engine, run_id)

        async def text() -> str:
            return rendered(engine, await load_trace(engine, run_id))

        async def as_json() -> str:
            tree = await load_trace(engine, run_id)
            document = _as_json(tree, engine.clock.now())
            return json.dumps(document, indent=2, default=_default, ensure_ascii=False)

        base_s, rows = await timed(baseline, repeat)
        trace_s, tree = await timed(trace, repeat)
        text_s, page = await timed(text, repeat)
        json_s, document = await timed(as_json, repeat)
        journal = await engine.store.load_journal(run_id)
        figures = {
            "ops": len(journal),
            "rows_read": rows,
            "build_s": build,
            "baseline_s": base_s,
            "load_trace_s": trace_s,
            "text_s": text_s,
            "json_s": json_s,
            "spans": sum(1 for _ in tree.ops()),
            "text_kib": len(page.encode()) / 1024,
            "json_kib": len(document.encode()) / 1024,
        }
        return figures, run_id
    finally:
        await engine.close()


def whole_command(folder: Path, run_id: str, as_json: bool, repeat: int) -> float:
    """Median seconds of ``cadenza runs trace RUN`` in a fresh process."""
    env = {**os.environ, "CADENZA_STORE": f"sqlite:///{folder / 'cadenza.db'}"}
    env["CADENZA_HOME"] = str(folder)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).resolve().parents[1] / "src"), env.get("PYTHONPATH", "")]
    )
    # the console script, as people run it (cadenza = "cadenza.cli:main")
    args = [sys.executable, "-c", "from cadenza.cli import main; main()", "runs", "trace", run_id]
    if as_json:
        args.append("--json")
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        done = subprocess.run(args, capture_output=True, env=env, timeout=300, check=False)
        samples.append(time.perf_counter() - started)
        assert done.returncode == 0, done.stderr.decode()[-500:]
    return statistics.median(samples)


def main(args: argparse.Namespace) -> None:
    ops = args.ops or (1000 if args.quick else 10_000)
    repeat = args.repeat or (3 if args.quick else 7)
    with tempfile.TemporaryDirectory(prefix="cadenza-bench-") as tmp:
        folder = Path(tmp)
        figures, run_id = asyncio.run(measure(folder, ops, repeat))
        cli_repeat = 1 if args.quick else 3
        figures["cli_text_s"] = whole_command(folder, run_id, False, cli_repeat)
        figures["cli_json_s"] = whole_command(folder, run_id, True, cli_repeat)
    base = figures["baseline_s"]
    print(
        f"run of {figures['ops']} operations ({figures['rows_read']} history events and"
        f" journal records; built in {figures['build_s']:.1f} s); median of {repeat}"
    )
    print(f"{'what':<44} {'ms':>9} {'x baseline':>11}")
    rows = [
        ("baseline: get_run + history + load_journal", base),
        ("load_trace", figures["load_trace_s"]),
        (f"load_trace + text ({figures['text_kib']:.0f} KiB)", figures["text_s"]),
        (f"load_trace + --json ({figures['json_kib']:.0f} KiB)", figures["json_s"]),
        (f"cadenza runs trace, new process (x{cli_repeat})", figures["cli_text_s"]),
        (f"cadenza runs trace --json, new process (x{cli_repeat})", figures["cli_json_s"]),
    ]
    for label, seconds in rows:
        print(f"{label:<44} {seconds * 1000:9.1f} {seconds / base:11.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--ops", type=int)
    parser.add_argument("--repeat", type=int)
    parser.add_argument("--json")
    main(parser.parse_args())
