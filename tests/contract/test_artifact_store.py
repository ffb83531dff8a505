"""The artifact store port, over every adapter: a folder, and an S3 bucket (moto, loopback).

Content-addressed keys in a run's scope, written once, read back byte for byte; keys that
are not artifact keys, or that belong to another run, read nothing; errors never say
where the store keeps its data."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cadenza.errors import InvalidInput, NotFound
from cadenza.ports import run_scope
from cadenza.ports.artifact_store import ArtifactStore, content_key


@pytest.fixture(params=["file", "s3"])
def artifacts(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ArtifactStore]:
    from cadenza.config import create_artifacts

    if request.param == "file":
        yield create_artifacts(f"file://{tmp_path / 'artifacts'}")
        return
    from tests._aws import s3_url

    yield create_artifacts(s3_url(request.getfixturevalue("aws_endpoint")))


async def test_an_artifact_reads_back_byte_for_byte(artifacts: ArtifactStore) -> None:
    data = bytes(range(256)) * 1000
    key = await artifacts.put(run_scope("r-1"), data, content_type="application/octet-stream")
    assert key == content_key("runs/r-1", data)
    assert await artifacts.get(key) == data
    assert await artifacts.exists(key)
    assert await artifacts.put(run_scope("r-1"), data) == key  # the same bytes, the same key


async def test_a_missing_artifact_is_not_found_without_naming_the_store(
    artifacts: ArtifactStore,
) -> None:
    key = content_key("runs/r-1", b"never written")
    assert not await artifacts.exists(key)
    with pytest.raises(NotFound, match="is not in the artifact store") as missing:
        await artifacts.get(key)
    where = artifacts.url.split("://", 1)[1].split("?")[0]
    assert where not in str(missing.value)


@pytest.mark.parametrize(
    "key", ["runs/../../etc/sha256-" + "0" * 64, "runs/r-1/sha256-xyz", "r-1/sha256-" + "0" * 64]
)
async def test_what_is_not_an_artifact_key_is_refused(artifacts: ArtifactStore, key: str) -> None:
    with pytest.raises(InvalidInput):
        await artifacts.get(key)
    with pytest.raises(InvalidInput):
        await artifacts.exists(key)


@pytest.mark.parametrize("run_id", ["..", "../../escape", "a/b", "r-1\x00x", "ünï code"])
async def test_any_run_id_is_one_scope(artifacts: ArtifactStore, run_id: str) -> None:
    key = await artifacts.put(run_scope(run_id), b"data")
    assert key.count("/") == 2
    assert await artifacts.for_run(run_id).get(key) == b"data"
    other = artifacts.for_run(f"other-{uuid.uuid4().hex[:6]}")
    with pytest.raises(InvalidInput, match="does not belong to run"):
        await other.get(key)


async def test_a_run_reads_only_its_own_artifacts(artifacts: ArtifactStore) -> None:
    mine, theirs = artifacts.for_run("r-mine"), artifacts.for_run("r-theirs")
    key = await theirs.put(b"secret")
    assert key.startswith("runs/r-theirs/")
    with pytest.raises(InvalidInput):
        await mine.get(key)
    assert await mine.get(await mine.put(b"own")) == b"own"


async def test_an_s3_artifact_is_one_object_under_the_prefix(aws_endpoint: str) -> None:
    import boto3

    from cadenza.adapters.s3 import S3ArtifactStore
    from tests._aws import BUCKET, REGION

    prefix = f"p-{uuid.uuid4().hex[:8]}/deeper"
    store = S3ArtifactStore.from_url(
        f"s3://{BUCKET}/{prefix}/?region={REGION}&endpoint_url={aws_endpoint}"
    )
    key = await store.put(run_scope("../escape"), b"data")
    s3 = boto3.client("s3", region_name=REGION, endpoint_url=aws_endpoint)
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    [obj] = listed["Contents"]
    assert obj["Key"] == f"{prefix}/{key}" and key.startswith("runs/..%2Fescape/")
    assert s3.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read() == b"data"
