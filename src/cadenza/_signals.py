"""The signals an operation raises to stop the workflow function where it stands.

They derive from ``BaseException`` so that ``except Exception`` in workflow code cannot
swallow them. Operations raise them and the engine catches them; this module imports
nothing of either, so both can depend on it.
"""

from __future__ import annotations

from typing import Any

from cadenza.errors import CadenzaError, NonDeterminismError

__all__ = ["Abort", "ContinueAsNew", "Fatal", "ReplayEnd", "Suspend"]


class Suspend(BaseException):
    """An operation cannot finish in this activation; the run will be woken later."""


class ReplayEnd(Suspend):
    """A replay check reached an operation the journal has no outcome for: stop there."""


class Abort(BaseException):
    """The store refused a checkpoint; stop the activation without writing more."""

    def __init__(self, cause: CadenzaError) -> None:
        super().__init__(str(cause))
        self.cause = cause


class Fatal(BaseException):
    """Replay found the code and the journal disagreeing; the run must fail."""

    def __init__(self, cause: NonDeterminismError) -> None:
        super().__init__(str(cause))
        self.cause = cause


class ContinueAsNew(BaseException):
    """Raised by ``ctx.continue_as_new`` and caught by the activation, which ends the run.
    A ``BaseException``, so ``except Exception`` in workflow code cannot swallow it."""

    def __init__(self, input: Any) -> None:
        super().__init__("continue as new")
        self.input = input
