"""Routing / dynamic dispatch: classify a request, hand it to the route that fits.

::

    router = Router(
        routes={"billing": billing_workflow, "tech": tech_agent, "other": "Answer: {request}"},
        classifier=LlmClassifier("local:smollm2", routes={"billing": "...", "tech": "..."}),
        fallback="other",
        model="local:smollm2",  # answers the prompt-template routes
    )
    routed = await router.route(ctx, "My invoice is wrong")

A route's handler is a workflow (started as a child run with ``ctx.invoke``), an
:class:`~cadenza.agents.Agent`, a prompt template over ``{request}``, or an async function
``(ctx, request)``. Three classifiers share one interface, ``await classify(ctx, request)``:
:class:`LlmClassifier` (a schema-constrained label with a confidence), :class:`RuleClassifier`
(EventBridge patterns over structured requests, first match wins) and
:class:`SemanticClassifier` (embedding similarity to example utterances). A request no route
fits — a label below the threshold, an answer outside the labels, no rule matching — goes
to the fallback route.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias, runtime_checkable

from cadenza.agents import Agent, Budget, call_model, generate
from cadenza.context import Context
from cadenza.errors import (
    InvalidEventPattern,
    OperationFailed,
    StructuredOutputError,
    WorkflowDefinitionError,
)
from cadenza.events import EventPattern, compile_pattern
from cadenza.models import Message, Model, ModelRequest
from cadenza.patterns._embeddings import Embedder, MiniLmEmbedder
from cadenza.patterns._prompting import (
    check_fraction,
    check_prompt,
    check_responder,
    jsonable,
    record,
    render,
    text_of,
)
from cadenza.patterns._vectors import cosine
from cadenza.workflow import WorkflowDefinition

__all__ = [
    "Classification",
    "Classifier",
    "Handler",
    "LlmClassifier",
    "Routed",
    "Router",
    "RuleClassifier",
    "SemanticClassifier",
]

Handler: TypeAlias = WorkflowDefinition | Agent | str | Callable[[Context, Any], Awaitable[Any]]


@dataclass(frozen=True)
class Classification:
    """A classifier's decision. ``route`` is None when no route fits well enough;
    ``label`` is the route it leaned to even so, ``scores`` its score per label."""

    route: str | None
    confidence: float
    reason: str = ""
    label: str | None = None
    scores: Mapping[str, float] = field(default_factory=dict)


@runtime_checkable
class Classifier(Protocol):
    """Decides which route a request takes. ``labels`` are the routes it can name."""

    @property
    def labels(self) -> tuple[str, ...]: ...

    async def classify(self, ctx: Context, request: Any) -> Classification: ...


_CLASSIFY = (
    "Classify the request into exactly one of these routes, and say how confident you are"
    " (0 to 1):\n{routes}\n\nRequest:\n{request}"
)


@dataclass(frozen=True)
class LlmClassifier:
    """A model picks the route (schema-constrained) with a confidence; below ``threshold``,
    or outside the routes, no route fits. ``routes`` are names, or names mapped to a
    description the model reads."""

    model: str | Model
    routes: Sequence[str] | Mapping[str, str]
    threshold: float = 0.5
    instructions: str = "You route requests to the team that handles them."
    max_repairs: int = 1
    budget: Budget | None = None
    descriptions: Mapping[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_responder(self.model, "LlmClassifier")
        described = (
            dict(self.routes)
            if isinstance(self.routes, Mapping)
            else {label: "" for label in self.routes}
        )
        if isinstance(self.routes, str) or not described:
            raise WorkflowDefinitionError("LlmClassifier needs a list of routes")
        if not all(isinstance(k, str) and k for k in described):
            raise WorkflowDefinitionError("LlmClassifier: route names must be non-empty text")
        check_fraction(self.threshold, "LlmClassifier threshold")
        if self.max_repairs < 0:
            raise WorkflowDefinitionError("LlmClassifier max_repairs must be 0 or more")
        object.__setattr__(self, "descriptions", described)

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.descriptions)

    @property
    def schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {
                "route": {"type": "string", "enum": list(self.descriptions)},
                "confidence": {"type": "number", "minimum": 0, "maximum": 1},
                "reason": {"type": "string"},
            },
            "required": ["route", "confidence"],
        }

    async def classify(self, ctx: Context, request: Any) -> Classification:
        routes = "\n".join(
            f"- {label}: {text}" if text else f"- {label}"
            for label, text in self.descriptions.items()
        )
        prompt = _CLASSIFY.format(routes=routes, request=text_of(request))
        asked = ModelRequest((Message.system(self.instructions), Message.user(prompt)))
        try:
            answer: dict[str, Any] = await generate(
                ctx,
                self.model,
                asked,
                self.schema,
                name="classify",
                max_repairs=self.max_repairs,
                budget=self.budget,
            )
        except StructuredOutputError as exc:
            return Classification(
                None, 0.0, f"the model's answer fits no route: {exc.raw_reply[:200]!r}"
            )
        label, confidence = str(answer["route"]), float(answer["confidence"])
        reason = str(answer.get("reason") or "")
        if label not in self.descriptions:
            return Classification(None, 0.0, f"the model answered {label!r}, not a route")
        if confidence < self.threshold:
            return Classification(
                None,
                confidence,
                f"{label!r} at confidence {confidence:.2f}, below the threshold"
                f" {self.threshold:.2f}" + (f": {reason}" if reason else ""),
                label,
            )
        return Classification(label, confidence, reason, label)


@dataclass(frozen=True)
class RuleClassifier:
    """EventBridge patterns over a structured request; the first matching rule wins.

    ``rules`` is a sequence of ``(route, pattern)`` pairs, or a mapping of route to pattern.
    A request that is not a JSON object is matched as ``{"text": request}``.
    """

    rules: Sequence[tuple[str, Mapping[str, Any]]] | Mapping[str, Mapping[str, Any]]
    compiled: tuple[tuple[str, EventPattern], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        pairs = list(self.rules.items()) if isinstance(self.rules, Mapping) else list(self.rules)
        if not pairs:
            raise WorkflowDefinitionError("RuleClassifier needs at least one rule")
        compiled = []
        for route, pattern in pairs:
            try:
                compiled.append((route, compile_pattern(dict(pattern))))
            except (InvalidEventPattern, TypeError, ValueError) as exc:
                raise WorkflowDefinitionError(
                    f"RuleClassifier: the pattern for route {route!r} is not valid: {exc}"
                ) from exc
        object.__setattr__(self, "compiled", tuple(compiled))

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(route for route, _ in self.compiled))

    async def classify(self, ctx: Context, request: Any) -> Classification:
        subject = jsonable(request)
        if not isinstance(subject, dict):
            subject = {"text": subject}
        for number, (route, pattern) in enumerate(self.compiled, 1):
            if pattern.matches(subject):
                return Classification(
                    route, 1.0, f"rule {number} matched: {json.dumps(pattern.pattern)}", route
                )
        return Classification(None, 0.0, "no rule matched")


@dataclass(frozen=True)
class SemanticClassifier:
    """The route whose example utterances are most similar to the request (cosine of their
    embeddings); below ``threshold`` no route fits. The embedding and scoring run as one
    durable step, so replay recomputes nothing. The default embedder is MiniLM."""

    examples: Mapping[str, Sequence[str]]
    threshold: float = 0.5
    embedder: Embedder | None = None
    name: str = "semantic"
    _vectors: dict[str, list[list[float]]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if not self.examples:
            raise WorkflowDefinitionError("SemanticClassifier needs example utterances")
        for route, utterances in self.examples.items():
            if isinstance(utterances, str) or not utterances or not all(utterances):
                raise WorkflowDefinitionError(
                    f"SemanticClassifier: give route {route!r} a list of example utterances"
                )
        check_fraction(self.threshold, "SemanticClassifier threshold")
        if self.embedder is None:
            object.__setattr__(self, "embedder", MiniLmEmbedder())
        elif not isinstance(self.embedder, Embedder):
            raise WorkflowDefinitionError(f"{self.embedder!r} is not an Embedder")

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.examples)

    async def scores(self, text: str) -> dict[str, float]:
        """The best similarity of ``text`` to each route's examples (not durable)."""
        embedder = self.embedder
        assert embedder is not None
        if not self._vectors:  # the examples are embedded once per process
            embedded = {
                route: await embedder.embed(list(utterances))
                for route, utterances in self.examples.items()
            }
            self._vectors.update(embedded)
        [vector] = await embedder.embed([text])
        return {
            route: round(max(cosine(vector, v) for v in vectors), 6)
            for route, vectors in self._vectors.items()
        }

    async def classify(self, ctx: Context, request: Any) -> Classification:
        text = text_of(request)

        async def embed_and_score() -> dict[str, float]:
            return await self.scores(text)

        scores: dict[str, float] = await ctx.step(embed_and_score, name=f"classify:{self.name}")
        label = max(scores, key=lambda r: scores[r])
        similarity = max(0.0, scores[label])
        if similarity < self.threshold:
            return Classification(
                None,
                similarity,
                f"closest to {label!r} at {similarity:.2f}, below the threshold"
                f" {self.threshold:.2f}",
                label,
                scores,
            )
        return Classification(label, similarity, f"most similar to {label!r}", label, scores)


