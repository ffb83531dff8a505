"""A pytest plugin: AWS services on a moto server on loopback, for the serverless shape.

``aws_endpoint`` starts moto's ``ThreadedMotoServer`` once per session on a free port of
127.0.0.1, with throwaway credentials in the environment (nothing leaves the machine), and
creates one bucket for artifacts. ``dynamodb_store`` makes DynamoDB run stores over a
fresh table each test, their large records claim-checked to that bucket. Without moto
installed (the ``dev`` extra) these tests are skipped; nothing else is.
"""

from __future__ import annotations

import functools
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

REGION = "us-east-1"
BUCKET = "cadenza-artifacts"
_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
}


_ITEM_CALLS = (
    "get_item",
    "put_item",
    "update_item",
    "delete_item",
    "query",
    "batch_get_item",
    "batch_write_item",
    "transact_write_items",
)


def _serialize_dynamodb_calls() -> Callable[[], None]:
    """Make moto apply one DynamoDB request at a time, as DynamoDB applies each write to
    an item atomically. moto's server answers on several threads and its backend checks a
    condition and writes without a lock, so two racing conditional writes can both pass
    there (checked here with moto 5.2.5: concurrent claims took one run twice); the
    store's fencing relies on what DynamoDB guarantees, not on that. Returns the undo."""
    from moto.dynamodb.models import DynamoDBBackend

    lock = threading.RLock()
    originals = {name: getattr(DynamoDBBackend, name) for name in _ITEM_CALLS}

    def locked(method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def call(*args: Any, **kwargs: Any) -> Any:
            with lock:
                return method(*args, **kwargs)

        return call

    for name, method in originals.items():
        setattr(DynamoDBBackend, name, locked(method))

    def undo() -> None:
        for name, method in originals.items():
            setattr(DynamoDBBackend, name, method)

    return undo


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def aws_endpoint() -> Iterator[str]:
    """The URL of a moto server on loopback, with a bucket ``BUCKET``."""
    server_module = pytest.importorskip("moto.server", reason="moto[server] is not installed")
    boto3 = pytest.importorskip("boto3", reason="boto3 (the aws extra) is not installed")
    with pytest.MonkeyPatch.context() as env:
        for name, value in _CREDENTIALS.items():
            env.setenv(name, value)
        env.delenv("AWS_PROFILE", raising=False)
        port = _free_port()
        server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        undo = _serialize_dynamodb_calls()
        server.start()
        endpoint = f"http://127.0.0.1:{port}"
        try:
            boto3.client("s3", region_name=REGION, endpoint_url=endpoint).create_bucket(
                Bucket=BUCKET
            )
            yield endpoint
        finally:
            server.stop()
            undo()


@pytest.fixture
def dynamodb_store(aws_endpoint: str) -> Callable[..., Any]:
    """Makes DynamoDB run stores over one fresh table (two of them act as two processes)."""
    from cadenza.adapters.dynamodb import DynamoDbRunStore
    from cadenza.adapters.s3 import S3ArtifactStore

    table = f"cadenza-{uuid.uuid4().hex[:12]}"

    def make(*, artifacts: bool = True) -> DynamoDbRunStore:
        store = S3ArtifactStore(BUCKET, f"t/{table}", region=REGION, endpoint_url=aws_endpoint)
        return DynamoDbRunStore(
            table,
            region=REGION,
            endpoint_url=aws_endpoint,
            artifacts=store if artifacts else None,
        )

    return make


def dynamodb_url(endpoint: str) -> str:
    return f"dynamodb://cadenza-{uuid.uuid4().hex[:12]}?region={REGION}&endpoint_url={endpoint}"


def s3_url(endpoint: str) -> str:
    return f"s3://{BUCKET}/{uuid.uuid4().hex[:12]}?region={REGION}&endpoint_url={endpoint}"
