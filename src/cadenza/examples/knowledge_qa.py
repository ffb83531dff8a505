"""knowledge-qa: CQRS over the bike share's field reports.

The write side, ``knowledge-ingest``, splits each report in ``knowledge/`` into
chunks, embeds them and stores them in a SQLite vector store under ``$CADENZA_HOME``, one
durable step per report, idempotent by content hash (a second ingest changes nothing). The
read side, ``knowledge-ask``, retrieves the passages nearest to a question and has the model
answer from them, citing them as [n]; the citations come back as the reports they name.
``knowledge-qa`` runs the two in order, each as a child run.

    cadenza examples run knowledge-qa
    cadenza examples run knowledge-qa --input '{"question": "Why did Q3 ridership fall?"}'
    cadenza run cadenza.examples.knowledge_qa:ask_reports --input '{"question": "..."}'
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from cadenza import Context, workflow
from cadenza.patterns import (
    Document,
    Embedder,
    HashingEmbedder,
    KnowledgeBase,
    MiniLmEmbedder,
    SqliteVectorStore,
)

from ._data import home, read_reports

EmbedderName = Literal["minilm", "hashing"]  # hashing: instant and meaning-blind, for tests


class IngestRequest(BaseModel):
    embedder: EmbedderName = "minilm"


class Question(BaseModel):
    question: str = "How did the protected lane on the harbour road affect collisions?"
    model: str = "local:smollm2"
    embedder: EmbedderName = "minilm"
    top_k: int = Field(3, ge=1, le=10)


@functools.cache
def vector_store(path: Path) -> SqliteVectorStore:
    return SqliteVectorStore(path)


def knowledge(embedder: EmbedderName, model: str | None = None, top_k: int = 3) -> KnowledgeBase:
    """The reports' knowledge base. Each embedder has its own store: their vectors differ."""
    embedding: Embedder = MiniLmEmbedder() if embedder == "minilm" else HashingEmbedder()
    return KnowledgeBase(
        "harbour-city",
        model=model,
        store=vector_store(home().resolve() / f"harbour-city-{embedder}.db"),
        embedder=embedding,
        chunk_size=500,
        chunk_overlap=80,
        top_k=top_k,
    )


@workflow(name="knowledge-ingest", version="1")
async def ingest_reports(ctx: Context, request: IngestRequest) -> dict[str, Any]:
    """The write side: store every report's chunks and vectors."""
    reports: dict[str, str] = await ctx.step(read_reports, name="read-reports")
    documents = [
        Document(text, id=name, source=f"knowledge/{name}.md") for name, text in reports.items()
    ]
    done = await knowledge(request.embedder).ingest(ctx, documents)
    return {
        "documents": {d.document_id: d.status for d in done},
        "chunks": sum(d.chunks for d in done),
    }


@workflow(name="knowledge-ask", version="1")
async def ask_reports(ctx: Context, question: Question) -> dict[str, Any]:
    """The read side: retrieve, then answer with citations."""
    ctx.state.goal = question.question
    kb = knowledge(question.embedder, question.model, question.top_k)
    answer = await kb.answer(ctx, question.question)
    return {
        "question": question.question,
        "answer": answer.text.strip(),
        "citations": [{"number": c.number, "report": c.document_id} for c in answer.citations],
        "passages": [
            {"number": p.number, "report": p.document_id, "score": round(p.score, 3)}
            for p in answer.passages
        ],
    }


@workflow(name="knowledge-qa", version="1")
async def knowledge_qa(ctx: Context, question: Question) -> dict[str, Any]:
    """Ingest, then ask: the two sides as child runs, in order."""
    ingested = await ctx.invoke(ingest_reports, {"embedder": question.embedder}, name="ingest")
    answered: dict[str, Any] = await ctx.invoke(ask_reports, question.model_dump(), name="ask")
    return {**answered, "ingested": ingested}
