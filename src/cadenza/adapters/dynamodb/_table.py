"""The boundary to DynamoDB: calls in a thread, botocore errors translated, limits kept.

boto3 is synchronous, so every call runs in a worker thread (the client is thread safe).
botocore errors are translated here, most specific first, so nothing above this module
sees a vendor exception: a failed condition and a cancelled transaction become the
internal :class:`ConditionFailed` and :class:`TransactionCancelled` (the store decides
what they mean: a lost lease, a callback completed meanwhile, or a race to retry);
throttling and connection trouble become ``StoreUnavailable``, a missing table or missing
credentials a ``ConfigurationError``.

DynamoDB refuses items over 400 KB and transactions over 100 items or 4 MB. Text too
large for one item is stashed before the transaction that refers to it: in the artifact
store when the store has one (the claim-check), else as chunks in the run's own
partition. Stashes are content-addressed, so a transaction that is then refused leaves
only an unreferenced copy behind, never a half-written checkpoint.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cadenza.adapters.dynamodb._items import Item, from_item, item_size, key, run_pk, to_item
from cadenza.errors import (
    ConfigurationError,
    MissingDependency,
    StoreError,
    StoreFull,
    StoreUnavailable,
)
from cadenza.ports.artifact_store import ArtifactStore, run_scope

ITEM_LIMIT = 400 * 1024
#: Bodies above this are stashed: the rest of the item (keys, counters) must fit beside.
STASH_ABOVE = 300 * 1024
TRANSACTION_ITEMS = 100
TRANSACTION_BYTES = 4 * 1024 * 1024
_CHUNK_CHARS = 90 * 1024
#: What each index carries: only what claims, timers, event waiters and listings filter
#: on. A write that changes none of these (a step's checkpoint moving the head's counters)
#: costs no index write, which is most of a run's writes.
PROJECTED = {
    1: ("st", "wf", "wv", "q", "pr", "cr", "tr", "ep", "wa", "lx", "d"),
    2: ("st", "wf", "pa", "tn", "tr"),
}  # at most 4 bytes a character: a chunk stays under 400 KB

_UNAVAILABLE = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
        "LimitExceededException",
    }
)
_MISCONFIGURED = frozenset(
    {
        "UnrecognizedClientException",
        "AccessDeniedException",
        "InvalidSignatureException",
        "ExpiredTokenException",
        "MissingAuthenticationTokenException",
    }
)


class ConditionFailed(Exception):
    """A conditional write found the item not as expected (internal to the adapter)."""


class TransactionCancelled(Exception):
    """A transaction was refused; ``reasons`` has one code per item ("None" for the items
    that were fine, "ConditionalCheckFailed", "TransactionConflict", ...)."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__(", ".join(reasons))
        self.reasons = reasons

    @property
    def conflict(self) -> bool:
        return any(r == "TransactionConflict" for r in self.reasons)

    def failed(self, index: int) -> bool:
        return index < len(self.reasons) and self.reasons[index] == "ConditionalCheckFailed"


@dataclass(slots=True)
class Write:
    """One entry of a transaction, with the size DynamoDB will count for it."""

    entry: dict[str, Any]
    size: int


def put(item: Item, condition: str | None = None, values: Item | None = None) -> Write:
    body: dict[str, Any] = {"TableName": "", "Item": to_item(item)}
    if condition:
        body["ConditionExpression"] = condition
    if values:
        body["ExpressionAttributeValues"] = to_item(values)
    return Write({"Put": body}, item_size(item))


def check(pk: str, sk: str, condition: str, values: Item | None = None) -> Write:
    body: dict[str, Any] = {"TableName": "", "Key": key(pk, sk), "ConditionExpression": condition}
    if values:
        body["ExpressionAttributeValues"] = to_item(values)
    return Write({"ConditionCheck": body}, len(pk) + len(sk) + 4)


def update(
    pk: str,
    sk: str,
    expression: str,
    values: Item,
    *,
    condition: str | None = None,
    size: int = 0,
) -> Write:
    body: dict[str, Any] = {
        "TableName": "",
        "Key": key(pk, sk),
        "UpdateExpression": expression,
        "ExpressionAttributeValues": to_item(values),
    }
    if condition:
        body["ConditionExpression"] = condition
    return Write({"Update": body}, size or item_size(values) + len(pk) + len(sk) + 4)


def delete(pk: str, sk: str, size: int = 0) -> Write:
    return Write({"Delete": {"TableName": "", "Key": key(pk, sk)}}, size or len(pk) + len(sk))


