"""The web console: runs, one run's timeline, approvals, events and rules, costs.

Server-rendered with Jinja2; htmx (vendored under ``static/``) refreshes the live parts —
the run table and a running run's page poll their fragment every two seconds — and the
pages work without it. An operator signs in by pasting an API key (see
``_console_session``); pages need the key's ``read`` scope, cancel / retry / fork need
``operate`` and completing a callback ``approve``. Every POST carries the session's CSRF
token. A key sees the runs of its own tenant only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from cadenza.client import Client
from cadenza.errors import CadenzaError, RunNotFound
from cadenza.ports.run_store import RunRecord, RunStatus
from cadenza.service import _console_views as views
from cadenza.service._audit import record_action
from cadenza.service._auth import Principal, authenticate
from cadenza.service._console_render import STATIC, render
from cadenza.service._console_session import (
    csrf_token,
    current_principal,
    same_origin,
    sign_in,
    sign_out,
    valid_csrf,
)

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

_STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
_VIA = "console"


def _client(request: Request) -> Client:
    client: Client = request.app.state.client
    return client


def _page(
    request: Request,
    template: str,
    principal: Principal | None,
    context: dict[str, Any],
    *,
    status_code: int = 200,
) -> HTMLResponse:
    context = {"principal": principal, "csrf": csrf_token(request), **context}
    return render(request, template, context, status_code=status_code)


def _login_redirect(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(target)}", status_code=303)


async def _signed_in(request: Request, scope: str) -> Principal | Response:
    """The operator, holding ``scope``; otherwise the response to send instead."""
    principal = await current_principal(request)
    if principal is None:
        return _login_redirect(request)
    if not principal.allows(scope):
        return _page(
            request,
            "message.html",
            principal,
            {
                "title": "Not allowed",
                "message": f"the key {principal.name!r} lacks the {scope!r} scope; sign in"
                f" with a key created with --scope {scope}",
            },
            status_code=403,
        )
    return principal


async def _run_of(request: Request, principal: Principal, run_id: str) -> RunRecord | None:
    """The run, when it exists and belongs to the operator's tenant."""
    try:
        run = await _client(request).engine.store.get_run(run_id)
    except RunNotFound:
        return None
    return run if run.tenant == principal.tenant else None


async def _allowed_run(
    request: Request, run_id: str, scope: str, *, csrf: str | None = None
) -> tuple[Principal, RunRecord] | Response:
    """The operator, holding ``scope``, and the run of their tenant; otherwise the response
    to send instead. A form post passes its ``csrf`` token, checked before the run is read."""
    principal = await _signed_in(request, scope)
    if not isinstance(principal, Principal):
        return principal
    if csrf is not None and not valid_csrf(request, csrf):
        return _forbidden_post(request)
    record = await _run_of(request, principal, run_id)
    if record is None:
        return _not_found(request, principal, run_id)
    return principal, record


def _from_htmx(request: Request) -> bool:
    """Whether htmx asked, so a fragment is enough rather than the whole page."""
    return request.headers.get("hx-request") == "true"


def _not_found(request: Request, principal: Principal, run_id: str) -> HTMLResponse:
    return _page(
        request,
        "message.html",
        principal,
        {"title": "No such run", "message": f"there is no run {run_id} for your tenant"},
        status_code=404,
    )


# --- sign in ------------------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, next: str = "/") -> HTMLResponse:
    return _page(request, "login.html", None, {"next": _safe_next(next), "error": None})


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request, api_key: str = Form(...), next: str = Form("/")) -> Response:
    if not same_origin(request):  # another site must not sign an operator in as itself
        return _forbidden_post(request)
    principal = await authenticate(_client(request), api_key)
    if principal is None:
        return _page(
            request,
            "login.html",
            None,
            {
                "next": _safe_next(next),
                "error": "that key is unknown, malformed or revoked; create one with"
                " 'cadenza keys create --scope read'",
            },
            status_code=401,
        )
    response = RedirectResponse(_safe_next(next), status_code=303)
    sign_in(request, response, api_key.strip())
    return response


@router.post("/logout")
async def logout(request: Request, csrf: str = Form("")) -> Response:
    if not valid_csrf(request, csrf):
        return _forbidden_post(request)
    response = RedirectResponse("/login", status_code=303)
    sign_out(response)
    return response


def _safe_next(target: str) -> str:
    """Only a path of this site: an open redirect would send an operator anywhere."""
    local = target.startswith("/") and not target.startswith("//") and "\\" not in target
    return target if local else "/"


