"""The reprocess job: recompute a range's notifications and windows from the Dagster UI
(launchpad form), publishing only what changed (streamflow.microbatch.reprocess)."""

import dagster as dg
from pydantic import Field, model_validator

from assets.microbatch import event_windows, notifications
from resources import KafkaResource, PostgresResource
from streamflow import topics
from streamflow.db import tables
from streamflow.microbatch import reprocess

JOB_NAME = "reprocess"


class ReprocessConfig(dg.Config):
    """One range: event time (occurred_from + occurred_to) or ingest sequence
    (ingest_seq_from + ingest_seq_to)."""

    occurred_from: str | None = Field(
        None, description="Event time (occurred_at) the range starts at, ISO-8601 "
                          "(2026-11-27T14:00:00Z; no offset: UTC); widened down to its 10 s "
                          "window. With occurred_to.")
    occurred_to: str | None = Field(
        None, description="Event time the range ends before (exclusive); widened up to a 10 s "
                          "window's end.")
    ingest_seq_from: int | None = Field(
        None, description=f"First {tables.events.fullname} ingest_seq of the range "
                          "(inclusive). With ingest_seq_to; not with the event-time bounds.")
    ingest_seq_to: int | None = Field(
        None, description=f"Last {tables.events.fullname} ingest_seq of the range "
                          "(inclusive). Rows the micro-batch has not processed yet are left to it.")
    dry_run: bool = Field(False, description="Report what would change, write and publish "
                                             "nothing.")

    @model_validator(mode="after")
    def _one_range(self) -> "ReprocessConfig":
        self.selected()  # refused before any work, with what is wrong
        return self

    def selected(self) -> reprocess.Range:
        return reprocess.parse_range(self.occurred_from, self.occurred_to,
                                     self.ingest_seq_from, self.ingest_seq_to)


@dg.op(description="Re-validates the range's landed events under the contract in force and "
                   "recomputes the windows they touch; publishes what changed (notifications, "
                   "dead letters, windows with revision + 1).")
def reprocess_range(context: dg.OpExecutionContext, config: ReprocessConfig,
                    postgres: PostgresResource, kafka: KafkaResource) -> dg.Output:
    publishers = reprocess.Publishers(
        notifications=lambda m: kafka.publish(topics.NOTIFICATIONS, m),
        windows=lambda m: kafka.publish(topics.ANALYTICS, m),
        dead_letters=kafka.publish_dead_letters)
    with postgres.connect() as conn:
        result = reprocess.run(conn, config.selected(), publishers, dry_run=config.dry_run)
    c = result.counts
    verb = "would change" if result.dry_run else "changed"
    context.log.info(
        f"{result.selected}, processed up to ingest_seq {result.processed_upto}: rechecked "
        f"{c.rechecked} rows; {verb} notifications +{c.added} -{c.removed} ~{c.corrected}, "
        f"{c.windows_changed} windows ({c.revisions_bumped} revisions bumped)")
    metadata = {
        "range": str(result.selected), "dry_run": result.dry_run,
        "processed_upto": dg.MetadataValue.int(result.processed_upto),
        "rows_rechecked": c.rechecked, "notifications_added": c.added,
        "notifications_added_former_rejects": c.added_former_rejects,
        "notifications_removed": c.removed, "notifications_corrected": c.corrected,
        "dead_lettered": c.dead_lettered, "windows_recomputed": c.windows_recomputed,
        "windows_changed": c.windows_changed, "revisions_bumped": c.revisions_bumped,
        "published_notifications": c.notifications_published,
        "published_windows": c.windows_published,
        "published_dead_letters": c.dead_letters_published,
        "chunks": result.chunks, "seconds_by_phase": result.phases.rounded(),
        "top_reasons": dg.MetadataValue.md(
            "\n".join(f"- {reason}: {n}" for reason, n in result.top_reasons) or "none"),
    }
    if not result.dry_run:
        # The assets' history shows the reprocess; downstream automation sees an update.
        if c.added or c.removed or c.corrected:
            context.log_event(dg.AssetMaterialization(
                notifications.key, description=f"reprocess: {result.selected}",
                metadata={k: metadata[k] for k in ("range", "notifications_added",
                                                   "notifications_removed",
                                                   "notifications_corrected")}))
        if c.windows_changed:
            context.log_event(dg.AssetMaterialization(
                event_windows.key, description=f"reprocess: {result.selected}",
                metadata={k: metadata[k] for k in ("range", "windows_changed",
                                                   "revisions_bumped", "published_windows")}))
    return dg.Output(None, metadata=metadata)


@dg.job(name=JOB_NAME, description="Reprocess a range: its notifications re-validated under "
                                   "the contract in force, its windows recomputed; only what "
                                   "changed is written and published again (revision + 1). "
                                   "Give occurred_from/occurred_to or "
                                   "ingest_seq_from/ingest_seq_to in the launchpad.")
def reprocess_job():
    reprocess_range()
