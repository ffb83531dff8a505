"""Runnable example workflows: ``cadenza run examples.trip_booking:book_trip``."""
