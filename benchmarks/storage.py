"""Storage over time (docs/ARCHITECTURE.md): what an event costs hot and archived, what
migrating a populated database to time partitions takes, and what the sink's look-up across
partitions costs. Each in its own database of a benchmark stack's PostgreSQL.

    python -m benchmarks.run --only storage      # bytes per event, hot and archived
    python -m benchmarks.run --only migration    # 1M rows of raw.events to partitions
    python -m benchmarks.run --only lookup       # the sink's look-up, 1 vs 8 partitions
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import sql

from benchmarks.archive_footprint import land_demo_events
from benchmarks.harness import Stack
from benchmarks.history import History, plan_lines
from streamflow.archive import archive_period
from streamflow.db import migrate, partitions
from streamflow.db.engine import connect_admin, libpq_url
from streamflow.db.landed_before import ANY_LANDED, LandedBefore
from streamflow.microbatch import notifications
from streamflow.supervisor import DEMO_INVALID_RATE

DAY = timedelta(days=1)
# The migration's history: spread over three days of ingested_at, as a database that ran a
# few days before upgrading would be.
MIGRATION_SPAN = timedelta(days=3)
# The sink's batches (its max.poll batch, docs/BENCHMARKS.md) and how many are timed.
LOOKUP_BATCH = 5_000
LOOKUP_BATCHES = 20
LOOKUP_DAYS = 8


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def fresh_database(st: Stack, name: str) -> str:
    """A new empty database beside the stack's own: its URL."""
    name = f"{name}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(libpq_url(st.database_url), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return st.database_url.replace("/streamflow?", f"/{name}?", 1)


_TREE_BYTES = ("SELECT coalesce(sum(pg_total_relation_size(relid)), 0)::bigint, "
               "coalesce(sum(pg_indexes_size(relid)), 0)::bigint FROM pg_partition_tree(%s)")
_ROWS = sql.SQL("SELECT count(*) FROM {}")


def _rows(conn: psycopg.Connection, spec: partitions.Partitioned) -> int:
    return conn.execute(_ROWS.format(sql.Identifier(*spec.name.split(".")))).fetchone()[0]


def _hot(conn: psycopg.Connection) -> dict[str, dict]:
    """Rows and bytes (heap, indexes, TOAST, every partition) of each partitioned table, and
    its indexes' share."""
    found = {}
    for spec in partitions.TABLES:
        total, indexes = conn.execute(_TREE_BYTES, (spec.name,)).fetchone()
        found[spec.name] = {"rows": _rows(conn, spec), "bytes": total, "index_bytes": indexes}
    return found


