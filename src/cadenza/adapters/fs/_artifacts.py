"""FolderArtifactStore: content-addressed files under one folder (``file:///path``).

Files are written to a temporary name and renamed into place, so a reader never sees half
an artifact and a crash mid-write leaves nothing behind but a temporary file.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

from cadenza.errors import InvalidInput, NotFound
from cadenza.ports.artifact_store import ArtifactStore, content_key


class FolderArtifactStore(ArtifactStore):
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.url = f"file://{self.root.resolve()}"

    def _path(self, key: str) -> Path:
        algorithm, _, digest = key.partition(":")
        if algorithm != "sha256" or len(digest) != 64 or not digest.isalnum():
            raise InvalidInput(f"{key!r} is not an artifact key (expected sha256:<64 hex>)")
        return self.root / digest[:2] / digest[2:]

    async def put(self, data: bytes, *, content_type: str = "application/json") -> str:
        key = content_key(data)
        path = self._path(key)
        if not path.exists():
            await asyncio.to_thread(_write_atomically, path, data)
        return key

    async def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise NotFound(f"artifact {key} is not in {self.root}") from None

    async def exists(self, key: str) -> bool:
        return self._path(key).exists()


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
