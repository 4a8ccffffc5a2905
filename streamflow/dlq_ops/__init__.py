"""Working the dead-letter queue: select, inspect, count and replay rows of raw.dead_letters.

Used by `streamflow dlq ...` and by the Dagster replay job, so both behave the same.
"""
