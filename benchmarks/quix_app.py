"""Quix Streams' PostgreSQLSink at its defaults, draining one topic into one table: the other
side of benchmarks/quix.py's comparison.

Run with the python of the benchmark's own virtualenv (quixstreams is no dependency of
StreamFlow, and that virtualenv has no streamflow): everything it needs comes on the command
line, the password from libpq's PGPASSWORD. It runs until it is stopped (SIGTERM); the
benchmark watches its consumer group's committed offsets and stops it once all is written.

    python quix_app.py --broker 127.0.0.1:9092 --topic t --group g --table quix_events \\
        --host /tmp/pg --port 5432 --dbname bench --user postgres
"""

from __future__ import annotations

import argparse

from quixstreams import Application
from quixstreams.sinks.community.postgresql import PostgreSQLSink


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for name in ("broker", "topic", "group", "table", "host", "dbname", "user"):
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    # The one setting changed from Application's defaults: a new group starts at the topic's
    # first offset ("latest" would skip the backlog this is timed on).
    app = Application(broker_address=args.broker, consumer_group=args.group,
                      auto_offset_reset="earliest")
    # Everything else of the sink at its defaults (batch = one checkpoint, every 5 s by
    # Application's commit_interval; the table created and its columns added from the values);
    # password=None: psycopg2 leaves it out and libpq reads PGPASSWORD.
    sink = PostgreSQLSink(host=args.host, port=args.port, dbname=args.dbname, user=args.user,
                          password=None, table_name=args.table)
    # value_deserializer="json" is the default: each message parsed into a dict.
    app.dataframe(app.topic(args.topic, value_deserializer="json")).sink(sink)
    app.run()


if __name__ == "__main__":
    main()
