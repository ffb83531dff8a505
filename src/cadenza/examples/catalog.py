"""The runnable examples: ``cadenza examples list``, ``cadenza examples run NAME``.

Scenarios that reason take a ``model`` in their input (default ``local:smollm2``, the
offline model); ``cadenza examples run NAME --model bedrock:…`` switches provider.

An example keeps to itself: the rules it needs are named ``example:NAME:…``, match only
the events its own workflows publish, and exist only while ``cadenza examples run NAME``
runs (they are removed when it ends, whether the run succeeded, failed or was
interrupted).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cadenza import Rule

RULE_PREFIX = "example:"


@dataclass(frozen=True)
class Example:
    name: str
    description: str
    workflow: str  # MODULE:WORKFLOW
    input: dict[str, Any] = field(default_factory=dict)
    uses_model: bool = False
    rules: Callable[[], list[Rule]] = list  # installed while the example runs

    @property
    def rule_prefix(self) -> str:
        """The prefix of this example's rule names, and of their runs' idempotency keys."""
        return f"{RULE_PREFIX}{self.name}:"


def _support_rules() -> list[Rule]:
    from cadenza.examples.support_tickets import support

    return support.rules()


def _recovery_rules() -> list[Rule]:
    from cadenza.examples.flight_agent import recovery_rules

    return recovery_rules()


EXAMPLES: list[Example] = [
    Example(
        "research-report",
        "Search agent over the knowledge base → summaries fan-out → writer ⇄ evaluator →"
        " editor's approval (changes go to a revise agent) → report published as an artifact.",
        "cadenza.examples.research_report:research_report",
        {
            "topic": "How is the Harbour City bike share doing, and what should it fix next?",
            "sources": 2,
        },
        uses_model=True,
    ),
    Example(
        "travel-booking",
        "Supervisor delegates to flights and hotels agents (a fixed plan from the roles when"
        " the planner's is unusable); a full hotel cancels the flight (saga compensation).",
        "cadenza.examples.travel_booking:travel_booking",
        {"traveller": "Ada Lovelace", "origin": "Lisbon", "city": "Oslo"},
        uses_model=True,
    ),
    Example(
        "trip-booking",
        "Saga: reserve a flight and a hotel, ask for approval, compensate on rejection.",
        "cadenza.examples.trip_booking:book_trip",
        {"traveller": "Ada", "city": "Lisbon", "nights": 3},
    ),
    Example(
        "flight-agent",
        "The reference agent loop: search, a sold-out booking, re-plan, book; its"
        " AgentError events go to recovery.",
        "cadenza.examples.flight_agent:flight_agent",
        {"passenger": "Ada Lovelace", "origin": "Lisbon", "destination": "Oslo"},
        uses_model=True,
        rules=_recovery_rules,
    ),
    Example(
        "support-tickets",
        "Choreography: support → ticket_created → technical → ticket_resolved →"
        " notification, no coordinator, one correlation id.",
        "cadenza.examples.support_tickets:support_agent",
        {"customer": "c-1042"},
        uses_model=True,
        rules=_support_rules,
    ),
    Example(
        "contract-router",
        "Routing: a model labels the request (with a confidence) for the legal, technical or"
        " scheduling desk; a low confidence or no label goes to the general desk.",
        "cadenza.examples.contract_router:contract_router",
        {"request": "Can you help me review my contract terms?"},
        uses_model=True,
    ),
    Example(
        "policy-summary",
        "Evaluator loop: summarise the rental and insurance policy, score it on coverage, tone"
        " and correctness, refine with the critique until it passes or stops improving.",
        "cadenza.examples.policy_summary:policy_summary",
        {"threshold": 0.8, "max_rounds": 3},
        uses_model=True,
    ),
    Example(
        "report-digest",
        "Scatter-gather: extract insights from the 10 field reports, 4 at a time; count themes"
        " across them and list their contradictions; failed branches are reported.",
        "cadenza.examples.report_digest:report_digest",
        {"task": "Summarize insights across these 10 reports"},
        uses_model=True,
    ),
    Example(
        "knowledge-qa",
        "CQRS: ingest the field reports into a SQLite vector store (MiniLM), then answer a"
        " question from them with citations.",
        "cadenza.examples.knowledge_qa:knowledge_qa",
        {"question": "How did the protected lane on the harbour road affect collisions?"},
        uses_model=True,
    ),
]


def find(name: str) -> Example | None:
    return next((e for e in EXAMPLES if e.name == name), None)
