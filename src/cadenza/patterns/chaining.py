"""Prompt chaining as a saga: reasoning steps, each checked by a gate before the next.

::

    chain = PromptChain(
        "article",
        model="local:smollm2",
        steps=[
            ChainStep("outline", "Outline an article about {input}.", gate=has_three_points),
            ChainStep(
                "draft",
                "Write the article from this outline:\\n{outline}",
                gate=under_500_words,
                max_attempts=2,
                on_exhausted=GoBack("outline"),
            ),
        ],
    )
    result = await chain.run(ctx, "durable workflows")

A step's prompt sees the chain's ``input`` and the output of every earlier step by name.
Its gate (a function of the output returning :class:`Verdict` or a bool, run as a durable
step) decides whether the chain may go on. A rejected output is retried with the gate's
feedback (asking for a different approach) up to ``max_attempts``; then the step's
``on_exhausted`` recovery applies: :class:`GoBack` re-plans from an earlier step, telling it
why the later one failed; :class:`Refine` hands the output to an
:class:`~cadenza.patterns.EvaluatorLoop`. With nothing left to try the chain raises
:class:`~cadenza.errors.PatternError`, whose details carry the whole trail.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeAlias

from cadenza.agents import Budget, call_model, generate
from cadenza.context import Context
from cadenza.errors import PatternError, WorkflowDefinitionError
from cadenza.models import Message, Model, ModelRequest
from cadenza.patterns._prompting import (
    Prompt,
    check_prompt,
    check_responder,
    jsonable,
    prompt_text,
    record,
    render,
    text_of,
)
from cadenza.patterns.evaluator import EvaluatorLoop
from cadenza.retry import NO_RETRY

__all__ = [
    "ChainResult",
    "ChainStep",
    "Gate",
    "GoBack",
    "PromptChain",
    "Refine",
    "StepAttempt",
    "Verdict",
]

_RETRY = "Your answer was rejected: {feedback}\nTake a different approach and answer again."
_REPLAN = (
    "A later step ({step}) could not succeed from your answer: {feedback}\n"
    "Revise your answer so that it can."
)


@dataclass(frozen=True)
class Verdict:
    """What a gate says about a step's output."""

    ok: bool
    feedback: str = ""

    @classmethod
    def accept(cls) -> Verdict:
        return cls(True)

    @classmethod
    def reject(cls, feedback: str) -> Verdict:
        return cls(False, feedback)


Gate: TypeAlias = Callable[[Any], "Verdict | bool | Awaitable[Verdict | bool]"]


@dataclass(frozen=True)
class GoBack:
    """Re-plan from the earlier step ``to``, at most ``max_times`` for this step."""

    to: str
    max_times: int = 1


@dataclass(frozen=True)
class Refine:
    """Hand the rejected output to ``loop`` to refine, then check it once more."""

    loop: EvaluatorLoop


@dataclass(frozen=True)
class ChainStep:
    """One reasoning step. ``output_type`` (a pydantic model, a type or a JSON Schema)
    makes the output structured; ``model`` and ``system`` override the chain's."""

    name: str
    prompt: Prompt
    output_type: type[Any] | Mapping[str, Any] | None = None
    gate: Gate | None = None
    max_attempts: int = 2
    on_exhausted: GoBack | Refine | None = None
    model: str | Model | None = None
    system: str | None = None


@dataclass(frozen=True)
class StepAttempt:
    """One try of one step, and what the chain did next."""

    step: str
    attempt: int
    output: Any
    ok: bool
    feedback: str
    action: str  # accepted, retry, go_back:<step>, refine, failed


@dataclass(frozen=True)
class ChainResult:
    output: Any  # the last step's output
    outputs: Mapping[str, Any]  # every step's accepted output, by step name
    trail: tuple[StepAttempt, ...]
    go_backs: int


