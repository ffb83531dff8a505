"""Supervisor / orchestrator: plan subtasks, delegate each to a role, synthesise.

::

    supervisor = Supervisor(
        "launch",
        planner="bedrock:us.amazon.nova-pro-v1:0",
        roles={"researcher": researcher, "writer": writer},  # Agents, each with its own tools
    )
    result = await supervisor.run(ctx, "Write a launch note for cadenza 1.0")

The planner returns a plan (schema-constrained): subtasks ``{id, role, task, depends_on}``.
A plan that names an unknown role, depends on an unknown subtask, has a cycle or too many
subtasks is sent back with its problems and re-planned. Each subtask goes to the
:class:`~cadenza.agents.Agent` of its role, which can only use its own tools (least
privilege); subtasks whose dependencies are done run in parallel (``ctx.map``), each seeing
the results it depends on. When a subtask fails the planner re-plans the remaining work,
knowing what is done and what failed, at most ``max_replans`` times; then
:class:`~cadenza.errors.PatternError`. Finally the planner (or ``synthesizer``) writes the
answer from the results. The plan and each subtask's status live in ``ctx.state.plan``.

A planner too small to plan reliably can be given a ``fallback_plan``: when its reply does
not fit the plan schema, or its plan is rejected, the supervisor carries out the fixed plan
instead (skipping the subtasks already done) rather than asking again, and says so:
``SupervisorResult.fallbacks`` and the ``fallbacks`` of the pattern's record in the state
document list the plans that were the fixed one.

``budget`` covers the whole team: the planner, the synthesizer and every role agent (and
whatever they start) spend from it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cadenza.agents import Agent, Budget, budget_scope, call_model, generate
from cadenza.batch import ItemStatus
from cadenza.context import Context
from cadenza.errors import PatternError, StructuredOutputError, WorkflowDefinitionError
from cadenza.models import Message, Model, ModelRequest
from cadenza.patterns._prompting import check_responder, jsonable, record
from cadenza.state import AgentStatus

__all__ = ["Subtask", "SubtaskResult", "Supervisor", "SupervisorResult"]

_PLANNER_SYSTEM = (
    "You are an orchestrator. Break the goal into subtasks for the roles you are given."
    " Give each subtask a short id, the role that does it, the task in one or two"
    " sentences, and depends_on: the ids of the subtasks whose results it needs."
    " Subtasks that do not depend on each other run in parallel."
)


class _PlannedSubtask(BaseModel):
    model_config = ConfigDict(title="Subtask")
    id: str
    role: str
    task: str
    depends_on: list[str] = Field(default_factory=list)


class _Plan(BaseModel):
    model_config = ConfigDict(title="Plan")
    subtasks: list[_PlannedSubtask]


@dataclass(frozen=True)
class Subtask:
    id: str
    role: str
    task: str
    depends_on: tuple[str, ...] = ()


@dataclass(frozen=True)
class SubtaskResult:
    id: str
    role: str
    task: str
    status: str  # succeeded or failed
    output: str | None
    error: str | None
    plan: int  # which plan (1 = the first) it ran in


@dataclass(frozen=True)
class SupervisorResult:
    answer: str
    plans: tuple[tuple[Subtask, ...], ...]  # every plan the planner made, in order
    results: tuple[SubtaskResult, ...]  # every subtask run, in order, failed ones included
    replans: int
    rejected: tuple[str, ...]  # why plans were sent back
    fallbacks: tuple[int, ...] = ()  # the plans (1 = the first) that were the fallback_plan


@dataclass(frozen=True)
class Supervisor:
    name: str
    planner: str | Model
    roles: Mapping[str, Agent]
    max_replans: int = 2
    max_subtasks: int = 8
    max_concurrency: int | None = None
    synthesizer: str | Model | None = None
    instructions: str = _PLANNER_SYSTEM
    track_state: bool = True  # keep goal, plan and status in ctx.state
    budget: Budget | None = None
    fallback_plan: Sequence[Subtask] = ()  # carried out when the planner's plan is unusable

    def __post_init__(self) -> None:
        where = f"Supervisor {self.name!r}"
        if not self.name:
            raise WorkflowDefinitionError("a Supervisor needs a name")
        check_responder(self.planner, f"{where} planner")
        if self.synthesizer is not None:
            check_responder(self.synthesizer, f"{where} synthesizer")
        if not self.roles:
            raise WorkflowDefinitionError(f"{where} has no roles to delegate to")
        for role, agent in self.roles.items():
            if not role or not isinstance(agent, Agent):
                raise WorkflowDefinitionError(f"{where}: role {role!r} must map to an Agent")
        if self.max_replans < 0 or self.max_subtasks < 1:
            raise WorkflowDefinitionError(
                f"{where}: max_replans must be 0 or more, max_subtasks at least 1"
            )
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise WorkflowDefinitionError(f"{where}: max_concurrency must be at least 1")
        if self.fallback_plan:
            problems = self.problems(tuple(self.fallback_plan), {})
            if problems:
                raise WorkflowDefinitionError(f"{where}: fallback_plan: {'; '.join(problems)}")

    async def run(self, ctx: Context, goal: str) -> SupervisorResult:
        """Plan, delegate, re-plan on failure, and synthesise the answer to ``goal``."""
        with budget_scope(self.budget):  # the role agents spend from it too
            return await self._run(ctx, goal)

    async def _run(self, ctx: Context, goal: str) -> SupervisorResult:
        done: dict[str, SubtaskResult] = {}
        results: list[SubtaskResult] = []
        plans: list[tuple[Subtask, ...]] = []
        rejected: list[str] = []
        fallbacks: list[int] = []
        feedback: str | None = None
        if self.track_state:
            ctx.state.goal = goal
        for number in range(1, self.max_replans + 2):
            self._status(ctx, AgentStatus.PLANNING)
            try:
                plan = await self._plan(ctx, goal, done, feedback, number)
                problems = self.problems(plan, done)
            except StructuredOutputError as exc:
                if not self.fallback_plan:
                    raise
                plan, problems = (), [f"the planner's reply did not fit the plan: {exc}"]
            if problems and self.fallback_plan:
                rejected.append("; ".join(problems))
                plan, problems = tuple(self.fallback_plan), []
                fallbacks.append(number)
            plans.append(plan)
            if problems:
                feedback = "Your last plan could not be used:\n- " + "\n- ".join(problems)
                rejected.append("; ".join(problems))
                self._record(ctx, plans, results, rejected, "replanning", fallbacks)
                continue
            self._status(ctx, AgentStatus.PLANNING_COMPLETE)
            failed = await self._execute(
                ctx, goal, plan, done, results, number, plans, rejected, fallbacks
            )
            if not failed:
                answer = await self._synthesize(ctx, goal, done, plan)
                self._status(ctx, AgentStatus.COMPLETED)
                self._record(ctx, plans, results, rejected, "completed", fallbacks)
                return SupervisorResult(
                    answer,
                    tuple(plans),
                    tuple(results),
                    len(plans) - 1,
                    tuple(rejected),
                    tuple(fallbacks),
                )
            feedback = "These subtasks failed:\n" + "\n".join(
                f"- {f.id} ({f.role}): {f.error}" for f in failed
            )
        self._status(ctx, AgentStatus.FAILED)
        self._record(ctx, plans, results, rejected, "failed", fallbacks)
        raise PatternError(
            f"supervisor {self.name!r} could not reach the goal in {len(plans)} plans;"
            f" last problem: {(feedback or '').splitlines()[-1].lstrip('- ')}",
            details={
                "supervisor": self.name,
                "plans": [[jsonable(s) for s in p] for p in plans],
                "results": [jsonable(r) for r in results],
                "rejected": rejected,
                "fallbacks": fallbacks,
            },
        )

    def problems(self, plan: Sequence[Subtask], done: Mapping[str, SubtaskResult]) -> list[str]:
        """Why a plan cannot be carried out; empty when it can."""
        out: list[str] = []
        todo = [s for s in plan if s.id not in done]
        if not plan:
            out.append("the plan has no subtasks")
        if len(todo) > self.max_subtasks:
            out.append(f"the plan has {len(todo)} subtasks; at most {self.max_subtasks}")
        ids = [s.id for s in plan]
        out += [f"the id {i!r} is used twice" for i in sorted({i for i in ids if ids.count(i) > 1})]
        for s in todo:
            if s.role not in self.roles:
                out.append(
                    f"subtask {s.id!r} names the role {s.role!r}, which does not exist;"
                    f" roles: {', '.join(self.roles)}"
                )
            for dep in s.depends_on:
                if dep not in ids and dep not in done:
                    out.append(f"subtask {s.id!r} depends on {dep!r}, which is not in the plan")
        if not out:
            cycle = _cycle(todo, done)
            if cycle:
                out.append(f"the dependencies form a cycle: {' -> '.join(cycle)}")
        return out

    async def _plan(
        self,
        ctx: Context,
        goal: str,
        done: Mapping[str, SubtaskResult],
        feedback: str | None,
        number: int,
    ) -> tuple[Subtask, ...]:
        roles = "\n".join(
            f"- {role}: {agent.instructions.splitlines()[0] if agent.instructions else role}"
            for role, agent in self.roles.items()
        )
        prompt = f"Goal: {goal}\n\nRoles (use exactly these names):\n{roles}\n\n"
        prompt += f"Plan at most {self.max_subtasks} subtasks."
        if done:
            prompt += (
                "\n\nAlready done (depend on these by id; do not plan them again):\n"
                + "\n".join(f"- {r.id} ({r.role}): {_clip(r.output)}" for r in done.values())
            )
        if feedback:
            prompt += f"\n\n{feedback}\nMake a new plan for the remaining work."
        request = ModelRequest((Message.system(self.instructions), Message.user(prompt)))
        plan: _Plan = await generate(
            ctx, self.planner, request, _Plan, name=f"{self.name}:plan{number}", budget=self.budget
        )
        return tuple(
            Subtask(s.id, s.role, s.task, tuple(dict.fromkeys(s.depends_on))) for s in plan.subtasks
        )

    async def _execute(
        self,
        ctx: Context,
        goal: str,
        plan: tuple[Subtask, ...],
        done: dict[str, SubtaskResult],
        results: list[SubtaskResult],
        number: int,
        plans: list[tuple[Subtask, ...]],
        rejected: list[str],
        fallbacks: list[int],
    ) -> list[SubtaskResult]:
        """Run the plan in waves of ready subtasks; the failures of the first failing wave."""
        pending = [s for s in plan if s.id not in done]
        self._show_plan(ctx, plan, done)
        wave = 0
        while pending:
            wave += 1
            ready = [s for s in pending if all(d in done for d in s.depends_on)]
            if not ready:  # problems() rules this out; never loop on it
                raise PatternError(f"supervisor {self.name!r}: no subtask of the plan can start")
            self._status(ctx, AgentStatus.TOOL_EXECUTION_PENDING)

            async def run_subtask(child: Context, subtask: Subtask) -> str:
                return await self._delegate(child, goal, subtask, done)

            batch = await ctx.map(
                ready,
                run_subtask,
                name=f"{self.name}:plan{number}:wave{wave}",
                max_concurrency=self.max_concurrency,
            )
            failed = []
            for subtask, item in zip(ready, batch.items, strict=True):
                ok = item.status == ItemStatus.SUCCEEDED
                error = None if ok or item.error is None else item.error.message
                outcome = SubtaskResult(
                    subtask.id,
                    subtask.role,
                    subtask.task,
                    "succeeded" if ok else "failed",
                    str(item.result) if ok else None,
                    error if ok or error else "abandoned",
                    number,
                )
                results.append(outcome)
                if ok:
                    done[subtask.id] = outcome
                else:
                    failed.append(outcome)
            pending = [s for s in pending if s.id not in done and s not in ready]
            self._show_plan(ctx, plan, done, failed)
            self._status(
                ctx,
                AgentStatus.TOOL_EXECUTION_FAILED if failed else AgentStatus.TOOL_EXECUTION_SUCCESS,
            )
            self._record(ctx, plans, results, rejected, "running", fallbacks)
            if failed:
                return failed
        return []

    async def _delegate(
        self, ctx: Context, goal: str, subtask: Subtask, done: Mapping[str, SubtaskResult]
    ) -> str:
        inputs = "\n".join(
            f"- {dep} ({done[dep].role}): {done[dep].output}" for dep in subtask.depends_on
        )
        task = f"{subtask.task}\n\n(This is part of the goal: {goal})"
        if inputs:
            task += f"\n\nResults you can use:\n{inputs}"
        agent = self.roles[subtask.role]
        return (await agent.run(ctx, task, track_state=False)).answer

    async def _synthesize(
        self, ctx: Context, goal: str, done: Mapping[str, SubtaskResult], plan: Sequence[Subtask]
    ) -> str:
        listing = "\n\n".join(f"[{r.id}] ({r.role}) {r.task}\n{r.output}" for r in done.values())
        request = ModelRequest.of(
            f"Goal: {goal}\n\nResults of the subtasks:\n{listing}\n\nWrite the final answer"
            " to the goal from these results.",
            system="You write the final answer from your team's results.",
        )
        model = self.synthesizer or self.planner
        response = await call_model(
            ctx, model, request, name=f"{self.name}:synthesize", budget=self.budget
        )
        return response.text

    def _status(self, ctx: Context, status: AgentStatus) -> None:
        if self.track_state:
            ctx.state.status = status

    def _show_plan(
        self,
        ctx: Context,
        plan: Sequence[Subtask],
        done: Mapping[str, SubtaskResult],
        failed: Sequence[SubtaskResult] = (),
    ) -> None:
        if not self.track_state:
            return
        failures = {f.id: f for f in failed}
        ctx.state.plan = [
            {
                "id": s.id,
                "action": s.task,
                "role": s.role,
                "dependsOn": list(s.depends_on),
                "status": "SUCCEEDED"
                if s.id in done
                else "FAILED"
                if s.id in failures
                else "PENDING",
                "result": _clip(done[s.id].output if s.id in done else None)
                or (failures[s.id].error if s.id in failures else None),
            }
            for s in plan
        ]

    def _record(
        self,
        ctx: Context,
        plans: Sequence[Sequence[Subtask]],
        results: Sequence[SubtaskResult],
        rejected: Sequence[str],
        status: str,
        fallbacks: Sequence[int] = (),
    ) -> None:
        record(
            ctx,
            self.name,
            {
                "pattern": "supervisor",
                "status": status,
                "plans": len(plans),
                "rejected": list(rejected),
                "fallbacks": list(fallbacks),
                "subtasks": [
                    {
                        "id": r.id,
                        "role": r.role,
                        "status": r.status,
                        "plan": r.plan,
                        "error": r.error,
                    }
                    for r in results
                ],
            },
        )


def _cycle(todo: Sequence[Subtask], done: Mapping[str, Any]) -> list[str]:
    """A dependency cycle among ``todo`` as a path of ids, or empty."""
    edges = {s.id: [d for d in s.depends_on if d not in done] for s in todo}
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for dep in edges.get(node, []):
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if state.get(dep) is None:
                found = visit(dep)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return []

    for node in edges:
        if node not in state:
            found = visit(node)
            if found:
                return found
    return []


def _clip(text: str | None, limit: int = 300) -> str | None:
    if text is None:
        return None
    return text if len(text) <= limit else text[:limit] + "…"
