"""Parallelization / scatter-gather: one task to several models, agents or personas at
once, then one answer from theirs.

::

    panel = Scatter(
        "panel",
        branches=[
            Branch("optimist", "local:smollm2", system="You see the upside."),
            Branch("sceptic", "bedrock:us.amazon.nova-lite-v1:0", system="You doubt."),
            Branch("analyst", analyst_agent),
        ],
        gather=Synthesize("local:smollm2"),
        max_concurrency=2,
        completion=CompletionConfig(min_successful=2),
    )
    result = await panel.run(ctx, "Should we migrate to PostgreSQL?")

Branches run with ``ctx.map`` (each in its own child context, each model call durable).
Their answers are gathered by :class:`Merge` (all answers by branch), :class:`MajorityVote`,
:class:`PickBest` (by a scorer function or a judge model) or :class:`Synthesize` (a model
writes one answer from all). A failed, timed-out or abandoned branch is reported in the
result; when no branch succeeds, or more fail than ``completion`` tolerates,
:class:`~cadenza.errors.PatternError` carries every branch's error.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol, runtime_checkable

from pydantic import TypeAdapter

from cadenza.agents import Budget, call_model, generate, resolve_model
from cadenza.batch import CompletionConfig, CompletionReason, ItemStatus
from cadenza.context import Context
from cadenza.errors import PatternError, WorkflowDefinitionError
from cadenza.models import Model, TimeoutModel
from cadenza.patterns._prompting import (
    Prompt,
    Responder,
    check_prompt,
    check_responder,
    is_model,
    jsonable,
    record,
    render,
    respond,
    text_of,
)
from cadenza.retry import NO_RETRY, RetryPolicy

__all__ = [
    "Aggregator",
    "Branch",
    "BranchOutcome",
    "Gathered",
    "MajorityVote",
    "Merge",
    "PickBest",
    "Scatter",
    "ScatterResult",
    "Synthesize",
]


@dataclass(frozen=True)
class Branch:
    """One worker on the task: a model, an Agent or an async function ``(ctx, prompt)``.

    ``prompt`` is a template over ``{task}`` (the task itself by default); ``system`` gives
    a model branch its persona; ``output_type`` makes a model branch's answer structured.
    """

    name: str
    worker: Responder
    prompt: Prompt = "{task}"
    system: str | None = None
    output_type: type[Any] | Mapping[str, Any] | None = None


@dataclass(frozen=True)
class BranchOutcome:
    name: str
    status: str  # succeeded, failed, or abandoned (the batch was decided without it)
    output: Any = None
    error: str | None = None
    error_type: str | None = None


@dataclass(frozen=True)
class Gathered:
    """An aggregator's answer, and how it got there (votes, scores, the winner)."""

    output: Any
    detail: Mapping[str, Any]


@runtime_checkable
class Aggregator(Protocol):
    async def gather(
        self, ctx: Context, scatter: Scatter, task: str, answers: Sequence[BranchOutcome]
    ) -> Gathered: ...


@dataclass(frozen=True)
class Merge:
    """Every answer, by branch name."""

    async def gather(
        self, ctx: Context, scatter: Scatter, task: str, answers: Sequence[BranchOutcome]
    ) -> Gathered:
        return Gathered({a.name: a.output for a in answers}, {"merged": len(answers)})


def _normalised(value: Any) -> Hashable:
    return " ".join(text_of(value).lower().split()).rstrip(".!")


@dataclass(frozen=True)
class MajorityVote:
    """The answer most branches gave; ``key`` says when two answers are the same (by
    default: the same text, ignoring case, spacing and a final full stop). A tie goes to
    the answer of the earliest branch; fewer than ``min_votes`` agreeing fails the gather."""

    key: Callable[[Any], Hashable] = _normalised
    min_votes: int = 1

    async def gather(
        self, ctx: Context, scatter: Scatter, task: str, answers: Sequence[BranchOutcome]
    ) -> Gathered:
        keys = [self.key(a.output) for a in answers]
        votes = Counter(keys)
        winner = max(keys, key=lambda k: (votes[k], -keys.index(k)))
        if votes[winner] < self.min_votes:
            raise PatternError(
                f"scatter {scatter.name!r}: no answer got {self.min_votes} votes"
                f" (the most: {votes[winner]})",
                details={"votes": {str(k): v for k, v in votes.items()}},
            )
        first = answers[keys.index(winner)]
        return Gathered(
            first.output,
            {
                "votes": {str(k): v for k, v in votes.items()},
                "winner": first.name,
                "agreeing": [a.name for a, k in zip(answers, keys, strict=True) if k == winner],
            },
        )