def bench_storage(st: Stack, events: int) -> dict:
    """``events`` demo events (1 % spoiled, as the demo stream) landed by the sink's
    LandingWriter, validated by the contract step (notifications, contract dead letters),
    then each table's bytes per event hot, and in the archive once its periods are archived."""
    url = fresh_database(st, "storage")
    migrate.upgrade(url, partition_interval=DAY)
    _log(f"storage: landing {events:,} demo events ...")
    started = time.perf_counter()
    json_bytes = land_demo_events(url, events, invalid_rate=DEMO_INVALID_RATE)
    landed_s = time.perf_counter() - started
    _log("storage: contract step (notifications) ...")
    with connect_admin(url) as conn:
        started = time.perf_counter()
        checked = notifications.run(conn, 2**62, lambda messages: None, lambda letters: [])
        contract_s = time.perf_counter() - started
        for spec in partitions.TABLES:  # as autovacuum would have: visibility maps, stats
            conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(
                sql.Identifier(*spec.name.split("."))))
        hot = _hot(conn)
        archived: dict[str, dict] = {}
        with tempfile.TemporaryDirectory(prefix="streamflow-archive-") as archive:
            for spec in partitions.TABLES:
                files = [archive_period(conn, spec, p.period, archive)
                         for p in partitions.partitions(conn, spec)
                         if conn.execute(_ROWS.format(sql.Identifier(
                             spec.table.schema, p.name))).fetchone()[0]]
                archived[spec.name] = {"rows": sum(f.rows for f in files),
                                       "bytes": sum(f.bytes for f in files),
                                       "periods": [f.period for f in files]}
    per_event = {name: {"hot_bytes_per_event": round(hot[name]["bytes"] / events, 1),
                        "hot_bytes_per_row": round(hot[name]["bytes"] / max(hot[name]["rows"], 1),
                                                   1),
                        "archive_bytes_per_event": round(archived[name]["bytes"] / events, 1),
                        "archive_bytes_per_row": round(
                            archived[name]["bytes"] / max(archived[name]["rows"], 1), 1)}
                 for name in hot}
    total_hot = sum(t["bytes"] for t in hot.values())
    total_archive = sum(t["bytes"] for t in archived.values())
    return {
        "events": events,
        "json_bytes_per_event": round(json_bytes / events, 1),
        "land_events_per_s": round(events / landed_s),
        "contract_step_s": round(contract_s, 1), "checked": checked.checked,
        "hot": hot, "archive": archived, "per_event": per_event,
        "hot_bytes_per_event": round(total_hot / events, 1),
        "archive_bytes_per_event": round(total_archive / events, 1),
        "hot_to_json": round(total_hot / json_bytes, 2),
        "archive_to_json": round(total_archive / json_bytes, 3),
        "note": "Demo events (the producer's generator, 1 % spoiled) decoded as the sink does "
                "and landed by LandingWriter in 10,000-event batches; the contract step run "
                "once over all (its Kafka publishing left out); VACUUM ANALYZE; hot = "
                "pg_total_relation_size summed over each table's partitions (heap, indexes, "
                "TOAST); archive = the Parquet files of every period with rows "
                "(streamflow.archive.archive_period). Per event: divided by events sent.",
    }


def table(document: dict) -> str:
    """The storage figures as a markdown table (docs/BENCHMARKS.md, "Storage over time")."""
    lines = ["| table | rows | hot B/row (indexes) | hot B/event | archive B/row | "
             "archive B/event |", "|---|---:|---:|---:|---:|---:|"]
    for name, figures in document["per_event"].items():
        hot = document["hot"][name]
        lines.append(f"| {name} | {hot['rows']:,} | {figures['hot_bytes_per_row']:,.0f} "
                     f"({hot['index_bytes'] / max(hot['rows'], 1):,.0f}) | "
                     f"{figures['hot_bytes_per_event']:,.0f} | "
                     f"{figures['archive_bytes_per_row']:,.0f} | "
                     f"{figures['archive_bytes_per_event']:,.1f} |")
    lines.append(f"| all three | | | **{document['hot_bytes_per_event']:,.0f}** | | "
                 f"**{document['archive_bytes_per_event']:,.1f}** |")
    return "\n".join(lines)


# -- the migration of a populated database ----------------------------------------------------

_IN_DEFAULT = sql.SQL("SELECT count(*) FROM {}")


