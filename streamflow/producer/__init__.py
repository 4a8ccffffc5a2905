"""The producer worker: synthetic or replayed events, PII masked, onto `user-events`."""
