"""The reference scenarios, shipped with cadenza: ``cadenza examples list``,
``cadenza examples run NAME`` from any folder.

Each scenario is an ordinary workflow module written against the public API only, so it
reads as a template for your own (``cadenza run cadenza.examples.trip_booking:book_trip``
runs one directly). The catalog (:mod:`cadenza.examples.catalog`) names them, gives their
default input and the rules they need while they run; those rules carry the prefix
``example:NAME:`` and match only the scenario's own events.
"""
