"""Evaluator reflect-refine loop: draft, score against a rubric, refine with the critique.

::

    review = EvaluatorLoop(
        "summary",
        generator="local:smollm2",
        evaluator="bedrock:us.amazon.nova-lite-v1:0",
        criteria={"faithful": "Says only what the text says.", "brief": "Three sentences."},
        threshold=0.8,
    )
    refined = await review.run(ctx, "Summarise this report: ...")

Each round the evaluator scores the draft (schema-constrained: a score from 0 to 1 per
criterion and a critique); the overall score is the weighted mean. The loop stops when the
score reaches ``threshold``, when it did not rise by ``min_delta`` over the previous round
(refining is not helping), or after ``max_rounds``. Otherwise the critique goes to the
``refiner`` (the generator when there is none) for the next draft. The best draft wins;
every round is kept in the result and in ``ctx.state.context["results"][name]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cadenza.agents import Budget, generate
from cadenza.context import Context
from cadenza.errors import WorkflowDefinitionError
from cadenza.models import Message, Model, ModelRequest
from cadenza.patterns._prompting import (
    Responder,
    check_fraction,
    check_responder,
    jsonable,
    record,
    respond,
)

__all__ = ["Criterion", "EvaluatorLoop", "Refinement", "Round", "StopReason"]

_EVALUATOR_SYSTEM = (
    "You are a strict reviewer. Score the draft against each criterion from 0 (fails it)"
    " to 1 (fully meets it), and write a critique that says concretely what to change."
)
_REFINE = (
    "Task:\n{task}\n\nYour previous draft:\n{draft}\n\nA reviewer scored it {score:.2f}"
    " (it needs {threshold:.2f}) and wrote:\n{critique}\n\nWrite an improved draft that"
    " addresses the critique. Reply with the draft only."
)


@dataclass(frozen=True)
class Criterion:
    """One line of the rubric; ``weight`` sets its share of the overall score."""

    name: str
    description: str
    weight: float = 1.0


class StopReason(StrEnum):
    THRESHOLD = "threshold"  # the score reached the threshold
    NO_IMPROVEMENT = "no_improvement"  # the score did not rise by min_delta
    MAX_ROUNDS = "max_rounds"


@dataclass(frozen=True)
class Round:
    number: int
    draft: str
    scores: Mapping[str, float]
    score: float
    critique: str


@dataclass(frozen=True)
class Refinement:
    """The outcome of the loop: the best draft, and every round that led to it."""

    output: str
    score: float
    passed: bool  # the best score reached the threshold
    stop_reason: StopReason
    rounds: tuple[Round, ...]
    best_round: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "passed": self.passed,
            "stop_reason": str(self.stop_reason),
            "best_round": self.best_round,
            "rounds": [jsonable(r) for r in self.rounds],
        }


def normalise_score(value: Any) -> float:
    """A score in 0..1. Models asked for 0..1 often answer on a 1-10 or 0-100 scale:
    values up to 10 are read as tenths, up to 100 as percentages; the rest is clamped."""
    score = float(value)
    if score > 10:
        score /= 100
    elif score > 1:
        score /= 10
    return min(max(score, 0.0), 1.0)


@dataclass(frozen=True)
class EvaluatorLoop:
    """A generator drafts, an evaluator scores against ``criteria``, the critique refines.

    ``criteria`` is a mapping of name to description, or a sequence of :class:`Criterion`.
    """

    name: str
    generator: Responder
    evaluator: str | Model
    criteria: Sequence[Criterion] | Mapping[str, str]
    threshold: float = 0.8
    max_rounds: int = 3
    min_delta: float = 0.01
    refiner: Responder | None = None
    instructions: str = _EVALUATOR_SYSTEM
    budget: Budget | None = None
    rubric: tuple[Criterion, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        where = f"EvaluatorLoop {self.name!r}"
        if not self.name:
            raise WorkflowDefinitionError("an EvaluatorLoop needs a name")
        check_responder(self.generator, f"{where} generator")
        if not isinstance(self.evaluator, str | Model):
            raise WorkflowDefinitionError(
                f"{where}: the evaluator must be a model, to return scores in a schema"
            )
        check_responder(self.evaluator, f"{where} evaluator")
        if self.refiner is not None:
            check_responder(self.refiner, f"{where} refiner")
        rubric = (
            tuple(Criterion(k, v) for k, v in self.criteria.items())
            if isinstance(self.criteria, Mapping)
            else tuple(self.criteria)
        )
        if not rubric:
            raise WorkflowDefinitionError(f"{where}: give at least one criterion")
        names = [c.name for c in rubric]
        if len(set(names)) != len(names) or not all(names):
            raise WorkflowDefinitionError(f"{where}: criterion names must be unique and non-empty")
        if any(c.weight <= 0 for c in rubric):
            raise WorkflowDefinitionError(f"{where}: criterion weights must be positive")
        check_fraction(self.threshold, f"{where}: threshold")
        if self.max_rounds < 1:
            raise WorkflowDefinitionError(f"{where}: max_rounds must be at least 1")
        if not 0.0 <= self.min_delta <= 1.0:
            raise WorkflowDefinitionError(f"{where}: min_delta must be between 0 and 1")
        object.__setattr__(self, "rubric", rubric)

    @property
    def schema(self) -> dict[str, Any]:
        """What the evaluator must return: a score per criterion and a critique."""
        # No minimum/maximum: grammar-constrained models cannot honour numeric bounds, and
        # scores on other scales are normalised instead (see normalise_score).
        score = {"type": "number"}
        return {
            "type": "object",
            "properties": {
                "scores": {
                    "type": "object",
                    "properties": {c.name: score for c in self.rubric},
                    "required": [c.name for c in self.rubric],
                },
                # Bounded, so a model that rambles cannot run past its token limit and
                # leave the JSON unfinished.
                "critique": {"type": "string", "maxLength": 600},
            },
            "required": ["scores", "critique"],
        }

    async def run(
        self, ctx: Context, task: str, *, draft: str | None = None, feedback: str | None = None
    ) -> Refinement:
        """Refine until good enough. ``draft`` skips the first generation (refine an answer
        you already have); ``feedback`` tells the evaluator and the refiner why it needs it."""
        if feedback:
            task = f"{task}\n\nAn earlier answer was rejected because: {feedback}"
        rounds: list[Round] = []
        current = draft
        if current is None:
            current = await self._draft(ctx, self.generator, ModelRequest.of(task), 1)
        stop = StopReason.MAX_ROUNDS
        for number in range(1, self.max_rounds + 1):
            rounds.append(await self._score(ctx, task, current, number))
            self._record(ctx, rounds, None)
            score = rounds[-1].score
            if score >= self.threshold:
                stop = StopReason.THRESHOLD
                break
            if number > 1 and score - rounds[-2].score < self.min_delta:
                stop = StopReason.NO_IMPROVEMENT
                break
            if number == self.max_rounds:
                break
            request = _REFINE.format(
                task=task,
                draft=current,
                score=score,
                threshold=self.threshold,
                critique=rounds[-1].critique or "(no critique)",
            )
            refiner = self.refiner if self.refiner is not None else self.generator
            current = await self._draft(ctx, refiner, ModelRequest.of(request), number + 1)
        best = max(rounds, key=lambda r: (r.score, -r.number))
        result = Refinement(
            output=best.draft,
            score=best.score,
            passed=best.score >= self.threshold,
            stop_reason=stop,
            rounds=tuple(rounds),
            best_round=best.number,
        )
        self._record(ctx, rounds, result)
        return result

    async def _draft(
        self, ctx: Context, responder: Responder, request: ModelRequest, number: int
    ) -> str:
        verb = "draft" if number == 1 else "refine"
        answer = await respond(
            ctx, responder, request, name=f"{self.name}:{verb}{number}", budget=self.budget
        )
        return answer if isinstance(answer, str) else str(answer)

    async def _score(self, ctx: Context, task: str, draft: str, number: int) -> Round:
        rubric = "\n".join(f"- {c.name}: {c.description}" for c in self.rubric)
        request = ModelRequest(
            messages=(
                Message.system(self.instructions),
                Message.user(
                    f"Task:\n{task}\n\nCriteria:\n{rubric}\n\nDraft:\n{draft}\n\nReply with"
                    " JSON: a score from 0 to 1 for each criterion, and a critique."
                ),
            ),
            max_tokens=400,
        )
        verdict: dict[str, Any] = await generate(
            ctx,
            self.evaluator,
            request,
            self.schema,
            name=f"{self.name}:score{number}",
            budget=self.budget,
        )
        scores = {c.name: normalise_score(verdict["scores"][c.name]) for c in self.rubric}
        total = sum(c.weight for c in self.rubric)
        score = round(sum(scores[c.name] * c.weight for c in self.rubric) / total, 6)
        return Round(number, draft, scores, score, str(verdict.get("critique") or ""))

    def _record(self, ctx: Context, rounds: list[Round], result: Refinement | None) -> None:
        entry: dict[str, Any] = {
            "pattern": "evaluator",
            "threshold": self.threshold,
            "rounds": [jsonable(r) for r in rounds],
        }
        if result is not None:
            entry.update(result.to_dict())
        record(ctx, self.name, entry)
