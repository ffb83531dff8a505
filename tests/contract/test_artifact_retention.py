"""Deleting a pruned run's artifacts, over every artifact store: the run's scope goes
whole, a neighbouring scope (even one whose name starts the same) stays."""

from __future__ import annotations

import pytest

from cadenza.errors import InvalidInput
from cadenza.ports import run_scope
from cadenza.ports.artifact_store import ArtifactStore, ArtifactUsage
from tests.contract.test_artifact_store import artifacts

__all__ = ["artifacts"]  # the fixture, over a folder and an S3 bucket


async def test_deleting_a_scope_frees_exactly_that_run(artifacts: ArtifactStore) -> None:
    blobs = [b"a" * 100, b"b" * 2000, b"c" * 30]
    keys = [await artifacts.put(run_scope("r-1"), blob) for blob in blobs]
    kept = await artifacts.put(run_scope("r-10"), b"neighbour")
    assert await artifacts.usage(run_scope("r-1")) == ArtifactUsage(3, 2130)

    freed = await artifacts.delete_scope(run_scope("r-1"))

    assert freed == ArtifactUsage(3, 2130)
    assert [await artifacts.exists(k) for k in keys] == [False, False, False]
    assert await artifacts.usage(run_scope("r-1")) == ArtifactUsage()
    assert await artifacts.get(kept) == b"neighbour"
    assert await artifacts.delete_scope(run_scope("r-1")) == ArtifactUsage()  # again: nothing


@pytest.mark.parametrize("scope", ["runs", "runs/..", "../runs/r-1", "runs/r-1/../r-2", ""])
async def test_what_is_not_a_scope_is_refused(artifacts: ArtifactStore, scope: str) -> None:
    with pytest.raises(InvalidInput):
        await artifacts.delete_scope(scope)
    with pytest.raises(InvalidInput):
        await artifacts.usage(scope)
