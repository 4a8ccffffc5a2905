"""The dead-letter replay job: `streamflow dlq replay` from the Dagster UI (launchpad form)."""

import dagster as dg
from pydantic import Field

from resources import KafkaResource, PostgresResource
from streamflow import topics
from streamflow.dlq import Stage
from streamflow.dlq_ops import display
from streamflow.dlq_ops.replay import NOTHING_TO_REPLAY, Progress, replay
from streamflow.dlq_ops.selection import Selection, StoredDeadLetter, parse_duration
from streamflow.settings import load_settings

JOB_NAME = "dlq_replay"
# The code location `streamflow up` serves (`-m streamflow_defs.definitions`).
DEFAULT_LOCATION = "streamflow_defs.definitions"
# Letters shown in the run's metadata table.
SHOWN = 50


class ReplayConfig(dg.Config):
    """The same filters and switches as `streamflow dlq replay`."""

    stage: Stage | None = Field(None, description="ingest or contract (empty: both).")
    reason: str | None = Field(None, description="A reason code, or text in the detail.")
    since: str | None = Field(None, description="Only the last DURATION: 90s, 15m, 2h, 7d.")
    source: str | None = Field(None, description="Only dead letters read from this topic.")
    limit: int | None = Field(None, description="At most N dead letters, oldest first.")
    ids: list[int] = Field(default_factory=list, description="These dead letter ids only.")
    dry_run: bool = Field(True, description="Show what would be sent; set false to send.")
    rate: float | None = Field(None, description="At most R messages per second.")
    force: bool = Field(False, description="Also send dead letters replayed before.")
    topic: str = Field(topics.USER_EVENTS, description="Topic to send to: user-events, or "
                                                       "one STREAMFLOW_REPLAY_TOPICS allows.")


@dg.op(description="Re-publishes the selected dead letters' original bytes (or, dry run, "
                   "lists them); marks them replayed.")
def replay_dead_letters(context: dg.OpExecutionContext, config: ReplayConfig,
                        postgres: PostgresResource, kafka: KafkaResource) -> dg.Output:
    selection = Selection(stage=config.stage, reason=config.reason,
                          since=parse_duration(config.since) if config.since else None,
                          source_topic=config.source,
                          limit=config.limit, ids=tuple(config.ids))
    first: list[StoredDeadLetter] = []  # the table below: the letters themselves stream

    def on_chunk(progress: Progress, letters: list[StoredDeadLetter]) -> None:
        first.extend(letters[:SHOWN - len(first)])
        verb = "listed" if config.dry_run else "sent"
        context.log.info(f"chunk {progress.chunk}/{progress.chunks}: {verb} "
                         f"{progress.letters}/{progress.total}")

    with postgres.connect() as conn:
        result = replay(conn, None if config.dry_run else kafka.producer(), selection,
                        topic=config.topic, allowed=load_settings().replay_topic_names,
                        dry_run=config.dry_run, rate=config.rate, force=config.force,
                        on_chunk=on_chunk)
    for gap in result.gaps:
        context.log.info(f"dead letter {gap.id} skipped: {NOTHING_TO_REPLAY} ({gap.reason})")
    verb = "would send" if result.dry_run else "sent"
    context.log.info(f"{verb} {result.selected if result.dry_run else result.sent} dead "
                     f"letters to {config.topic}")
    rows = ["| id | stage | reason | payload | replayed before |", "|---|---|---|---|---:|"]
    rows += [f"| {d.id} | {d.stage} | {d.reason_code} | "
             f"`{display.preview(d.payload, 50).replace('|', '¦').replace('`', '´')}` | "
             f"{d.replay_count} |" for d in first]
    return dg.Output(None, metadata={
        "dry_run": result.dry_run, "selected": result.selected, "sent": result.sent,
        "previously_replayed": result.previously_replayed, "chunks": result.chunks,
        "skipped": result.skipped,
        "seconds": dg.MetadataValue.float(round(result.seconds, 2)),
        f"selection (first {SHOWN})": dg.MetadataValue.md("\n".join(rows)),
    })


@dg.job(name=JOB_NAME, description="Replay dead letters to user-events, or a topic "
                                   "STREAMFLOW_REPLAY_TOPICS allows (dry run by default: "
                                   "set dry_run: false in the launchpad to send).")
def dlq_replay_job():
    replay_dead_letters()


def job_link(context: dg.AssetExecutionContext) -> dg.MetadataValue:
    """A link to the replay job in the run's own code location."""
    origin = context.run.remote_job_origin
    location = origin.location_name if origin is not None else DEFAULT_LOCATION
    return dg.MetadataValue.job(JOB_NAME, location)