@dataclass(frozen=True)
class PromptChain:
    name: str
    steps: Sequence[ChainStep]
    model: str | Model | None = None
    system: str | None = None
    budget: Budget | None = None

    def __post_init__(self) -> None:
        where = f"PromptChain {self.name!r}"
        object.__setattr__(self, "steps", tuple(self.steps))
        if not self.name:
            raise WorkflowDefinitionError("a PromptChain needs a name")
        if not self.steps:
            raise WorkflowDefinitionError(f"{where} has no steps")
        known = ["input"]
        for step in self.steps:
            here = f"{where}, step {step.name!r}"
            if not step.name or step.name in known:
                raise WorkflowDefinitionError(
                    f"{here}: step names must be unique, non-empty and not 'input'"
                )
            model = step.model or self.model
            if model is None:
                raise WorkflowDefinitionError(
                    f"{here} has no model; give the chain or the step one"
                )
            check_responder(model, here)
            check_prompt(step.prompt, known, here)
            if step.gate is not None and not callable(step.gate):
                raise WorkflowDefinitionError(f"{here}: the gate must be a function of the output")
            if step.max_attempts < 1:
                raise WorkflowDefinitionError(f"{here}: max_attempts must be at least 1")
            if isinstance(step.on_exhausted, GoBack):
                if step.on_exhausted.to not in known[1:]:
                    raise WorkflowDefinitionError(
                        f"{here}: GoBack({step.on_exhausted.to!r}) must name an earlier step;"
                        f" earlier steps: {', '.join(known[1:]) or 'none'}"
                    )
                if step.on_exhausted.max_times < 1:
                    raise WorkflowDefinitionError(f"{here}: GoBack.max_times must be at least 1")
            elif isinstance(step.on_exhausted, Refine):
                if step.output_type is not None:
                    raise WorkflowDefinitionError(
                        f"{here}: Refine works on text; drop output_type or use GoBack"
                    )
            elif step.on_exhausted is not None:
                raise WorkflowDefinitionError(f"{here}: on_exhausted is GoBack, Refine or None")
            known.append(step.name)

    async def run(self, ctx: Context, input: Any = None) -> ChainResult:
        """Run the steps in order; raise :class:`PatternError` when a step cannot pass."""
        run = _ChainRun(self, ctx)
        position = 0
        while position < len(self.steps):
            step = self.steps[position]
            output, back_to = await run.step(step, {"input": input, **run.outputs})
            if back_to is not None:
                position = [s.name for s in self.steps].index(back_to)
                for later in self.steps[position:]:
                    run.outputs.pop(later.name, None)
            else:
                run.outputs[step.name] = output
                position += 1
            self._record(ctx, run.outputs, run.trail, "running")
        self._record(ctx, run.outputs, run.trail, "completed")
        return ChainResult(
            output=run.outputs[self.steps[-1].name],
            outputs=dict(run.outputs),
            trail=tuple(run.trail),
            go_backs=sum(run.go_backs.values()),
        )

    def _system(self, step: ChainStep) -> str | None:
        return step.system if step.system is not None else self.system

    async def _ask(self, ctx: Context, step: ChainStep, request: ModelRequest, label: str) -> Any:
        model = step.model or self.model
        assert model is not None  # checked at definition
        if step.output_type is not None:
            return await generate(
                ctx, model, request, step.output_type, name=label, budget=self.budget
            )
        response = await call_model(ctx, model, request, name=label, budget=self.budget)
        return response.text

    async def _check(self, ctx: Context, step: ChainStep, output: Any, label: str) -> Verdict:
        gate = step.gate
        if gate is None:
            return Verdict.accept()

        async def check_gate() -> dict[str, Any]:
            said = gate(output)
            if inspect.isawaitable(said):
                said = await said
            if isinstance(said, Verdict):
                return {"ok": said.ok, "feedback": said.feedback}
            if isinstance(said, bool):
                return {"ok": said, "feedback": "" if said else "the check failed"}
            raise TypeError(f"the gate of step {step.name!r} returned {said!r}, not a Verdict")

        said = await ctx.step(check_gate, name=f"{label}:gate", retry=NO_RETRY)
        return Verdict(bool(said["ok"]), str(said.get("feedback") or ""))

    def _record(
        self, ctx: Context, outputs: Mapping[str, Any], trail: list[StepAttempt], status: str
    ) -> None:
        record(
            ctx,
            self.name,
            {
                "pattern": "chain",
                "status": status,
                "outputs": dict(outputs),
                "trail": [{k: v for k, v in jsonable(a).items() if k != "output"} for a in trail],
            },
        )


