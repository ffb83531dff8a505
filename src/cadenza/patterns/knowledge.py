"""CQRS knowledge: a write side that ingests documents, a read side that answers from them.

::

    kb = KnowledgeBase("handbook", model="local:smollm2")   # MiniLM + $CADENZA_HOME/knowledge.db

    @workflow
    async def ingest(ctx: Context, docs: list[str]) -> int:        # the write side
        return len(await kb.ingest(ctx, docs))

    @workflow
    async def ask(ctx: Context, question: str) -> str:              # the read side
        return (await kb.answer(ctx, question)).text

Ingesting a document splits it into overlapping chunks, embeds them and stores them, as one
durable step per document, idempotent by content hash: ingesting the same text again (or
replaying the step) changes nothing. Answering retrieves the ``top_k`` chunks by cosine
similarity (a durable step, so replay does not search again), then asks the model to
answer from those numbered passages only, citing them as ``[1]``; the citations in the
answer are resolved to their documents.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from cadenza.agents import Budget, call_model
from cadenza.context import Context
from cadenza.errors import InvalidInput, WorkflowDefinitionError
from cadenza.models import Message, Model, ModelRequest
from cadenza.patterns._embeddings import Embedder, MiniLmEmbedder
from cadenza.patterns._prompting import check_fraction, check_responder, jsonable, record
from cadenza.patterns._vectors import (
    SqliteVectorStore,
    StoredChunk,
    StoredDocument,
    VectorHit,
    VectorStore,
)

__all__ = ["Answer", "Citation", "Document", "Ingested", "KnowledgeBase", "Passage", "chunk_text"]

_ANSWER_SYSTEM = (
    "Answer the question from the numbered passages only. Cite every passage you use as"
    " [n]. If the passages do not contain the answer, say that you do not know."
)
_CITATION = re.compile(r"\[(\d+)\]")


@runtime_checkable
class Retriever(Protocol):
    """A read side that searches by text: ``retrieve(query, k)``, best first."""

    async def retrieve(self, query: str, k: int) -> list[VectorHit]: ...


@dataclass(frozen=True)
class Document:
    """A text to ingest. Without an ``id`` the document is named by its content hash."""

    text: str
    id: str | None = None
    source: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Ingested:
    document_id: str
    content_hash: str
    chunks: int
    status: str  # added, replaced (the text changed) or unchanged


@dataclass(frozen=True)
class Passage:
    number: int  # as the model saw it: [number]
    chunk_id: str
    document_id: str
    source: str
    text: str
    score: float


@dataclass(frozen=True)
class Citation:
    number: int
    document_id: str
    chunk_id: str
    source: str


@dataclass(frozen=True)
class Answer:
    text: str
    citations: tuple[Citation, ...]
    passages: tuple[Passage, ...]


def chunk_text(text: str, size: int, overlap: int) -> list[str]:
    """Split ``text`` into chunks of about ``size`` characters, each starting ``overlap``
    characters before the previous one ended, breaking between words."""
    words = text.split()
    chunks: list[str] = []
    start = 0
    while start < len(words):
        end, length = start, 0
        while end < len(words) and (end == start or length + 1 + len(words[end]) <= size):
            length += len(words[end]) + (1 if end > start else 0)
            end += 1
        chunks.append(" ".join(words[start:end]))
        if end >= len(words):
            break
        back, carried = end, 0
        while back > start + 1 and carried + len(words[back - 1]) + 1 <= overlap:
            carried += len(words[back - 1]) + 1
            back -= 1
        start = back
    return chunks


@dataclass(frozen=True)
class KnowledgeBase:
    """Documents in a :class:`VectorStore`, embedded by an :class:`Embedder`; ``model``
    answers questions. Defaults: MiniLM and ``$CADENZA_HOME/knowledge.db``."""

    name: str = "knowledge"
    model: str | Model | None = None
    store: VectorStore | None = None
    embedder: Embedder | None = None
    chunk_size: int = 800
    chunk_overlap: int = 120
    top_k: int = 4
    min_score: float = 0.0
    instructions: str = _ANSWER_SYSTEM
    budget: Budget | None = None
    #: A read side kept elsewhere (a Bedrock Knowledge Base): it takes the question as text
    #: and replaces the embed-and-search of the local store; its owner ingests.
    retriever: Retriever | None = None

    def __post_init__(self) -> None:
        where = f"KnowledgeBase {self.name!r}"
        if not self.name:
            raise WorkflowDefinitionError("a KnowledgeBase needs a name")
        if self.model is not None:
            check_responder(self.model, where)
        if self.chunk_size < 50:
            raise WorkflowDefinitionError(f"{where}: chunk_size must be at least 50 characters")
        if not 0 <= self.chunk_overlap < self.chunk_size // 2:
            raise WorkflowDefinitionError(
                f"{where}: chunk_overlap must be at least 0 and under half the chunk_size"
            )
        if self.top_k < 1:
            raise WorkflowDefinitionError(f"{where}: top_k must be at least 1")
        check_fraction(self.min_score, f"{where}: min_score")
        if self.retriever is not None and not isinstance(self.retriever, Retriever):
            raise WorkflowDefinitionError(f"{where}: {self.retriever!r} has no retrieve(query, k)")
        if self.store is None:
            object.__setattr__(self, "store", SqliteVectorStore())
        elif not isinstance(self.store, VectorStore):
            raise WorkflowDefinitionError(f"{where}: {self.store!r} is not a VectorStore")
        if self.embedder is None:
            object.__setattr__(self, "embedder", MiniLmEmbedder())
        elif not isinstance(self.embedder, Embedder):
            raise WorkflowDefinitionError(f"{where}: {self.embedder!r} is not an Embedder")

    # --- the write side ---------------------------------------------------------------

    def content_hash(self, text: str) -> str:
        """Names a document's content together with how it is chunked and embedded: change
        either and the document is ingested again."""
        embedder = self.embedder
        assert embedder is not None
        recipe = f"{embedder.name}|{self.chunk_size}|{self.chunk_overlap}|"
        return hashlib.sha256((recipe + text).encode()).hexdigest()

    async def ingest(
        self, ctx: Context, documents: Sequence[Document | str]
    ) -> tuple[Ingested, ...]:
        """Ingest each document as its own durable step; unchanged documents are skipped."""
        if self.retriever is not None:
            raise WorkflowDefinitionError(
                f"KnowledgeBase {self.name!r} reads from {self.retriever!r}, which is filled by"
                " its own ingestion (a Bedrock Knowledge Base syncs its data source); ingest"
                " there, or use a KnowledgeBase without retriever= for the local store"
            )
        report = []
        for item in documents:
            document = Document(item) if isinstance(item, str) else item
            if not document.text.strip():
                raise InvalidInput(
                    f"{self.name}: document {document.id or '(unnamed)'} is empty; nothing to"
                    " ingest"
                )
            digest = self.content_hash(document.text)
            document_id = document.id or digest[:16]
            done = await ctx.step(
                functools.partial(self._ingest, document, document_id, digest),
                name=f"{self.name}:ingest:{document_id}",
            )
            report.append(Ingested(**done))
        self._record(ctx, "ingested", [jsonable(r) for r in report])
        return tuple(report)

    async def _ingest(self, document: Document, document_id: str, digest: str) -> dict[str, Any]:
        store, embedder = self.store, self.embedder
        assert store is not None and embedder is not None
        stored = await store.content_hash(document_id)
        pieces = chunk_text(document.text, self.chunk_size, self.chunk_overlap)
        if stored == digest:
            status = "unchanged"
        else:
            vectors = await embedder.embed(pieces)
            chunks = [
                StoredChunk(f"{document_id}:{n}", document_id, n, text, vector)
                for n, (text, vector) in enumerate(zip(pieces, vectors, strict=True))
            ]
            meta = StoredDocument(document_id, digest, document.source, document.metadata)
            await store.put(meta, chunks)
            status = "added" if stored is None else "replaced"
        return {
            "document_id": document_id,
            "content_hash": digest,
            "chunks": len(pieces),
            "status": status,
        }

    # --- the read side ----------------------------------------------------------------

    async def search(
        self, ctx: Context, question: str, *, k: int | None = None
    ) -> tuple[Passage, ...]:
        """The passages most similar to ``question``, best first (a durable step)."""
        store, embedder = self.store, self.embedder
        assert store is not None and embedder is not None
        limit = k or self.top_k

        async def retrieve() -> list[dict[str, Any]]:
            if self.retriever is not None:
                hits = await self.retriever.retrieve(question, limit)
            else:
                [vector] = await embedder.embed([question])
                hits = await store.search(vector, limit)
            return [
                {
                    "number": n,
                    "chunk_id": h.chunk_id,
                    "document_id": h.document_id,
                    "source": h.source,
                    "text": h.text,
                    "score": h.score,
                }
                for n, h in enumerate((h for h in hits if h.score >= self.min_score), 1)
            ]

        found = await ctx.step(retrieve, name=f"{self.name}:search")
        return tuple(Passage(**p) for p in found)

    async def answer(self, ctx: Context, question: str, *, k: int | None = None) -> Answer:
        """Retrieve passages, then have the model answer from them with citations. With no
        passage found, no model is called and the answer says so."""
        if self.model is None:
            raise WorkflowDefinitionError(
                f"KnowledgeBase {self.name!r} has no model to answer with; give it model="
            )
        passages = await self.search(ctx, question, k=k)
        if not passages:
            result = Answer("I found nothing about that in the knowledge base.", (), ())
            self._record(ctx, "answered", {"question": question, "passages": 0})
            return result
        context = "\n\n".join(
            f"[{p.number}] ({p.source or p.document_id})\n{p.text}" for p in passages
        )
        request = ModelRequest(
            messages=(
                Message.system(self.instructions),
                Message.user(f"Passages:\n{context}\n\nQuestion: {question}"),
            )
        )
        response = await call_model(
            ctx, self.model, request, name=f"{self.name}:answer", budget=self.budget
        )
        by_number = {p.number: p for p in passages}
        cited = dict.fromkeys(
            int(n) for n in _CITATION.findall(response.text) if int(n) in by_number
        )
        citations = tuple(
            Citation(n, by_number[n].document_id, by_number[n].chunk_id, by_number[n].source)
            for n in cited
        )
        self._record(
            ctx,
            "answered",
            {
                "question": question,
                "passages": len(passages),
                "citations": [c.document_id for c in citations],
            },
        )
        return Answer(response.text, citations, passages)

    def _record(self, ctx: Context, what: str, value: Any) -> None:
        document = ctx.state.to_dict()
        entry = document.get("context", {}).get("results", {}).get(self.name, {})
        record(ctx, self.name, {**entry, "pattern": "knowledge", what: value})
