"""The agentic patterns as building blocks to use inside a workflow.

Each is a frozen, validated definition (a mistake fails when it is defined, not halfway
through a run) with an async method that takes the workflow's :class:`~cadenza.Context`.
Every model call goes through :mod:`cadenza.agents`, so it is a durable step that replay
never repeats, and each pattern keeps what it did in ``ctx.state.context["results"]``.

- :class:`PromptChain` — prompt chaining as a saga: gated steps, retry with feedback,
  go back and re-plan, or refine.
- :class:`Router` — routing / dynamic dispatch with an LLM, rule or semantic classifier.
- :class:`Scatter` — parallelization / scatter-gather: merge, vote, pick the best, synthesise.
- :class:`Supervisor` — an orchestrator that plans, delegates to least-privilege roles in
  parallel, re-plans on failure and synthesises.
- :class:`EvaluatorLoop` — evaluator reflect-refine against a rubric.
- :class:`KnowledgeBase` — CQRS knowledge: ingest on the write side, retrieve and answer
  with citations on the read side.
- :class:`Saga` — steps with compensations, undone in reverse order on failure.
- :class:`ApprovalGate` — a human approval with notification, expiry, escalation and
  revision rounds.
- :func:`recover` / :class:`RecoveryPolicy` — the recovery ladder (retry, fallback,
  re-plan, compensate, escalate), and the ``cadenza.recovery`` workflow for AgentError events.
- :class:`Choreography` — workflows reacting to events, one correlation id per conversation.
"""

from cadenza.patterns._classify import ErrorClass, RecoveryConfig, classify_error
from cadenza.patterns._embeddings import Embedder, HashingEmbedder, MiniLmEmbedder
from cadenza.patterns._link_notifier import LinkFileNotifier, LinkNotifier
from cadenza.patterns._notify import (
    ConsoleNotifier,
    FileNotifier,
    Notification,
    NotificationFailed,
    Notifier,
    NotifierLike,
    WebhookNotifier,
)
from cadenza.patterns._vectors import (
    SqliteVectorStore,
    StoredChunk,
    StoredDocument,
    VectorHit,
    VectorStore,
)
from cadenza.patterns.approval import (
    ApprovalDecision,
    ApprovalGate,
    ApprovalOutcome,
    ReviewAnswer,
    ReviewComment,
)
from cadenza.patterns.chaining import (
    ChainResult,
    ChainStep,
    Gate,
    GoBack,
    PromptChain,
    Refine,
    StepAttempt,
    Verdict,
)
from cadenza.patterns.choreography import (
    CORRELATION_KEY,
    Choreography,
    Reaction,
    TraceEntry,
    correlated_emit,
    correlation_id,
    trace,
)
from cadenza.patterns.evaluator import Criterion, EvaluatorLoop, Refinement, Round, StopReason
from cadenza.patterns.knowledge import (
    Answer,
    Citation,
    Document,
    Ingested,
    KnowledgeBase,
    Passage,
    chunk_text,
)
from cadenza.patterns.recovery import (
    RecoveryOutcome,
    RecoveryPolicy,
    RecoveryProblem,
    handle_agent_error,
    recover,
    recovery_rule,
    recovery_workflow,
)
from cadenza.patterns.routing import (
    Classification,
    Classifier,
    Handler,
    LlmClassifier,
    Routed,
    Router,
    RuleClassifier,
    SemanticClassifier,
)
from cadenza.patterns.saga import Saga, SagaDefinition, SagaOutcome, SagaStatus, SagaStep, run_saga
from cadenza.patterns.scatter import (
    Aggregator,
    Branch,
    BranchOutcome,
    Gathered,
    MajorityVote,
    Merge,
    PickBest,
    Scatter,
    ScatterResult,
    Synthesize,
)
from cadenza.patterns.supervisor import Subtask, SubtaskResult, Supervisor, SupervisorResult

__all__ = [
    "CORRELATION_KEY",
    "Aggregator",
    "Answer",
    "ApprovalDecision",
    "ApprovalGate",
    "ApprovalOutcome",
    "Branch",
    "BranchOutcome",
    "ChainResult",
    "ChainStep",
    "Choreography",
    "Citation",
    "Classification",
    "Classifier",
    "ConsoleNotifier",
    "Criterion",
    "Document",
    "Embedder",
    "ErrorClass",
    "EvaluatorLoop",
    "FileNotifier",
    "Gate",
    "Gathered",
    "GoBack",
    "Handler",
    "HashingEmbedder",
    "Ingested",
    "KnowledgeBase",
    "LinkFileNotifier",
    "LinkNotifier",
    "LlmClassifier",
    "MajorityVote",
    "Merge",
    "MiniLmEmbedder",
    "Notification",
    "NotificationFailed",
    "Notifier",
    "NotifierLike",
    "Passage",
    "PickBest",
    "PromptChain",
    "Reaction",
    "RecoveryConfig",
    "RecoveryOutcome",
    "RecoveryPolicy",
    "RecoveryProblem",
    "Refine",
    "Refinement",
    "ReviewAnswer",
    "ReviewComment",
    "Round",
    "Routed",
    "Router",
    "RuleClassifier",
    "Saga",
    "SagaDefinition",
    "SagaOutcome",
    "SagaStatus",
    "SagaStep",
    "Scatter",
    "ScatterResult",
    "SemanticClassifier",
    "SqliteVectorStore",
    "StepAttempt",
    "StopReason",
    "StoredChunk",
    "StoredDocument",
    "Subtask",
    "SubtaskResult",
    "Supervisor",
    "SupervisorResult",
    "Synthesize",
    "TraceEntry",
    "VectorHit",
    "VectorStore",
    "Verdict",
    "WebhookNotifier",
    "chunk_text",
    "classify_error",
    "correlated_emit",
    "correlation_id",
    "handle_agent_error",
    "recover",
    "recovery_rule",
    "recovery_workflow",
    "run_saga",
    "trace",
]
