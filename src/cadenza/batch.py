"""The result types of ``ctx.map`` and ``ctx.parallel``: completion rules and batch results."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from cadenza.errors import BatchFailed, ErrorInfo, OperationFailed, WorkflowDefinitionError


@dataclass(frozen=True)
class CompletionConfig:
    """When a fan-out is done.

    By default every item runs and failures are reported per item. ``min_successful``
    completes the batch as soon as that many items succeeded (the rest are abandoned);
    ``tolerated_failure_count`` / ``tolerated_failure_percentage`` stop it as soon as more
    items than that failed.
    """

    min_successful: int | None = None
    tolerated_failure_count: int | None = None
    tolerated_failure_percentage: float | None = None

    def __post_init__(self) -> None:
        if self.min_successful is not None and self.min_successful < 0:
            raise WorkflowDefinitionError("CompletionConfig.min_successful must be >= 0")
        if self.tolerated_failure_count is not None and self.tolerated_failure_count < 0:
            raise WorkflowDefinitionError("CompletionConfig.tolerated_failure_count must be >= 0")
        pct = self.tolerated_failure_percentage
        if pct is not None and not 0 <= pct <= 100:
            raise WorkflowDefinitionError(
                "CompletionConfig.tolerated_failure_percentage must be between 0 and 100"
            )

    @classmethod
    def all_successful(cls) -> CompletionConfig:
        return cls(tolerated_failure_count=0)

    @classmethod
    def first_successful(cls) -> CompletionConfig:
        return cls(min_successful=1)

    def verdict(self, succeeded: int, failed: int, total: int) -> CompletionReason | None:
        """Whether the batch is decided after these counts; None to keep going."""
        if self.tolerated_failure_count is not None and failed > self.tolerated_failure_count:
            return CompletionReason.FAILURE_TOLERANCE_EXCEEDED
        if (
            self.tolerated_failure_percentage is not None
            and total
            and failed * 100 / total > self.tolerated_failure_percentage
        ):
            return CompletionReason.FAILURE_TOLERANCE_EXCEEDED
        if self.min_successful is not None and succeeded >= self.min_successful:
            return CompletionReason.MIN_SUCCESSFUL_REACHED
        if succeeded + failed == total:
            return CompletionReason.ALL_COMPLETED
        return None


class CompletionReason(StrEnum):
    ALL_COMPLETED = "ALL_COMPLETED"
    MIN_SUCCESSFUL_REACHED = "MIN_SUCCESSFUL_REACHED"
    FAILURE_TOLERANCE_EXCEEDED = "FAILURE_TOLERANCE_EXCEEDED"


class ItemStatus(StrEnum):
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    STARTED = "STARTED"  # running (or waiting) when the batch was decided, and abandoned
    NOT_STARTED = "NOT_STARTED"  # never ran: the batch was decided before its turn came


@dataclass(frozen=True)
class BatchItem:
    index: int
    status: ItemStatus
    result: Any = None
    error: ErrorInfo | None = None
    name: str | None = None  # the name of the item's child context

    @property
    def exception(self) -> OperationFailed | None:
        from cadenza.errors import ChildContextFailed

        return self.error.to_exception(ChildContextFailed) if self.error else None


@dataclass(frozen=True)
class BatchResult:
    """Index-ordered outcome of a fan-out; each item carries its result or its error.

    ``total_count`` counts every item of the batch, whatever became of it: succeeded,
    failed, started (abandoned while running) or never started.
    """

    items: list[BatchItem]
    completion_reason: CompletionReason

    @property
    def total_count(self) -> int:
        return len(self.items)

    @property
    def success_count(self) -> int:
        return sum(1 for i in self.items if i.status == ItemStatus.SUCCEEDED)

    @property
    def failure_count(self) -> int:
        return sum(1 for i in self.items if i.status == ItemStatus.FAILED)

    @property
    def started_count(self) -> int:
        """Items that were running when the batch was decided (abandoned mid-way)."""
        return sum(1 for i in self.items if i.status == ItemStatus.STARTED)

    @property
    def not_started_count(self) -> int:
        """Items that never ran because the batch was decided first."""
        return sum(1 for i in self.items if i.status == ItemStatus.NOT_STARTED)

    @property
    def has_failure(self) -> bool:
        return any(i.status == ItemStatus.FAILED for i in self.items)

    @property
    def status(self) -> ItemStatus:
        """FAILED if any item failed, else SUCCEEDED (as the completion rules allow)."""
        return ItemStatus.FAILED if self.has_failure else ItemStatus.SUCCEEDED

    def results(self) -> list[Any]:
        """Results of the items that succeeded, in index order."""
        return [i.result for i in self.items if i.status == ItemStatus.SUCCEEDED]

    def errors(self) -> list[OperationFailed]:
        return [e for i in self.items if (e := i.exception) is not None]

    def throw_if_error(self) -> None:
        """Raise BatchFailed if the completion rules were not met, or any item failed."""
        if self.completion_reason == CompletionReason.FAILURE_TOLERANCE_EXCEEDED or (
            self.failure_count and self.completion_reason == CompletionReason.ALL_COMPLETED
        ):
            failed = [i for i in self.items if i.error is not None]
            first = failed[0].error if failed else None
            summary = (
                f"; first: item {failed[0].index}: {first.type}: {first.message}" if first else ""
            )
            raise BatchFailed(
                f"{self.failure_count} of {self.total_count} items failed{summary}",
                details={"failed_indexes": [i.index for i in failed]},
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "completion_reason": str(self.completion_reason),
            "items": [
                {
                    "index": i.index,
                    "status": str(i.status),
                    **({"name": i.name} if i.name is not None else {}),
                    **({"result": i.result} if i.status == ItemStatus.SUCCEEDED else {}),
                    **({"error": i.error.to_dict()} if i.error else {}),
                }
                for i in self.items
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BatchResult:
        return cls(
            items=[
                BatchItem(
                    index=i["index"],
                    status=ItemStatus(i["status"]),
                    result=i.get("result"),
                    error=ErrorInfo.from_dict(i["error"]) if i.get("error") else None,
                    name=i.get("name"),
                )
                for i in data["items"]
            ],
            completion_reason=CompletionReason(data["completion_reason"]),
        )
