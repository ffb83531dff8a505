"""Values in and out of the journal: JSON text, with claim-check for large payloads.

Anything pydantic can turn into JSON is accepted (models, dataclasses, datetimes, UUIDs,
plain data). A payload larger than the threshold goes to the artifact store under its
content hash, and the journal keeps only ``{"$artifact": "sha256:…", "size": n}``.
Decoding with a type (a step's return annotation, a workflow's input type) validates and
rebuilds the value, so a step that returns a pydantic model returns the same model on
replay.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from pydantic import TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError, to_jsonable_python

from cadenza.errors import InvalidInput, SerializationError
from cadenza.ports.artifact_store import ArtifactStore

DEFAULT_CLAIM_CHECK_BYTES = 64 * 1024
_ARTIFACT = "$artifact"
_PLAIN = (dict, list, str, int, float, bool, type(None))


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


class PayloadCodec:
    """Encodes values for the store and decodes them back, claim-checking large ones."""

    def __init__(
        self, artifacts: ArtifactStore | None, *, threshold: int = DEFAULT_CLAIM_CHECK_BYTES
    ) -> None:
        self.artifacts = artifacts
        self.threshold = threshold

    async def encode(self, value: Any, *, what: str = "value") -> str:
        text = dumps(value, what=what)
        if len(text) <= self.threshold or self.artifacts is None:
            return text
        data = text.encode()
        key = await self.artifacts.put(data)
        return json.dumps({_ARTIFACT: key, "size": len(data)})

    async def decode(self, text: str | None, tp: Any = None, *, what: str = "value") -> Any:
        if text is None:
            return None
        data = json.loads(text)
        if isinstance(data, dict) and _ARTIFACT in data and len(data) == 2:
            if self.artifacts is None:
                raise SerializationError(
                    f"{what} is stored as artifact {data[_ARTIFACT]}"
                    " but no artifact store is configured"
                )
            data = json.loads(await self.artifacts.get(data[_ARTIFACT]))
        return convert(data, tp, what=what)
