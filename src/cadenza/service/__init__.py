"""The service shape: cadenza over HTTP (``cadenza serve``).

``create_app(client)`` builds a FastAPI application: the REST API under ``/api/v1`` (runs,
callbacks, events, rules, queues, workflows, progress streams), authenticated by API keys
that each belong to one tenant. See docs/service.md.
"""

from cadenza.security.links import ApprovalLinks
from cadenza.service._app import API_PREFIX, create_app
from cadenza.service._auth import SCOPES, Principal, authenticate, client_of, require
from cadenza.service._notify_email import EmailNotifier
from cadenza.service._notify_links import LinkWebhookNotifier, SlackNotifier, link_submitter
from cadenza.service._settings import ServiceSettings

__all__ = [
    "API_PREFIX",
    "SCOPES",
    "ApprovalLinks",
    "EmailNotifier",
    "LinkWebhookNotifier",
    "Principal",
    "ServiceSettings",
    "SlackNotifier",
    "authenticate",
    "client_of",
    "create_app",
    "link_submitter",
    "require",
]
