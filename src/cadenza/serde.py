"""Values in and out of the store: JSON text, with claim-check for large payloads.

Anything pydantic can turn into JSON is accepted (models, dataclasses, datetimes, UUIDs,
plain data). Decoding with a type (a step's return annotation, a workflow's input type)
validates and rebuilds the value, so a step that returns a pydantic model returns the same
model on replay.

A payload larger than the threshold goes to the artifact store, in the scope of the run it
belongs to, and the stored text becomes a *reference*::

    @artifact {"key":"runs/r-42/sha256-9f86d0…","size":70123}

The reference is not JSON: the stored text of a value is either the JSON of the value
itself or a reference, and JSON never starts with ``@``. Only this codec writes
references (everything else that writes these columns, such as the event relay, writes
JSON), so no user value, model reply or callback payload can produce one —
``{"$artifact": …}`` or anything else a user sends comes back as the plain data it is.
A reference is also only followed within its run: decoding for run ``r-42`` refuses a key
outside ``runs/r-42``, so even a reference copied in from another run's row reads nothing.
Where a value legitimately passes from one run to another (a child's result reaching its
parent), :meth:`PayloadCodec.adopt` copies the artifact into the receiving run's scope.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from pydantic import TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError, to_jsonable_python

from cadenza.errors import InvalidInput, NotFound, PayloadTooLarge, SerializationError
from cadenza.journal import OpRecord, OpType
from cadenza.ports.artifact_store import ArtifactStore, RunArtifacts, digest_of

DEFAULT_CLAIM_CHECK_BYTES = 64 * 1024
_PLAIN = (dict, list, str, int, float, bool, type(None))
# The first character of a reference; the JSON text of a value never starts with it.
_REFERENCE = "@artifact "


def dumps(value: Any, *, what: str = "value") -> str:
    """JSON text of ``value``; SerializationError saying what to return instead."""
    try:
        if type(value) in _PLAIN:
            try:
                return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
            except (TypeError, ValueError):
                pass  # a nested value needs pydantic's help, or is not JSON at all
        return json.dumps(
            to_jsonable_python(value), separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (PydanticSerializationError, TypeError, ValueError) as exc:
        raise SerializationError(
            f"{what} of type {type(value).__name__} cannot be stored as JSON ({exc}); return"
            " plain data (dict, list, str, numbers, bool, None), a pydantic model or a"
            " dataclass, and keep large binary content in an artifact"
        ) from exc


@lru_cache(maxsize=512)
def _adapter(tp: Any) -> TypeAdapter[Any]:
    return TypeAdapter(tp)


def convert(data: Any, tp: Any, *, what: str = "value") -> Any:
    """Validate plain JSON data against ``tp`` (None or Any: return as is)."""
    if tp is None or tp is Any:
        return data
    try:
        return _adapter(tp).validate_python(data)
    except ValidationError as exc:
        raise InvalidInput(f"{what} does not fit {_type_name(tp)}: {exc}") from exc


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or repr(tp)


@dataclass(frozen=True)
class ArtifactReference:
    """Where a claim-checked value is: its artifact key and its size in bytes."""

    key: str
    size: int

    def text(self) -> str:
        return _REFERENCE + json.dumps({"key": self.key, "size": self.size}, separators=(",", ":"))


def reference_in(text: str | None) -> ArtifactReference | None:
    """The reference ``text`` is, or None when it is the JSON of a value."""
    if text is None or not text.startswith(_REFERENCE):
        return None
    try:
        data = json.loads(text[len(_REFERENCE) :])
        return ArtifactReference(str(data["key"]), int(data["size"]))
    except (ValueError, TypeError, KeyError) as exc:
        raise SerializationError(
            f"stored text {text[:80]!r} is a malformed artifact reference"
        ) from exc


def preview(text: str, limit: int = 200) -> str:
    """A short form of stored text for history and logs."""
    ref = reference_in(text)
    if ref is not None:
        return f"({ref.size:,} bytes, claim-checked as {ref.key})"
    return text if len(text) <= limit else text[:limit] + "…"


class PayloadCodec:
    """Encodes values for the store and decodes them back, claim-checking large ones.

    Every call names the run the value belongs to: a large value is written to that run's
    scope, and a reference is followed only into it. :meth:`for_run` binds one run.
    """

    def __init__(
        self, artifacts: ArtifactStore | None, *, threshold: int = DEFAULT_CLAIM_CHECK_BYTES
    ) -> None:
        self.artifacts = artifacts
        self.threshold = threshold

    def for_run(self, run_id: str) -> RunCodec:
        return RunCodec(self, run_id)

    async def encode(
        self, value: Any, *, run_id: str, what: str = "value", limit: int | None = None
    ) -> str:
        """The stored text of ``value`` for ``run_id``; PayloadTooLarge over ``limit``."""
        text = dumps(value, what=what)
        if limit is not None and len(text) > limit:
            raise PayloadTooLarge(f"{what} is {len(text):,} bytes; the limit is {limit:,}")
        if len(text) <= self.threshold or self.artifacts is None:
            return text
        data = text.encode()
        key = await self.artifacts.for_run(run_id).put(data)
        return ArtifactReference(key, len(data)).text()

    async def decode(
        self, text: str | None, tp: Any = None, *, run_id: str, what: str = "value"
    ) -> Any:
        """The value stored as ``text`` for ``run_id``, validated against ``tp``."""
        if text is None:
            return None
        plain = await self.expand(text, run_id=run_id, what=what)
        try:
            data = json.loads(plain)
        except ValueError as exc:
            raise SerializationError(f"{what} of run {run_id} is not stored as JSON") from exc
        return convert(data, tp, what=what)

    async def expand(self, text: str, *, run_id: str, what: str = "value") -> str:
        """The JSON text of the value stored as ``text``, fetching a claim-checked one."""
        ref = reference_in(text)
        if ref is None:
            return text
        return (await self._fetch(ref, run_id, what)).decode()

    async def adopt(self, text: str | None, *, source_run_id: str, run_id: str) -> str | None:
        """``text``, stored for ``source_run_id``, as ``run_id`` may store it: a
        claim-checked value is copied into ``run_id``'s scope (a child's result reaching
        its parent), anything else is returned unchanged."""
        ref = reference_in(text)
        if ref is None:
            return text
        data = await self._fetch(ref, source_run_id, f"the result of run {source_run_id}")
        assert self.artifacts is not None  # _fetch refuses a reference without a store
        key = await self.artifacts.for_run(run_id).put(data)
        return ArtifactReference(key, len(data)).text()

    async def adopt_record(self, op: OpRecord, *, source_run_id: str, run_id: str) -> OpRecord:
        """A journal record of ``source_run_id`` as ``run_id`` may keep it, for a run that
        starts from a copy of another's journal (a fork)."""
        data = op.data
        if op.type == OpType.CONDITION and isinstance(data.get("state"), str):
            state = await self.adopt(data["state"], source_run_id=source_run_id, run_id=run_id)
            data = {**data, "state": state}
        result = await self.adopt(op.result, source_run_id=source_run_id, run_id=run_id)
        return op.evolve(result=result, data=data)

    async def _fetch(self, ref: ArtifactReference, run_id: str, what: str) -> bytes:
        if self.artifacts is None:
            raise SerializationError(
                f"{what} of run {run_id} is stored as artifact {ref.key}, but this engine has"
                " no artifact store; configure the deployment's (CADENZA_ARTIFACTS)"
            )
        scope: RunArtifacts = self.artifacts.for_run(run_id)
        try:
            owned = scope.owns(ref.key)
        except InvalidInput:
            owned = False
        if not owned:
            raise SerializationError(
                f"{what} of run {run_id} refers to artifact {ref.key[:200]!r}, which is not"
                " one of this run's artifacts; the stored reference was altered, so it is"
                " not followed"
            )
        try:
            data = await scope.get(ref.key)
        except NotFound:
            raise NotFound(
                f"{what} of run {run_id} is stored as artifact {ref.key}, which the artifact"
                " store does not have; restore the deployment's artifact store"
                " (CADENZA_ARTIFACTS) from a backup that holds it"
            ) from None
        if len(data) != ref.size or hashlib.sha256(data).hexdigest() != digest_of(ref.key):
            raise SerializationError(
                f"artifact {ref.key} of run {run_id} does not hold the bytes its reference"
                " names; the artifact store was altered"
            )
        return data


class RunCodec:
    """A :class:`PayloadCodec` bound to one run: what an activation uses."""

    def __init__(self, codec: PayloadCodec, run_id: str) -> None:
        self.codec = codec
        self.run_id = run_id

    async def encode(self, value: Any, *, what: str = "value", limit: int | None = None) -> str:
        return await self.codec.encode(value, run_id=self.run_id, what=what, limit=limit)

    async def decode(self, text: str | None, tp: Any = None, *, what: str = "value") -> Any:
        return await self.codec.decode(text, tp, run_id=self.run_id, what=what)

    async def adopt(self, text: str | None, *, source_run_id: str) -> str | None:
        return await self.codec.adopt(text, source_run_id=source_run_id, run_id=self.run_id)