def bench_migration(st: Stack, rows: int) -> dict:
    """A database at revision 0010 holding ``rows`` events over three days (with their
    notifications and ~10 % as many dead letters, as benchmarks.history loads them), then
    migration 0011 and the ``ensure`` that moves each day's rows into its partition, timed
    apart; every table's rows counted before and after."""
    url = fresh_database(st, "migration")
    migrate.upgrade(url, "0010")
    history = History(url, rows, datetime.now(UTC), span=MIGRATION_SPAN)
    _log(f"migration: {rows:,} rows at revision 0010 ...")
    loaded = history.grow(rows)
    with connect_admin(url) as conn:
        before = {spec.name: _rows(conn, spec) for spec in partitions.TABLES}
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    _log(f"migration: {before}; 0011 ...")
    started = time.perf_counter()
    migrate.upgrade(url, "0011")
    migration_s = time.perf_counter() - started
    _log(f"migration: 0011 in {migration_s:.1f} s; ensure (day partitions) ...")
    started = time.perf_counter()
    ensured = partitions.ensure_all(url, DAY)
    ensure_s = time.perf_counter() - started
    started = time.perf_counter()
    migrate.upgrade(url, partition_interval=DAY)  # at head now: only the ensure, a no-op
    again_s = time.perf_counter() - started
    with connect_admin(url) as conn:
        after = {spec.name: _rows(conn, spec) for spec in partitions.TABLES}
        left = {spec.name: partitions.default_rows(conn, spec) for spec in partitions.TABLES}
        counts = {spec.name: len(partitions.partitions(conn, spec))
                  for spec in partitions.TABLES}
    moved = sum(e.moved for e in ensured.values())
    total = sum(before.values())
    return {
        "rows": rows, "span_days": MIGRATION_SPAN.days, "history": loaded,
        "database_bytes": size, "rows_before": before, "rows_after": after,
        "counts_match": before == after, "left_in_default": left, "partitions": counts,
        "migration_0011_s": round(migration_s, 2),
        "ensure_s": round(ensure_s, 1), "moved_rows": moved,
        "ensure_rows_per_s": round(moved / ensure_s) if ensure_s else None,
        "total_s": round(migration_s + ensure_s, 1),
        "total_rows_per_s": round(total / (migration_s + ensure_s)),
        "upgrade_again_s": round(again_s, 2),
        "note": f"{rows:,} raw.events rows spread over {MIGRATION_SPAN.days} days of "
                "ingested_at, their notifications and ~10 % as many dead letters "
                "(benchmarks.history's COPY, VACUUM ANALYZE, CHECKPOINT), at revision 0010; "
                "then migrate.upgrade(url, '0011') (no ensure below head), then "
                "partitions.ensure_all(url, 1 day) (each period's rows moved out of the "
                "default partition in the transaction creating its partition); then "
                "migrate.upgrade to head again (a no-op ensure). rows/s: all three tables' rows.",
    }


# -- the sink's look-up across partitions -----------------------------------------------------

# A copy of a day's rows as an earlier day's: new time-ordered ids of that day, as the
# producer would have made them then.
_SHIFT_DAY = sql.SQL(
    "INSERT INTO raw.events ({cols}) SELECT uuidv7(-make_interval(days => %(n)s)), {rest}, "
    "ingested_at - make_interval(days => %(n)s) FROM {source}")


# New event ids: as the producer makes them (UUIDv7, time-ordered: beyond every key an
# earlier day's partition holds) or as random as a replayed file's (UUIDv5 of its lines).
_NEW_IDS = {
    "time_ordered": "SELECT array_agg(uuidv7()) FROM generate_series(1, %s)",
    "random": "SELECT array_agg(gen_random_uuid()) FROM generate_series(1, %s)",
}


# How the look-up is made: the sink's (streamflow.db.landed_before: other partitions only,
# ids above their newest skipped), and every partition probed for every id, as it was before.
_LOOKUPS = ("sink", "every_partition")


def _lookup_us(url: str, batches: int) -> dict[str, dict]:
    """µs per event of the look-up alone, for batches of new events (found nowhere) by kind of
    id and by how it is made, and the plan of every-partition look-up (EXPLAIN ANALYZE). The
    ids go as the sink's text, lower-case."""
    found = {}
    with connect_admin(url) as conn:
        landed = LandedBefore()
        landed.refresh(conn)
        lookups = {"sink": lambda ids: landed.any(conn, ids),
                   "every_partition": lambda ids: conn.execute(
                       ANY_LANDED, (ids,)).fetchone()[0]}
        for kind, query in _NEW_IDS.items():
            found[kind] = {}
            for how in _LOOKUPS:
                timings = []
                for _ in range(batches):
                    ids = [str(i) for i in conn.execute(query, (LOOKUP_BATCH,)).fetchone()[0]]
                    started = time.perf_counter()
                    assert lookups[how](ids) is False
                    timings.append((time.perf_counter() - started) / LOOKUP_BATCH * 1e6)
                found[kind][how] = {
                    "us_per_event_median": round(statistics.median(timings), 2),
                    "ms_per_batch_median": round(statistics.median(timings) * LOOKUP_BATCH
                                                 / 1000, 2)}
            ids = [str(i) for i in conn.execute(query, (LOOKUP_BATCH,)).fetchone()[0]]
            (doc,) = conn.execute(sql.SQL("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {}").format(
                ANY_LANDED), (ids,)).fetchone()
            found[kind]["every_partition"] |= {
                "server_ms": round(doc[0]["Execution Time"], 2),
                "planning_ms": round(doc[0]["Planning Time"], 2),
                "plan": plan_lines(doc[0]["Plan"])}
    return found


