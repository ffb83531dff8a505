"""FolderArtifactStore: content-addressed files under one folder (``file:///path``).

A key ``runs/<run id>/sha256-<hex>`` is the file of that relative path; every segment is
checked before it touches the file system, so no key reaches outside the folder. Files are
written to a temporary name and renamed into place, so a reader never sees half an
artifact and a crash mid-write leaves nothing behind but a temporary file. Errors name the
key, never the folder: they are recorded in run errors that every operator can read.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from pathlib import Path

from cadenza.errors import NotFound, StoreError
from cadenza.ports.artifact_store import (
    ArtifactStore,
    ArtifactUsage,
    content_key,
    scope_segments,
    split_key,
)


class FolderArtifactStore(ArtifactStore):
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.url = f"file://{self.root.resolve()}"

    def _path(self, key: str) -> Path:
        segments, digest = split_key(key)
        return self.root.joinpath(*segments, digest)

    async def put(self, scope: str, data: bytes, *, content_type: str = "application/json") -> str:
        key = content_key(scope, data)
        path = self._path(key)
        try:
            if not path.exists():
                await asyncio.to_thread(_write_atomically, path, data)
        except OSError as exc:
            raise StoreError(
                f"artifact {key} could not be written: {exc.strerror or type(exc).__name__}"
            ) from None
        return key

    async def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise NotFound(f"artifact {key} is not in the artifact store") from None
        except OSError as exc:
            raise StoreError(
                f"artifact {key} could not be read: {exc.strerror or type(exc).__name__}"
            ) from None

    async def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    async def usage(self, scope: str) -> ArtifactUsage:
        folder = self.root.joinpath(*scope_segments(scope))
        return await asyncio.to_thread(_usage, folder)

    async def delete_scope(self, scope: str) -> ArtifactUsage:
        folder = self.root.joinpath(*scope_segments(scope))

        def delete() -> ArtifactUsage:
            freed = _usage(folder)
            # Temporary files of a write that crashed go too: the whole folder is the run's.
            shutil.rmtree(folder, ignore_errors=True)
            if folder.exists():
                raise OSError("not every file could be removed")
            return freed

        try:
            return await asyncio.to_thread(delete)
        except OSError as exc:
            raise StoreError(
                f"the artifacts of {scope} could not be deleted:"
                f" {exc.strerror or exc}; prune again once the folder is writable"
            ) from None


def _usage(folder: Path) -> ArtifactUsage:
    if not folder.is_dir():
        return ArtifactUsage()
    sizes = [p.stat().st_size for p in folder.iterdir() if p.is_file()]
    return ArtifactUsage(len(sizes), sum(sizes))


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
