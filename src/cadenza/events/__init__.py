"""Events in the EventBridge shape and the EventBridge pattern language that selects them."""

from cadenza.events.envelope import MAX_EVENT_BYTES, Event
from cadenza.events.patterns import EventPattern, compile_pattern, matches

__all__ = ["MAX_EVENT_BYTES", "Event", "EventPattern", "compile_pattern", "matches"]
