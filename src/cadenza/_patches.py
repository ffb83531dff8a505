"""``ctx.patched``: let code change while runs that started under the old code are suspended.

Operation ids are positional, so a marker that took a position would shift the ids of every
later operation of an old run. A patch marker takes none: it is a change id in the run's
state (``metadata.patches``), written in the same checkpoint as the operations that follow
it. The answer for one change id is fixed for the whole activation, so a ``patched`` call
in a loop cannot flip from the old branch to the new one halfway through a run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cadenza.errors import WorkflowDefinitionError

if TYPE_CHECKING:
    from cadenza.context import Context


def patched(ctx: Context, change_id: str) -> bool:
    if not change_id or not isinstance(change_id, str):
        raise WorkflowDefinitionError("ctx.patched needs a non-empty change id, e.g. 'v2-summary'")
    act = ctx._runtime
    known = act.patch_memo.get(change_id)
    if known is not None:
        return known
    if change_id in act.patches:
        value = True  # the run took the new branch before: keep taking it
    elif ctx.is_replaying:
        value = False  # the journal went past this point under the old code
    else:
        act.patches.add(change_id)
        metadata = act.state.to_dict().setdefault("metadata", {})
        metadata["patches"] = sorted(act.patches)
        value = True
    act.patch_memo[change_id] = value
    return value
