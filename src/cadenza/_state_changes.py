"""What a child context did to the state document, recorded so replay need not run it again.

A finished child context (``run_in_child_context``, a map item, a parallel branch, a whole
batch) returns its recorded outcome on replay without calling its function, as in AWS
durable executions. Its changes to ``ctx.state`` would be lost with the call, so the
record keeps them: the difference between the document as the child found it and as it
left it, in the form the store keeps the document (its JSON). Replay applies them where
the child would have run, and the document comes out as the live run left it.

A change is ``["set", path, value]``, ``["del", path]`` or ``["extend", path, items]``
(items appended to a list, so that concurrent branches that each append keep both).
"""

from __future__ import annotations

import json
from typing import Any

Change = list[Any]

# Bookkeeping the activation itself writes (when it checkpoints, which lease it held);
# a child did not change these, and replaying an old value would only confuse.
_IGNORED = (
    ("metadata", "lastUpdated"),
    ("metadata", "leaseEpoch"),
    ("metadata", "invocationCount"),
)


def snapshot(document: dict[str, Any]) -> dict[str, Any]:
    """The document as the store would keep it (a detached copy)."""
    copied: dict[str, Any] = json.loads(json.dumps(document, default=str))
    return copied


def changes_between(before: dict[str, Any], after: dict[str, Any]) -> list[Change]:
    """The changes that turn ``before`` into ``after`` (both snapshots)."""
    return [c for c in _diff(before, after, []) if tuple(c[1][:2]) not in _IGNORED]


def apply_changes(document: dict[str, Any], changes: list[Change]) -> None:
    """Make in ``document`` the changes a child context recorded."""
    for change in changes:
        kind, path = change[0], [str(p) for p in change[1]]
        if not path:
            continue
        parent: Any = document
        for key in path[:-1]:
            child = parent.get(key) if isinstance(parent, dict) else None
            if not isinstance(child, dict):
                child = {}
                parent[key] = child
            parent = child
        key = path[-1]
        if kind == "del":
            parent.pop(key, None)
        elif kind == "extend" and isinstance(parent.get(key), list):
            parent[key].extend(json.loads(json.dumps(change[2])))
        else:
            parent[key] = json.loads(json.dumps(change[2]))


def _diff(before: Any, after: Any, path: list[str]) -> list[Change]:
    if before == after:
        return []
    if isinstance(before, dict) and isinstance(after, dict):
        found: list[Change] = []
        for key, value in after.items():
            if key in before:
                found.extend(_diff(before[key], value, [*path, key]))
            else:
                found.append(["set", [*path, key], value])
        found.extend(["del", [*path, key]] for key in before if key not in after)
        return found
    if (
        isinstance(before, list)
        and isinstance(after, list)
        and len(after) > len(before)
        and after[: len(before)] == before
    ):
        return [["extend", path, after[len(before) :]]]
    return [["set", path, after]]
