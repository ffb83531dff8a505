"""Workflow definitions: ``@workflow`` turns an ``async def`` into a durable workflow.

A workflow takes a :class:`~cadenza.context.Context` and at most one input. Its input type
(the annotation of the second parameter) validates what callers send; its return
annotation shapes the stored result. Definitions are registered by (name, version): a run
is pinned to the version that started it, so deploy a new version beside the old one and
keep the old one registered until its runs have ended.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, get_type_hints, overload

from cadenza.errors import WorkflowDefinitionError, WorkflowNotFound

WorkflowFn = Callable[..., Awaitable[Any]]

_NO_INPUT = object()

#: How long a workflow's ended runs are kept: a duration, None (forever), or "deployment"
#: (the engine's ``retention``, 30 days unless the deployment says otherwise).
Retention = timedelta | None | Literal["deployment"]


@dataclass(frozen=True)
class WorkflowDefinition:
    name: str
    version: str
    fn: WorkflowFn
    takes_input: bool
    input_type: Any = None
    output_type: Any = None
    module: str | None = None  # "package.module:attribute", to import it in another process
    queue: str = "default"
    description: str = field(default="", compare=False)
    retention: Retention = "deployment"

    @property
    def key(self) -> tuple[str, str]:
        return (self.name, self.version)

    def __repr__(self) -> str:
        return f"<workflow {self.name} v{self.version}>"


_registry: dict[tuple[str, str], WorkflowDefinition] = {}


@overload
def workflow(fn: WorkflowFn, /) -> WorkflowDefinition: ...
@overload
def workflow(
    *,
    name: str | None = None,
    version: str = "1",
    queue: str = "default",
    retention: Retention = "deployment",
) -> Callable[[WorkflowFn], WorkflowDefinition]: ...


def workflow(
    fn: WorkflowFn | None = None,
    /,
    *,
    name: str | None = None,
    version: str = "1",
    queue: str = "default",
    retention: Retention = "deployment",
) -> WorkflowDefinition | Callable[[WorkflowFn], WorkflowDefinition]:
    """Declare a durable workflow.

    ``retention`` is how long its runs are kept once they end, before the engine prunes
    them with their history and artifacts: a ``timedelta``, ``None`` to keep them
    forever, or the deployment's default (``Engine(retention=...)``, 30 days).

    >>> @workflow(name="booking", version="2", retention=timedelta(days=90))
    ... async def booking(ctx: Context, trip: Trip) -> Receipt: ...
    """

    def decorate(f: WorkflowFn) -> WorkflowDefinition:
        definition = define(f, name=name, version=version, queue=queue, retention=retention)
        register(definition)
        return definition

    return decorate(fn) if fn is not None else decorate


def define(
    fn: WorkflowFn,
    *,
    name: str | None = None,
    version: str = "1",
    queue: str = "default",
    retention: Retention = "deployment",
) -> WorkflowDefinition:
    if not inspect.iscoroutinefunction(fn):
        raise WorkflowDefinitionError(
            f"workflow {getattr(fn, '__qualname__', fn)!r} must be an 'async def'"
        )
    params = [
        p
        for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if not 1 <= len(params) <= 2:
        raise WorkflowDefinitionError(
            f"workflow {fn.__qualname__!r} must take (ctx) or (ctx, input); it takes"
            f" {len(params)} positional parameters"
        )
    try:
        hints = get_type_hints(fn)
    except Exception:  # unresolvable forward references: validate nothing rather than fail
        hints = {}
    input_type = hints.get(params[1].name) if len(params) == 2 else None
    return WorkflowDefinition(
        name=name or fn.__name__,
        version=str(version),
        fn=fn,
        takes_input=len(params) == 2,
        input_type=input_type,
        output_type=hints.get("return"),
        module=f"{fn.__module__}:{fn.__qualname__}" if fn.__module__ != "__main__" else None,
        queue=queue,
        description=inspect.getdoc(fn) or "",
        retention=_checked_retention(retention, fn),
    )


def _checked_retention(retention: Any, fn: WorkflowFn) -> Retention:
    if retention is None or retention == "deployment":
        return retention  # type: ignore[no-any-return]
    if not isinstance(retention, timedelta) or retention < timedelta(0):
        raise WorkflowDefinitionError(
            f"workflow {fn.__qualname__!r}: retention={retention!r} is not a duration; give"
            " a timedelta (timedelta(days=90)), None to keep runs forever, or leave it out"
            " for the deployment's default"
        )
    return retention


def register(definition: WorkflowDefinition) -> None:
    existing = _registry.get(definition.key)
    if existing is not None and existing.fn is not definition.fn:
        same_place = existing.fn.__qualname__ == definition.fn.__qualname__ and (
            existing.fn.__module__ == definition.fn.__module__
        )
        if not same_place:  # re-importing one module is fine; two definitions are not
            raise WorkflowDefinitionError(
                f"workflow {definition.name!r} version {definition.version} is defined twice"
                f" ({existing.fn.__module__}.{existing.fn.__qualname__} and"
                f" {definition.fn.__module__}.{definition.fn.__qualname__}); give the new one"
                " another version"
            )
    _registry[definition.key] = definition


def registered() -> list[WorkflowDefinition]:
    return list(_registry.values())


def lookup(name: str, version: str | None = None) -> WorkflowDefinition | None:
    if version is not None:
        return _registry.get((name, version))
    versions = [d for (n, _), d in _registry.items() if n == name]
    return max(versions, key=lambda d: _version_key(d.version)) if versions else None


def _version_key(version: str) -> tuple[Any, ...]:
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in version.split("."))


def load(ref: str) -> WorkflowDefinition:
    """Import ``module:attribute`` (or ``path/to/file.py:attribute``) and return the workflow.

    The module is imported, which registers every workflow it defines.
    """
    module_name, sep, attribute = ref.partition(":")
    if not sep or not module_name or not attribute:
        raise WorkflowNotFound(
            f"{ref!r} is not a workflow reference; use MODULE:WORKFLOW, e.g. examples.saga:booking"
        )
    module = _import(module_name, ref)
    target: Any = module
    for part in attribute.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise WorkflowNotFound(
                f"{module_name} has no attribute {attribute!r}; workflows it defines:"
                f" {', '.join(_defined_in(module)) or 'none'}"
            )
    if not isinstance(target, WorkflowDefinition):
        raise WorkflowNotFound(
            f"{ref} is not a workflow (decorate an async def with @cadenza.workflow)"
        )
    definition: WorkflowDefinition = target
    if definition.module is None or definition.module.split(":")[0] != module_name:
        definition = _with_module(definition, ref)
    return definition


def _with_module(definition: WorkflowDefinition, ref: str) -> WorkflowDefinition:
    from dataclasses import replace

    updated = replace(definition, module=ref)
    _registry[updated.key] = updated
    return updated


def _import(module_name: str, ref: str) -> Any:
    if module_name.endswith(".py") or "/" in module_name:
        path = Path(module_name).resolve()
        if not path.exists():
            raise WorkflowNotFound(f"no file {module_name} (from {ref!r})")
        name = path.stem
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise WorkflowNotFound(f"cannot import {module_name}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise WorkflowNotFound(
            f"cannot import module {module_name!r} ({exc}); run from the folder that holds it"
            " or install its package"
        ) from exc


def _defined_in(module: Any) -> list[str]:
    return sorted(k for k, v in vars(module).items() if isinstance(v, WorkflowDefinition))