@dataclass(frozen=True)
class PickBest:
    """The best answer: by ``scorer`` (a function of an answer, run as a durable step)
    or by a ``judge`` model, told the ``criteria``."""

    scorer: Callable[[Any], float] | None = None
    judge: str | Model | None = None
    criteria: str = "the most correct, complete and clear answer"

    def __post_init__(self) -> None:
        if (self.scorer is None) == (self.judge is None):
            raise WorkflowDefinitionError("PickBest needs a scorer or a judge, not both")
        if self.judge is not None:
            check_responder(self.judge, "PickBest judge")

    async def gather(
        self, ctx: Context, scatter: Scatter, task: str, answers: Sequence[BranchOutcome]
    ) -> Gathered:
        names = [a.name for a in answers]
        if self.scorer is not None:
            scorer = self.scorer

            def score_all() -> list[float]:
                return [float(scorer(a.output)) for a in answers]

            scores: list[float] = await ctx.step(
                score_all, name=f"{scatter.name}:score", retry=NO_RETRY
            )
            best = max(range(len(answers)), key=lambda i: (scores[i], -i))
            return Gathered(
                answers[best].output,
                {"winner": names[best], "scores": dict(zip(names, scores, strict=True))},
            )
        assert self.judge is not None
        listing = "\n\n".join(f"[{a.name}]\n{text_of(a.output)}" for a in answers)
        schema = {
            "type": "object",
            "properties": {"best": {"type": "string", "enum": names}, "reason": {"type": "string"}},
            "required": ["best", "reason"],
        }
        verdict: dict[str, Any] = await generate(
            ctx,
            self.judge,
            f"Task:\n{task}\n\nAnswers:\n{listing}\n\nWhich answer is {self.criteria}?"
            " Reply with JSON naming the best one and why.",
            schema,
            name=f"{scatter.name}:judge",
            budget=scatter.budget,
        )
        best_name = str(verdict["best"])
        chosen = next(a for a in answers if a.name == best_name)
        return Gathered(chosen.output, {"winner": best_name, "reason": verdict.get("reason", "")})


@dataclass(frozen=True)
class Synthesize:
    """A model writes one answer from all the branches' answers."""

    model: str | Model
    instructions: str = (
        "Combine these answers into one answer to the task: keep what they agree on,"
        " resolve what they disagree on, and say so when it stays uncertain."
    )

    def __post_init__(self) -> None:
        check_responder(self.model, "Synthesize")

    async def gather(
        self, ctx: Context, scatter: Scatter, task: str, answers: Sequence[BranchOutcome]
    ) -> Gathered:
        listing = "\n\n".join(f"[{a.name}]\n{text_of(a.output)}" for a in answers)
        response = await call_model(
            ctx,
            self.model,
            f"{self.instructions}\n\nTask:\n{task}\n\nAnswers:\n{listing}",
            name=f"{scatter.name}:synthesize",
            budget=scatter.budget,
        )
        return Gathered(response.text, {"sources": [a.name for a in answers]})


@dataclass(frozen=True)
class ScatterResult:
    output: Any
    branches: tuple[BranchOutcome, ...]
    completion_reason: str
    detail: Mapping[str, Any]

    @property
    def succeeded(self) -> tuple[BranchOutcome, ...]:
        return tuple(b for b in self.branches if b.status == "succeeded")

    @property
    def failed(self) -> tuple[BranchOutcome, ...]:
        return tuple(b for b in self.branches if b.status == "failed")


