"""Artifacts in an S3 bucket (``s3://bucket/prefix``); needs the ``aws`` extra (boto3)."""

from cadenza.adapters.s3._artifacts import S3ArtifactStore

__all__ = ["S3ArtifactStore"]
