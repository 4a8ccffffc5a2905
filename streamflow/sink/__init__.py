"""The sink worker: Kafka `user-events` -> PostgreSQL `raw.events`, exactly once."""
