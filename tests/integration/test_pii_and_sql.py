"""No clear e-mail address anywhere: every message of every topic a real run used and every
text, JSON and binary column of every table, after `streamflow produce` (which generates
e-mails and must mask them), the sink and the Dagster micro-batch.

Masked forms (``j***@example.com``, contract.EMAIL_MASKED_RE) are not addresses: the local
part is gone. The scan looks at whole tables and whole pipeline topics, not only this test's
rows: a leak from any test of the session is a leak.

(The static SQL check of this issue lives in tests/unit/test_sql_parameterised.py.)
"""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from urllib.parse import unquote

import orjson
import psycopg
import pytest
from psycopg import sql

from streamflow import contract, pii, topics
from streamflow.db.engine import connect_admin, libpq_url
from streamflow.kafka_clients import producer
from tests.conftest import TEST_PII_KEY, create_topic, wait_for, worker_env
from tests.integration.lanes import offsets_stored, read_whole_topic, rows
from tests.integration.microbatch_helpers import catch_up

CLEAR_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# For PostgreSQL (POSIX ARE), an escaped @ too: the database pre-filters, Python confirms.
CLEAR_EMAIL_SQL = CLEAR_EMAIL.pattern.replace("@", "(@|%40)")
TEXT_TYPES = {"text": "{col}", "character varying": "{col}", "character": "{col}",
              "json": "{col}::text", "jsonb": "{col}::text", "bytea": "encode({col}, 'escape')"}
EVENTS = 3_000


def clear_emails(blob: bytes | str | None) -> list[str]:
    """Clear addresses in ``blob``, also with its percent-escapes decoded (``bob%40x.org``
    in a query string is one); masked ones (``x***@domain``) do not match, since ``*``
    cannot be part of an address's local part here."""
    if blob is None:
        return []
    text = blob.decode("utf-8", "replace") if isinstance(blob, bytes | memoryview) else blob
    found = _addresses(text)
    return found + [a for a in _addresses(unquote(text)) if a not in found]


# An address is at most 254 characters: the pattern runs only near each "@", since on a long
# run without one (other tests' 900 KB values) it tries every start: quadratic.
_NEAR = 320


def _addresses(text: str) -> list[str]:
    found: list[str] = []
    for at in re.finditer("@", text):
        near = text[max(at.start() - _NEAR, 0):at.start() + _NEAR]
        found += [a for a in CLEAR_EMAIL.findall(near) if a not in found]
    return found


def scan_messages(messages: list) -> list[tuple[str, int, int, str]]:
    """(topic, partition, offset, address) for every address in a value, key or header.

    A JSON value is also scanned re-encoded, so ``\\u0040`` escapes cannot hide an ``@``."""
    leaks = []
    for msg in messages:
        parts = [msg.value(), msg.key(), *(v for _, v in msg.headers() or [])]
        try:
            parts.append(orjson.dumps(orjson.loads(msg.value() or b"")))
        except orjson.JSONDecodeError:
            pass
        except orjson.JSONEncodeError:
            pass  # nested deeper than orjson writes (other tests' hostile input): raw only
        found = {address for part in parts for address in clear_emails(part)}
        leaks += [(msg.topic(), msg.partition(), msg.offset(), a) for a in sorted(found)]
    return leaks


def text_columns(conn: psycopg.Connection) -> list[tuple[str, str, str, str]]:
    """(schema, table, column, data type) of every text-like column of every user table."""
    return conn.execute(
        "SELECT c.table_schema, c.table_name, c.column_name, c.data_type "
        "FROM information_schema.columns c JOIN information_schema.tables t "
        "  ON t.table_schema = c.table_schema AND t.table_name = c.table_name "
        "WHERE t.table_type = 'BASE TABLE' AND c.data_type = ANY(%s) "
        "  AND c.table_schema NOT IN ('pg_catalog', 'information_schema') "
        "  AND c.table_schema NOT LIKE 'pg\\_%%' "
        "ORDER BY 1, 2, 3", (list(TEXT_TYPES),)).fetchall()