class Table:
    """One DynamoDB table, reached through boto3 in worker threads."""

    def __init__(
        self,
        name: str,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        artifacts: ArtifactStore | None = None,
    ) -> None:
        self.name = name
        self.region = region
        self.endpoint_url = endpoint_url
        self.artifacts = artifacts
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            try:
                import boto3
            except ImportError as exc:
                raise MissingDependency("the DynamoDB run store", "aws") from exc
            self._client = boto3.client(
                "dynamodb", region_name=self.region, endpoint_url=self.endpoint_url
            )
        return self._client

    async def call(self, operation: str, **params: Any) -> Any:
        method = getattr(self.client, operation)
        try:
            return await asyncio.to_thread(method, **params)
        except Exception as exc:
            raise _translate(exc, self.name) from exc

    # --- schema ---------------------------------------------------------------------------

    async def create(self) -> None:
        """Create the table with its two indexes unless it exists (on-demand capacity)."""
        try:
            await self.call("describe_table", TableName=self.name)
            return
        except ConfigurationError:
            pass  # no such table yet
        strings = ("pk", "sk", "g1pk", "g1sk", "g2pk", "g2sk")
        try:
            await self.call(
                "create_table",
                TableName=self.name,
                BillingMode="PAY_PER_REQUEST",
                AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"} for a in strings],
                KeySchema=[
                    {"AttributeName": "pk", "KeyType": "HASH"},
                    {"AttributeName": "sk", "KeyType": "RANGE"},
                ],
                GlobalSecondaryIndexes=[
                    {
                        "IndexName": f"gsi{n}",
                        "KeySchema": [
                            {"AttributeName": f"g{n}pk", "KeyType": "HASH"},
                            {"AttributeName": f"g{n}sk", "KeyType": "RANGE"},
                        ],
                        "Projection": {
                            "ProjectionType": "INCLUDE",
                            "NonKeyAttributes": list(PROJECTED[n]),
                        },
                    }
                    for n in (1, 2)
                ],
            )
        except StoreError as exc:
            if "ResourceInUse" not in str(exc):  # created meanwhile by another process
                raise
        waiter = self.client.get_waiter("table_exists")
        await asyncio.to_thread(
            waiter.wait, TableName=self.name, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
        )

    # --- reads ----------------------------------------------------------------------------

    async def get(self, pk: str, sk: str) -> Item | None:
        reply = await self.call(
            "get_item", TableName=self.name, Key=key(pk, sk), ConsistentRead=True
        )
        raw = reply.get("Item")
        return from_item(raw) if raw else None

    async def query(
        self,
        condition: str,
        values: Item,
        *,
        index: str | None = None,
        forward: bool = True,
        limit: int | None = None,
        filter: str | None = None,
    ) -> list[Item]:
        """Every item the key condition selects (pages followed), up to ``limit``."""
        params: dict[str, Any] = {
            "TableName": self.name,
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": to_item(values),
            "ScanIndexForward": forward,
        }
        if index is None:
            params["ConsistentRead"] = True
        else:
            params["IndexName"] = index
        if filter is not None:
            params["FilterExpression"] = filter
        items: list[Item] = []
        while True:
            if limit is not None:
                params["Limit"] = max(limit - len(items), 1) if filter is None else 100
            reply = await self.call("query", **params)
            items += [from_item(raw) for raw in reply.get("Items", [])]
            start = reply.get("LastEvaluatedKey")
            if not start or (limit is not None and len(items) >= limit):
                return items[:limit] if limit is not None else items
            params["ExclusiveStartKey"] = start

    async def partition(self, pk: str, low: str, high: str) -> list[Item]:
        """The items of partition ``pk`` whose sort key lies in [low, high]."""
        return await self.query(
            "pk = :pk AND sk BETWEEN :lo AND :hi", {":pk": pk, ":lo": low, ":hi": high}
        )

    async def batch_get(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Item]:
        found: dict[tuple[str, str], Item] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 100):
            pending: dict[str, Any] = {
                self.name: {
                    "Keys": [key(pk, sk) for pk, sk in unique[start : start + 100]],
                    "ConsistentRead": True,
                }
            }
            while pending:
                reply = await self.call("batch_get_item", RequestItems=pending)
                for raw in reply.get("Responses", {}).get(self.name, []):
                    item = from_item(raw)
                    found[(item["pk"], item["sk"])] = item
                pending = reply.get("UnprocessedKeys") or {}
        return found

    # --- writes ---------------------------------------------------------------------------

    async def transact(self, writes: Sequence[Write]) -> None:
        """Apply ``writes`` atomically; TransactionCancelled when a condition fails."""
        if not writes:
            return
        if len(writes) > TRANSACTION_ITEMS or sum(w.size for w in writes) > TRANSACTION_BYTES:
            raise StoreError(
                f"a write of {len(writes)} items ({sum(w.size for w in writes)} bytes) is over"
                " DynamoDB's transaction limits (100 items, 4 MB) even after paging; split"
                " the work into smaller checkpoints (fewer children, callbacks or events)",
                retryable=False,
            )
        entries = []
        for write in writes:
            [(kind, body)] = write.entry.items()
            entries.append({kind: {**body, "TableName": self.name}})
        if len(entries) == 1 and "ConditionCheck" not in entries[0]:
            await self._single(entries[0])
            return
        await self.call("transact_write_items", TransactItems=entries)

    async def _single(self, entry: dict[str, Any]) -> None:
        """One write needs no transaction (and costs half); same answers as one."""
        [(kind, body)] = entry.items()
        operation = {"Put": "put_item", "Update": "update_item", "Delete": "delete_item"}[kind]
        try:
            await self.call(operation, **body)
        except ConditionFailed:
            raise TransactionCancelled(["ConditionalCheckFailed"]) from None

    async def put_plain(self, items: Sequence[Item]) -> None:
        """Unconditional puts in batches of 25 (stashed chunks, nothing transactional)."""
        for start in range(0, len(items), 25):
            pending: dict[str, Any] = {
                self.name: [{"PutRequest": {"Item": to_item(i)}} for i in items[start : start + 25]]
            }
            while pending:
                reply = await self.call("batch_write_item", RequestItems=pending)
                pending = reply.get("UnprocessedItems") or {}

    async def delete_plain(self, keys: Sequence[tuple[str, str]]) -> None:
        """Unconditional deletes in batches of 25 (what a pruned run leaves behind)."""
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 25):
            pending: dict[str, Any] = {
                self.name: [
                    {"DeleteRequest": {"Key": key(pk, sk)}} for pk, sk in unique[start : start + 25]
                ]
            }
            while pending:
                reply = await self.call("batch_write_item", RequestItems=pending)
                pending = reply.get("UnprocessedItems") or {}

    # --- text too large for an item ---------------------------------------------------------

    async def stash(self, run_id: str, text: str) -> str:
        """Keep ``text`` outside the item that refers to it; return the reference."""
        data = text.encode()
        if self.artifacts is not None:
            return "a:" + await self.artifacts.put(run_scope(run_id), data)
        digest = hashlib.sha256(data).hexdigest()
        chunks = [text[i : i + _CHUNK_CHARS] for i in range(0, len(text), _CHUNK_CHARS)]
        await self.put_plain(
            [
                {"pk": run_pk(run_id), "sk": f"B#{digest}#{n:05d}", "c": chunk}
                for n, chunk in enumerate(chunks)
            ]
        )
        return f"d:{digest}:{len(chunks)}"

    async def unstash(self, run_id: str, ref: str) -> str:
        if ref.startswith("a:"):
            if self.artifacts is None:
                raise ConfigurationError(
                    f"run {run_id} keeps a large record in the artifact store, but this run"
                    " store has none; open it with the deployment's artifact store"
                )
            return (await self.artifacts.get(ref[2:])).decode()
        _, digest, count = ref.split(":")
        chunks = await self.partition(run_pk(run_id), f"B#{digest}#", f"B#{digest}#~")
        text = "".join(c["c"] for c in chunks)
        if len(chunks) != int(count) or hashlib.sha256(text.encode()).hexdigest() != digest:
            raise StoreError(
                f"run {run_id}: a stashed record is incomplete ({len(chunks)} of {count}"
                " chunks); the table was changed outside cadenza",
                retryable=False,
            )
        return text


