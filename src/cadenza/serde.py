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
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Generic, TypeVar

from pydantic import TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError, to_jsonable_python

from cadenza.errors import InvalidInput, NotFound, PayloadTooLarge, SerializationError
from cadenza.journal import OpRecord
from cadenza.ports.artifact_store import ArtifactStore, RunArtifacts, digest_of

T = TypeVar("T")

DEFAULT_CLAIM_CHECK_BYTES = 64 * 1024
_PLAIN = (dict, list, str, int, float, bool, type(None))
# Stored texts in a record's data: a condition's state, a child context's state changes.
_STORED_DATA = ("state", "state_changes")
# The first character of a reference; the JSON text of a value never starts with it.
_REFERENCE = "@artifact "


# One encoder for every value: json.dumps builds a new one per call when given options.
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def dumps(value: Any, *, what: str = "value") -> str:
    """JSON text of ``value``; SerializationError saying what to return instead."""
    try:
        if type(value) in _PLAIN:
            try:
                return _encode(value)
            except (TypeError, ValueError):
                pass  # a nested value needs pydantic's help, or is not JSON at all
        return _encode(to_jsonable_python(value))
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
class SerDesContext:
    """Where a value a :class:`SerDes` handles belongs: its operation and its run."""

    operation_id: str
    run_id: str


class SerDes(ABC, Generic[T]):
    """A per-operation serialisation hook (``serdes=`` on step, child context, callback,
    invoke, map/parallel and wait_for_condition): turns the operation's value into text
    and back, e.g. to encrypt it or to keep a type JSON cannot hold.

    The text is stored as a JSON string, so a large one is claim-checked like any value;
    replay reads it back through the same SerDes, which the code passes again.
    """

    @abstractmethod
    def serialize(self, value: T, context: SerDesContext) -> str: ...

    @abstractmethod
    def deserialize(self, data: str, context: SerDesContext) -> T: ...


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
        data = text.encode()  # limits are in bytes: "é" is one character and two bytes
        if limit is not None and len(data) > limit:
            raise PayloadTooLarge(
                f"{what} is {len(data):,} bytes; the limit is {limit:,}: keep large content"
                " in the artifact store (StepContext.artifacts) and pass its key instead"
            )
        if len(data) <= self.threshold or self.artifacts is None:
            return text
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
        for key in _STORED_DATA:  # stored texts kept beside the result
            if isinstance(data.get(key), str):
                text = await self.adopt(data[key], source_run_id=source_run_id, run_id=run_id)
                data = {**data, key: text}
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

    async def encode_with(
        self, value: Any, serdes: SerDes[Any] | None, op_id: str, *, what: str = "value"
    ) -> str:
        """``encode``, through ``serdes`` when the operation has one: its text is stored as
        a JSON string (claim-checked when large), so the column stays JSON or a reference."""
        if serdes is None:
            return await self.encode(value, what=what)
        try:
            text = serdes.serialize(value, SerDesContext(op_id, self.run_id))
        except Exception as exc:
            raise SerializationError(
                f"{what} could not be serialised by {type(serdes).__name__} ({exc}); fix its"
                " serialize(), or return a value it accepts"
            ) from exc
        if not isinstance(text, str):
            raise SerializationError(
                f"{type(serdes).__name__}.serialize returned {type(text).__name__} for {what};"
                " a SerDes must return str"
            )
        return await self.encode(text, what=what)

    async def decode_with(
        self,
        text: str | None,
        serdes: SerDes[Any] | None,
        op_id: str,
        tp: Any = None,
        *,
        what: str = "value",
    ) -> Any:
        """``decode``, through ``serdes`` when the operation has one (it then owns the type)."""
        if serdes is None:
            return await self.decode(text, tp, what=what)
        data = await self.decode(text, what=what)
        if data is None:
            return None
        if not isinstance(data, str):
            raise SerializationError(
                f"{what} was not stored by a SerDes (it is {type(data).__name__}, not text);"
                " pass the serdes= the operation was first run with, or none"
            )
        try:
            return serdes.deserialize(data, SerDesContext(op_id, self.run_id))
        except Exception as exc:
            raise SerializationError(
                f"{what} could not be read back by {type(serdes).__name__} ({exc}); pass the"
                " serdes= the operation was first run with, and keep its deserialize() able"
                " to read what it wrote before"
            ) from exc