class _ChainRun:
    """The mutable bookkeeping of one run of a chain."""

    def __init__(self, chain: PromptChain, ctx: Context) -> None:
        self.chain = chain
        self.ctx = ctx
        self.outputs: dict[str, Any] = {}
        self.notes: dict[str, list[Message]] = {}  # re-plan feedback for a step gone back to
        self.go_backs: dict[str, int] = {}
        self.calls: dict[str, int] = {}
        self.trail: list[StepAttempt] = []

    def _label(self, step: ChainStep) -> str:
        self.calls[step.name] = self.calls.get(step.name, 0) + 1
        label = f"{self.chain.name}:{step.name}"
        return label if self.calls[step.name] == 1 else f"{label}#{self.calls[step.name]}"

    def _note(
        self, step: ChainStep, attempt: int, output: Any, verdict: Verdict, action: str
    ) -> None:
        self.trail.append(
            StepAttempt(step.name, attempt, output, verdict.ok, verdict.feedback, action)
        )

    async def step(self, step: ChainStep, values: Mapping[str, Any]) -> tuple[Any, str | None]:
        """The step's accepted output, or the name of the step to go back to."""
        chain, ctx = self.chain, self.ctx
        request = render(step.prompt, values, system=chain._system(step))
        extra = self.notes.pop(step.name, [])
        for attempt in range(1, step.max_attempts + 1):
            label = self._label(step)
            asked = replace(request, messages=(*request.messages, *extra))
            output = await chain._ask(ctx, step, asked, label)
            verdict = await chain._check(ctx, step, output, label)
            if verdict.ok:
                self._note(step, attempt, output, verdict, "accepted")
                return output, None
            if attempt == step.max_attempts:
                break
            self._note(step, attempt, output, verdict, "retry")
            chain._record(ctx, self.outputs, self.trail, "running")
            feedback = verdict.feedback or "no reason given"
            extra = [
                *extra,
                Message.assistant(text_of(output)),
                Message.user(_RETRY.format(feedback=feedback)),
            ]
        recovery = step.on_exhausted
        feedback = verdict.feedback or "no reason given"
        if isinstance(recovery, GoBack) and self.go_backs.get(step.name, 0) < recovery.max_times:
            self.go_backs[step.name] = self.go_backs.get(step.name, 0) + 1
            self._note(step, attempt, output, verdict, f"go_back:{recovery.to}")
            self.notes[recovery.to] = [
                Message.assistant(text_of(self.outputs[recovery.to])),
                Message.user(_REPLAN.format(step=step.name, feedback=feedback)),
            ]
            return None, recovery.to
        if isinstance(recovery, Refine):
            self._note(step, attempt, output, verdict, "refine")
            refined = await recovery.loop.run(
                ctx, prompt_text(asked), draft=text_of(output), feedback=feedback
            )
            attempt, output = attempt + 1, refined.output
            verdict = await chain._check(ctx, step, output, f"{label}:refined")
            if verdict.ok:
                self._note(step, attempt, output, verdict, "accepted")
                return output, None
        self._note(step, attempt, output, verdict, "failed")
        chain._record(ctx, self.outputs, self.trail, "failed")
        raise PatternError(
            f"chain {chain.name!r}: step {step.name!r} did not pass its gate after"
            f" {attempt} attempts; last feedback: {verdict.feedback or 'none'}",
            details={
                "chain": chain.name,
                "step": step.name,
                "feedback": verdict.feedback,
                "trail": [jsonable(a) for a in self.trail],
            },
        )
