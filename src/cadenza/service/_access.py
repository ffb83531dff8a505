"""Tenant isolation: every object a request names is looked up for the caller's tenant,
and another tenant's object is answered exactly as a missing one (404, same message), so
a key cannot even learn that it exists."""

from __future__ import annotations

from cadenza.engine.engine import Engine
from cadenza.errors import CallbackNotFound, RunNotFound
from cadenza.ports.run_store import DEFAULT_TENANT, CallbackRecord, Rule, RunRecord
from cadenza.service._auth import Principal

__all__ = ["callback_of", "rule_key", "run_of", "visible_rule_name"]


async def run_of(engine: Engine, principal: Principal, run_id: str) -> RunRecord:
    """The run, when it belongs to the caller's tenant; RunNotFound otherwise."""
    run = await engine.store.get_run(run_id)
    if run.tenant != principal.tenant:
        raise RunNotFound(run_id)
    return run


async def callback_of(engine: Engine, principal: Principal, token: str) -> CallbackRecord:
    """The callback a token names, when its run belongs to the caller's tenant.

    The token's signature is checked first (a forged token is refused whoever sends it);
    then a callback of another tenant's run is CallbackNotFound, before anything about its
    state (expired, completed) is told."""
    claims = engine.tokens.verify(token, now=engine.clock.now())
    missing = CallbackNotFound(
        f"no callback for this token in tenant {principal.tenant!r}; see what a run waits on"
        " with GET /api/v1/runs/{run_id}/callbacks"
    )
    try:
        run = await engine.store.get_run(claims.run_id)
    except RunNotFound:
        raise missing from None
    if run.tenant != principal.tenant:
        raise missing
    return await engine.callback_for(token)


def rule_key(principal: Principal, name: str) -> str:
    """The stored name of a tenant's rule: rule names are unique per store, so the rules
    of tenants other than the default one are kept under ``<tenant>/<name>``."""
    return name if principal.tenant == DEFAULT_TENANT else f"{principal.tenant}/{name}"


def visible_rule_name(rule: Rule) -> str:
    prefix = f"{rule.tenant}/"
    if rule.tenant != DEFAULT_TENANT and rule.name.startswith(prefix):
        return rule.name[len(prefix) :]
    return rule.name