def _forbidden_post(request: Request) -> HTMLResponse:
    return render(
        request,
        "message.html",
        {
            "principal": None,
            "csrf": "",
            "title": "Form expired",
            "message": "this form did not carry a valid token (it is from another page, an"
            " older sign-in or another site); reload the page and try again",
        },
        status_code=403,
    )


# --- static files ---------------------------------------------------------------------------


@router.get("/static/{name}")
async def static(name: str) -> Response:
    path = STATIC / name
    if "/" in name or name.startswith(".") or not path.is_file():
        return Response("not found", status_code=404)
    return FileResponse(
        path,
        media_type=_STATIC_TYPES.get(path.suffix, "application/octet-stream"),
        headers={"cache-control": "public, max-age=3600"},
    )


# --- runs ---------------------------------------------------------------------------------


def _status(value: str) -> RunStatus | None:
    try:
        return RunStatus(value.upper()) if value else None
    except ValueError:
        return None


@router.get("/", response_class=HTMLResponse)
async def runs(
    request: Request, status: str = "", workflow: str = "", q: str = "", fragment: int = 0
) -> Response:
    principal = await _signed_in(request, "read")
    if not isinstance(principal, Principal):
        return principal
    rows = await views.run_rows(
        _client(request).engine,
        tenant=principal.tenant,
        status=_status(status),
        workflow=workflow.strip(),
        text=q.strip(),
    )
    context = {
        "rows": rows,
        "filters": {"status": status.upper(), "workflow": workflow, "q": q},
        "statuses": [s.value for s in RunStatus],
        "section": "runs",
    }
    return _page(request, "runs_table.html" if fragment else "runs.html", principal, context)


@router.get("/runs/{run_id}", response_class=HTMLResponse)
async def run(request: Request, run_id: str, fragment: int = 0) -> Response:
    checked = await _allowed_run(request, run_id, "read")
    if not isinstance(checked, tuple):
        return checked
    principal, record = checked
    engine = _client(request).engine
    page = await views.run_page(engine, record, tenant=principal.tenant)
    flash = request.query_params.get("done")
    context = {"page": page, "section": "runs", "flash": flash}
    return _page(request, "run_body.html" if fragment else "run.html", principal, context)


@router.get("/runs/{run_id}/ops/{op_id}", response_class=HTMLResponse)
async def operation(request: Request, run_id: str, op_id: str) -> Response:
    """One operation's detail: the fragment a timeline row loads when it is opened, or a
    page of its own (without htmx, or from a link)."""
    principal = await _signed_in(request, "read")
    if not isinstance(principal, Principal):
        return principal
    record = await _run_of(request, principal, run_id)
    row = None if record is None else await views.op_detail(_client(request).engine, record, op_id)
    if record is None or row is None:
        return _not_found(request, principal, f"{run_id} (operation {op_id})")
    template = "op_detail.html" if _from_htmx(request) else "op_page.html"
    return _page(request, template, principal, {"row": row, "run": record, "section": "runs"})


@router.get("/runs/{run_id}/state", response_class=HTMLResponse)
async def state(request: Request, run_id: str, after: str = "") -> Response:
    """The agent state document now, or as it stood right after an operation."""
    checked = await _allowed_run(request, run_id, "read")
    if not isinstance(checked, tuple):
        return checked
    principal, record = checked
    document: dict[str, Any] | str = record.state
    if after:
        document = await views.state_after(_client(request).engine, record, after)
    template = "state.html" if _from_htmx(request) else "state_page.html"
    context = {"document": document, "after": after, "run": record, "section": "runs"}
    return _page(request, template, principal, context)


@router.get("/runs/{run_id}/history", response_class=HTMLResponse)
async def history(request: Request, run_id: str) -> Response:
    checked = await _allowed_run(request, run_id, "read")
    if not isinstance(checked, tuple):
        return checked
    principal, record = checked
    events = await _client(request).engine.store.history(run_id)
    template = "history_table.html" if _from_htmx(request) else "history_page.html"
    context = {"history": events, "run": record, "section": "runs"}
    return _page(request, template, principal, context)


async def _operate(
    request: Request,
    run_id: str,
    csrf: str,
    action: str,
    done: str,
    act: Callable[[Client, Principal], Awaitable[object]],
) -> Response:
    """Do ``act`` on the run for an operator holding ``operate``, record it in the run's
    history as ``action`` and go back to the run saying ``done``."""
    checked = await _allowed_run(request, run_id, "operate", csrf=csrf)
    if not isinstance(checked, tuple):
        return checked
    principal, _ = checked
    client = _client(request)
    try:
        await act(client, principal)
    except CadenzaError as exc:
        return _refused(request, principal, exc)
    await record_action(client.engine, run_id, action, _by(principal))
    return _back(run_id, done)


