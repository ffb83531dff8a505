"""The artifact store port: large payloads kept out of the journal (claim-check).

Every artifact belongs to a scope, the run that wrote it (``runs/<run id>``), and is
addressed inside it by the SHA-256 of its content: ``runs/r-42/sha256-9f86d0…``. Writing the
same bytes twice is harmless, and an artifact written by a step that then crashed is simply
reused when the step runs again. The scope is what keeps runs apart: a run reads its
artifacts through :class:`RunArtifacts`, which refuses any key outside its own scope, so a
key copied out of another run's journal or history (or made up by a model) reads nothing.
A scope may gain a leading tenant segment later (``tenants/<t>/runs/<run id>``); keys are
opaque to everything but the adapters and this module.
"""

from __future__ import annotations

import hashlib
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from urllib.parse import quote

from cadenza.errors import InvalidInput

_ALGORITHM = "sha256-"
_DIGEST = re.compile(r"sha256-[0-9a-f]{64}")
# What a scope segment may hold once escaped: quote() leaves only these unescaped.
_SEGMENT = re.compile(r"[A-Za-z0-9_.~%-]+")


def run_scope(run_id: str) -> str:
    """The scope of ``run_id``'s artifacts; any run id maps to one safe path segment."""
    if not run_id:
        raise InvalidInput("a run id is needed to scope its artifacts")
    segment = quote(run_id, safe="")
    if set(segment) == {"."}:  # "." and ".." must never name a folder
        segment = segment.replace(".", "%2E")
    return f"runs/{segment}"


def content_key(scope: str, data: bytes) -> str:
    """The key of ``data`` in ``scope``: ``<scope>/sha256-<hex>``."""
    return f"{scope}/{_ALGORITHM}{hashlib.sha256(data).hexdigest()}"


def split_key(key: str) -> tuple[list[str], str]:
    """A key's scope segments and its content digest; InvalidInput for anything else."""
    *segments, digest = key.split("/")
    if (
        len(segments) < 2
        or not _DIGEST.fullmatch(digest)
        or not all(_SEGMENT.fullmatch(s) and set(s) != {"."} for s in segments)
    ):
        raise InvalidInput(
            f"{key[:200]!r} is not an artifact key (expected runs/<run id>/sha256-<64 hex>)"
        )
    return segments, digest


def scope_segments(scope: str) -> list[str]:
    """The segments of a scope (``runs/<run id>``); InvalidInput for anything else, so a
    scope handed to ``delete_scope`` can never reach outside the store's own keys."""
    segments = scope.split("/")
    if len(segments) < 2 or not all(_SEGMENT.fullmatch(s) and set(s) != {"."} for s in segments):
        raise InvalidInput(f"{scope[:200]!r} is not an artifact scope (expected runs/<run id>)")
    return segments


def digest_of(key: str) -> str:
    """The SHA-256 (hex) the content under ``key`` must have."""
    return split_key(key)[1].removeprefix(_ALGORITHM)


@dataclass(frozen=True, slots=True)
class ArtifactUsage:
    """How many artifacts a scope holds (or held, once deleted) and their size in bytes."""

    artifacts: int = 0
    bytes: int = 0

    def __add__(self, other: ArtifactUsage) -> ArtifactUsage:
        return ArtifactUsage(self.artifacts + other.artifacts, self.bytes + other.bytes)


class ArtifactStore(ABC):
    """Immutable, content-addressed blobs, each in its run's scope.

    Errors never name where the store keeps its data (a folder, a bucket): they end up in
    run errors and history, which every operator of the deployment can read.
    """

    url: str

    @abstractmethod
    async def put(self, scope: str, data: bytes, *, content_type: str = "application/json") -> str:
        """Store ``data`` in ``scope`` (see :func:`run_scope`); return its key."""

    @abstractmethod
    async def get(self, key: str) -> bytes:
        """The bytes stored under ``key``; NotFound when there are none."""

    @abstractmethod
    async def exists(self, key: str) -> bool:
        """Whether ``key`` is stored."""

    @abstractmethod
    async def usage(self, scope: str) -> ArtifactUsage:
        """What ``scope`` holds: its artifacts and their bytes (none for an unknown scope)."""

    @abstractmethod
    async def delete_scope(self, scope: str) -> ArtifactUsage:
        """Delete every artifact of ``scope`` (a pruned run's); return what was freed.
        Keys are scoped to runs and values crossing runs are copied, so nothing outside
        the run refers to them."""

    def for_run(self, run_id: str) -> RunArtifacts:
        """The view of this store that one run (and its steps) may use."""
        return RunArtifacts(self, run_id)


class RunArtifacts:
    """One run's artifacts: writes go to the run's scope, and only keys in that scope
    can be read. This is what ``StepContext.artifacts`` is, so a key that reaches a step
    from a model reply or a tool cannot read another run's data.

    Sharing across runs is deliberate, never implicit: return the value itself (a parent
    receives its child's result), or use the deployment's store, ``Engine.artifacts``,
    which workflow code does not hold (a step reaches it through ``StepContext.client``).
    """

    def __init__(self, store: ArtifactStore, run_id: str) -> None:
        self.store = store
        self.run_id = run_id
        self.scope = run_scope(run_id)

    @property
    def url(self) -> str:
        return self.store.url

    async def put(self, data: bytes, *, content_type: str = "application/json") -> str:
        """Store ``data`` for this run; return its key (``runs/<run id>/sha256-<hex>``)."""
        return await self.store.put(self.scope, data, content_type=content_type)

    async def get(self, key: str) -> bytes:
        """The bytes under ``key``, which must be one of this run's artifacts."""
        self.check(key)
        return await self.store.get(key)

    async def exists(self, key: str) -> bool:
        self.check(key)
        return await self.store.exists(key)

    def owns(self, key: str) -> bool:
        segments, _ = split_key(key)
        return "/".join(segments) == self.scope

    def check(self, key: str) -> None:
        if not self.owns(key):
            raise InvalidInput(
                f"artifact {key[:200]!r} does not belong to run {self.run_id}: a run reads"
                " only its own artifacts; pass the value itself between runs"
            )