def scan_database(conn: psycopg.Connection) -> tuple[list[tuple[str, str]], set[str]]:
    """([(schema.table.column, address)], tables scanned): PostgreSQL finds candidate values
    with the same pattern, ``clear_emails`` confirms each."""
    leaks, tables = [], set()
    for schema, table, column, data_type in text_columns(conn):
        tables.add(f"{schema}.{table}")
        value = sql.SQL(TEXT_TYPES[data_type]).format(col=sql.Identifier(column))
        query = sql.SQL("SELECT {value} FROM {table} WHERE {value} ~ %s").format(
            value=value, table=sql.Identifier(schema, table))
        for (found,) in conn.execute(query, (CLEAR_EMAIL_SQL,)):
            leaks += [(f"{schema}.{table}.{column}", a) for a in clear_emails(found)]
    return leaks, tables


# -- the scanner can fail ---------------------------------------------------------------------

@pytest.mark.parametrize("blob", [
    "jane.doe@example.com",
    b'{"user_id": "u1", "email": "Jane.Doe+news@mail.example.co.uk"}',
    "contact: ana_smith12@corp.example.net.",
    "mailto:x?cc=carl%40example.net",
])
def test_the_scanner_flags_a_clear_address(blob):
    assert len(clear_emails(blob)) == 1


@pytest.mark.parametrize("blob", [
    pii.mask_email("jane.doe@example.com"),
    b'{"email_masked": "a***@mail.example.org", "email_hash": "' + b"ab" * 32 + b'"}',
    "not an address: user@localhost, @example.com, j***@example.co.uk",
    None,
])
def test_the_scanner_passes_masked_forms(blob):
    assert clear_emails(blob) == []
    if isinstance(blob, str) and "***" in blob and " " not in blob:
        assert contract.EMAIL_MASKED_RE.match(blob)


def test_the_scan_finds_a_planted_address(platform, unique_name):
    """The whole path can fail: an address planted in a topic and in a table is found."""
    topic = create_topic(platform, unique_name, partitions=1)
    prod = producer(platform.kafka)
    prod.produce(topic, b'{"ok": true}', b"k", headers=[("from", b"x.y@example.com")])
    prod.produce(topic, b'{"to": "dara.kim7@example.org"}', b"k")
    prod.produce(topic, b'{"to": "escaped\\u0040example.org"}', b"k")
    prod.produce(topic, b'{"to": "a?cc=pct.at%40example.org"}', b"k")
    assert prod.flush(30) == 0
    leaks = scan_messages(read_whole_topic(platform, topic))
    assert sorted(a for *_, a in leaks) == [
        "dara.kim7@example.org", "escaped@example.org", "pct.at@example.org", "x.y@example.com"]

    with psycopg.connect(libpq_url(platform.database_url)) as conn:  # rolled back below
        probe = f"pii_probe_{uuid.uuid4().hex[:8]}"
        conn.execute(sql.SQL("CREATE TABLE {} (t text, j jsonb, b bytea)").format(
            sql.Identifier("raw", probe)))
        conn.execute(sql.SQL("INSERT INTO {} VALUES (%s, %s, %s)").format(
            sql.Identifier("raw", probe)),
            ("to: a.b@example.com", '{"e": "c.d%40example.com"}', b"\xff e.f@example.com"))
        leaks, tables = scan_database(conn)
        conn.rollback()
    assert f"raw.{probe}" in tables
    assert sorted(leaks) == [(f"raw.{probe}.b", "e.f@example.com"),
                             (f"raw.{probe}.j", "c.d@example.com"),
                             (f"raw.{probe}.t", "a.b@example.com")]


# -- a real run -------------------------------------------------------------------------------



