"""Research report: from a topic to a published report, with a human in the loop.

1. ingest the local knowledge base (``knowledge/``: field reports on a bike share);
2. a search agent looks through it with a search tool;
3. a summary agent per source, fanned out (scatter-gather);
4. a writer drafts the report; an evaluator scores it and the writer refines (reflect-refine);
5. an editor approves it from the link in their notification (``cadenza serve`` answers it)
   or by callback — or asks for changes, which go to a revise agent;
6. the approved report is published as an artifact (and a Markdown file).

    cadenza examples run research-report
    cadenza callback succeed <token> --payload '{"decision": "approve"}'
    cadenza callback succeed <token> --payload '{"decision": "request_changes", "comment": "…"}'
"""

from __future__ import annotations

import importlib.util
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, Field

from cadenza import Context, StepContext, workflow
from cadenza.agents import Agent, call_model
from cadenza.models import ModelRequest
from cadenza.patterns import (
    ApprovalGate,
    Branch,
    Document,
    Embedder,
    EvaluatorLoop,
    HashingEmbedder,
    KnowledgeBase,
    LinkFileNotifier,
    MiniLmEmbedder,
    Scatter,
    SqliteVectorStore,
)
from cadenza.tools import tool

from ._data import home, read_reports


class ReportRequest(BaseModel):
    topic: str = "How is the Harbour City bike share doing, and what should it fix next?"
    model: str = "local:smollm2"
    sources: int = Field(default=3, ge=1, le=10)
    approval_hours: float = Field(default=24, gt=0)
    editor: str = "editor@harbour-city.example"  # who gets the approval link


def _embedder() -> Embedder:
    # MiniLM (the 'embeddings' extra) finds meaning; without it, word hashing still works.
    if importlib.util.find_spec("sentence_transformers") is not None:
        return MiniLmEmbedder()
    return HashingEmbedder(256)


def knowledge_base(model: str) -> KnowledgeBase:
    return KnowledgeBase(
        "harbour-city",
        model=model,
        store=SqliteVectorStore(home() / "knowledge.db"),
        embedder=_embedder(),
        chunk_size=600,
        top_k=4,
    )


def search_tool(kb: KnowledgeBase) -> Any:
    @tool
    async def search_reports(query: str) -> list[dict[str, Any]]:
        """Search the field reports; returns the most relevant passages with their source.

        Args:
            query: What to look for, in a few words.
        """
        assert kb.store is not None and kb.embedder is not None
        [vector] = await kb.embedder.embed([query])
        hits = await kb.store.search(vector, kb.top_k)
        return [{"source": h.source, "text": h.text, "score": round(h.score, 3)} for h in hits]

    return search_reports


async def publish(step: StepContext, topic: str, report: str) -> dict[str, str]:
    """Publish the approved report: an artifact by content hash, and a Markdown file."""
    text = f"# {topic}\n\n{report.strip()}\n"
    assert step.artifacts is not None
    key = await step.artifacts.put(text.encode(), content_type="text/markdown")
    path = home() / "reports" / f"{step.run_id}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return {"artifact": key, "path": str(path)}


@workflow(name="research-report", version="1")
async def research_report(ctx: Context, request: ReportRequest) -> dict[str, Any]:
    model, topic = request.model, request.topic
    ctx.state.goal = f"a report on: {topic}"
    kb = knowledge_base(model)

    # 1. The write side: ingest (idempotent by content hash; unchanged files are skipped).
    reports: dict[str, str] = await ctx.step(read_reports, name="read-reports")
    docs = [Document(text, id=name, source=f"{name}.md") for name, text in reports.items()]
    await kb.ingest(ctx, docs)

    # 2. The search agent decides what to look for.
    searcher = Agent(
        "searcher",
        "You research a topic in the field reports. Search for"
        " the facts the topic needs, then list the most important findings.",
        model=model,
        tools=[search_tool(kb)],
        max_turns=3,
        max_failures=2,
    )
    findings = await searcher.run(
        ctx, f"Find the facts for a report on: {topic}", track_state=False
    )
    sources = sorted({s["source"] for s in await _sources(ctx, kb, topic, findings.answer)})
    sources = sources[: request.sources]

    # 3. One summary agent per source, in parallel.
    summaries = await Scatter(
        "summaries",
        [
            Branch(
                name,
                _brief(model, 160),
                prompt=f"Summarise, for a report on '{{task}}', the key facts"
                f" and figures of this field report:\n\n{reports[name.removesuffix('.md')][:1500]}",
            )
            for name in sources
        ],
        max_concurrency=2,
    ).run(ctx, topic)
    notes = "\n\n".join(f"From {b.name}:\n{b.output}" for b in summaries.succeeded)

    # 4. Write, evaluate, refine.
    writing = EvaluatorLoop(
        "report",
        generator=_brief(model, 320),
        evaluator=model,
        criteria={
            "coverage": "covers the topic with the facts from the notes",
            "accuracy": "states only what the notes support",
            "clarity": "clear, short paragraphs for a busy reader",
        },
        threshold=0.7,
        max_rounds=2,
    )
    draft = await writing.run(
        ctx,
        f"Write a short report (under 250 words) on: {topic}\n\n"
        f"Use these notes:\n{notes}\n\nSearch findings: {findings.answer}",
    )

    # 5. A human approves; requested changes go to the revise agent.
    async def revise(c: Context, current: Any, comment: str) -> str:
        reply = await call_model(
            c,
            model,
            ModelRequest.of(
                f"Revise this report. Editor's comment: {comment}\n\nReport:\n{current}",
                max_tokens=320,
            ),
            name="revise",
        )
        return reply.text.strip() or str(current)

    gate = ApprovalGate(
        # The editor's notification (in notifications.log) carries a link of their own,
        # answered by `cadenza serve`; `cadenza callback succeed` works as well.
        notify=LinkFileNotifier(reviewers=[request.editor]),
        timeout=timedelta(hours=request.approval_hours),
        max_revisions=2,
        revise=revise,
        name="editor",
    )
    outcome = await gate.request(ctx, f"Report: {topic}", draft.output)
    if not outcome.approved:
        ctx.state.status = "COMPLETED"
        return {
            "published": False,
            "decision": str(outcome.decision),
            "comments": [c.comment for c in outcome.comments],
        }

    # 6. Publish.
    published = await ctx.step(publish, topic, str(outcome.draft))
    ctx.state.status = "COMPLETED"
    return {
        "published": True,
        **published,
        "score": round(draft.score, 2),
        "rounds": len(draft.rounds),
        "revisions": outcome.rounds - 1,
        "sources": sources,
    }


def _brief(model: str, max_tokens: int) -> Any:
    """A responder that keeps replies short: a small local model rambles otherwise."""

    async def respond(ctx: Context, prompt: str) -> str:
        reply = await call_model(ctx, model, ModelRequest.of(prompt, max_tokens=max_tokens))
        return reply.text.strip()

    return respond


async def _sources(
    ctx: Context, kb: KnowledgeBase, topic: str, findings: str
) -> list[dict[str, str]]:
    """The reports the findings draw on: a durable search over the topic and the findings."""
    passages = await kb.search(ctx, f"{topic} {findings}"[:500], k=8)
    return [{"source": p.source} for p in passages]
