"""The REST API under ``/api/v1``: its routers, together."""

from __future__ import annotations

from fastapi import APIRouter

from cadenza.service import _control, _costs, _runs, _schedules, _stream
from cadenza.service._problems import PROBLEM_JSON, ProblemDetails

__all__ = ["router"]

_problem = {"model": ProblemDetails, "content": {PROBLEM_JSON: {}}}

router = APIRouter(
    responses={
        401: {**_problem, "description": "no API key, or one unknown or revoked"},
        403: {**_problem, "description": "the key lacks the scope"},
        404: {**_problem, "description": "no such object in the key's tenant"},
        413: {**_problem, "description": "the request body is too large"},
        422: {**_problem, "description": "the request does not fit"},
        429: {**_problem, "description": "the key made too many requests; see Retry-After"},
    }
)
router.include_router(_runs.router)
router.include_router(_stream.router)
router.include_router(_control.router)
router.include_router(_schedules.router)
router.include_router(_costs.router)