def test_no_clear_email_in_any_topic_or_table(platform, lane, engine, resources):
    # `streamflow produce` as a user runs it: it makes e-mails and must send only masks.
    produced = subprocess.run(
        [sys.executable, "-m", "streamflow.cli", "produce", "--topic", lane.topic, "--count",
         str(EVENTS), "--max-rate", "--invalid-rate", "0.1", "--late-rate", "0.1",
         "--users", "500", "--metrics-port", "0"],
        env=worker_env(platform), capture_output=True, text=True, timeout=120)
    assert produced.returncode == 0, produced.stderr[-3000:]
    lane.start()
    wait_for(lambda: offsets_stored(engine, lane.group, lane.topic) >= EVENTS, timeout_s=60,
             message=f"the sink to consume all {EVENTS} events")
    assert lane.stop() == 0
    catch_up(resources, engine)  # the Dagster micro-batch: notifications, windows, report

    messages = [m for t in (lane.topic, lane.dlq_topic, topics.NOTIFICATIONS, topics.ANALYTICS,
                            topics.DEAD_LETTER) for m in read_whole_topic(platform, t)]
    on_lane = [m for m in messages if m.topic() == lane.topic]
    assert len(on_lane) == EVENTS
    assert sum(b"***@" in (m.value() or b"") for m in on_lane) > EVENTS * 0.8  # masks are there
    assert any(m.topic() == lane.dlq_topic for m in messages)  # invalid events were rejected
    assert any(m.topic() == topics.NOTIFICATIONS for m in messages)
    assert scan_messages(messages) == []

    with connect_admin(platform.database_url) as conn:
        leaks, tables = scan_database(conn)
    assert {"raw.events", "raw.dead_letters", "streamflow.notifications"} <= tables
    assert rows(engine, lane.topic)[0] > EVENTS * 0.8
    assert leaks == []


# -- a replayed file --------------------------------------------------------------------------

# Addresses at every depth of a replayed file, as the file spells them (an escaped @ included).
REPLAY_ADDRESSES = ("top.level@example.com", "deep.one@example.com", "list.item@example.org",
                    "in.array@example.net", "Key.Owner@corp.example.net",
                    "embedded.person@example.co.uk", "escaped.at@example.com",
                    "array.line@example.com", "plain.text@example.com")
REPLAY_FILE = (
    b'{"email": "top.level@example.com", "event_type": "login", "success": true,'
    b' "profile": {"contact": {"email": "deep.one@example.com", "age": 41}}}\n'
    b'{"event_type": "page_view", "user_id": "u-replay-1",'
    b' "recipients": [{"to": "list.item@example.org"}, ["in.array@example.net", 3, null]]}\n'
    b'{"event_type": "signup", "user_id": "u-replay-2",'
    b' "opens": {"Key.Owner@corp.example.net": {"count": 3}}}\n'
    b'{"event_type": "page_view", "user_id": "u-replay-3",'
    b' "note": "contact embedded.person@example.co.uk today",'
    b' "meta": {"cc": ["escaped.at\\u0040example.com"]}}\n'
    b'["array.line@example.com", {"nested": true}]\n'
    b'not json: plain.text@example.com\n'
)
CLEAR_EMAIL_BYTES = re.compile(CLEAR_EMAIL.pattern.encode())


def test_a_replayed_file_sends_no_address_at_any_depth(platform, unique_name, tmp_path):
    """`produce --from-file` as a user runs it; then the bytes it sent, read back from the
    topic, hold no address in any form (values, keys, headers)."""
    topic = create_topic(platform, unique_name, partitions=1)
    path = tmp_path / "nested.jsonl"
    path.write_bytes(REPLAY_FILE)
    produced = subprocess.run(
        [sys.executable, "-m", "streamflow.cli", "produce", "--from-file", str(path),
         "--topic", topic, "--max-rate", "--metrics-port", "0"],
        env=worker_env(platform), capture_output=True, text=True, timeout=120)
    assert produced.returncode == 0, produced.stderr[-3000:]

    messages = read_whole_topic(platform, topic)
    assert len(messages) == REPLAY_FILE.count(b"\n")
    sent = b"\n".join(part for m in messages
                      for part in (m.value() or b"", m.key() or b"",
                                   *(v for _, v in m.headers() or [])))
    assert CLEAR_EMAIL_BYTES.findall(sent) == []
    for address in REPLAY_ADDRESSES:
        local = address.split("@")[0].encode()
        assert local not in sent and local.lower() not in sent, address
    assert scan_messages(messages) == []  # also with \u escapes decoded
    # Masked, not dropped: every address is there in its masked form.
    for masked in (b"t***@example.com", b"d***@example.com", b"l***@example.org",
                   b"i***@example.net", b"k***@corp.example.net#", b"e***@example.co.uk",
                   b"e***@example.com", b"a***@example.com", b"p***@example.com"):
        assert masked in sent, masked