def _translate(exc: Exception, table: str) -> Exception:
    """A botocore error as the error cadenza raises for it (most specific first)."""
    try:
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectionError,
            HTTPClientError,
            NoCredentialsError,
            NoRegionError,
        )
    except ImportError:  # pragma: no cover - boto3 brings botocore
        return exc
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        message = str(error.get("Message", ""))
        if code == "ConditionalCheckFailedException":
            return ConditionFailed(message)
        if code == "TransactionCanceledException":
            reasons = [
                str(r.get("Code", "None")) for r in exc.response.get("CancellationReasons", [])
            ]
            return TransactionCancelled(reasons or ["TransactionConflict"])
        if code == "TransactionConflictException":
            return TransactionCancelled(["TransactionConflict"])
        if code == "ResourceNotFoundException":
            return ConfigurationError(
                f"DynamoDB table {table!r} does not exist; open the store once to create it"
                f" ({message})"
            )
        if code == "ItemCollectionSizeLimitExceededException":
            return StoreFull(f"DynamoDB table {table!r}: {message}")
        if code in _UNAVAILABLE:
            return StoreUnavailable(f"DynamoDB is not taking requests for now ({code}): {message}")
        if code in _MISCONFIGURED:
            return ConfigurationError(
                f"DynamoDB refused the credentials ({code}); check the AWS profile or keys"
            )
        return StoreError(f"DynamoDB refused a request ({code}): {message}", retryable=False)
    if isinstance(exc, NoCredentialsError | NoRegionError):
        return ConfigurationError(
            f"DynamoDB cannot be reached: {exc}; set the AWS credentials and a region"
            " (dynamodb://TABLE?region=...)"
        )
    if isinstance(exc, ConnectionError | HTTPClientError):
        return StoreUnavailable(f"DynamoDB cannot be reached: {exc}")
    if isinstance(exc, BotoCoreError):
        return StoreError(f"DynamoDB call failed: {exc}")
    return exc
