"""report-digest: "Summarize insights across these 10 reports", as scatter-gather.

One branch per field report in ``knowledge/`` extracts its insights as structured
output (themes from a fixed list, and up to three findings), at most four at a time. The
gather counts each theme across the reports, and one more model call lists where the
reports contradict each other (dock availability, say: Q2's survey against Q3 and Q4). A
branch that fails is reported with its error; the digest goes on from the others, unless
more than half of them failed.

    cadenza examples run report-digest
    cadenza examples run report-digest --input '{"max_concurrency": 2}'
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Mapping
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, Field

from cadenza import CompletionConfig, Context, StructuredOutputError, workflow
from cadenza.agents import generate
from cadenza.models import ModelRequest
from cadenza.patterns import Branch, Scatter

from ._data import read_reports

Theme = Literal[
    "ridership", "e-bikes", "dock availability", "safety", "finances", "equity",
    "maintenance", "environment", "expansion",
]  # fmt: skip
# Bounded both ways: a small model neither rambles on nor answers in single words.
Sentence = Annotated[str, Field(min_length=25, max_length=200)]


class ReportInsights(BaseModel):
    themes: list[Theme] = Field(min_length=1, max_length=3)
    findings: list[Sentence] = Field(min_length=1, max_length=3)


def contradictions_schema(reports: list[str]) -> dict[str, Any]:
    """Each contradiction names a theme and at least two of the reports by their names."""
    contradiction = {
        "type": "object",
        "properties": {
            "topic": {"enum": list(get_args(Theme))},
            "reports": {"type": "array", "items": {"enum": reports}, "minItems": 2, "maxItems": 4},
            "detail": {"type": "string", "minLength": 25, "maxLength": 300},
        },
        "required": ["topic", "reports", "detail"],
    }
    return {
        "type": "object",
        "properties": {"contradictions": {"type": "array", "items": contradiction, "maxItems": 4}},
        "required": ["contradictions"],
    }


class DigestRequest(BaseModel):
    task: str = "Summarize insights across these 10 reports"
    model: str = "local:smollm2"
    max_concurrency: int = Field(4, ge=1, le=10)


def extraction(report: str, values: Mapping[str, Any]) -> ModelRequest:
    """One branch's request: its own report, then what to extract from it."""
    return ModelRequest.of(
        f"{report}\n\nFrom the field report above, give its main themes and up to three"
        " findings, each one short sentence with its figures.",
        system="You extract insights from field reports as JSON.",
    )


@workflow(name="report-digest", version="1")
async def report_digest(ctx: Context, request: DigestRequest) -> dict[str, Any]:
    ctx.state.goal = request.task
    reports: dict[str, str] = await ctx.step(read_reports, name="read-reports")
    scatter = Scatter(
        "reports",
        branches=[
            Branch(name, request.model, functools.partial(extraction, text), None, ReportInsights)
            for name, text in reports.items()
        ],
        max_concurrency=request.max_concurrency,
        completion=CompletionConfig(tolerated_failure_percentage=50),
    )
    scattered = await scatter.run(ctx, request.task)
    insights: dict[str, ReportInsights] = dict(scattered.output)
    counted = Counter(theme for found in insights.values() for theme in set(found.themes))
    themes = [
        {
            "theme": theme,
            "reports": count,
            "sources": [name for name, found in insights.items() if theme in found.themes],
        }
        for theme, count in counted.most_common()
    ]
    listing = "\n\n".join(
        f"[{name}]\n" + "\n".join(f"- {f}" for f in found.findings)
        for name, found in insights.items()
    )
    unresolved: str | None = None
    try:
        disputed: dict[str, Any] = await generate(
            ctx,
            request.model,
            f"Findings of {len(insights)} field reports about one bike share:\n\n{listing}\n\n"
            "Where do these reports contradict each other? For each contradiction give the"
            " topic, the reports (by their [name]) and what each one claims.",
            contradictions_schema(list(insights)),
            name="contradictions",
        )
        contradictions = disputed["contradictions"]
    except StructuredOutputError as exc:
        # The themes and findings stand on their own; a model that cannot fill the
        # contradictions schema leaves that part empty, and the digest says why.
        contradictions, unresolved = [], str(exc)
    return {
        "reports": len(reports),
        "succeeded": len(scattered.succeeded),
        "failed": [
            {"report": b.name, "error": f"{b.error_type}: {b.error}"} for b in scattered.failed
        ],
        "themes": themes,
        "contradictions": contradictions,
        **({"contradictions_unresolved": unresolved} if unresolved else {}),
        "findings": {name: found.findings for name, found in insights.items()},
    }
