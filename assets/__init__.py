"""Dagster assets: Kafka topics and landing tables (external), micro-batch assets, checks."""

from assets.checks import CHECKS, checks_job, checks_schedule
from assets.dbt import streamflow_dbt
from assets.dlq_replay import dlq_replay_job
from assets.lineage import landing_specs, topic_specs
from assets.microbatch import MICROBATCH_ASSETS, microbatch_job
from assets.reprocess import reprocess_job
from assets.retention import retention_job, retention_schedule_for

__all__ = [
    "CHECKS",
    "MICROBATCH_ASSETS",
    "checks_job",
    "checks_schedule",
    "dlq_replay_job",
    "landing_specs",
    "microbatch_job",
    "reprocess_job",
    "retention_job",
    "retention_schedule_for",
    "streamflow_dbt",
    "topic_specs",
]
