"""``cadenza runs prune`` as an operator uses it: preview with --dry-run, then prune."""

from __future__ import annotations

from pathlib import Path

from tests.cli.test_cli import Cli

GREET = "tests.cli.cli_workflows:greet"


def test_prune_previews_then_deletes(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    cli = Cli(home)
    run_id = cli("run", GREET, "--input", '{"name": "Ada", "plan": "pro"}', "--json").json()[
        "run_id"
    ]

    # Nothing has been kept past the default 30 days yet.
    assert cli("runs", "prune", "--json").json()["runs"] == 0
    preview = cli("runs", "prune", "--older-than", "0s", "--dry-run", "--json").json()
    assert preview["dry_run"] and preview["run_ids"] == [run_id]
    assert preview["journal_records"] == 1 and preview["history_events"] >= 4
    assert cli("runs", "show", run_id, "--json").json()["status"] == "SUCCEEDED"

    other = cli("runs", "prune", "--older-than", "0s", "--workflow", "no-such", "--json")
    assert other.json()["runs"] == 0

    done = cli("runs", "prune", "--older-than", "0s")
    assert "pruned 1 run (1 journal records" in done.out and run_id in done.out
    assert run_id in cli("runs", "show", run_id, code=3).err
    assert "bad" in cli("runs", "prune", "--older-than", "bad", code=2).err
