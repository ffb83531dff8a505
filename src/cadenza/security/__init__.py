"""Callback tokens and the deployment secret that signs them."""

from cadenza.security.tokens import CallbackTokens, TokenClaims, load_secret

__all__ = ["CallbackTokens", "TokenClaims", "load_secret"]
