"""The embedded local stack: a real Kafka broker from its Maven jars and a real PostgreSQL."""