def _landing(url: str, first_offset: int, seed: int) -> dict:
    """LOOKUP_BATCHES landings of LOOKUP_BATCH new demo events, as the sink lands them."""
    timed: list[float] = []
    land_demo_events(url, LOOKUP_BATCH * LOOKUP_BATCHES, seed=seed, first_offset=first_offset,
                     batch=LOOKUP_BATCH, timed=timed)
    lookup = _lookup_us(url, LOOKUP_BATCHES)
    with connect_admin(url) as conn:
        count = len(partitions.partitions(conn, partitions.EVENTS))
        rows = _rows(conn, partitions.EVENTS)
    return {"partitions": count, "rows": rows,
            "land_events_per_s": round(LOOKUP_BATCH / statistics.median(timed)),
            "land_ms_per_batch_median": round(statistics.median(timed) * 1000, 1),
            "lookup": lookup}


def bench_lookup(st: Stack, rows_per_day: int) -> dict:
    """The sink's landing rate and its look-up (``_ANY_LANDED``) with one filled daily
    partition of ``rows_per_day`` demo events, then with LOOKUP_DAYS of them."""
    url = fresh_database(st, "lookup")
    migrate.upgrade(url, partition_interval=DAY)
    _log(f"lookup: {rows_per_day:,} demo events in today's partition ...")
    land_demo_events(url, rows_per_day)
    one = _landing(url, rows_per_day, seed=11)
    with connect_admin(url) as conn:
        today = partitions.Period.holding(datetime.now(UTC), DAY)
        source = sql.Identifier("raw", partitions.EVENTS.partition_name(today))
        wanted = [partitions.Period.holding(datetime.now(UTC) - n * DAY, DAY)
                  for n in range(1, LOOKUP_DAYS)]
        partitions.ensure(conn, partitions.EVENTS, DAY, datetime.now(UTC), periods_wanted=wanted)
        # Every column but ingest_seq (its sequence numbers the copies), a new event_id and
        # the ingested_at of an earlier day.
        names = [c.name for c in partitions.EVENTS.table.columns if c.name != "ingest_seq"]
        statement = _SHIFT_DAY.format(
            cols=sql.SQL(", ").join(map(sql.Identifier, names)),
            rest=sql.SQL(", ").join(map(sql.Identifier, names[1:-1])), source=source)
        assert names[0] == "event_id" and names[-1] == "ingested_at", names
        for n in range(1, LOOKUP_DAYS):
            started = time.perf_counter()
            conn.execute(statement, {"n": n})
            _log(f"lookup: day -{n} copied in {time.perf_counter() - started:.0f} s")
        conn.execute("VACUUM (ANALYZE) raw.events")
    many = _landing(url, rows_per_day + LOOKUP_BATCH * LOOKUP_BATCHES, seed=12)
    return {
        "batch": LOOKUP_BATCH, "batches": LOOKUP_BATCHES, "rows_per_day": rows_per_day,
        "one_day": one, "days": LOOKUP_DAYS, "many_days": many,
        "lookup_us_per_event_added": {
            f"{kind} {how}": round(many["lookup"][kind][how]["us_per_event_median"]
                                   - one["lookup"][kind][how]["us_per_event_median"], 2)
            for kind in _NEW_IDS for how in _LOOKUPS},
        "note": f"A fresh database with day partitions; {rows_per_day:,} demo events landed "
                "today (LandingWriter), then timed: 20 landings of 5,000 new demo events "
                "(LandingWriter.land, median) and 20 look-ups alone of each kind (the sink's "
                "look-up, streamflow.db.landed_before, and the same look-up in every partition "
                "as it was before, for 5,000 new event ids, found in no partition: time-ordered "
                "UUIDv7 as the producer makes them, or random as a replayed file's). Then "
                f"{LOOKUP_DAYS - 1} earlier days filled with copies of today's rows (new "
                "UUIDv7 ids of their day), VACUUM ANALYZE, timed again. Partitions counted "
                "include the empty ones made ahead and the default.",
    }


