"""Vector storage for knowledge retrieval: a small port and a SQLite adapter.

:class:`SqliteVectorStore` keeps documents and their chunks in one SQLite file, each chunk's
vector as float32 bytes in a BLOB, and searches by brute-force cosine similarity: with
numpy when it is installed, in pure Python otherwise. Vectors are normalised when stored,
so similarity is a dot product. That is fast enough for tens of thousands of chunks; a
bigger corpus wants an adapter for a real vector index behind the same
:class:`VectorStore` port.
"""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
import threading
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from cadenza.errors import ConfigurationError

__all__ = ["SqliteVectorStore", "StoredChunk", "StoredDocument", "VectorHit", "VectorStore"]


def normalise(vector: Sequence[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm else list(vector)


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    if len(a) != len(b):
        raise ConfigurationError(f"vectors of {len(a)} and {len(b)} dimensions cannot be compared")
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norms = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norms if norms else 0.0


def pack(vector: Sequence[float]) -> bytes:
    return array("f", vector).tobytes()


def unpack(blob: bytes) -> list[float]:
    values = array("f")
    values.frombytes(blob)
    return values.tolist()


@dataclass(frozen=True)
class StoredDocument:
    id: str
    content_hash: str
    source: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StoredChunk:
    id: str
    document_id: str
    position: int
    text: str
    vector: Sequence[float]


@dataclass(frozen=True)
class VectorHit:
    chunk_id: str
    document_id: str
    position: int
    text: str
    score: float
    source: str = ""


@runtime_checkable
class VectorStore(Protocol):
    """Where chunks and their vectors live (the write side), and how they are found (the
    read side)."""

    async def content_hash(self, document_id: str) -> str | None:
        """The hash of the stored version of a document; None when it is not stored."""
        ...

    async def put(self, document: StoredDocument, chunks: Sequence[StoredChunk]) -> None:
        """Store a document's chunks, replacing any it had, in one transaction."""
        ...

    async def search(self, vector: Sequence[float], k: int) -> list[VectorHit]:
        """The ``k`` chunks most similar to ``vector``, best first."""
        ...

    async def count(self) -> int:
        """How many chunks are stored."""
        ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    id TEXT PRIMARY KEY,
    content_hash TEXT NOT NULL,
    source TEXT NOT NULL,
    metadata TEXT NOT NULL,
    dimensions INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    id TEXT PRIMARY KEY,
    document_id TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    text TEXT NOT NULL,
    vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_by_document ON chunks(document_id);
"""


class SqliteVectorStore:
    """Chunks and float32 vectors in a SQLite file (``":memory:"`` for a throwaway one).

    The default file is ``$CADENZA_HOME/knowledge.db``, opened on first use, in WAL mode
    with ``synchronous=FULL``: a stored document survives a crash and a power loss.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        if path is None:
            from cadenza.config import home

            path = home() / "knowledge.db"
        self.path = str(path)
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._matrix: tuple[list[tuple[str, str, int, str, str]], Any] | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            db.executescript(_SCHEMA)
            self._db = db
        return self._db

    async def _run(self, fn: Any, *args: Any) -> Any:
        def locked() -> Any:
            with self._lock:
                return fn(self._connect(), *args)

        return await asyncio.to_thread(locked)

    async def content_hash(self, document_id: str) -> str | None:
        def query(db: sqlite3.Connection) -> str | None:
            row = db.execute(
                "SELECT content_hash FROM documents WHERE id = ?", (document_id,)
            ).fetchone()
            return None if row is None else str(row[0])

        found: str | None = await self._run(query)
        return found

    async def put(self, document: StoredDocument, chunks: Sequence[StoredChunk]) -> None:
        dimensions = {len(c.vector) for c in chunks}
        if len(dimensions) > 1:
            raise ConfigurationError(f"document {document.id!r} has vectors of mixed sizes")

        def write(db: sqlite3.Connection) -> None:
            size = dimensions.pop() if dimensions else 0
            stored = db.execute("SELECT dimensions FROM documents WHERE dimensions > 0").fetchone()
            if stored is not None and size and stored[0] != size:
                raise ConfigurationError(
                    f"{self.path} holds {stored[0]}-dimension vectors and these have {size}:"
                    " use the embedder the store was filled with, or another store"
                )
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("DELETE FROM chunks WHERE document_id = ?", (document.id,))
                db.execute(
                    "INSERT OR REPLACE INTO documents VALUES (?, ?, ?, ?, ?)",
                    (
                        document.id,
                        document.content_hash,
                        document.source,
                        json.dumps(dict(document.metadata), default=str),
                        size,
                    ),
                )
                db.executemany(
                    "INSERT INTO chunks VALUES (?, ?, ?, ?, ?)",
                    [
                        (c.id, c.document_id, c.position, c.text, pack(normalise(c.vector)))
                        for c in chunks
                    ],
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self._matrix = None

        await self._run(write)

    def _load(self, db: sqlite3.Connection) -> tuple[list[tuple[str, str, int, str, str]], Any]:
        if self._matrix is None:
            rows = db.execute(
                "SELECT c.id, c.document_id, c.position, c.text, d.source, c.vector"
                " FROM chunks c JOIN documents d ON d.id = c.document_id ORDER BY c.rowid"
            ).fetchall()
            meta = [(r[0], r[1], int(r[2]), r[3], r[4]) for r in rows]
            try:
                import numpy as np

                vectors: Any = (
                    np.vstack([np.frombuffer(r[5], dtype=np.float32) for r in rows])
                    if rows
                    else np.zeros((0, 0), dtype=np.float32)
                )
            except ImportError:
                vectors = [unpack(r[5]) for r in rows]
            self._matrix = (meta, vectors)
        return self._matrix

    async def search(self, vector: Sequence[float], k: int) -> list[VectorHit]:
        query = normalise(vector)

        def find(db: sqlite3.Connection) -> list[VectorHit]:
            meta, vectors = self._load(db)
            if not meta:
                return []
            if isinstance(vectors, list):
                if len(vectors[0]) != len(query):
                    raise _mismatch(len(vectors[0]), len(query))
                scores = [sum(a * b for a, b in zip(v, query, strict=True)) for v in vectors]
                order = sorted(range(len(scores)), key=lambda i: -scores[i])[:k]
            else:
                import numpy as np

                if vectors.shape[1] != len(query):
                    raise _mismatch(vectors.shape[1], len(query))
                scores = (vectors @ np.asarray(query, dtype=np.float32)).tolist()
                order = sorted(range(len(scores)), key=lambda i: -scores[i])[:k]
            return [
                VectorHit(
                    meta[i][0], meta[i][1], meta[i][2], meta[i][3], round(scores[i], 6), meta[i][4]
                )
                for i in order
            ]

        hits: list[VectorHit] = await self._run(find)
        return hits

    async def count(self) -> int:
        def query(db: sqlite3.Connection) -> int:
            return int(db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0])

        total: int = await self._run(query)
        return total

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
                self._matrix = None

    def __repr__(self) -> str:
        return f"SqliteVectorStore({self.path!r})"


def _mismatch(stored: int, asked: int) -> ConfigurationError:
    return ConfigurationError(
        f"the store holds {stored}-dimension vectors and the question has {asked}: embed"
        " questions with the embedder the store was filled with"
    )
