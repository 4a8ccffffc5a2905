"""The `notifications` message of a validated event is the contract's own rendering of it."""

import orjson
import pandas as pd

from streamflow.microbatch.notifications import notification_messages
from streamflow.producer.generator import EventGenerator
from streamflow.validation import frame, validate


def test_messages_render_every_field_as_the_producer_wrote_it():
    # The generator writes the contract's fields in order, times in ISO-8601 UTC ms: a valid
    # event's message must be byte for byte what was produced (login `success`, purchase
    # `amount_cents`, neither elsewhere).
    events = [orjson.loads(v) for _, v in EventGenerator(b"k" * 32, seed=3).batch(500)]
    df, type_errors = frame(events, {"ingest_seq": list(range(500)),
                                     "ingested_at": [pd.Timestamp.now(tz="UTC")] * 500})
    valid, reasons = validate(df, type_errors)
    assert reasons == {}
    messages = notification_messages(valid)
    assert [value for _, value in messages] == [orjson.dumps(e) for e in events]
    assert [key for key, _ in messages] == [e["user_id"].encode() for e in events]
    assert {"success" in orjson.loads(v) for _, v in messages} == {True, False}


def test_no_rows_no_messages():
    assert notification_messages(pd.DataFrame()) == []
