"""Moved to :mod:`cadenza.security.links`; kept so existing imports keep working."""

from cadenza.security.links import ApprovalLinks, LinkClaims, normalise_reviewer

__all__ = ["ApprovalLinks", "LinkClaims", "normalise_reviewer"]