def _by(principal: Principal) -> dict[str, str]:
    """How the history names an operator acting from the console."""
    return {**principal.audit(), "via": _VIA}


def _refused(request: Request, principal: Principal, exc: CadenzaError) -> HTMLResponse:
    return _page(
        request,
        "message.html",
        principal,
        {"title": "Not done", "message": exc.message},
        status_code=409,
    )


def _back(run_id: str, done: str) -> RedirectResponse:
    return RedirectResponse(f"/runs/{quote(run_id)}?done={quote(done)}", status_code=303)


@router.post("/runs/{run_id}/cancel")
async def cancel(request: Request, run_id: str, csrf: str = Form("")) -> Response:
    return await _operate(
        request,
        run_id,
        csrf,
        "cancel",
        "cancelled",
        lambda client, _: client.get_handle(run_id).cancel(),
    )


@router.post("/runs/{run_id}/retry")
async def retry(request: Request, run_id: str, csrf: str = Form("")) -> Response:
    return await _operate(
        request,
        run_id,
        csrf,
        "retry",
        "retried",
        lambda client, principal: client.engine.retry(
            run_id, by=f"key {principal.key_id} ({principal.name}, console)"
        ),
    )


@router.post("/runs/{run_id}/fork")
async def fork(
    request: Request, run_id: str, from_op: str = Form(...), csrf: str = Form("")
) -> Response:
    checked = await _allowed_run(request, run_id, "operate", csrf=csrf)
    if not isinstance(checked, tuple):
        return checked
    principal, _ = checked
    engine = _client(request).engine
    try:
        forked = await _client(request).get_handle(run_id).fork(from_op=from_op)
    except CadenzaError as exc:
        return _refused(request, principal, exc)
    by = _by(principal)
    await record_action(engine, forked.run_id, "fork", by, source_run_id=run_id, op_id=from_op)
    await record_action(engine, run_id, "forked", by, fork_run_id=forked.run_id, op_id=from_op)
    return _back(forked.run_id, f"forked from {run_id} at operation {from_op}")


@router.post("/runs/{run_id}/callbacks/{op_id}")
async def complete_callback(
    request: Request,
    run_id: str,
    op_id: str,
    decision: str = Form("approve"),
    comment: str = Form(""),
    csrf: str = Form(""),
    back: str = Form(""),
) -> Response:
    """Complete a pending callback the way a reviewer would: ``decision`` and ``comment``,
    signed by the operator's key name, so the history says who did it from here."""
    checked = await _allowed_run(request, run_id, "approve", csrf=csrf)
    if not isinstance(checked, tuple):
        return checked
    principal, _ = checked
    payload = {"decision": decision, "comment": comment.strip(), "by": principal.name, "via": _VIA}
    handle = _client(request).get_handle(run_id)
    try:
        if decision == "fail":
            await handle.fail_callback(op_id, message=comment.strip() or "failed from the console")
        else:
            await handle.succeed_callback(op_id, payload)
    except CadenzaError as exc:
        return _refused(request, principal, exc)
    action = "callback.fail" if decision == "fail" else "callback.succeed"
    await record_action(
        _client(request).engine, run_id, action, _by(principal), op_id=op_id, decision=decision
    )
    if back == "approvals":
        return RedirectResponse("/approvals?done=1", status_code=303)
    return _back(run_id, f"callback {op_id} completed ({decision})")


# --- approvals, events, costs -----------------------------------------------------------------


@router.get("/approvals", response_class=HTMLResponse)
async def approvals(request: Request) -> Response:
    principal = await _signed_in(request, "read")
    if not isinstance(principal, Principal):
        return principal
    rows = await views.approvals(_client(request).engine, tenant=principal.tenant)
    now = _client(request).engine.clock.now()
    context = {"rows": rows, "now": now, "section": "approvals", "zero": timedelta(0)}
    return _page(request, "approvals.html", principal, context)


@router.get("/events", response_class=HTMLResponse)
async def events(request: Request) -> Response:
    principal = await _signed_in(request, "read")
    if not isinstance(principal, Principal):
        return principal
    rows, rules = await views.events(_client(request).engine, tenant=principal.tenant)
    return _page(
        request, "events.html", principal, {"rows": rows, "rules": rules, "section": "events"}
    )


@router.get("/costs", response_class=HTMLResponse)
async def costs(request: Request) -> Response:
    principal = await _signed_in(request, "read")
    if not isinstance(principal, Principal):
        return principal
    table = await views.costs(_client(request).engine, tenant=principal.tenant)
    return _page(request, "costs.html", principal, {"table": table, "section": "costs"})