@dataclass(frozen=True)
class Routed:
    """Where a request went, why, and what the handler returned."""

    route: str
    output: Any
    classification: Classification
    fell_back: bool
    reason: str
    error: str | None = None  # the chosen handler's failure, when the fallback took over


@dataclass(frozen=True)
class Router:
    routes: Mapping[str, Handler]
    classifier: Classifier
    fallback: str
    name: str = "router"
    model: str | Model | None = None  # answers the prompt-template routes
    fallback_on_error: bool = False
    budget: Budget | None = None

    def __post_init__(self) -> None:
        where = f"Router {self.name!r}"
        if not self.routes:
            raise WorkflowDefinitionError(f"{where} has no routes")
        if self.fallback not in self.routes:
            raise WorkflowDefinitionError(
                f"{where}: the fallback {self.fallback!r} is not a route;"
                f" routes: {', '.join(self.routes)}"
            )
        if not isinstance(self.classifier, Classifier):
            raise WorkflowDefinitionError(f"{where}: {self.classifier!r} is not a Classifier")
        unknown = [label for label in self.classifier.labels if label not in self.routes]
        if unknown:
            raise WorkflowDefinitionError(
                f"{where}: the classifier names {', '.join(map(repr, unknown))}, which"
                f" {'is not a route' if len(unknown) == 1 else 'are not routes'};"
                f" routes: {', '.join(self.routes)}"
            )
        for route, handler in self.routes.items():
            here = f"{where}, route {route!r}"
            if isinstance(handler, str):
                check_prompt(handler, ["request"], here)
                if self.model is None:
                    raise WorkflowDefinitionError(
                        f"{here} is a prompt template; give the router a model to answer it"
                    )
            elif not isinstance(handler, WorkflowDefinition | Agent) and not callable(handler):
                raise WorkflowDefinitionError(
                    f"{here}: a handler is a workflow, an Agent, a prompt template or an async"
                    f" function (ctx, request); got {handler!r}"
                )
        if self.model is not None:
            check_responder(self.model, where)

    async def route(self, ctx: Context, request: Any) -> Routed:
        """Classify ``request`` and run the handler of its route (or of the fallback)."""
        decided = await self.classifier.classify(ctx, request)
        chosen, fell_back = decided.route, False
        if chosen is None or chosen not in self.routes:
            chosen, fell_back = self.fallback, True
        reason = decided.reason if not fell_back else f"fallback: {decided.reason}"
        self._record(ctx, chosen, decided, fell_back, reason, None, "running")
        try:
            output = await self._dispatch(ctx, chosen, request)
        except OperationFailed as exc:
            if not self.fallback_on_error or chosen == self.fallback:
                self._record(ctx, chosen, decided, fell_back, reason, str(exc), "failed")
                raise
            error = f"{exc.error_type}: {exc.message}"
            reason = f"fallback: route {chosen!r} failed ({error})"
            self._record(ctx, self.fallback, decided, True, reason, error, "running")
            output = await self._dispatch(ctx, self.fallback, request)
            chosen, fell_back = self.fallback, True
            routed = Routed(chosen, output, decided, fell_back, reason, error)
        else:
            routed = Routed(chosen, output, decided, fell_back, reason)
        self._record(ctx, chosen, decided, fell_back, reason, routed.error, "completed")
        return routed

    async def _dispatch(self, ctx: Context, route: str, request: Any) -> Any:
        """Run the route's handler in a child context: its outcome is checkpointed once, and
        the history names the route."""
        return await ctx.run_in_child_context(
            self._handle, route, request, name=f"{self.name}:{route}"
        )

    async def _handle(self, ctx: Context, route: str, request: Any) -> Any:
        handler = self.routes[route]
        label = f"{self.name}:{route}"
        if isinstance(handler, WorkflowDefinition):
            return await ctx.invoke(handler, request, name=label)
        if isinstance(handler, Agent):
            return (await handler.run(ctx, text_of(request), track_state=False)).answer
        if isinstance(handler, str):
            assert self.model is not None  # checked at definition
            asked = render(handler, {"request": request})
            return (await call_model(ctx, self.model, asked, name=label, budget=self.budget)).text
        return await handler(ctx, request)

    def _record(
        self,
        ctx: Context,
        route: str,
        decided: Classification,
        fell_back: bool,
        reason: str,
        error: str | None,
        status: str,
    ) -> None:
        record(
            ctx,
            self.name,
            {
                "pattern": "router",
                "status": status,
                "route": route,
                "fell_back": fell_back,
                "reason": reason,
                "error": error,
                "classification": jsonable(decided),
            },
        )