# Lists of addresses as issue 21 found them leaking (the second of a list, a mailto: cc, an
# escaped @), in text, in a non-JSON line and in an event's own email field.
LIST_FILE = (
    b'{"event_type": "page_view", "user_id": "u-list-1",'
    b' "note": "to bob@example.org,carl@example.net", "semi": "dan@example.org;erin@example.net",'
    b' "slash": "fay@example.org/gus@example.net",'
    b' "quoted": "\'hal@example.org\',\'ivy@example.net\'",'
    b' "angle": "<jon@example.org><kim@example.net>"}\n'
    b'{"event_type": "page_view", "user_id": "u-list-2",'
    b' "link": "mailto:lee@example.org?cc=eve@example.com",'
    b' "url": "https://x.io/a?to=max%40example.org%2C%20ned%40example.net"}\n'
    b'{"email": "ola@example.org,pia@example.net", "event_type": "login", "success": true}\n'
    b'not json: quin@example.org,rae@example.net mailto:sam@example.org?cc=tia%40example.com\n'
)
LIST_ADDRESSES = ("bob@", "carl@", "dan@", "erin@", "fay@", "gus@", "hal@", "ivy@", "jon@",
                  "kim@", "lee@", "eve@", "max@", "ned@", "ola@", "pia@", "quin@", "rae@",
                  "sam@", "tia@")


def test_a_replayed_list_of_addresses_sends_none_in_clear(platform, unique_name, tmp_path):
    """`produce --from-file` as a user runs it, onto a topic of this test's own (the user-events
    layout); every address of every list comes back masked, none in clear."""
    topic = create_topic(platform, unique_name, partitions=1)
    path = tmp_path / "lists.jsonl"
    path.write_bytes(LIST_FILE)
    produced = subprocess.run(
        [sys.executable, "-m", "streamflow.cli", "produce", "--from-file", str(path),
         "--topic", topic, "--max-rate", "--metrics-port", "0"],
        env=worker_env(platform), capture_output=True, text=True, timeout=120)
    assert produced.returncode == 0, produced.stderr[-3000:]

    messages = read_whole_topic(platform, topic)
    assert len(messages) == LIST_FILE.count(b"\n")
    sent = unquote(b"\n".join(part for m in messages
                               for part in (m.value() or b"", m.key() or b"",
                                            *(v for _, v in m.headers() or []))).decode())
    assert [a for a in LIST_ADDRESSES if a in sent or a.replace("@", "%40") in sent] == []
    assert "carl@example.net" not in sent and "eve@example.com" not in sent  # as reported
    assert scan_messages(messages) == []
    for masked in ("b***@example.org,c***@example.net", "d***@example.org;e***@example.net",
                   "f***@example.org/g***@example.net", "'h***@example.org','i***@example.net'",
                   "<j***@example.org><k***@example.net>",
                   "mailto:l***@example.org?cc=e***@example.com",
                   "m***@example.org, n***@example.net",  # %40, %2C%20 decoded above
                   "q***@example.org,r***@example.net",
                   "mailto:s***@example.org?cc=t***@example.com"):
        assert masked in sent, masked
    login = orjson.loads(messages[2].value())
    assert login["email_masked"] == "o***@example.net"  # the field's own mask: one local part
    assert login["email_hash"] == pii.email_hash(TEST_PII_KEY, "ola@example.org,pia@example.net")
