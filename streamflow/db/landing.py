"""The sink's write path: one PostgreSQL transaction per batch holding its rows, its dead
letters and the consumed offsets, so a crash anywhere replays a batch but never loses or
duplicates one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import orjson
import psycopg
from psycopg import sql

from streamflow.db.compose import columns, statement
from streamflow.db.dead_letters import insert_dead_letters
from streamflow.db.engine import libpq_url
from streamflow.db.landed_before import LandedBefore
from streamflow.db.tables import (
    INGEST_SEQ_LOCK,
    LANDING_COLUMNS,
    LandingRow,
    consumer_offsets,
    dead_letters,
    events,
    events_ingest_seq,
    notifications,
)
from streamflow.dlq import DeadLetter, Reason, Stage, Unpublished, stored_headers
from streamflow.errors import LandingFenced
from streamflow.topics import UNKNOWN_TOPIC_ID

log = logging.getLogger("streamflow.sink")

# Where a landed row came from: a row from another message with the same event_id is a replay.
_WHERE_FROM = ("kafka_topic", "kafka_topic_id", "kafka_partition", "kafka_offset")

# Transient failures: the server went away or refused the connection. Everything else raised
# while landing is about the data and is isolated row by row.
CONNECTION_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError)

# Seconds a landing transaction may wait on its own sink between two statements before
# PostgreSQL ends the session, releasing the ingest lock and the partitions' offset rows: a
# sink paused inside a landing (a GC pause, SIGSTOP) would hold up every sink of the group
# until it resumed. A landing's own gaps are milliseconds; 5 s is under the 10 s session
# timeout, so the lock is free by the time the group moves the paused sink's partitions. The
# sink, resumed, lands again as after any lost connection (and is fenced if they moved).
IDLE_IN_TRANSACTION_S = 5
# A sink paused in the middle of sending a COPY is out of reach of that timeout (and of
# statement_timeout: PostgreSQL does not cancel a COPY waiting for its client's data), yet it
# holds the ingest lock. So a landing that waits LOCK_PATIENCE_S for the lock looks at its
# holder: a sink session that has waited on its own client mid-statement for STUCK_SINK_S
# (a batch's COPY takes well under a second) is terminated, and the landing goes on. The
# stuck sink, resumed, lands again as after a lost connection (fenced if its partitions moved).
LOCK_PATIENCE_S = 5
STUCK_SINK_S = 15.0

SINK_SESSION_PREFIX = "streamflow-sink:"  # the application_name of every sink's session
_TRY_INGEST_LOCK = "SELECT pg_try_advisory_xact_lock(%s)"
_WAIT_INGEST_LOCK = "SELECT set_config('lock_timeout', %s, true), pg_advisory_xact_lock(%s)"
# The sink sessions holding the ingest lock (an advisory lock of one bigint key: its high and
# low halves) that have waited for their own client in the middle of a statement for long.
_STUCK_HOLDER = (
    "SELECT a.pid, a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
    "AND ((l.classid::bigint << 32) | l.objid::bigint) = %(lock)s "
    "AND a.application_name LIKE %(sessions)s AND a.state = 'active' "
    "AND a.wait_event = 'ClientRead' "
    "AND a.state_change < clock_timestamp() - make_interval(secs => %(stuck)s)")
_COLS = columns(events, LANDING_COLUMNS)
_CREATE_LANDING = statement(
    "CREATE TEMP TABLE IF NOT EXISTS landing ON COMMIT DELETE ROWS AS "
    "SELECT {cols} FROM {e} WITH NO DATA", e=events, cols=_COLS)
_COPY_LANDING = statement("COPY landing ({cols}) FROM STDIN", cols=_COLS)
_COPY_EVENTS = statement("COPY {e} ({cols}) FROM STDIN", e=events, cols=_COLS)
# Of two copies of an event in one batch (a producer's retry), the first lands: chosen here,
# since the anti-join below may emit rows in any order (a hash anti-join that hashes the
# batch emits them in hash order, and ON CONFLICT then keeps whichever came first).
_FIRST_COPIES = statement(
    "(SELECT DISTINCT ON ({e.event_id}) * FROM landing "
    "ORDER BY {e.event_id}, {e.kafka_topic}, {e.kafka_partition}, {e.kafka_offset})", e=events)
_INSERT_EVENTS = statement(
    "INSERT INTO {e} ({cols}) SELECT {cols} FROM {first} l "
    "WHERE NOT EXISTS (SELECT 1 FROM {e} x WHERE x.{e.event_id} = l.{e.event_id}) "
    "ON CONFLICT DO NOTHING", e=events, cols=_COLS, first=_FIRST_COPIES)
# An event the contract rejected that arrives again (a replay: `streamflow dlq replay`) gets
# a new ingest_seq, so the next micro-batch checks it again; once validated it never does.
_RECHECK_CONTRACT_REJECTS = statement(
    "UPDATE {e} e SET ({cols}) = ({landed}), "
    "{e.ingest_seq} = nextval({seq}::regclass), {e.ingested_at} = now() FROM {first} l "
    "WHERE e.{e.event_id} = l.{e.event_id} "
    "AND ({where}) IS DISTINCT FROM ({where_landed}) "
    "AND EXISTS (SELECT 1 FROM {d} d "
    "            WHERE d.{d.stage} = {contract} AND lower(d.{d.event_id}) = e.{e.event_id}::text) "
    "AND NOT EXISTS (SELECT 1 FROM {n} n WHERE n.{n.event_id} = e.{e.event_id})",
    e=events, d=dead_letters, n=notifications, first=_FIRST_COPIES,
    # Constants as literals: a generic plan could not use the partial index on a parameter.
    seq=f"{events_ingest_seq.schema}.{events_ingest_seq.name}",
    contract=Stage.CONTRACT.value,
    cols=columns(events, LANDING_COLUMNS[1:]),
    landed=columns(events, LANDING_COLUMNS[1:], prefix="l"),
    where=columns(events, _WHERE_FROM, prefix="e"),
    where_landed=columns(events, _WHERE_FROM, prefix="l"))
# The zombie fence (docs/ARCHITECTURE.md, "Several sinks and the zombie fence"). A sink
# assigned a partition claims it: its epoch goes up by one (the row is made at the first
# claim), and where it resumes is read in the same statement, under the row lock, so the
# previous holder's landing either stored its offsets first (and is seen) or is fenced.
_CLAIM = statement(
    "INSERT INTO {o} ({o.group_id}, {o.topic}, {o.kafka_partition}, {o.owner_epoch}) "
    "VALUES (%s, %s, %s, 1) "
    "ON CONFLICT ({o.group_id}, {o.topic}, {o.kafka_partition}) DO UPDATE SET "
    "{o.owner_epoch} = {o}.{o.owner_epoch} + 1 "
    "RETURNING {o.next_offset}, {o.topic_id}::text, {o.owner_epoch}", o=consumer_offsets)
# A landing stores a partition's next offset only under the epoch its sink claimed: no row
# updated means another sink claimed it since, and the landing rolls back. Besides, only
# forward: GREATEST keeps the stored offset should an owner ever offer an older one. Offsets
# of another (known) topic id belong to a deleted incarnation: the new one's replace them.
# NULL (or nil) on either side: not known, the offsets are trusted.
_STORE_OFFSET = statement(
    "UPDATE {o} SET {o.next_offset} = CASE "
    "    WHEN NULLIF({o.topic_id}, {unknown}) <> %(topic_id)s::uuid THEN %(offset)s "
    "    ELSE GREATEST({o.next_offset}, %(offset)s) END, "
    "{o.topic_id} = COALESCE(%(topic_id)s::uuid, {o.topic_id}), {o.updated_at} = now() "
    "WHERE {o.group_id} = %(group)s AND {o.topic} = %(topic)s "
    "AND {o.kafka_partition} = %(partition)s AND {o.owner_epoch} = %(epoch)s "
    "RETURNING {o.kafka_partition}", o=consumer_offsets, unknown=UNKNOWN_TOPIC_ID)
_SELECT_OFFSETS = statement(
    "SELECT {o.kafka_partition}, {o.next_offset}, {o.topic_id}::text FROM {o} "
    "WHERE {o.group_id} = %s AND {o.topic} = %s AND {o.next_offset} IS NOT NULL",
    o=consumer_offsets)


@dataclass
class Landing:
    """What one landing transaction writes: rows, dead letters, and the offsets stored with
    them (the sink's Batch carries one)."""

    rows: list[tuple] = field(default_factory=list)  # LandingRow values (sink.decode)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    # (topic, partition) -> next offset to read, i.e. last offset in the batch + 1
    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    # topic -> id of the incarnation the messages came from, stored with the offsets
    topic_ids: dict[str, str] = field(default_factory=dict)


class StoredOffset(NamedTuple):
    """Where a partition resumes, and which incarnation of its topic that offset is in."""

    next_offset: int
    topic_id: str | None  # None: stored before topic ids were recorded


@dataclass(frozen=True)
class LandResult:
    inserted: int        # new rows in raw.events (replays and duplicates are not counted)
    dead_lettered: int   # dead letters of this batch, decode and database rejects together
    db_rejected: int
    rechecked: int = 0   # contract rejects that arrived again, queued for a new check
    quarantined: int = 0  # dead letters whose topic copy Kafka refused for good


def application_name(group_id: str) -> str:
    """The PostgreSQL application_name of a sink's session (pg_stat_activity shows it)."""
    return f"{SINK_SESSION_PREFIX}{group_id}"


class LandingWriter:
    """Owns one psycopg connection; connects in ``setup()``, never in ``__init__``."""

    def __init__(self, database_url: str, group_id: str, *, synchronous_commit: bool = False,
                 stuck_sink_s: float = STUCK_SINK_S):
        self.database_url = database_url
        self.group_id = group_id
        self.synchronous_commit = synchronous_commit
        self.stuck_sink_s = stuck_sink_s
        self._conn: psycopg.Connection | None = None
        # (topic, partition) -> the owner epoch this writer claimed it under (``claim``).
        self._epochs: dict[tuple[str, int], int] = {}
        self.landed_before = LandedBefore()

    def setup(self) -> None:
        conn = psycopg.connect(libpq_url(self.database_url), connect_timeout=5,
                               application_name=application_name(self.group_id))
        if not self.synchronous_commit:
            # Safe here: a commit lost in a crash loses its offsets with it, so the batch is
            # simply consumed again (docs/ARCHITECTURE.md). Measured in `make bench`.
            conn.execute("SET synchronous_commit = off")
        conn.execute("SELECT set_config('idle_in_transaction_session_timeout', %s, false)",
                     (f"{IDLE_IN_TRANSACTION_S}s",))
        conn.execute(_CREATE_LANDING)
        conn.commit()
        self._conn = conn

    @property
    def conn(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self.setup()
        assert self._conn is not None
        return self._conn

    def reset(self) -> None:
        """Drop a broken connection; the next use reconnects."""
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    close = reset

    def stored_offsets(self, topic: str) -> dict[int, StoredOffset]:
        """Partition -> next offset, as committed with the rows (the truth for resuming)."""
        with self.conn.transaction():
            rows = self.conn.execute(_SELECT_OFFSETS, (self.group_id, topic)).fetchall()
        return {partition: StoredOffset(offset, topic_id) for partition, offset, topic_id in rows}

    def claim(self, topic: str, partitions: Sequence[int]) -> dict[int, StoredOffset]:
        """Claim ``partitions``, just assigned to this sink: from now on only this writer
        stores their offsets (a landing of their previous holder is fenced). Returns where
        each one resumes (a partition nothing of has landed yet is left out), read after any
        landing of the previous holder that stored offsets first has committed."""
        stored: dict[int, StoredOffset] = {}
        epochs: dict[tuple[str, int], int] = {}
        with self.conn.transaction():
            for partition in sorted(partitions):  # every locker in one order: no deadlock
                offset, topic_id, epoch = self.conn.execute(
                    _CLAIM, (self.group_id, topic, partition)).fetchone()
                epochs[(topic, partition)] = epoch
                if offset is not None:
                    stored[partition] = StoredOffset(offset, topic_id)
        self._epochs.update(epochs)  # once committed: an epoch never stored is nobody's
        return stored

    def release(self, topic: str, partitions: Iterable[int]) -> None:
        """Forget the claims of ``partitions`` (revoked or lost): nothing of them lands."""
        for partition in partitions:
            self._epochs.pop((topic, partition), None)

    def restart_offsets(self, topic: str, partitions: Sequence[int], topic_id: str) -> None:
        """Store offset 0 of a new incarnation ``topic_id`` for ``partitions`` (replacing the
        deleted one's), so the re-creation is acted on, and reported, once. Partitions
        another sink claimed since are its to restart: left alone."""
        with self.conn.transaction():
            self._store_offsets(topic, {partition: 0 for partition in partitions},
                                _known(topic_id))

    def land(self, batch: Landing,
             publish: Callable[[list[DeadLetter]], list[Unpublished]]) -> LandResult:
        """Land ``batch`` in one transaction. The order of the steps is the guarantee:

        1. Publish the batch's dead letters to the dead-letter topic and flush, before the
           commit (the topic is at-least-once, the table exactly-once) and before the lock
           below: a slow broker must not hold up every sink's landing. A copy Kafka refuses
           for good (``dlq.Unpublished``) is quarantined in step 5, never a reason to stop.
        2. Take the ingest-sequence lock: rows get their ``ingest_seq`` in commit order.
        3. Fast path: unless one of the events landed in an earlier time partition
           (``db.landed_before``), COPY the rows straight into raw.events (in a savepoint):
           the partition it writes to refuses a duplicate with its own unique index.
        4. If that fails (a replayed batch, a duplicate event_id, a row PostgreSQL refuses),
           roll the savepoint back and take the safe path: COPY into the session's temp
           table, isolating refused rows by splitting the copy (each half in a savepoint),
           then ``INSERT`` the first copy (lowest offset) of each event whose event_id is in
           no partition yet; an event the contract rejected that arrives again (a replay)
           gets a new ingest_seq, to be checked again.
           A refused row becomes a ``db_rejected`` dead letter: the transaction is rolled
           back (releasing the lock), the dead letter published as in step 1, and the batch
           landed again without that row.
        5. Insert the dead letters, skipping source messages already stored, and quarantine
           those whose copy the topic refused.
        6. Store the next offset of every partition in the batch, with its topic's id, under
           this sink's claim (``claim``): a partition another sink has claimed since (this
           one was paused past its session timeout) raises ``LandingFenced``, and the
           whole landing rolls back (docs/ARCHITECTURE.md, the zombie fence).
        7. Commit. Only then may the caller commit offsets to Kafka (for lag tooling only).

        The fast path skips a second pass over the rows (~25% more throughput, measured in
        `make bench`); one row per event_id either way: the lock makes the look-up and the
        insert one step.
        """
        # Step 1
        unpublished = publish(batch.dead_letters) if batch.dead_letters else []
        self.landed_before.refresh(self.conn)
        refused: list[DeadLetter] = []
        while True:
            try:
                return self._land_locked(batch, refused, unpublished)
            except _RowsRefused as exc:
                unpublished += publish(exc.letters)
                refused += exc.letters
                gone = {_source(d) for d in exc.letters}
                batch = replace(batch, rows=[r for r in batch.rows if _where(r) not in gone])

    def _land_locked(self, batch: Landing, refused: list[DeadLetter],
                     unpublished: list[Unpublished]) -> LandResult:
        """Steps 2-7 of ``land``, with the rows PostgreSQL refused already taken out (and
        their dead letters, ``refused``, already published; ``unpublished``: those whose
        copy Kafka refused)."""
        conn = self.conn
        with conn.transaction():
            # Step 2
            self._take_ingest_lock(conn)
            rechecked = 0
            try:
                # Step 3
                if self.landed_before.any(conn, [row[0] for row in batch.rows]):
                    raise _AlreadyLanded
                self._copy(conn, _COPY_EVENTS, batch.rows)
                inserted = len(batch.rows)
            except CONNECTION_ERRORS:
                raise
            except psycopg.Error:
                # Step 4
                rejected = self._copy_isolating_rejects(conn, batch.rows)
                if rejected:
                    raise _RowsRefused(rejected) from None  # rolls back, lock released
                inserted = conn.execute(_INSERT_EVENTS).rowcount
                rechecked = conn.execute(_RECHECK_CONTRACT_REJECTS).rowcount
            # Step 5
            letters = batch.dead_letters + refused
            insert_dead_letters(conn, letters, unpublished)
            # Step 6
            fenced: list[tuple[str, int]] = []
            for topic in sorted({topic for topic, _ in batch.next_offsets}):
                offsets = {p: o for (t, p), o in batch.next_offsets.items() if t == topic}
                fenced += [(topic, p) for p in self._store_offsets(
                    topic, offsets, _known(batch.topic_ids.get(topic)))]
            if fenced:
                raise LandingFenced(fenced)  # rolls the whole landing back
        # Step 7: leaving the `with` block committed the transaction.
        return LandResult(inserted, len(letters), len(refused), rechecked, len(unpublished))

    def _take_ingest_lock(self, conn: psycopg.Connection) -> None:
        """The ingest-sequence lock; a sink stuck mid-COPY holding it is terminated
        (``STUCK_SINK_S``)."""
        if conn.execute(_TRY_INGEST_LOCK, (INGEST_SEQ_LOCK,)).fetchone()[0]:
            return
        while True:
            try:
                with conn.transaction():  # a savepoint: a lock timeout leaves the landing usable
                    conn.execute(_WAIT_INGEST_LOCK, (f"{LOCK_PATIENCE_S}s", INGEST_SEQ_LOCK))
                conn.execute("SELECT set_config('lock_timeout', '0', true)")
                return
            except psycopg.errors.LockNotAvailable:
                stuck = conn.execute(_STUCK_HOLDER, {
                    "lock": INGEST_SEQ_LOCK, "sessions": SINK_SESSION_PREFIX + "%",
                    "stuck": self.stuck_sink_s}).fetchall()
                for pid, name in stuck:
                    log.warning("terminating PostgreSQL session %s (%s): it holds the ingest "
                                "lock and has waited for its sink mid-statement for over %.0fs "
                                "(the sink is paused or frozen; it lands again when it runs)",
                                pid, name, self.stuck_sink_s)
                    conn.execute("SELECT pg_terminate_backend(%s)", (pid,))

    def _store_offsets(self, topic: str, offsets: Mapping[int, int],
                       topic_id: str | None) -> list[int]:
        """Store each partition's next offset under this writer's claim, in partition order
        (as claims lock them); returns the partitions it no longer holds (nothing stored)."""
        claimed = {p: self._epochs.get((topic, p)) for p in offsets}
        rows = [{"group": self.group_id, "topic": topic, "partition": p, "offset": o,
                 "topic_id": topic_id, "epoch": claimed[p]}
                for p, o in sorted(offsets.items()) if claimed[p] is not None]
        stored: set[int] = set()
        if rows:
            with self.conn.cursor() as cur:
                cur.executemany(_STORE_OFFSET, rows, returning=True)
                while True:
                    stored.update(partition for (partition,) in cur.fetchall())
                    if not cur.nextset():
                        break
        return sorted(set(offsets) - stored)

    @staticmethod
    def _copy(conn: psycopg.Connection, command: sql.Composed, rows: Sequence[tuple]) -> None:
        """COPY ``rows`` inside a savepoint, so a failure leaves the transaction usable."""
        if not rows:
            return
        with conn.transaction(), conn.cursor() as cur, cur.copy(command) as copy:
            for row in rows:
                copy.write_row(row)

    def _copy_isolating_rejects(self, conn: psycopg.Connection,
                                rows: Sequence[tuple]) -> list[DeadLetter]:
        """COPY ``rows`` to the temp table; on a data error split them in halves."""
        if not rows:
            return []
        try:
            self._copy(conn, _COPY_LANDING, rows)
            return []
        except CONNECTION_ERRORS:
            raise
        except psycopg.Error as exc:
            if len(rows) == 1:
                return [_db_rejected(rows[0], exc)]
            middle = len(rows) // 2
            return (self._copy_isolating_rejects(conn, rows[:middle])
                    + self._copy_isolating_rejects(conn, rows[middle:]))


def key_for_copy(key: bytes | None) -> str | None:
    """A message key as bytea's hex text: psycopg's bytes dumper cost ~2 µs a row in the
    sink's COPY (a 50k-row COPY: 5.1 against 2.9 µs a row), a hex string ~0.1."""
    return None if key is None else "\\x" + key.hex()


def key_from_copy(text: str | None) -> bytes | None:
    return None if text is None else bytes.fromhex(text[2:])


class _AlreadyLanded(psycopg.Error):
    """The batch holds an event that landed before: take the safe path (step 4)."""


class _RowsRefused(Exception):
    """Rows PostgreSQL refused, found under the ingest lock: publish them outside it."""

    def __init__(self, letters: list[DeadLetter]) -> None:
        super().__init__(f"{len(letters)} rows refused")
        self.letters = letters


def _where(values: tuple) -> tuple[str, int, int]:
    row = LandingRow._make(values)
    return row.kafka_topic, row.kafka_partition, row.kafka_offset


def _source(letter: DeadLetter) -> tuple[str, int, int]:
    return letter.source_topic, letter.source_partition, letter.source_offset


def _known(topic_id: str | None) -> str | None:
    """An id to store with offsets; None where it is not known (keeps the stored one)."""
    return None if topic_id in (None, UNKNOWN_TOPIC_ID) else topic_id


def _db_rejected(values: tuple, exc: psycopg.Error) -> DeadLetter:
    """The refused row's dead letter: the row holds the message as it arrived."""
    row = LandingRow._make(values)
    detail = (exc.diag.message_primary or str(exc)).strip()
    return DeadLetter(
        stage=Stage.INGEST, reason_code=Reason.DB_REJECTED,
        reason=f"PostgreSQL rejected the row: {detail}", payload=row.payload.encode(),
        key=key_from_copy(row.message_key),
        headers=stored_headers(orjson.loads(row.headers) if row.headers else None,
                               orjson.loads(row.raw_headers) if row.raw_headers else None),
        source_topic=row.kafka_topic, source_partition=row.kafka_partition,
        source_offset=row.kafka_offset, event_id=row.event_id,
        source_topic_id=row.kafka_topic_id,
    )
