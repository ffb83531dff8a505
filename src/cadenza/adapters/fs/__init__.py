"""Artifacts in a local folder."""

from cadenza.adapters.fs._artifacts import FolderArtifactStore

__all__ = ["FolderArtifactStore"]
