"""The executor (one activation), the engine (runs and callbacks) and the worker loop."""

from cadenza.engine.activation import ActivationResult
from cadenza.engine.engine import Engine
from cadenza.engine.worker import Worker, drive

__all__ = ["ActivationResult", "Engine", "Worker", "drive"]