def refresh_docs(document: dict, results: str) -> None:
    """docs/BENCHMARKS.md's "Storage over time" tables, from the groups this run measured."""
    from benchmarks.report import DOCS, replace_between

    if "storage" in document:
        st = document["storage"]
        replace_between(DOCS / "BENCHMARKS.md", "storage", (
            f"`{results}`: {st['events']:,} demo events, {st['json_bytes_per_event']:,.0f} B "
            f"of JSON each; hot {st['hot_to_json']:.2f}× their JSON, archived "
            f"{st['archive_to_json']:.3f}×.\n\n" + table(st)))
    if "migration" in document:
        m = document["migration"]
        replace_between(DOCS / "BENCHMARKS.md", "migration", (
            f"`{results}`: {sum(m['rows_before'].values()):,} rows "
            f"({', '.join(f'{n} {c:,}' for n, c in m['rows_before'].items())}; "
            f"{m['database_bytes'] / 2**30:.1f} GiB) over {m['span_days']} days, counts equal "
            f"after: {m['counts_match']}, default partitions left empty: "
            f"{not any(m['left_in_default'].values())}.\n\n"
            "| step | seconds | rows/s |\n|---|---:|---:|\n"
            f"| migration 0011 (tables become default partitions) | {m['migration_0011_s']:.2f} "
            "| - |\n"
            f"| `ensure`: {m['moved_rows']:,} rows moved into day partitions | "
            f"{m['ensure_s']:.1f} | {m['ensure_rows_per_s']:,} |\n"
            f"| both | {m['total_s']:.1f} | {m['total_rows_per_s']:,} |"))
    if "dagster_storage" in document:
        from benchmarks.dagster_storage import table as dagster_table

        ds = document["dagster_storage"]
        plan = ds["plan"]
        replace_between(DOCS / "BENCHMARKS.md", "dagster-storage", (
            f"`{results}`: {plan['cycles']} cycles of {plan['runs_per_cycle']} stand-in "
            f"micro-batch runs and {plan['ticks_per_cycle']} sensor reports ({plan['topics']} "
            "observations, a check evaluation and a reported materialization each), everything "
            "older than the previous cycle purged after each.\n\n" + dagster_table(ds)))
    if "lookup" in document:
        lk = document["lookup"]
        one, many = lk["one_day"], lk["many_days"]
        replace_between(DOCS / "BENCHMARKS.md", "lookup", (
            f"`{results}`: batches of {lk['batch']:,} new events, medians of {lk['batches']}."
            "\n\n| raw.events | look-up µs/event (ms/batch), time-ordered ids: the sink's | "
            "every partition | random ids: the sink's | every partition | landing ms/batch | "
            "landing events/s |\n|---|---:|---:|---:|---:|---:|---:|\n" + "\n".join(
                f"| {x['rows']:,} rows, {label} ({x['partitions']} partitions + default) | "
                + " | ".join(f"{x['lookup'][k][how]['us_per_event_median']:.2f} "
                             f"({x['lookup'][k][how]['ms_per_batch_median']:.1f})"
                             for k in ("time_ordered", "random") for how in _LOOKUPS)
                + f" | {x['land_ms_per_batch_median']:.1f} | {x['land_events_per_s']:,} |"
                for label, x in (("1 day filled", one), (f"{lk['days']} days filled", many)))))
