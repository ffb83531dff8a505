"""S3ArtifactStore: content-addressed objects in one bucket, under one prefix.

A key ``runs/<run id>/sha256-<hex>`` is the object ``<prefix>/runs/<run id>/sha256-<hex>``:
the same key scheme as the folder store, checked the same way before it reaches S3, so
one deployment can move its artifacts between a folder and a bucket by copying them. An
object is written whole by one PUT (S3 has no partial objects), and only when the key is
not there yet: the content is what the key says, so the first copy is as good as any.
Errors name the key, never the bucket: they end up in run errors every operator reads.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qs, urlparse

from cadenza.errors import ConfigurationError, MissingDependency, NotFound, StoreError
from cadenza.ports.artifact_store import (
    ArtifactStore,
    ArtifactUsage,
    content_key,
    scope_segments,
    split_key,
)

_MISSING = frozenset({"NoSuchKey", "404", "NotFound"})


class S3ArtifactStore(ArtifactStore):
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
    ) -> None:
        if not bucket:
            raise ConfigurationError("an S3 artifact store needs a bucket: s3://BUCKET/PREFIX")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.region = region
        self.endpoint_url = endpoint_url
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self._client: Any = None

    @classmethod
    def from_url(cls, url: str) -> S3ArtifactStore:
        parsed = urlparse(url)
        options = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
        unknown = set(options) - {"region", "endpoint_url"}
        if unknown:
            raise ConfigurationError(
                f"{url!r}: unknown option(s) {', '.join(sorted(unknown))};"
                " use s3://BUCKET/PREFIX?region=...&endpoint_url=..."
            )
        return cls(
            parsed.netloc,
            parsed.path,
            region=options.get("region"),
            endpoint_url=options.get("endpoint_url"),
        )

    @property
    def client(self) -> Any:
        if self._client is None:
            try:
                import boto3
            except ImportError as exc:
                raise MissingDependency("the S3 artifact store", "aws") from exc
            self._client = boto3.client(
                "s3", region_name=self.region, endpoint_url=self.endpoint_url
            )
        return self._client

    def _object(self, key: str) -> str:
        segments, digest = split_key(key)
        return "/".join([*([self.prefix] if self.prefix else []), *segments, digest])

    async def put(self, scope: str, data: bytes, *, content_type: str = "application/json") -> str:
        key = content_key(scope, data)
        name = self._object(key)
        if await self.exists(key):
            return key
        try:
            await asyncio.to_thread(
                self.client.put_object,
                Bucket=self.bucket,
                Key=name,
                Body=data,
                ContentType=content_type,
            )
        except Exception as exc:
            raise _translate(exc, f"artifact {key} could not be written") from None
        return key

    async def get(self, key: str) -> bytes:
        name = self._object(key)

        def read() -> bytes:
            reply = self.client.get_object(Bucket=self.bucket, Key=name)
            body: bytes = reply["Body"].read()
            return body

        try:
            return await asyncio.to_thread(read)
        except Exception as exc:
            if _code(exc) in _MISSING:
                raise NotFound(f"artifact {key} is not in the artifact store") from None
            raise _translate(exc, f"artifact {key} could not be read") from None

    async def exists(self, key: str) -> bool:
        name = self._object(key)
        try:
            await asyncio.to_thread(self.client.head_object, Bucket=self.bucket, Key=name)
        except Exception as exc:
            if _code(exc) in _MISSING:
                return False
            raise _translate(exc, f"artifact {key} could not be looked up") from None
        return True

    def _scope_prefix(self, scope: str) -> str:
        """The objects' prefix of ``scope``, ending in "/" so r-1 never matches r-10."""
        return "/".join([*([self.prefix] if self.prefix else []), *scope_segments(scope)]) + "/"

    def _listing(self, prefix: str) -> list[tuple[str, int]]:
        """Every object under ``prefix``, with its size (paged by S3)."""
        objects: list[tuple[str, int]] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        ):
            objects += [(o["Key"], int(o["Size"])) for o in page.get("Contents", [])]
        return objects

    async def usage(self, scope: str) -> ArtifactUsage:
        prefix = self._scope_prefix(scope)
        try:
            objects = await asyncio.to_thread(self._listing, prefix)
        except Exception as exc:
            raise _translate(exc, f"the artifacts of {scope} could not be listed") from None
        return ArtifactUsage(len(objects), sum(size for _, size in objects))

    async def delete_scope(self, scope: str) -> ArtifactUsage:
        prefix = self._scope_prefix(scope)

        def delete() -> ArtifactUsage:
            objects = self._listing(prefix)
            for start in range(0, len(objects), 1000):  # DeleteObjects takes 1,000 at most
                chunk = objects[start : start + 1000]
                reply = self.client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": name} for name, _ in chunk], "Quiet": True},
                )
                if reply.get("Errors"):
                    first = reply["Errors"][0]
                    raise StoreError(
                        f"the artifacts of {scope} could not all be deleted"
                        f" ({first.get('Code', 'error')}); prune again later"
                    )
            return ArtifactUsage(len(objects), sum(size for _, size in objects))

        try:
            return await asyncio.to_thread(delete)
        except StoreError:
            raise
        except Exception as exc:
            raise _translate(exc, f"the artifacts of {scope} could not be deleted") from None


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def _translate(exc: Exception, what: str) -> Exception:
    """An S3 failure as a StoreError that says what failed, not where the bucket is."""
    code = _code(exc)
    if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "NoSuchBucket"):
        return ConfigurationError(
            f"{what}: S3 refused it ({code}); check the bucket and credentials"
        )
    if code in ("SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout"):
        return StoreError(f"{what}: S3 asks to try again later ({code})", retryable=True)
    return StoreError(f"{what}: {code or type(exc).__name__}")