@dataclass(frozen=True)
class Scatter:
    """Fan a task out to ``branches``, then ``gather`` their answers.

    ``timeout`` limits each model call of a model branch (a :class:`ModelTimeout`, retried
    per ``retry``, which defaults to the model-call policy of :mod:`cadenza.agents`).
    """

    name: str
    branches: Sequence[Branch]
    gather: Aggregator = Merge()
    max_concurrency: int | None = None
    completion: CompletionConfig | None = None
    timeout: timedelta | None = None
    retry: RetryPolicy | None = None
    budget: Budget | None = None

    def __post_init__(self) -> None:
        where = f"Scatter {self.name!r}"
        object.__setattr__(self, "branches", tuple(self.branches))
        if not self.name:
            raise WorkflowDefinitionError("a Scatter needs a name")
        if not self.branches:
            raise WorkflowDefinitionError(f"{where} has no branches")
        names = [b.name for b in self.branches]
        if len(set(names)) != len(names) or not all(names):
            raise WorkflowDefinitionError(f"{where}: branch names must be unique and non-empty")
        for branch in self.branches:
            here = f"{where}, branch {branch.name!r}"
            check_responder(branch.worker, here)
            check_prompt(branch.prompt, ["task"], here)
            if branch.output_type is not None and not is_model(branch.worker):
                raise WorkflowDefinitionError(f"{here}: output_type needs a model worker")
        if not isinstance(self.gather, Aggregator):
            raise WorkflowDefinitionError(f"{where}: {self.gather!r} is not an Aggregator")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise WorkflowDefinitionError(f"{where}: max_concurrency must be at least 1")
        if self.timeout is not None and self.timeout <= timedelta(0):
            raise WorkflowDefinitionError(f"{where}: timeout must be positive")

    async def run(self, ctx: Context, task: str) -> ScatterResult:
        """Run every branch on ``task`` and gather what they answered."""

        async def run_branch(child: Context, index: int) -> Any:
            return await self._run_branch(child, self.branches[index], task)

        batch = await ctx.map(
            list(range(len(self.branches))),
            run_branch,
            name=f"{self.name}:scatter",
            max_concurrency=self.max_concurrency,
            completion=self.completion,
        )
        outcomes = []
        for item, branch in zip(batch.items, self.branches, strict=True):
            if item.status == ItemStatus.SUCCEEDED:
                output = item.result
                if isinstance(branch.output_type, type):
                    output = TypeAdapter(branch.output_type).validate_python(output)
                outcomes.append(BranchOutcome(branch.name, "succeeded", output))
            elif item.status == ItemStatus.FAILED and item.error is not None:
                outcomes.append(
                    BranchOutcome(
                        branch.name, "failed", error=item.error.message, error_type=item.error.type
                    )
                )
            else:
                outcomes.append(BranchOutcome(branch.name, "abandoned"))
        reason = str(batch.completion_reason)
        answers = [o for o in outcomes if o.status == "succeeded"]
        entry: dict[str, Any] = {
            "pattern": "scatter",
            "completion_reason": reason,
            "branches": [{k: v for k, v in jsonable(o).items() if k != "output"} for o in outcomes],
        }
        if not answers or batch.completion_reason == CompletionReason.FAILURE_TOLERANCE_EXCEEDED:
            record(ctx, self.name, {**entry, "status": "failed"})
            failures = "; ".join(
                f"{o.name}: {o.error_type}: {o.error}" for o in outcomes if o.error
            )
            raise PatternError(
                f"scatter {self.name!r}: {len(answers)} of {len(outcomes)} branches succeeded"
                f" ({reason}); {failures or 'no branch finished'}",
                details=entry,
            )
        gathered = await self.gather.gather(ctx, self, task, answers)
        record(ctx, self.name, {**entry, "status": "completed", "detail": gathered.detail})
        return ScatterResult(gathered.output, tuple(outcomes), reason, gathered.detail)

    async def _run_branch(self, ctx: Context, branch: Branch, task: str) -> Any:
        request = render(branch.prompt, {"task": task}, system=branch.system)
        label = f"{self.name}:{branch.name}"
        worker = branch.worker
        if is_model(worker) and (self.timeout is not None or self.retry is not None):
            model: Model = resolve_model(worker)  # type: ignore[arg-type]
            if self.timeout is not None:
                model = TimeoutModel(model, self.timeout)
            if branch.output_type is None:
                response = await call_model(
                    ctx, model, request, name=label, budget=self.budget, retry=self.retry
                )
                return response.text
            worker = model
        if branch.output_type is not None:
            assert isinstance(worker, str | Model)
            return jsonable(
                await generate(
                    ctx, worker, request, branch.output_type, name=label, budget=self.budget
                )
            )
        return await respond(ctx, worker, request, name=label, budget=self.budget)
